"""Issue 9's "Done when", as one organisation in one project, both ways between Dovecot and Cyrus.

The identity map comes from ``directory apply`` (slapd to slapd): alice becomes alice.t on Cyrus,
alice-t on Dovecot (matched by address; see ALICE_T), bob, carol and dave are created under
their own logins. alice delegates her Inbox to
bob (read) and her "Calendar" mail folder to carol (write); a group (carol, dave) shares carol's
"Team" folder; the public tree Public/Team (the group may write) and Public/Team/Archive (anyone
may read, there only) has its own ACL; carol and bob each have their own \\Seen on it. alice has
an active Sieve script with a vacation rule and a ``fileinto`` to a subfolder whose separator
changes (Dovecot's dotted layout against Cyrus' ``/``).

After ``migrate``: ``verify --deep`` is clean (the public unit and its ACLs included); then, with
the SOURCE servers stopped, each of bob, carol and dave logs in on the target and has exactly
the access they had on the source (MYRIGHTS, SELECT, APPEND), the public \\Seen is each user's,
and a mail delivered over LMTP to her gets the target's vacation reply. The source back up,
a second ``migrate`` writes nothing (counters, and the target's IMAP transcript); a ``kill -9``
of a ``mailferry migrate`` mid-run (after an earlier run killed between creating a public folder
and setting it up) and a re-run end as the uninterrupted run did: the same ACLs, scripts and
public \\Seen, ``verify --deep`` clean, and nothing more to do.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, write_project
from imapclient import IMAPClient
from test_acl import MESSAGE, Side, access
from test_directory_ldap import block, person
from test_sieve import scripts_of, wait_for

from conftest import corpus_messages
from mailferry.engine.migrate import CREATING
from mailferry.errors import ExitCode
from mailferry.sandbox.servers import TcpProxy, system_group
from mailferry.state.ledger import SettingRecord, SqliteLedger

SOURCE_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}
# alice's name on the target, matched by `directory apply` through her address. Dovecot's shared
# namespace with the "." separator (dotted layout) can't show another user whose name holds a ".":
# "shared.alice.t" is not listed at all (measured, Dovecot 2.3.19), so there she is "alice-t".
ALICE_T = {"cyrus": "alice.t", "dovecot": "alice-t"}


def target_users(at: str) -> dict[str, str]:
    return {at: "alicetpw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}


def mapped(at: str) -> dict[str, str]:
    return {"alice": at, "bob": "bob", "carol": "carol", "dave": "dave"}


PUBLISHER = ("publisher", "publisherpw")  # Dovecot's public unit logs in as this user (master login)
DOVECOT_ADMIN, CYRUS_ADMIN = ("admin", "adminpw"), ("cyrus", "cyruspw")
MEMBERS = ["carol", "dave"]
SCRIPT = """require ["fileinto", "vacation"];
if header :contains "subject" "report" {{
  fileinto "{reports}";
  stop;
}}
vacation :days 1 :from "alice@src.test" :addresses ["alice@src.test"] :subject "Away" text:
I am away until Monday.
.
;
"""
# (who, owner, folder parts) on personal folders; owner None: the public tree.
CHECKS: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("bob", "alice", ()),
    ("carol", "alice", ("Calendar",)),
    ("bob", "alice", ("Calendar",)),
    ("dave", "carol", ("Team",)),
    ("bob", "carol", ("Team",)),
    ("dave", None, ("Team",)),
    ("carol", None, ("Team",)),
    ("bob", None, ("Team",)),
    ("bob", None, ("Team", "Archive")),
    ("dave", None, ("Team", "Archive")),
]
EXPECTED = {  # the source's access, as a person would describe it (checked on the source too)
    ("bob", "alice", ()): "lrs",
    ("carol", "alice", ("Calendar",)): "lrswite",
    ("bob", "alice", ("Calendar",)): "",
    ("dave", "carol", ("Team",)): "lrswi",
    ("bob", "carol", ("Team",)): "",
    ("dave", None, ("Team",)): "lrswi",
    ("carol", None, ("Team",)): "lrswi",
    ("bob", None, ("Team",)): "",
    ("bob", None, ("Team", "Archive")): "lrs",
    ("dave", None, ("Team", "Archive")): "lrswi",
}
SEEN = {"carol": (("Team",), 1), "bob": (("Team", "Archive"), 0)}  # user -> (public folder, message)


@pytest.fixture(scope="module")
def group() -> Iterator[str]:
    with system_group(f"mforg{uuid.uuid4().hex[:6]}", MEMBERS) as name:
        yield name


@dataclass
class Org:
    """One side of the organisation: its mail server and how names are written there."""

    side: Side

    @property
    def kind(self) -> str:
        return self.side.kind

    @property
    def server(self) -> Any:
        return self.side.server

    def public(self, *parts: str) -> str:
        return "/".join(parts) if self.kind == "cyrus" else self.server.separator.join(("Public", *parts))

    def folder(self, owner: str | None, parts: tuple[str, ...]) -> str:
        return self.public(*parts) if owner is None else self.side.other(owner, *parts)

    def reports(self) -> str:
        return self.side.own("Lists", "Reports")

    def publisher(self) -> IMAPClient:
        c = IMAPClient(self.server.host, self.server.port, ssl=False, timeout=30)
        if self.kind == "cyrus":
            c.login(*CYRUS_ADMIN)
        else:
            c.login(f"{PUBLISHER[0]}*admin", DOVECOT_ADMIN[1])
        return c

    def as_user(self, user: str) -> IMAPClient:
        c = IMAPClient(self.server.host, self.server.port, ssl=False, timeout=30)
        if self.kind == "cyrus":
            c.plain_login(CYRUS_ADMIN[0], CYRUS_ADMIN[1], user)
        else:
            c.login(f"{user}*admin", DOVECOT_ADMIN[1])
        return c

    def group_id(self, group: str) -> str:
        return self.side.group_id(group)


def make(kind: str, factory: Any, group: str, users: dict[str, str]) -> Org:
    if kind == "dovecot":
        grant = "Public* user=publisher lrwstipekxa\n"  # the public unit's login may write the tree
        s = factory["dovecot"](
            style="dotted",
            users=users | dict([PUBLISHER]),
            acl=True,
            acl_groups={m: [group] for m in MEMBERS},
            acl_global=grant,
            public="Public",
            sieve=True,
        )
        return Org(Side(s, "dovecot", DOVECOT_ADMIN))
    return Org(Side(factory["cyrus"](users=users), "cyrus", CYRUS_ADMIN))


def seed(src: Org, group: str) -> dict[str, set[bytes]]:
    """The organisation on the source; returns each public-\\Seen user's seen bodies."""
    corpus = [b for _, b in corpus_messages()]
    side = src.side
    side.create("alice", "INBOX")
    a = side.login("alice", SOURCE_USERS["alice"])
    try:
        for i in range(40):  # some volume, for the kill to land mid-run
            a.append("INBOX", MESSAGE % b"bulk%d" % i)
        for name in (side.own("Lists"), src.reports()):
            a.create_folder(name)
        a.append(src.reports(), MESSAGE % b"report")
    finally:
        a.logout()
    side.create("alice", side.own("Calendar"))
    side.create("carol", side.own("Team"))
    side.create("bob", "INBOX")
    side.setacl("alice", "INBOX", "bob", "lrs")
    side.setacl("alice", side.own("Calendar"), "carol", "lrswite")
    side.setacl("carol", side.own("Team"), src.group_id(group), "lrswi")
    c = src.publisher()
    try:
        for parts in (("Team",), ("Team", "Archive")):
            c.create_folder(src.public(*parts))
            if src.kind == "cyrus":
                c.setacl(src.public(*parts), "cyrus", "lrswipkxtecda")
            for i in range(3):
                c.append(src.public(*parts), corpus[3 * len(parts) + i])  # ones Cyrus takes
        if src.kind == "cyrus":  # Cyrus' defaultacl gave both "anyone lrs": the tree's own ACL instead
            for parts in (("Team",), ("Team", "Archive")):
                c._imap._simple_command("DELETEACL", f'"{src.public(*parts)}"', "anyone")
        c.setacl(src.public("Team"), src.group_id(group), "lrswi")
        c.setacl(src.public("Team", "Archive"), src.group_id(group), "lrswi")
        c.setacl(src.public("Team", "Archive"), "anyone", "lrs")
    finally:
        c.logout()
    seen: dict[str, set[bytes]] = {}
    for user, (parts, i) in SEEN.items():
        u = src.as_user(user)
        try:
            u.select_folder(src.public(*parts))
            uid = sorted(u.search("ALL"))[i]
            u.add_flags([uid], [b"\\Seen"])
            got = u.fetch(u.search("SEEN"), ["BODY.PEEK[]"])
            seen[user] = {d[b"BODY[]"] for d in got.values()}
        finally:
            u.logout()
    from mailferry.connectors.sieve import SieveEndpoint, SieveLogin, SieveStore

    admin = src.side.admin
    put = SieveStore(
        SieveEndpoint("127.0.0.1", src.server.sieve_port, "none", timeout=20),
        SieveLogin("alice", admin[1], admin=admin[0]),
        readonly=False,
    )
    try:
        put.put("main", SCRIPT.format(reports=src.reports()).encode())
        put.set_active("main")
    finally:
        put.close()
    return seen


