"""Public (shared) folders as their own unit, "#public", between real Dovecot and Cyrus servers.

Dovecot's public namespace keeps \\Seen per user (INDEXPVT), Cyrus' shared mailboxes too (its
default ``sharedseen: false``): each user's own \\Seen and subscriptions are carried to the
mapped target user. Personal accounts never copy public folders.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers import cli, write_project
from imapclient import IMAPClient

from conftest import corpus_messages
from mailferry import api
from mailferry.config import load_project
from mailferry.errors import ExitCode

USERS = {"alice": "alicepw", "bob": "bobpw"}
PUBLISHER = ("publisher", "publisherpw")
# Source public tree: (folder under the public prefix, [(corpus index, flags, days back)]).
TREE: list[tuple[tuple[str, ...], list[tuple[int, tuple[str, ...], int]]]] = [
    (("Team",), [(0, ("\\Flagged",), 400), (1, ("\\Answered", "$Label1"), 30), (2, (), 10), (3, ("\\Seen",), 2)]),
    (("Team", "Archive"), [(4, (), 900), (5, ("\\Flagged", "\\Seen"), 800)]),
    (("Announcements",), [(6, (), 5), (7, ("\\Seen",), 1), (8, (), 0)]),
]
# Each user's own \Seen on the source: (folder, index in that folder's list).
SEEN = {"alice": {(("Team",), 0), (("Team",), 1), (("Announcements",), 2)}, "bob": {(("Team",), 2)}}
SUBSCRIBED = {"alice": {("Team",)}, "bob": {("Announcements",), ("Team", "Archive")}}


def _client(server: Any, user: str, password: str, *, admin: tuple[str, str] | None = None) -> IMAPClient:
    c = IMAPClient(server.host, server.port, ssl=False, timeout=30)
    if admin is None:
        c.login(user, password)
    else:
        c.plain_login(admin[0], admin[1], user)
    return c


def _date(days: int) -> datetime:
    return datetime(2026, 11, 1, 9, 30, tzinfo=UTC) - timedelta(days=days, minutes=days)


def seed_public(side: Any) -> None:
    """Create the public tree with corpus messages, then each user's \\Seen and subscriptions."""
    corpus = [b for _, b in corpus_messages()]
    name = side.name
    c = side.admin()
    uids: dict[tuple[str, ...], list[int]] = {}
    try:
        for parts, msgs in TREE:
            with_parents = [parts[: i + 1] for i in range(len(parts))]
            for p in with_parents:
                if not c.folder_exists(name(*p)):
                    c.create_folder(name(*p))
            side.grant(c, name(*parts))
            uids[parts] = []
            for idx, flags, days in msgs:
                resp = c.append(name(*parts), corpus[idx], flags=list(flags), msg_time=_date(days))
                uids[parts].append(int(resp.split(b"APPENDUID ", 1)[1].split(b" ")[1].split(b"]")[0]))
    finally:
        c.logout()
    for user in USERS:
        u = side.user(user)
        try:
            for parts, i in SEEN[user]:
                u.select_folder(name(*parts))
                u.add_flags([uids[parts][i]], [b"\\Seen"])
            for parts in SUBSCRIBED[user]:
                u.subscribe_folder(name(*parts))
        finally:
            u.logout()


def public_holdings(c: IMAPClient, names: list[str]) -> dict[str, list[tuple[bytes, tuple[bytes, ...], str]]]:
    """folder -> sorted (body, flags, INTERNALDATE) as this login sees them."""
    out = {}
    for n in names:
        c.select_folder(n, readonly=True)
        uids = c.search("ALL")
        data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if uids else {}
        out[n] = sorted(
            (
                d[b"BODY[]"],
                tuple(sorted(f for f in d[b"FLAGS"] if f != b"\\Recent")),
                d[b"INTERNALDATE"].astimezone(UTC).isoformat(),
            )
            for d in data.values()
        )
    return out


def seen_bodies(c: IMAPClient, names: list[str]) -> dict[str, set[bytes]]:
    """folder -> bodies of the messages this login has \\Seen."""
    out = {}
    for n in names:
        c.select_folder(n, readonly=True)
        uids = c.search("SEEN")
        out[n] = {d[b"BODY[]"] for d in (c.fetch(uids, ["BODY.PEEK[]"]) if uids else {}).values()}
    return out


def subscribed(c: IMAPClient) -> set[str]:
    return {n for _f, _d, n in c.list_sub_folders()}


