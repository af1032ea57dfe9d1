"""Folder permissions (IMAP ACL, RFC 4314) carried between real servers, both ways.

The organisation: alice delegates her Inbox to bob (read) and her "Calendar" mail folder to
carol (write); carol shares a "Team" folder with a group (dave is a member, and a negative
entry takes ``r`` away from him). bob is renamed on the target (``bob`` -> ``bob.t``). After
``migrate``, each of them logs in on the TARGET and must have exactly the access they had on
the source (MYRIGHTS, SELECT, APPEND). Then: a second pass sends no SETACL (the target's
transcript through a recording proxy), verify is clean, changes on the source arrive (and an
entry an admin made on the target stays), and bad input gives findings while the rest goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import cli, write_project
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailferry.connectors.imap import Endpoint, ImapStore, Login
from mailferry.errors import ExitCode
from mailferry.formats.acl import ORDER, parse_rights, rights_text
from mailferry.sandbox.servers import TcpProxy, system_group

USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}
TARGET_USERS = {"alice": "alicepw", "bob.t": "bobpw", "carol": "carolpw", "dave": "davepw"}
RENAMED = {"alice": "alice", "bob": "bob.t", "carol": "carol", "dave": "dave"}
CSV = "source_user,target_user\n" + "".join(f"{s},{t}\n" for s, t in RENAMED.items())
CYRUS_ADMIN = ("cyrus", "cyruspw")
MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: acl test\r\nMessage-ID: <%s@acl>\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def group() -> Iterator[str]:
    """A group only dave is in: a throw-away system group for Cyrus (see ``system_group``),
    the userdb's ``acl_groups`` for Dovecot."""
    with system_group(f"mfacl{uuid.uuid4().hex[:6]}", ["dave"]) as name:
        yield name


@dataclass
class Side:
    server: Any
    kind: str  # dovecot | cyrus
    admin: tuple[str, str]

    def own(self, *parts: str) -> str:
        """A folder's name as its owner sees it."""
        if self.kind == "cyrus":
            return "/".join(("INBOX", *parts))
        return self.server.folder(*parts) if parts else "INBOX"

    def other(self, owner: str, *parts: str) -> str:
        """``owner``'s folder as someone it is shared with sees it."""
        if self.kind == "cyrus":
            return "/".join(("user", owner, *parts))
        # Dovecot shows another user's INBOX as the root of its shared/<owner> tree.
        return self.server.separator.join(("shared", owner, *parts))

    def group_id(self, group: str, negative: bool = False) -> str:
        return ("-" if negative else "") + (f"group:{group}" if self.kind == "cyrus" else f"${group}")

    def login(self, user: str, password: str) -> IMAPClient:
        c = IMAPClient(self.server.host, self.server.port, ssl=False, timeout=30)
        c.login(user, password)
        return c

    def setacl(self, owner: str, folder: str, who: str, rights: str) -> None:
        c = self.login(owner, USERS.get(owner) or TARGET_USERS[owner])
        try:
            c.setacl(folder, who, rights)
        finally:
            c.logout()

    def deleteacl(self, owner: str, folder: str, who: str) -> None:
        c = self.login(owner, USERS.get(owner) or TARGET_USERS[owner])
        try:
            typ, data = c._imap._simple_command("DELETEACL", f'"{folder}"', f'"{who}"')
            assert typ == "OK", data
        finally:
            c.logout()

    def create(self, owner: str, folder: str, message: bool = True) -> None:
        c = self.login(owner, USERS[owner])
        try:
            if folder != "INBOX":
                c.create_folder(folder)
            if message:
                c.append(folder, MESSAGE % uuid.uuid4().hex.encode())
        finally:
            c.logout()


