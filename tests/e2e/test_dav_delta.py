"""Delta passes: a changed source item replaces its target copy (If-Match), a new one is copied,
a deleted one stays on the target unless deletions are carried; a target copy someone changed
since mailferry wrote it is left alone and named (a conflict)."""

from __future__ import annotations

import pytest
from dav_org import event, holdings, seed_org, store
from helpers import cli
from test_dav_migrate import USERS, dav_project, domain_of

from mailferry.errors import ExitCode
from mailferry.sandbox.dav_servers import RadicaleServer


def edit(url: str, user: str, uid: str, old: bytes, new: bytes) -> None:
    """Change the item of this UID in the user's Work calendar (as the user, with If-Match)."""
    st = store(url, user, USERS[user])
    try:
        coll = next(c for c in st.collections() if c.name == "Work")
        for item in st.fetch(coll, sorted(st.members(coll))):
            if f"UID:{uid}".encode() in item.data:
                st.put(coll, item.href.rsplit("/", 1)[1], item.data.replace(old, new), etag=item.etag)
                return
        raise AssertionError(uid)
    finally:
        st.close()


def add_and_delete(url: str) -> None:
    st = store(url, "alice", USERS["alice"])
    try:
        coll = next(c for c in st.collections() if c.name == "Work")
        st.put(coll, "new-one.ics", event("new@t", "New one", "20270401T080000Z"))
        for item in st.fetch(coll, sorted(st.members(coll))):
            if b"UID:e2@t" in item.data:
                st.delete(item.href, item.etag)
    finally:
        st.close()


def target_side(target: str, dovecot_factory, cyrus_factory, tmp_path, started: list[RadicaleServer]):
    """(the target's mail server, its DAV URL): a Cyrus, or a Radicale beside a Dovecot."""
    if target == "cyrus":
        tgt = cyrus_factory(users=dict(USERS))
        return tgt, tgt.dav_url
    r = RadicaleServer.start(tmp_path / "tgt", users=dict(USERS))
    started.append(r)
    return dovecot_factory(users=dict(USERS)), r.url


@pytest.mark.parametrize("target", ["cyrus", "radicale"])
def test_delta_passes_carry_changes_and_leave_conflicts(target, dovecot_factory, cyrus_factory, tmp_path) -> None:
    src = RadicaleServer.start(tmp_path / "src", users=dict(USERS))
    extra: list[RadicaleServer] = []
    try:
        tgt_imap, tgt_url = target_side(target, dovecot_factory, cyrus_factory, tmp_path, extra)
        seed_org(src.url, USERS, real=False)
        project = dav_project(
            tmp_path / "p",
            dovecot_factory(users=dict(USERS)),
            tgt_imap,
            src.url,
            tgt_url,
            src_admin=False,
            tgt_admin=False,
            new_domain=domain_of(tgt_url, "alice"),
        )
        assert cli("migrate", project, "--json").code == ExitCode.OK

        edit(src.url, "alice", "e1@t", b"SUMMARY:Dentist", b"SUMMARY:Dentist (moved)")
        edit(src.url, "alice", "m2@t", b"SEQUENCE:0", b"SEQUENCE:1")  # a meeting, rewritten on the way
        edit(tgt_url, "alice", "m2@t", b"PARTSTAT=NEEDS-ACTION", b"PARTSTAT=DECLINED")  # someone on the target
        add_and_delete(src.url)
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.FINDINGS, r.out + r.err  # the conflict
        d = r.json()["calendars"]
        assert (d["copied"], d["updated"], d["removed"]) == (1, 1, 0), d
        conflicts = [f for f in r.json()["findings"] if f["kind"] == "conflict"]
        assert len(conflicts) == 1 and "m2@t" in conflicts[0]["message"], r.json()["findings"]
        work = holdings(tgt_url, "alice", USERS["alice"])["Work"]
        assert b"SUMMARY:Dentist (moved)" in work["e1@t"] and "new@t" in work
        assert "e2@t" in work  # deletions are not carried unless asked
        assert b"PARTSTAT=DECLINED" in work["m2@t"].replace(b"\r\n ", b"")  # the target's change kept

        r = cli("migrate", project, "--json")  # the conflict is not forgotten by a pass with nothing new
        assert r.code == ExitCode.FINDINGS, r.out + r.err
        assert [f["kind"] for f in r.json()["findings"]] == ["conflict"], r.json()["findings"]
        assert b"PARTSTAT=DECLINED" in holdings(tgt_url, "alice", USERS["alice"])["Work"]["m2@t"].replace(b"\r\n ", b"")

        with project.open("a") as fh:
            fh.write("\n[calendars]\npropagate_deletions = true\n")
        r = cli("migrate", project, "--json")
        assert r.json()["calendars"]["removed"] == 1, r.out
        assert "e2@t" not in holdings(tgt_url, "alice", USERS["alice"])["Work"]
    finally:
        src.close()
        for x in extra:
            x.close()