def project_for(tmp: Path, src: Org, tgt: Org, src_dir: Any, tgt_dir: Any, *, target_port: int | None, at: str) -> Path:
    public = '[public]\n{}_user = "publisher"\n'.format("source" if src.kind == "dovecot" else "target")
    extra = (
        block(src_dir, tgt_dir, extra='account_key = "login"\nconfirm_mailboxes = false')
        + f'\n[source.sieve]\nurl = "sieve://127.0.0.1:{src.server.sieve_port}"\nsecurity = "none"\n'
        + f'[target.sieve]\nurl = "sieve://127.0.0.1:{tgt.server.sieve_port}"\nsecurity = "none"\n'
        + public
    )
    project = write_project(
        tmp,
        src.server,
        tgt.server,
        [],
        source_admin=src.side.admin,
        target_admin=tgt.side.admin,
        target_port=target_port,
        extra=extra,
        write_accounts=False,
    )
    text = project.read_text().replace(
        '[project]\nname = "t"', '[project]\nname = "t"\nitems = ["mail", "permissions", "public", "filters"]'
    )
    project.write_text(text)
    applied = cli("directory", "apply", project, "--json")
    assert applied.code == ExitCode.OK, applied.out + applied.err
    assert (tmp / "accounts.csv").read_text().count(f"alice,{at}") == 1
    return project