def access(side: Side, user: str, password: str, folder: str, *, try_append: bool) -> tuple[str, bool, bool | None]:
    """(rights by MYRIGHTS, normalised; can SELECT; can APPEND, when tried) of ``user``."""
    c = side.login(user, password)
    try:
        # Dovecot 2.3.19 (dotted layout) panics on MYRIGHTS for a folder of the shared namespace
        # that no LIST has shown this session ("Module context acl_storage_module missing"); a
        # folder not listed (no 'l' right) is not there for this user at all.
        if folder not in {name for _f, _d, name in c.list_folders()}:
            return "", False, (False if try_append else None)
        try:
            raw = c._imap.myrights(folder)
            rights = raw[1][0].decode().rsplit(" ", 1)[1] if raw[0] == "OK" else ""
        except Exception:
            rights = ""
        norm = rights_text(r for r in parse_rights(rights) if r in ORDER)
        try:
            c.select_folder(folder, readonly=True)
            selectable = True
        except IMAPClientError:
            selectable = False
        appended: bool | None = None
        if try_append:
            try:
                c.append(folder, MESSAGE % uuid.uuid4().hex.encode())
                appended = True
            except IMAPClientError:
                appended = False
        return norm, selectable, appended
    finally:
        c.logout()


def dovecot(factory: Any, style: str, group: str, users: dict[str, str], **kw: Any) -> Side:
    s = factory(style=style, users=users, acl=True, acl_groups={"dave": [group]}, **kw)
    return Side(s, "dovecot", ("admin", "adminpw"))


def cyrus(factory: Any, users: dict[str, str]) -> Side:
    return Side(factory(users=users), "cyrus", CYRUS_ADMIN)


# Who to check, on whose folder: (source user, owner, folder parts).
CHECKS = [
    ("bob", "alice", ()),
    ("carol", "alice", ("Calendar",)),
    ("dave", "carol", ("Team",)),
    ("bob", "alice", ("Calendar",)),
]


def seed(src: Side, group: str) -> None:
    src.create("alice", "INBOX")
    src.create("alice", src.own("Calendar"))
    src.create("carol", src.own("Team"))
    src.create("bob", "INBOX")
    src.setacl("alice", "INBOX", "bob", "lrs")  # read
    src.setacl("alice", src.own("Calendar"), "carol", "lrswite")  # write
    src.setacl("carol", src.own("Team"), src.group_id(group), "lrswi")
    src.setacl("carol", src.own("Team"), "-dave", "r")


def assert_same_access(src: Side, tgt: Side) -> dict[tuple[str, str, tuple[str, ...]], str]:
    seen = {}
    for user, owner, parts in CHECKS:
        s = access(src, user, USERS[user], src.other(owner, *parts), try_append=False)
        t = access(tgt, RENAMED[user], TARGET_USERS[RENAMED[user]], tgt.other(RENAMED[owner], *parts), try_append=True)
        assert t[:2] == s[:2], (user, owner, parts, s, t)
        assert t[2] == ("i" in s[0]), (user, owner, parts, s, t)
        seen[(user, owner, parts)] = s[0]
    return seen


def findings(result: Any) -> list[dict[str, Any]]:
    return [f for f in result.json()["findings"] if f["kind"].startswith("acl-")]


def own_folders(side: Side, user: str) -> set[str]:
    st = ImapStore(
        Endpoint(side.server.host, side.server.port, "none"),
        Login(user, TARGET_USERS.get(user) or USERS[user]),
        readonly=True,
    )
    try:
        return {f.name for f in st.own_folders()}
    finally:
        st.close()


