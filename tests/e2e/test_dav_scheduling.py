"""A migration full of meetings notifies nobody: zero iMIP messages leave the target and no
scheduling inbox receives anything, whether the target's scheduling is paused for the migration
(then, switched back on, an organizer's update reaches each internal attendee's migrated copy) or
left on (then the imported meetings carry SCHEDULE-AGENT=CLIENT and the report says so)."""

from __future__ import annotations

import pytest
from dav_org import EXTERNAL, OLD, event, holdings, meeting, put_all, store
from helpers import cli
from test_dav_migrate import USERS, dav_project

from mailferry.errors import ExitCode
from mailferry.formats import ical
from mailferry.sandbox.dav_servers import RadicaleServer

ALL = {**USERS, "carol": "carolpw"}
OUTSIDER = "boss@partner.example"


def seed_meetings(url: str) -> None:
    """alice organizes meetings with bob, carol and an outside guest; bob and carol hold their
    attendee copies (same UID, their own PARTSTAT); alice holds her copy of a meeting an outside
    person organized (a copy the target must not answer); bob organizes one with alice."""
    m1 = meeting(
        "m1@t", f"alice@{OLD}", [(f"bob@{OLD}", "ACCEPTED"), (f"carol@{OLD}", "DECLINED"), (EXTERNAL, "TENTATIVE")]
    )
    m2 = meeting("m2@t", f"alice@{OLD}", [(f"bob@{OLD}", "NEEDS-ACTION")], "20271105T140000Z")
    b1 = meeting("b1@t", f"bob@{OLD}", [(f"alice@{OLD}", "ACCEPTED")], "20271106T090000Z")
    x1 = meeting("x1@t", OUTSIDER, [(f"alice@{OLD}", "ACCEPTED")], "20271107T090000Z")
    for user, items in {
        "alice": [("m1", m1), ("m2", m2), ("x1", x1), ("e1", event("e1@t", "Alone", "20271108T080000Z"))],
        "bob": [("m1", m1), ("m2", m2), ("b1", b1)],
        "carol": [("m1", m1)],
    }.items():
        st = store(url, user, ALL[user])
        try:
            put_all(st, "Meetings", "calendar", items, displayname="Meetings")
        finally:
            st.close()


@pytest.fixture
def source(tmp_path):
    server = RadicaleServer.start(tmp_path / "radicale", users=dict(ALL))
    seed_meetings(server.url)
    yield server
    server.close()


def nothing_sent(tgt) -> None:
    assert tgt.imip_messages() == [], [(m.recipients, m.method) for m in tgt.imip_messages()]
    for user in ALL:
        assert tgt.inbox_items(user) == {}, user


def partstats(tgt, user: str) -> dict[str, str]:
    data = holdings(tgt.dav_url, user, ALL[user])["Meetings"]["m1@t"].decode().replace("\r\n ", "")
    return {
        line.split("mailto:")[1]: line.split("PARTSTAT=")[1].split(";")[0].split(":")[0]
        for line in data.splitlines()
        if line.startswith("ATTENDEE")
    }


def test_scheduling_left_on_marks_meetings_and_sends_nothing(source, dovecot_factory, cyrus_factory, tmp_path) -> None:
    tgt = cyrus_factory(users=dict(ALL))
    project = dav_project(
        tmp_path / "on",
        dovecot_factory(users=dict(ALL)),
        tgt,
        source.url,
        tgt.dav_url,
        src_admin=False,
        tgt_admin=False,
        new_domain=tgt.mail_domain,
        users=ALL,
    )
    assert cli("check", project, "--json").json()["accounts"][0]["calendars"]["scheduling"] == "marked"
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    rows = {a["account"]: a["calendars"] for a in r.json()["accounts"]}
    assert all(x["scheduling"] == "marked" for x in rows.values())
    assert r.json()["calendars"]["marked"] == 7  # every meeting in every calendar
    assert r.json()["calendars"]["copied"] == 8
    nothing_sent(tgt)
    m1 = holdings(tgt.dav_url, "bob", ALL["bob"])["Meetings"]["m1@t"]
    assert b"SCHEDULE-AGENT=CLIENT" in m1.replace(b"\r\n ", b"")
    d = tgt.mail_domain
    assert partstats(tgt, "alice") == {f"bob@{d}": "ACCEPTED", f"carol@{d}": "DECLINED", EXTERNAL: "TENTATIVE"}
    assert partstats(tgt, "carol") == partstats(tgt, "alice")
    v = cli("verify", project, "--deep", "--json")
    assert v.code == ExitCode.OK, v.out


def test_scheduling_paused_then_back_on_updates_the_attendees_copies(
    source, dovecot_factory, cyrus_factory, tmp_path
) -> None:
    tgt = cyrus_factory(users=dict(ALL), scheduling=False)
    project = dav_project(
        tmp_path / "paused",
        dovecot_factory(users=dict(ALL)),
        tgt,
        source.url,
        tgt.dav_url,
        src_admin=False,
        tgt_admin=False,
        new_domain=tgt.mail_domain,
        users=ALL,
    )
    with project.open("a") as fh:
        fh.write('\n[calendars]\nscheduling = "paused"\n')
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    assert r.json()["calendars"]["marked"] == 0 and r.json()["calendars"]["copied"] == 8
    nothing_sent(tgt)
    bob_before = holdings(tgt.dav_url, "bob", ALL["bob"])["Meetings"]["m1@t"]
    assert b"SCHEDULE-AGENT" not in bob_before  # imported unchanged but for the addresses
    assert cli("verify", project, "--deep", "--json").code == ExitCode.OK

    tgt.set_scheduling(True)  # the migration window is over
    alice = store(tgt.dav_url, "alice", ALL["alice"])
    try:
        coll = next(c for c in alice.collections() if c.name == "Meetings")
        href, etag = next(
            (h, e) for h, e in alice.members(coll).items() if b"m1@t" in next(alice.fetch(coll, [h])).data
        )
        moved = next(alice.fetch(coll, [href])).data.decode()
        moved = moved.replace("DTSTART:20271104T100000Z", "DTSTART:20271104T150000Z").replace(
            "SEQUENCE:0", "SEQUENCE:1"
        )
        alice.put(coll, href.rsplit("/", 1)[1], moved.encode(), etag=etag)
    finally:
        alice.close()
    for user in ("bob", "carol"):
        copy = holdings(tgt.dav_url, user, ALL[user])
        found = [items["m1@t"] for items in copy.values() if "m1@t" in items]
        assert len(found) == 1, (user, {k: list(v) for k, v in copy.items()})  # updated in place, not a second copy
        assert ical.inspect(found[0]).start == "20271104T150000Z", found[0].decode()
    # The organizer's update is real scheduling: the outside guest is told, as he should be.
    assert [m.recipients for m in tgt.imip_messages()] == [(EXTERNAL,)]