def rows(result: Any) -> dict[str, dict[str, Any]]:
    return {r["account"]: r for r in result.json()["accounts"]}


def target_acls(tgt: Org, at: str) -> dict[str, dict[str, str]]:
    """The ACLs of the organisation's folders on the target, each read by its owner."""
    out: dict[str, dict[str, str]] = {}
    wanted = [(at, "INBOX"), (at, tgt.side.own("Calendar")), ("carol", tgt.side.own("Team"))]
    for user, folder in wanted:
        c = tgt.side.login(user, target_users(at)[user])
        try:
            out[f"{user}:{folder}"] = {k.decode(): v.decode() for k, v in c.getacl(folder)}
        finally:
            c.logout()
    c = tgt.publisher()
    try:
        for parts in (("Team",), ("Team", "Archive")):
            out[tgt.public(*parts)] = {k.decode(): v.decode() for k, v in c.getacl(tgt.public(*parts))}
    finally:
        c.logout()
    return out


def commands(transcript: bytes) -> set[str]:
    """The IMAP commands a client sent (``UID STORE`` as STORE); SASL lines are not commands."""
    out = set()
    for line in transcript.upper().split(b"\r\n"):
        words = line.split()
        if len(words) >= 2:
            word = words[2] if words[1] == b"UID" and len(words) > 2 else words[1]
            out.add(word.decode(errors="replace"))
    return out