def scenario(src: Side, tgt: Side, group: str, tmp_path: Any, *, unreadable: bool, extra: str = "") -> None:
    seed(src, group)
    proxy = TcpProxy.start(tgt.server.host, tgt.server.port, record=True)
    try:
        project = write_project(
            tmp_path / "p",
            src.server,
            tgt.server,
            [],
            csv_text=CSV,
            source_admin=src.admin,
            target_admin=tgt.admin,
            target_port=proxy.port,
            extra=extra,
        )
        plan = cli("plan", project, "--json")
        assert plan.code == ExitCode.OK, plan.out + plan.err
        planned = {
            (s["source_folder"], s["identifier"]) for a in plan.json()["accounts"] for s in a["permissions"]["setacl"]
        }
        assert ("INBOX", "bob.t") in planned and (src.own("Calendar"), "carol") in planned
        assert "acl: INBOX -> INBOX: set bob.t 'lrs' (source: bob 'lrs'; new on the source)" in cli("plan", project).out

        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
        assert not findings(r)
        # Shared folders are migrated once, from their owner: bob copies only his own Inbox.
        assert r.json()["copied"] == 4
        assert own_folders(tgt, "bob.t") == {"INBOX"}
        rights = assert_same_access(src, tgt)
        assert rights[("bob", "alice", ())] == "lrs"
        assert set("lrswite") <= set(rights[("carol", "alice", ("Calendar",))])
        assert rights[("dave", "carol", ("Team",))] == "lswi"  # the group's, less the negative entry's r
        assert rights[("bob", "alice", ("Calendar",))] == ""

        # A second pass: not one ACL command reaches the target.
        before = len(proxy.transcript("up"))
        again = cli("migrate", project, "--json")
        assert again.code == ExitCode.OK, again.out
        sent = proxy.transcript("up")[before:].upper()
        assert not [c for c in (b"SETACL", b"DELETEACL", b"GETACL", b"LISTRIGHTS") if c in sent], sent
        # Permissions verify clean (the mail part sees the messages the APPEND checks added).
        v = cli("verify", project, "--json")
        assert all(a["permissions"] == {"clean": True, "note": "", "differences": []} for a in v.json()["accounts"]), (
            v.out
        )

        # Changes on the source arrive; an entry an admin made on the target stays.
        src.setacl("alice", src.own("Calendar"), "carol", "lrs")
        src.deleteacl("alice", "INBOX", "bob")
        tgt.setacl("alice", tgt.own("Calendar"), "dave", "lr")
        d = cli("migrate", project, "--only", "permissions", "--json")
        assert d.code == ExitCode.OK, d.out
        assert d.json()["items"] == ["permissions"] and d.json()["copied"] == 0
        assert d.json()["permissions"]["set"] == 1 and d.json()["permissions"]["deleted"] == 1
        assert_same_access(src, tgt)
        assert access(tgt, "dave", "davepw", tgt.other("alice", "Calendar"), try_append=False)[0] == "lr"
        assert f"acl {src.own('Calendar')} -> {tgt.own('Calendar')}: dave extra" in cli("verify", project).out
        v = cli("verify", project, "--json")
        diffs = [x for a in v.json()["accounts"] for x in a["permissions"]["differences"]]
        assert diffs == [
            {
                "source_folder": src.own("Calendar"),
                "target_folder": tgt.own("Calendar"),
                "identifier": "dave",
                "kind": "extra",
                "source_rights": "",
                "target_rights": "lr",
            }
        ], diffs

        # Bad input: each a finding naming folder, identifier and rights; the rest goes on.
        src.create("alice", src.own("Old"))
        src.setacl("alice", src.own("Old"), "ghost", "lr")  # no such account any more
        if src.kind == "cyrus" and tgt.kind == "dovecot":
            src.setacl("alice", src.own("Old"), "carol", "lr1")  # Cyrus' site right 1: Dovecot has none
        if unreadable:
            src.create("alice", src.own("Private"))  # the source's global ACL denies 'a' there
        src.setacl("alice", src.own("Calendar"), "carol", "lrswi")  # a good change at the same time
        b = cli("migrate", project, "--json")
        assert b.code == ExitCode.FINDINGS, b.out
        got = {f["kind"]: f for f in findings(b)}
        ghost = got["acl-unmapped"]
        assert ghost["source_folder"] == src.own("Old") and "ghost" in ghost["message"] and "'lr'" in ghost["message"]
        if src.kind == "cyrus" and tgt.kind == "dovecot":
            bad = got["acl-rights-unsupported"]
            assert bad["source_folder"] == src.own("Old") and "carol" in bad["message"] and "'1'" in bad["message"]
            assert access(tgt, "carol", "carolpw", tgt.other("alice", "Old"), try_append=False)[0] == "lr"
        if unreadable:
            assert got["acl-unreadable"]["source_folder"] == src.own("Private")
        assert "acl-unsupported" not in got
        assert set("lrswi") <= set(access(tgt, "carol", "carolpw", tgt.other("alice", "Calendar"), try_append=False)[0])
        rep = cli("report", project, "--json")
        assert {"acl-unmapped"} <= {f["kind"] for f in rep.json()["findings"]}
        # The next pass names what is still not carried again, and sends the target nothing.
        before = len(proxy.transcript("up"))
        again = cli("migrate", project, "--json")
        assert again.code == ExitCode.FINDINGS and "acl-unmapped" in {f["kind"] for f in findings(again)}
        assert b"SETACL" not in proxy.transcript("up")[before:].upper()
    finally:
        proxy.stop()