@pytest.mark.parametrize("target", ["cyrus", "radicale"])
def test_item_names_that_need_quoting_land_where_the_ledger_says(
    target, dovecot_factory, cyrus_factory, tmp_path
) -> None:
    """A resource name with a space, braces, a plus and non-ASCII letters (Outlook-style names)
    is written under that very name once, and verify finds it there."""
    from dav_org import put_named

    src = RadicaleServer.start(tmp_path / "src", users=dict(USERS))
    extra: list[RadicaleServer] = []
    try:
        tgt_imap, tgt_url = target_side(target, dovecot_factory, cyrus_factory, tmp_path, extra)
        st = store(src.url, "alice", USERS["alice"])
        try:
            put_named(
                st, "Work", "calendar", [("{A1} Café + Brötchen", event("odd@t", "Odd name", "20270501T080000Z"))]
            )
        finally:
            st.close()
        project = dav_project(
            tmp_path / "p",
            dovecot_factory(users=dict(USERS)),
            tgt_imap,
            src.url,
            tgt_url,
            src_admin=False,
            tgt_admin=False,
            new_domain="new.example",
        )
        assert cli("migrate", project, "--json").code == ExitCode.OK
        v = cli("verify", project, "--deep", "--json")
        assert v.code == ExitCode.OK and v.json()["clean"], v.out
        t = store(tgt_url, "alice", USERS["alice"], readonly=True)
        try:
            coll = next(c for c in t.collections() if c.name == "Work")
            names = [h.rsplit("/", 1)[1] for h in t.members(coll)]
        finally:
            t.close()
        assert len(names) == 1 and "%25" not in names[0], names  # quoted once, not twice
        again = cli("migrate", project, "--json").json()["calendars"]
        assert (again["copied"], again["updated"], again["matched"]) == (0, 0, 0)
    finally:
        src.close()
        for x in extra:
            x.close()


def test_a_refused_update_is_retried_in_place(dovecot_factory, cyrus_factory, tmp_path) -> None:
    """An event changed on the source into one the target refuses (Cyrus: DTEND before DTSTART)
    is a finding and stays outstanding; once the source mends it, the next pass replaces the
    older copy where it is: one copy of the UID, no second resource beside it."""
    src = RadicaleServer.start(tmp_path / "src", users=dict(USERS))
    try:
        seed_org(src.url, USERS, real=False)
        tgt = cyrus_factory(users=dict(USERS))
        project = dav_project(
            tmp_path / "p",
            dovecot_factory(users=dict(USERS)),
            tgt,
            src.url,
            tgt.dav_url,
            src_admin=False,
            tgt_admin=False,
            new_domain=domain_of(tgt.dav_url, "alice"),
        )
        assert cli("migrate", project, "--json").code == ExitCode.OK
        edit(src.url, "alice", "e1@t", b"DURATION:PT1H", b"DTEND:20270301T070000Z")
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.FINDINGS, r.out + r.err
        refused = [f for f in r.json()["findings"] if f["kind"] == "refused"]
        assert len(refused) == 1 and "e1@t" in refused[0]["message"], r.json()["findings"]
        report = cli("report", project, "--json").json()
        assert [o["item_uid"] for o in report["calendars_outstanding"]] == ["e1@t"], report["calendars_outstanding"]

        edit(src.url, "alice", "e1@t", b"DTEND:20270301T070000Z", b"DTEND:20270301T100000Z")
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
        assert r.json()["calendars"]["updated"] == 1, r.json()["calendars"]
        st = store(tgt.dav_url, "alice", USERS["alice"], readonly=True)
        try:
            work = next(c for c in st.collections() if c.name == "Work")
            copies = [x for x in st.fetch(work, sorted(st.members(work))) if b"UID:e1@t" in x.data]
        finally:
            st.close()
        assert len(copies) == 1 and b"DTEND:20270301T100000Z" in copies[0].data, [x.href for x in copies]
        assert cli("verify", project, "--deep").code == ExitCode.OK
    finally:
        src.close()