def ledger_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("direction", ["dovecot-cyrus", "cyrus-dovecot"])
def test_organisation(direction: str, dovecot_factory, cyrus_factory, slapd_factory, group, tmp_path) -> None:
    skind, tkind = direction.split("-")
    factory = {"dovecot": dovecot_factory, "cyrus": cyrus_factory}
    src = make(skind, factory, group, SOURCE_USERS)
    at = ALICE_T[tkind]
    users, mapping, address = target_users(at), mapped(at), f"{at}@tgt.test"
    tgt = make(tkind, factory, group, users)
    src_dir = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt_dir = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    src_dir.add_ldif(
        "\n".join(person(src_dir.users_dn, f"{u.title()} Person", u, f"{u}@src.test") for u in SOURCE_USERS)
    )
    tgt_dir.add_ldif(person(tgt_dir.users_dn, "Alice T", at, address, ["alice@src.test"]))
    seen = seed(src, group)
    source_access = {}
    for who, owner, parts in CHECKS:
        got = access(src.side, who, SOURCE_USERS[who], src.folder(owner, parts), try_append=False)
        source_access[(who, owner, parts)] = got
        assert set(got[0]) == set(EXPECTED[(who, owner, parts)]), (who, owner, parts, got)

    proxy = TcpProxy.start(tgt.server.host, tgt.server.port, record=True)
    try:
        project = project_for(tmp_path / "p", src, tgt, src_dir, tgt_dir, target_port=proxy.port, at=at)
        plan = cli("plan", project, "--json")
        assert plan.code == ExitCode.OK, plan.out + plan.err
        pub_plan = rows(plan)["#public"]["permissions"]
        assert {(s["target_folder"], s["identifier"]) for s in pub_plan["setacl"]} == {
            (tgt.public("Team"), tgt.group_id(group)),
            (tgt.public("Team", "Archive"), tgt.group_id(group)),
            (tgt.public("Team", "Archive"), "anyone"),
        }, pub_plan

        human = cli("plan", project).out
        line = f"acl: {src.public('Team', 'Archive')} -> {tgt.public('Team', 'Archive')}: set anyone 'lrs'"
        assert line in human, human

        first = cli("migrate", project, "--json")
        assert first.code == ExitCode.OK, first.out + first.err
        by = rows(first)
        assert by["alice"]["target_account"] == at
        assert by["#public"]["permissions"]["set"] == 3, by["#public"]
        assert by["alice"]["filters"]["put"] == 1 and by["alice"]["filters"]["activated"] == 1

        v = cli("verify", project, "--deep", "--json")
        assert v.code == ExitCode.OK and v.json()["clean"], v.out
        vpub = rows(v)["#public"]
        assert vpub["clean"] and vpub["permissions"]["differences"] == [], vpub
        assert {f["target_folder"] for f in vpub["folders"]} >= {tgt.public("Team"), tgt.public("Team", "Archive")}

        # --- the source goes away: everything below is the target's alone ---------------------
        src.server.stop()
        for who, owner, parts in CHECKS:
            s = source_access[(who, owner, parts)]
            name = tgt.folder(mapping[owner] if owner else None, parts)
            t = access(tgt.side, mapping[who], users[mapping[who]], name, try_append=True)
            assert (set(t[0]), t[1]) == (set(s[0]), s[1]), (who, owner, parts, s, t)
            assert t[2] == ("i" in s[0]), (who, owner, parts, s, t)
        for user, (parts, _i) in SEEN.items():
            u = tgt.as_user(user)
            try:
                u.select_folder(tgt.public(*parts), readonly=True)
                got = u.fetch(u.search("SEEN"), ["BODY.PEEK[]"])
                assert {d[b"BODY[]"] for d in got.values()} == seen[user], user
            finally:
                u.logout()
        scripts, active = scripts_of(tgt.server.sieve_port, at, tgt.side.admin)
        assert active == "main", scripts
        text = scripts["main"].decode()
        assert f'fileinto "{tgt.reports()}";' in text and src.reports() not in text.replace(tgt.reports(), "")
        assert f':addresses ["{address}"]' in text and "alice@src.test" not in text
        tgt.server.deliver(at, f"From: dev@ext.example\r\nTo: {address}\r\nSubject: report 7\r\n\r\nfiled\r\n".encode())
        c = tgt.side.login(at, users[at])
        try:
            c.select_folder(tgt.reports(), readonly=True)
            assert any(b"report 7" in d[b"BODY[]"] for d in c.fetch(c.search("ALL"), ["BODY.PEEK[]"]).values())
        finally:
            c.logout()
        sent = tgt.server.imip_messages if tkind == "cyrus" else tgt.server.sent_messages
        before = len(sent())
        tgt.server.deliver(
            at,
            f"From: ext@partner.example\r\nTo: {address}\r\nSubject: question\r\n\r\n?\r\n".encode(),
            mail_from="ext@partner.example",
        )
        replies = wait_for(lambda: sent()[before:])
        assert replies, "no vacation reply from the target"
        reply = replies[-1]
        assert (reply.recipients if tkind == "cyrus" else reply.rcpt_to) == ("ext@partner.example",)
        assert b"I am away until Monday." in reply.data and address.encode() in reply.data

        # --- the source back: a second migrate writes nothing -----------------------------------
        src.server.restart()
        mark = len(proxy.transcript("up"))
        again = cli("migrate", project, "--json")
        assert again.code == ExitCode.OK, again.out + again.err
        assert again.json()["copied"] == 0
        for account, row in rows(again).items():
            assert (row["copied"], row["flag_updates"]) == (0, 0), (account, row)
            assert (row["permissions"]["set"], row["permissions"]["deleted"]) == (0, 0), (account, row)
            if "filters" in row:
                assert (row["filters"]["put"], row["filters"]["activated"]) == (0, 0), (account, row)
        pub = rows(again)["#public"]["public"]
        assert pub["seen_added"] == pub["seen_removed"] == pub["subscribed"] == 0
        sent = commands(proxy.transcript("up")[mark:])
        assert sent and not sent & {"SETACL", "DELETEACL", "APPEND", "STORE", "CREATE", "SUBSCRIBE"}, sent
    finally:
        proxy.stop()

    # --- kill -9 mid-run, then a re-run: as the uninterrupted run ------------------------------
    fresh = make(tkind, factory, group, users)
    killed = project_for(tmp_path / "k", src, fresh, src_dir, tgt_dir, target_port=None, at=at)
    ledger = tmp_path / "k" / "project.ledger.sqlite"
    # An earlier run was killed right after it created the public Team folder (Cyrus gave it
    # "anyone lrs" of its own, and its admin only 'l' and 'a'): the ledger says so.
    pre = fresh.publisher()
    try:
        pre.create_folder(fresh.public("Team"))
    finally:
        pre.logout()
    book = SqliteLedger(ledger)
    try:
        run = book.start_run("migrate", "2026-01-01T00:00:00Z")
        team = fresh.public("Team")
        book.record_setting(SettingRecord("#public", CREATING, team, src.public("Team"), team, "set", run))
    finally:
        book.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailferry", "migrate", str(killed), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    deadline, hit = time.monotonic() + 60, False
    while proc.poll() is None and time.monotonic() < deadline:
        if ledger_rows(ledger) >= 10:
            os.kill(proc.pid, signal.SIGKILL)
            hit = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert hit, "the kill should land while mail is copied"
    final = cli("migrate", killed, "--json")
    assert final.code == ExitCode.OK, final.out + final.err
    v = cli("verify", killed, "--deep", "--json")
    assert v.code == ExitCode.OK and v.json()["clean"], v.out
    assert target_acls(fresh, at) == target_acls(tgt, at)
    assert scripts_of(fresh.server.sieve_port, at, fresh.side.admin) == scripts_of(
        tgt.server.sieve_port, at, tgt.side.admin
    )
    for user, (parts, _i) in SEEN.items():
        u = fresh.as_user(user)
        try:
            u.select_folder(fresh.public(*parts), readonly=True)
            got = u.fetch(u.search("SEEN"), ["BODY.PEEK[]"])
            assert {d[b"BODY[]"] for d in got.values()} == seen[user], user
        finally:
            u.logout()
    settle = cli("migrate", killed, "--json")
    assert settle.code == ExitCode.OK and settle.json()["copied"] == 0
    assert all(r["permissions"]["set"] == 0 for r in rows(settle).values()), settle.out