def test_dovecot_to_cyrus(dovecot_factory: Any, cyrus_factory: Any, group: str, tmp_path: Any) -> None:
    src = dovecot(dovecot_factory, "slash", group, USERS, acl_global="Private owner lrwstipekxe\n")
    tgt = cyrus(cyrus_factory, TARGET_USERS)
    scenario(src, tgt, group, tmp_path, unreadable=True)


def test_cyrus_to_dovecot(dovecot_factory: Any, cyrus_factory: Any, group: str, tmp_path: Any) -> None:
    """The group has another name on the target, renamed by the project file."""
    src = cyrus(cyrus_factory, USERS)
    tgt = dovecot(dovecot_factory, "dotted", group + "-t", TARGET_USERS)
    scenario(src, tgt, group, tmp_path, unreadable=False, extra=f'[permissions.groups]\n"{group}" = "{group}-t"\n')


def test_dovecot_slash_to_dotted(dovecot_factory: Any, group: str, tmp_path: Any) -> None:
    src = dovecot(dovecot_factory, "slash", group, USERS)
    tgt = dovecot(dovecot_factory, "dotted", group, TARGET_USERS)
    scenario(src, tgt, group, tmp_path, unreadable=False)


def test_target_without_acl_is_a_finding(dovecot_factory: Any, group: str, tmp_path: Any) -> None:
    src = dovecot(dovecot_factory, "slash", group, USERS)
    tgt = Side(dovecot_factory(style="slash", users=TARGET_USERS), "dovecot", ("admin", "adminpw"))
    src.create("alice", "INBOX")
    src.setacl("alice", "INBOX", "bob", "lrs")
    project = write_project(tmp_path / "p", src.server, tgt.server, [], csv_text=CSV)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out
    (f,) = findings(r)
    assert f["kind"] == "acl-unsupported" and f["source_folder"] == "INBOX" and "bob" in f["message"]
    assert r.json()["copied"] == 1  # the mail went on


def test_public_folders_keep_their_acl(cyrus_factory: Any, group: str, tmp_path: Any) -> None:
    """Cyrus shared mailboxes (the public unit) to Cyrus: each folder's entries arrive
    translated (bob -> bob.t, the group), the admin's own access is not carried, and a second
    pass sends no SETACL."""
    src, tgt = cyrus(cyrus_factory, USERS), cyrus(cyrus_factory, TARGET_USERS)
    admin = src.login(*CYRUS_ADMIN)
    try:
        admin.create_folder("Team")
        admin.setacl("Team", "cyrus", "lrswipkxtecda")  # the unit's login reads it
        admin.setacl("Team", "bob", "lrswi")
        admin.setacl("Team", f"group:{group}", "lr")
        admin.append("Team", MESSAGE % b"public")
    finally:
        admin.logout()
    proxy = TcpProxy.start(tgt.server.host, tgt.server.port, record=True)
    try:
        project = write_project(
            tmp_path / "p",
            src.server,
            tgt.server,
            [],
            csv_text=CSV,
            source_admin=CYRUS_ADMIN,
            target_admin=CYRUS_ADMIN,
            target_port=proxy.port,
            extra="\n[public]\n",
        )
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out
        (unit,) = [a for a in r.json()["accounts"] if a["account"] == "#public"]
        assert unit["permissions"]["set"] == 3 and not findings(r), unit
        t = tgt.login(*CYRUS_ADMIN)
        try:
            acl = {k.decode(): v.decode() for k, v in t.getacl("Team")}
        finally:
            t.logout()
        assert acl["bob.t"] == "lrswi" and acl[f"group:{group}"] == "lr" and "bob" not in acl
        assert access(tgt, "bob.t", "bobpw", "Team", try_append=True) == ("lrswi", True, True)
        # dave: the group's lr and everyone's lrs (Cyrus' defaultacl for a new shared mailbox)
        assert access(tgt, "dave", "davepw", "Team", try_append=True) == ("lrs", True, False)
        assert access(src, "dave", "davepw", "Team", try_append=False)[:2] == ("lrs", True)
        before = len(proxy.transcript("up"))
        again = cli("migrate", project, "--json")
        assert again.code == ExitCode.OK, again.out
        assert b"SETACL" not in proxy.transcript("up")[before:].upper()
    finally:
        proxy.stop()
