"""Bad input on the way of calendars and contacts: each is a finding that names the account, the
collection, the item's UID (where it has one) and the server's words; the run goes on (the other
items are copied) and ends with exit code 1 (ExitCode.FINDINGS); ``report --json`` shows the same.

Two runs, each made once per module and looked at by several tests:

- Radicale -> Cyrus (``max_message_size`` set): malformed iCalendar on the source, a duplicate UID
  in one collection, an unknown TZID, RRULE with RECURRENCE-ID, the same UID in two calendars
  (Cyrus refuses the second: 403 unique-scheduling-object-resource), a vCard 2.1 with
  QUOTED-PRINTABLE (Cyrus refuses 2.1: converted to 3.0 and reported), an oversized attachment
  and photo (Cyrus: 413).

  Radicale 3.9 refuses at PUT (400) items with bad folding, without END:VCALENDAR or without UID,
  and when such a file is put in its storage directly it skips it ("Skip broken item" in its
  log: no client ever sees it). So those three can't come from a Radicale source; they come
  here from a proxy in front of it that breaks the items in its REPORT answers (what a lenient
  source would serve). A duplicate UID in one collection Radicale refuses at PUT (409
  no-uid-conflict) but serves from its storage: seeded there directly.
- Radicale -> proxy -> Radicale: the target answering 403/409/412/415/507 to chosen PUTs and 403
  to a MKCALENDAR (a collection it can't create).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from dav_org import (
    CRLF,
    DavProxy,
    calendar,
    card,
    dav_only_project,
    event,
    holdings,
    put_named,
    radicale_write_raw,
    store,
    vcard21,
)
from helpers import cli

from mailferry.errors import ExitCode
from mailferry.sandbox.dav_servers import RadicaleServer

USERS = {"alice": "alicepw", "bob": "bobpw"}
BIG = base64.b64encode(bytes(range(256)) * 400).decode()  # ~136 KB of base64
ONLY = ("--only", "calendars,contacts")


def ev(uid: str, *extra: str) -> bytes:
    return event(uid, f"Event {uid}", "20270301T080000Z", *extra)


def findings_of(data: dict[str, Any], **want: Any) -> list[dict[str, Any]]:
    out = []
    for f in data["findings"]:
        d = f["details"] or {}
        if all((f.get(k) if k in ("account", "kind") else d.get(k)) == v for k, v in want.items()):
            out.append(f)
    return out


def one(data: dict[str, Any], **want: Any) -> dict[str, Any]:
    got = findings_of(data, **want)
    assert len(got) == 1, (want, [(f["kind"], f["message"], f["details"]) for f in data["findings"]])
    return got[0]


# -- Radicale -> Cyrus ------------------------------------------------------------------------------


GOOD_WORK = ["g1@t", "g2@t", "g3@t"]


def seed_source(src: RadicaleServer) -> None:
    alice = store(src.url, "alice", USERS["alice"])
    try:
        work = [(u, ev(u)) for u in GOOD_WORK]
        work += [
            ("twice", ev("twice@t")),
            # an IANA-looking TZID no VTIMEZONE defines
            (
                "tz",
                calendar(
                    "BEGIN:VEVENT",
                    "UID:tz@t",
                    "DTSTAMP:20260101T090000Z",
                    "DTSTART;TZID=Mars/Olympus_Mons:20270101T100000",
                    "DURATION:PT1H",
                    "SUMMARY:Unknown zone",
                    "END:VEVENT",
                ),
            ),
            (
                "rr",
                calendar(
                    "BEGIN:VEVENT",
                    "UID:rr@t",
                    "DTSTAMP:20260101T090000Z",
                    "DTSTART:20270101T100000Z",
                    "DURATION:PT1H",
                    "RRULE:FREQ=DAILY;COUNT=3",
                    "RECURRENCE-ID:20270102T100000Z",
                    "SUMMARY:Rule and override in one",
                    "END:VEVENT",
                ),
            ),
            ("big", ev("big@t", f"ATTACH;ENCODING=BASE64;VALUE=BINARY;FMTTYPE=application/pdf:{BIG}")),
            # broken by the proxy in REPORT answers (see the module docstring)
            ("fold", ev("fold@t", "X-MF-FOLD:continued without its leading space")),
            ("noend", ev("noend@t", "X-MF-CUT:1")),
            ("nouid", ev("nouid@t")),
        ]
        put_named(alice, "Work", "calendar", work, displayname="Work")
        put_named(alice, "Home", "calendar", [("twice", ev("twice@t")), ("h1", ev("h1@t"))], displayname="Home")
        contacts = [
            ("c1", card("c1", "Ann Example", "ann@partner.example")),
            ("v21", vcard21("v21", "Jürgen", "Müller")),
        ]
        photo = card("bigphoto", "Big Photo", "big@partner.example").decode()
        photo = photo.replace("END:VCARD", f"PHOTO;ENCODING=b;TYPE=JPEG:{BIG}{CRLF}END:VCARD")
        contacts.append(("bigphoto", photo.encode()))
        put_named(alice, "Contacts", "addressbook", contacts, displayname="Contacts")
    finally:
        alice.close()
    # Radicale refuses this PUT (409 no-uid-conflict) but serves the file: a second resource of g1@t
    radicale_write_raw(src.base_dir, "alice", "Work", "zz-dup.ics", event("g1@t", "Copy of g1", "20270302T080000Z"))
    bob = store(src.url, "bob", USERS["bob"])
    try:
        put_named(bob, "Team", "calendar", [(u, ev(u)) for u in ("b1@t", "b2@t")], displayname="Team")
    finally:
        bob.close()


@pytest.fixture(scope="module")
def r2c(dovecot_factory, cyrus_factory, tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("badinput")
    src = RadicaleServer.start(tmp / "radicale", users=dict(USERS))
    proxy = DavProxy(src.url)
    try:
        seed_source(src)
        nl = rb"(?:\r?\n|&#13;\r?\n|&#xD;\r?\n)"
        proxy.rewrite(rb"X-MF-FOLD:", b"")  # the continuation lost its leading space
        proxy.rewrite(rb"X-MF-CUT:1" + nl + rb"END:VEVENT(" + nl + rb")END:VCALENDAR", rb"END:VEVENT\1")
        proxy.rewrite(rb"UID:nouid@t", b"X-WAS-UID:nouid@t")
        imap_src = dovecot_factory(users=USERS)
        tgt = cyrus_factory(users=USERS, max_message_size=60_000)
        project = dav_only_project(tmp / "p", imap_src, tgt, proxy.url, tgt.dav_url, USERS)
        r = cli("migrate", project, *ONLY, "--json")
        rep = cli("report", project, "--json")
        yield {
            "run": r,
            "data": r.json(),
            "report": rep.json(),
            "target": {u: holdings(tgt.dav_url, u, pw) for u, pw in USERS.items()},
            "project": project,
        }
    finally:
        proxy.close()
        src.close()


def test_the_run_goes_on_and_ends_with_findings(r2c) -> None:
    r, data, target = r2c["run"], r2c["data"], r2c["target"]
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    assert data["exit_code"] == ExitCode.FINDINGS
    work = target["alice"]["Work"]
    assert set(GOOD_WORK) <= set(work), sorted(work)
    assert "h1@t" in target["alice"]["Home"]
    assert "c1" in target["alice"]["Contacts"]
    assert set(target["bob"]["Team"]) == {"b1@t", "b2@t"}
    rows = {a["account"]: a for a in data["accounts"]}
    assert rows["bob"]["calendars"]["findings"] == 0 and rows["bob"]["exit_code"] == 0
    assert rows["alice"]["calendars"]["status"] == "ok" and rows["alice"]["exit_code"] == ExitCode.FINDINGS
    assert not findings_of(data, account="bob")


MALFORMED = {  # source href name -> (UID it has or None, words of the reason)
    "fold.ics": ("fold@t", "folding"),
    "noend.ics": ("noend@t", "END:VCALENDAR"),
    "nouid.ics": (None, "no UID"),
    "rr.ics": ("rr@t", "RRULE"),
}


def _malformed(data: dict[str, Any], name: str) -> dict[str, Any]:
    got = [
        f for f in findings_of(data, account="alice", kind="malformed") if f["details"]["source_href"].endswith(name)
    ]
    assert len(got) == 1, [(f["kind"], f["message"]) for f in data["findings"]]
    return got[0]


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_icalendar_is_a_finding_and_not_copied(r2c, name: str) -> None:
    uid, words = MALFORMED[name]
    f = _malformed(r2c["data"], name)
    assert f["details"]["collection"] == "Work"
    assert "alice" in f["message"] and "'Work'" in f["message"] and name in f["message"]
    assert words in f["details"]["reason"] and words in f["message"], f
    assert (uid or "nouid@t") not in r2c["target"]["alice"]["Work"]


@pytest.mark.parametrize("name", ["fold.ics", "noend.ics", "rr.ics"])
def test_malformed_finding_names_the_uid_it_has(r2c, name: str) -> None:
    uid, _ = MALFORMED[name]
    f = _malformed(r2c["data"], name)
    assert f["details"]["item_uid"] == uid and uid in f["message"], f


def test_duplicate_uid_in_one_collection(r2c) -> None:
    f = one(r2c["data"], account="alice", kind="duplicate-uid")
    assert f["details"]["collection"] == "Work" and f["details"]["item_uid"] == "g1@t"
    assert "g1@t" in f["message"] and "'Work'" in f["message"] and "zz-dup.ics" in f["message"]
    # which of the two goes first is the source's order of answering; the other is the finding's
    got = r2c["target"]["alice"]["Work"]["g1@t"].decode()
    left_out = f["details"]["source_href"]
    assert ("SUMMARY:Copy of g1" in got) == left_out.endswith("g1%40t.ics"), (left_out, got)


def test_same_uid_in_two_calendars_into_cyrus(r2c) -> None:
    f = one(r2c["data"], account="alice", item_uid="twice@t")
    assert f["kind"] == "refused" and f["details"]["collection"] == "Work" and f["details"]["status"] == 403
    assert "unique-scheduling-object-resource" in f["message"] and "twice@t" in f["message"], f
    assert "twice@t" in r2c["target"]["alice"]["Home"]  # the other copy landed
    assert "twice@t" not in r2c["target"]["alice"]["Work"]


def test_unknown_tzid_is_carried_and_reported(r2c) -> None:
    assert "tz@t" in r2c["target"]["alice"]["Work"]  # Cyrus takes it
    f = one(r2c["data"], account="alice", item_uid="tz@t")
    assert "Mars/Olympus_Mons" in f["message"] and "'Work'" in f["message"]


def test_unknown_tzid_is_carried(r2c) -> None:
    assert "Mars/Olympus_Mons" in r2c["target"]["alice"]["Work"]["tz@t"].decode()


def test_vcard_21_is_converted_where_the_target_refuses_it(r2c) -> None:
    f = one(r2c["data"], account="alice", kind="converted")
    assert f["details"]["collection"] == "Contacts" and f["details"]["item_uid"] == "v21"
    assert "v21" in f["message"] and "Unsupported vCard version" in f["message"], f
    got = r2c["target"]["alice"]["Contacts"]["v21"].decode().replace("\r\n ", "")
    assert "VERSION:3.0" in got and "Jürgen Müller" in got and "QUOTED-PRINTABLE" not in got


@pytest.mark.parametrize(("collection", "uid"), [("Work", "big@t"), ("Contacts", "bigphoto")])
def test_oversized_item_is_refused_with_the_status(r2c, collection: str, uid: str) -> None:
    f = one(r2c["data"], account="alice", item_uid=uid)
    assert f["kind"] == "refused" and f["details"]["collection"] == collection and f["details"]["status"] == 413
    assert "413" in f["message"] and uid in f["message"] and "alice" in f["message"]
    assert uid not in r2c["target"]["alice"][collection]


def test_oversized_refusal_has_words(r2c) -> None:
    f = one(r2c["data"], account="alice", item_uid="big@t")
    assert "Payload Too Large" in f["message"] or "Too Large" in f["message"], f["message"]


def test_report_json_shows_the_same_findings(r2c) -> None:
    mine = {(f["kind"], f["message"]) for f in r2c["data"]["findings"]}
    rep = r2c["report"]
    assert mine <= {(f["kind"], f["message"]) for f in rep["findings"]}
    outstanding = rep["calendars_outstanding"]
    assert outstanding, rep
    assert "twice@t" in str(outstanding) and "big@t" in str(outstanding)


# -- a target answering 403/409/412/415/507 ---------------------------------------------------------


STATUSES = {
    403: (b"need-privileges", b"not allowed here"),
    409: (b"no-uid-conflict", b"clash"),
    412: (b"", b"precondition failed for this item"),
    415: (b"supported-calendar-data", b"media type refused"),
    507: (b"quota-not-exceeded", b"mailbox full"),
}


def dav_error(precondition: bytes, words: bytes) -> bytes:
    cond = f"<D:{precondition.decode()}/>".encode() if precondition else b""
    return (
        b'<?xml version="1.0" encoding="utf-8"?><D:error xmlns:D="DAV:">'
        + cond
        + b"<D:responsedescription>"
        + words
        + b"</D:responsedescription></D:error>"
    )


@pytest.fixture(scope="module")
def refusing(dovecot_factory, tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("refusing")
    src = RadicaleServer.start(tmp / "src", users=dict(USERS))
    tgt = RadicaleServer.start(tmp / "tgt", users=dict(USERS))
    proxy = DavProxy(tgt.url)
    try:
        alice = store(src.url, "alice", USERS["alice"])
        try:
            put_named(alice, "Work", "calendar", [(f"s{s}", ev(f"s{s}@t")) for s in STATUSES] + [("ok", ev("ok@t"))])
            put_named(alice, "Nope", "calendar", [("n1", ev("n1@t"))], displayname="Nope")
            put_named(alice, "Contacts", "addressbook", [("c1", card("c1", "Ann Example", "ann@partner.example"))])
        finally:
            alice.close()
        bob = store(src.url, "bob", USERS["bob"])
        try:
            put_named(bob, "Team", "calendar", [("b1", ev("b1@t"))])
        finally:
            bob.close()
        for status, (pre, words) in STATUSES.items():
            proxy.answer("PUT", rf"^/alice/Work/s{status}\.ics$", status, dav_error(pre, words))
        proxy.answer(
            "MKCALENDAR", r"^/alice/Nope/$", 403, dav_error(b"calendar-collection-location-ok", b"no more calendars")
        )
        imap_src, imap_tgt = dovecot_factory(users=USERS), dovecot_factory(users=USERS)
        project = dav_only_project(tmp / "p", imap_src, imap_tgt, src.url, proxy.url, USERS)
        r = cli("migrate", project, *ONLY, "--json")
        rep = cli("report", project, "--json")
        yield {
            "run": r,
            "data": r.json(),
            "report": rep.json(),
            "target": {u: holdings(tgt.url, u, pw) for u, pw in USERS.items()},
        }
    finally:
        proxy.close()
        src.close()
        tgt.close()


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_target_refusal_is_a_finding_with_status_and_words(refusing, status: int) -> None:
    pre, words = STATUSES[status]
    f = one(refusing["data"], account="alice", item_uid=f"s{status}@t")
    assert f["kind"] == "refused" and f["details"]["status"] == status and f["details"]["collection"] == "Work"
    msg = f["message"]
    assert "alice" in msg and "'Work'" in msg and f"s{status}@t" in msg and str(status) in msg
    assert words.decode() in msg and pre.decode() in msg, msg
    assert f"s{status}@t" not in refusing["target"]["alice"]["Work"]
    assert (f["kind"], msg) in {(x["kind"], x["message"]) for x in refusing["report"]["findings"]}


def test_collection_the_target_cannot_create(refusing) -> None:
    f = one(refusing["data"], account="alice", kind="collection-refused")
    assert f["details"]["collection"] == "Nope" and f["details"]["status"] == 403
    assert "alice" in f["message"] and "'Nope'" in f["message"] and "MKCALENDAR" in f["message"]
    assert "calendar-collection-location-ok" in f["message"] and "no more calendars" in f["message"]
    assert "Nope" not in refusing["target"]["alice"]


def test_the_other_items_and_accounts_go_on(refusing) -> None:
    r, data, target = refusing["run"], refusing["data"], refusing["target"]
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    assert set(target["alice"]["Work"]) == {"ok@t"}
    assert set(target["alice"]["Contacts"]) == {"c1"}
    assert set(target["bob"]["Team"]) == {"b1@t"}
    rows = {a["account"]: a for a in data["accounts"]}
    assert rows["bob"]["exit_code"] == 0 and rows["alice"]["exit_code"] == ExitCode.FINDINGS
    assert len(findings_of(data, account="alice")) == len(STATUSES) + 1