def test_an_owner_name_with_the_shared_namespaces_separator_is_a_finding(dovecot_factory, tmp_path) -> None:
    """Dovecot's dotted layout ("shared." namespace) can't show another user whose name holds a
    ".": alice renamed to alice.t there keeps her entries, but bob could not open her Inbox.
    Never silently: a finding names the account, the folders and the separator."""
    src = dovecot_factory(style="slash", users={"alice": "alicepw", "bob": "bobpw"}, acl=True)
    tgt = dovecot_factory(style="dotted", users={"alice.t": "alicetpw", "bob": "bobpw"}, acl=True)
    side = Side(src, "dovecot", DOVECOT_ADMIN)
    side.create("alice", "INBOX")
    side.setacl("alice", "INBOX", "bob", "lrs")
    csv = "source_user,target_user\nalice,alice.t\nbob,bob\n"
    project = write_project(tmp_path / "p", src, tgt, [], csv_text=csv)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out
    (f,) = [f for f in r.json()["findings"] if f["kind"].startswith("acl-")]
    assert f["kind"] == "acl-owner-unreachable" and f["account"] == "alice", f
    assert f["details"] == {"target_user": "alice.t", "separator": ".", "folders": ["INBOX"]}, f
    assert "'alice.t'" in f["message"] and "'shared.'" in f["message"]
    assert rows(r)["alice"]["permissions"]["set"] == 1  # the entry is there for when the name is
    assert access(Side(tgt, "dovecot", DOVECOT_ADMIN), "bob", "bobpw", "shared.alice.t", try_append=False)[1] is False