class _Cyrus:
    """Cyrus' shared mailboxes: top-level, created by the admin (who writes only with rights
    it gives itself: an admin has only 'l' and 'a' of its own)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def grant(self, c: IMAPClient, folder: str) -> None:
        c.setacl(folder, "cyrus", "lrswipkxtecda")

    def name(self, *parts: str) -> str:
        return "/".join(parts)

    def admin(self) -> IMAPClient:
        return _client(self.server, "cyrus", "cyruspw")

    def user(self, name: str) -> IMAPClient:
        return _client(self.server, name, "", admin=("cyrus", "cyruspw"))


class _Dovecot:
    def __init__(self, server: Any, root: str = "Public") -> None:
        self.server = server
        self.root = root

    def grant(self, c: IMAPClient, folder: str) -> None:
        pass  # without the ACL plugin every user writes public folders

    def name(self, *parts: str) -> str:
        return self.root + self.server.separator + self.server.separator.join(parts)

    def admin(self) -> IMAPClient:
        return _client(self.server, f"{PUBLISHER[0]}*admin", "adminpw")

    def user(self, name: str) -> IMAPClient:
        return _client(self.server, f"{name}*admin", "adminpw")


def _names(side: Any) -> list[str]:
    return [side.name(*parts) for parts, _ in TREE]


PUBLIC_DOVECOT = '\n[public]\nsource_user = "publisher"\n'
PUBLIC_TO_DOVECOT = '\n[public]\ntarget_user = "publisher"\n'
PUBLIC_BOTH = '\n[public]\nsource_user = "publisher"\ntarget_user = "publisher"\n'
SMALL = "batch_messages = 2\nconnections_per_account = 2\n"  # goes on [performance]


def _check_migrated(src: Any, tgt: Any, project: Path) -> None:
    """Everything the tests of both directions assert after the first migrate."""
    first = cli("migrate", project, "--json")
    data = first.json()
    rows = {r["account"]: r for r in data["accounts"]}
    assert "#public" in rows, first.out
    assert rows["#public"]["copied"] == sum(len(m) for _, m in TREE), first.out
    assert "public" in data["items"]
    # The whole tree, byte for byte, with flags and INTERNALDATE (as the unit's login sees them).
    s, t = src.admin(), tgt.admin()
    try:
        assert list(public_holdings(t, _names(tgt)).values()) == list(public_holdings(s, _names(src)).values())
    finally:
        s.logout()
        t.logout()
    # Each user's own \Seen and subscriptions.
    for user in USERS:
        su, tu = src.user(user), tgt.user(user)
        try:
            want = seen_bodies(su, _names(src))
            assert sum(len(v) for v in want.values()) == len(SEEN[user])
            got = seen_bodies(tu, _names(tgt))
            assert [got[tgt.name(*p)] for p, _ in TREE] == [want[src.name(*p)] for p, _ in TREE], user
            assert {tgt.name(*p) for p in SUBSCRIBED[user]} <= subscribed(tu), user
        finally:
            su.logout()
            tu.logout()
    pub = rows["#public"]["public"]
    assert pub["seen_added"] == sum(len(v) for v in SEEN.values())
    assert pub["subscribed"] == sum(len(v) for v in SUBSCRIBED.values())
    # verify --deep is clean on the unit; the plan shows it; the report lists it.
    v = cli("verify", project, "--deep", "--json")
    vrows = {r["account"]: r for r in v.json()["accounts"]}
    assert vrows["#public"]["clean"], v.out
    assert {f["target_folder"] for f in vrows["#public"]["folders"]} == set(_names(tgt))
    plan = cli("plan", project, "--json").json()
    prow = {r["account"]: r for r in plan["accounts"]}["#public"]
    assert {f["source_folder"] for f in prow["folders"]} >= set(_names(src))
    assert prow["messages"] == 0
    report = cli("report", project, "--json").json()
    assert "#public" in {a["account"] for a in report["accounts"]}
    # A second migrate copies nothing and writes nothing (no \Seen, no subscription).
    modseqs = _modseqs(tgt)
    again = cli("migrate", project, "--json").json()
    assert _modseqs(tgt) == modseqs
    arow = {r["account"]: r for r in again["accounts"]}["#public"]
    assert (arow["copied"], arow["flag_updates"]) == (0, 0), again
    assert arow["public"]["seen_added"] == arow["public"]["seen_removed"] == arow["public"]["subscribed"] == 0


def _modseqs(side: Any) -> dict[str, tuple[int, int]]:
    """HIGHESTMODSEQ and UIDNEXT of each target public folder: any write moves one of them."""
    c = side.admin()
    try:
        return {
            n: (int(st[b"HIGHESTMODSEQ"]), int(st[b"UIDNEXT"]))
            for n in _names(side)
            if (st := c.folder_status(n, ["HIGHESTMODSEQ", "UIDNEXT"]))
        }
    finally:
        c.logout()


def test_dovecot_public_namespace_to_cyrus_shared_mailboxes(dovecot_factory, cyrus_factory, tmp_path: Path) -> None:
    source = dovecot_factory(style="slash", users=USERS | dict([PUBLISHER]), public="Public")
    target = cyrus_factory(users=dict(USERS))
    src, tgt = _Dovecot(source), _Cyrus(target)
    seed_public(src)
    # alice has a personal folder named like a public one: it stays hers, and hers only.
    a = _client(source, "alice", "alicepw")
    a.create_folder("Team")
    a.append("Team", b"Subject: mine\r\nMessage-ID: <mine@x>\r\n\r\nalice's own\r\n")
    a.logout()
    project = write_project(tmp_path, source, target, USERS, target_admin=("cyrus", "cyruspw"), extra=PUBLIC_DOVECOT)
    check = {r["account"]: r for r in cli("check", project, "--json").json()["accounts"]}
    assert check["alice"]["source"]["folders"] == 2  # INBOX and her Team: no public folder
    # The public unit: its logins work, its namespaces found (Dovecot "Public/", Cyrus "").
    pub = check["#public"]
    assert pub["ready"], pub
    assert pub["source"]["namespace"] == {"prefix": "Public/", "separator": "/"}
    assert pub["target"]["namespace"] == {"prefix": "", "separator": "/"}
    assert (pub["source"]["folders"], pub["source"]["messages"]) == (3, sum(len(m) for _, m in TREE))
    _check_migrated(src, tgt, project)
    human = cli("migrate", project)
    assert human.code == ExitCode.OK and "#public: per user" in human.out, human.out + human.err
    ta = tgt.user("alice")
    try:
        ta.select_folder("INBOX/Team", readonly=True)
        assert len(ta.search("ALL")) == 1  # her own folder, without the public one's messages
        names = {n for _f, _d, n in ta.list_folders()}
        assert not any(n.startswith("INBOX/Public") for n in names), names
    finally:
        ta.logout()


def test_cyrus_shared_mailboxes_to_dovecot_public_namespace(dovecot_factory, cyrus_factory, tmp_path: Path) -> None:
    source = cyrus_factory(users=dict(USERS))
    target = dovecot_factory(style="slash", users=USERS | dict([PUBLISHER]), public="Public")
    src, tgt = _Cyrus(source), _Dovecot(target)
    seed_public(src)
    # Bad input: a personal folder that would land in the target's public namespace; and one
    # named like a public folder, which is simply hers.
    a = src.user("alice")
    a.create_folder("INBOX/Team")
    a.append("INBOX/Team", b"Subject: mine\r\nMessage-ID: <mine@x>\r\n\r\nalice's own\r\n")
    a.create_folder("INBOX/Public")
    a.create_folder("INBOX/Public/Team")
    # And a shared mailbox the unit's login (the admin) sees but may not read: only alice's.
    c = src.admin()
    c.create_folder("Secret")
    c.setacl("Secret", "alice", "lrswi")
    c._imap._simple_command("DELETEACL", '"Secret"', "anyone")
    c.logout()
    a.append("INBOX/Public/Team", b"Subject: clash\r\nMessage-ID: <clash@x>\r\n\r\nprivate\r\n")
    a.logout()
    project = write_project(tmp_path, source, target, USERS, source_admin=("cyrus", "cyruspw"), extra=PUBLIC_TO_DOVECOT)
    # This Dovecot has no ACL plugin: the shared mailboxes' ACLs would be findings on every pass
    # (acl-unsupported, see test_acl.py); this test is about the unit's mail and per-user state.
    project.write_text(project.read_text().replace('name = "t"\n', 'name = "t"\nitems = ["mail", "public"]\n', 1))
    first = cli("migrate", project, "--json")
    assert first.code == ExitCode.FINDINGS, first.out
    kinds = {(f["account"], f["kind"], f["source_folder"]) for f in first.json()["findings"]}
    assert ("alice", "folder-in-shared-namespace", "INBOX/Public/Team") in kinds
    assert ("#public", "public-folder-unreadable", "Secret") in kinds
    t = tgt.admin()
    try:  # the private message never reached the public folder
        t.select_folder("Public/Team", readonly=True)
        bodies = {d[b"BODY[]"] for d in t.fetch(t.search("ALL"), ["BODY.PEEK[]"]).values()}
        assert len(bodies) == len(TREE[0][1])
        assert not any(b"private" in b or b"alice's own" in b for b in bodies)
    finally:
        t.logout()
    ta = tgt.user("alice")
    try:
        ta.select_folder("Team", readonly=True)
        mine = ta.fetch(ta.search("ALL"), ["BODY.PEEK[]"])
        assert [d[b"BODY[]"] for d in mine.values()] == [
            b"Subject: mine\r\nMessage-ID: <mine@x>\r\n\r\nalice's own\r\n"
        ]
    finally:
        ta.logout()
    # Drop the clash and check the rest as in the other direction.
    a = src.user("alice")
    a.delete_folder("INBOX/Public/Team")
    a.delete_folder("INBOX/Public")
    a.logout()
    c = src.admin()
    c.setacl("Secret", "anyone", "lrs")
    c.logout()
    _check_migrated_again(src, tgt, project)


def _check_migrated_again(src: Any, tgt: Any, project: Path) -> None:
    """As :func:`_check_migrated` after a first run that already carried the unit."""
    s, t = src.admin(), tgt.admin()
    try:
        assert list(public_holdings(t, _names(tgt)).values()) == list(public_holdings(s, _names(src)).values())
    finally:
        s.logout()
        t.logout()
    for user in USERS:
        su, tu = src.user(user), tgt.user(user)
        try:
            want, got = seen_bodies(su, _names(src)), seen_bodies(tu, _names(tgt))
            assert [got[tgt.name(*p)] for p, _ in TREE] == [want[src.name(*p)] for p, _ in TREE], user
            assert {tgt.name(*p) for p in SUBSCRIBED[user]} <= subscribed(tu), user
        finally:
            su.logout()
            tu.logout()
    v = cli("verify", project, "--deep", "--json")
    assert {r["account"]: r for r in v.json()["accounts"]}["#public"]["clean"], v.out
    cli("migrate", project, "--json")  # carries the folder made readable again
    modseqs = _modseqs(tgt)
    again = cli("migrate", project, "--json")
    assert _modseqs(tgt) == modseqs
    assert again.code == ExitCode.OK, again.out
    arow = {r["account"]: r for r in again.json()["accounts"]}["#public"]
    assert arow["copied"] == 0
    assert arow["public"]["seen_added"] == arow["public"]["seen_removed"] == arow["public"]["subscribed"] == 0


def test_seen_taken_back_when_the_source_user_unreads(dovecot_factory, tmp_path: Path) -> None:
    source = dovecot_factory(style="dotted", users=USERS | dict([PUBLISHER]), public="Public")
    target = dovecot_factory(style="slash", users=USERS | dict([PUBLISHER]), public="Public")
    src, tgt = _Dovecot(source), _Dovecot(target)
    seed_public(src)
    project = write_project(tmp_path, source, target, USERS, extra=PUBLIC_BOTH)
    assert cli("migrate", project, "--json").code == ExitCode.OK
    team = src.name("Team")
    u = src.user("alice")
    u.select_folder(team)
    u.remove_flags(u.search("SEEN"), [b"\\Seen"])
    u.logout()
    # The steps that need the public folders on the target (their ACLs) get the unit's job and
    # its folder map; called through the API as the ACL step will be.
    seen_steps: list[tuple[str, dict[str, str]]] = []
    result = api.migrate(
        load_project(project), after_public=[lambda job, fmap, _run: seen_steps.append((job.source_user, dict(fmap)))]
    )
    assert seen_steps == [("#public", {src.name(*p): tgt.name(*p) for p, _ in TREE})]
    row = {r["account"]: r for r in result.data["accounts"]}["#public"]
    assert row["public"]["seen_removed"] == 2
    tu = tgt.user("alice")
    try:
        assert seen_bodies(tu, [tgt.name("Team")])[tgt.name("Team")] == set()
    finally:
        tu.logout()


def _public_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(db.execute("SELECT COUNT(*) FROM messages WHERE account='#public'").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_kill_9_mid_copy_then_rerun_equals_an_uninterrupted_run(dovecot_factory, tmp_path: Path) -> None:
    users = USERS | dict([PUBLISHER])
    source = dovecot_factory(style="dotted", users=users, public="Public")
    killed_tgt = dovecot_factory(style="slash", users=users, public="Public")
    clean_tgt = dovecot_factory(style="slash", users=users, public="Public")
    src = _Dovecot(source)
    seed_public(src)
    corpus = [b for _, b in corpus_messages()]
    c = src.admin()
    c.create_folder(src.name("Bulk"))
    for i in range(120):
        c.append(src.name("Bulk"), corpus[i % len(corpus)], flags=[b"\\Flagged"] if i % 3 else [], msg_time=_date(i))
    c.logout()
    total = sum(len(m) for _, m in TREE) + 120
    public = PUBLIC_BOTH
    killed = write_project(tmp_path / "killed", source, killed_tgt, USERS, extra=SMALL + public)
    reference = write_project(tmp_path / "reference", source, clean_tgt, USERS, extra=SMALL + public)
    assert cli("migrate", reference, "--json").code == ExitCode.OK
    ledger = tmp_path / "killed" / "project.ledger.sqlite"
    kills = 0
    for threshold in (10, 50, 90):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailferry", "migrate", str(killed), "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if _public_rows(ledger) >= threshold:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    assert kills >= 2, "the kills should land while the public unit copies"
    final = cli("migrate", killed, "--json")
    assert final.code == ExitCode.OK, final.out + final.err
    names = [*_names(_Dovecot(killed_tgt)), "Public/Bulk"]
    k, r = _Dovecot(killed_tgt).admin(), _Dovecot(clean_tgt).admin()
    try:
        held = public_holdings(k, names)
        assert held == public_holdings(r, names)
        assert sum(len(v) for v in held.values()) == total
    finally:
        k.logout()
        r.logout()
    for user in USERS:
        ku, ru = _Dovecot(killed_tgt).user(user), _Dovecot(clean_tgt).user(user)
        try:
            assert seen_bodies(ku, names) == seen_bodies(ru, names)
        finally:
            ku.logout()
            ru.logout()
    v = cli("verify", killed, "--deep", "--json")
    assert v.json()["clean"], v.out
    assert cli("migrate", killed, "--json").json()["copied"] == 0


def test_without_public_no_account_copies_public_folders(dovecot_factory, tmp_path: Path) -> None:
    users = USERS | dict([PUBLISHER])
    source = dovecot_factory(style="slash", users=users, public="Public")
    target = dovecot_factory(style="slash", users=users, public="Public")
    src = _Dovecot(source)
    seed_public(src)
    project = write_project(tmp_path, source, target, USERS)
    result = cli("migrate", project, "--json")
    assert result.code == ExitCode.OK, result.out
    assert "#public" not in {r["account"] for r in result.json()["accounts"]}
    t = _Dovecot(target).admin()
    try:
        assert {n for _f, _d, n in t.list_folders() if n.startswith("Public/")} == set()
    finally:
        t.logout()


def test_exchange_style_public_folders_tree_to_another_layout(dovecot_factory, tmp_path: Path) -> None:
    """An Exchange-style "Public Folders" tree is a shared namespace with that prefix: it lands
    under the target's public prefix, here with another separator (Dovecot to Dovecot)."""
    users = USERS | dict([PUBLISHER])
    source = dovecot_factory(style="slash", users=users, public="Public Folders")
    target = dovecot_factory(style="dotted", users=users, public="Public")
    src, tgt = _Dovecot(source, "Public Folders"), _Dovecot(target)
    seed_public(src)
    project = write_project(tmp_path, source, target, USERS, extra=PUBLIC_BOTH)
    result = cli("migrate", project, "--json")
    assert result.code == ExitCode.OK, result.out
    s, t = src.admin(), tgt.admin()
    try:
        listed = sorted(n for _f, _d, n in t.list_folders() if n.startswith("Public."))
        assert listed == ["Public.Announcements", "Public.Team", "Public.Team.Archive"]
        assert list(public_holdings(t, _names(tgt)).values()) == list(public_holdings(s, _names(src)).values())
    finally:
        s.logout()
        t.logout()
    for user in USERS:
        su, tu = src.user(user), tgt.user(user)
        try:
            want, got = seen_bodies(su, _names(src)), seen_bodies(tu, _names(tgt))
            assert [got[tgt.name(*p)] for p, _ in TREE] == [want[src.name(*p)] for p, _ in TREE], user
        finally:
            su.logout()
            tu.logout()
    v = cli("verify", project, "--deep", "--json")
    assert v.json()["clean"], v.out
    alone = cli("migrate", project, "--account", "#public", "--json").json()
    assert [(r["account"], r["copied"]) for r in alone["accounts"]] == [("#public", 0)]
    assert [u["account"] for u in alone["accounts"][0]["public"]["users"]] == sorted(USERS)
