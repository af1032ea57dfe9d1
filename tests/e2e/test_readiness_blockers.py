"""End to end against real servers: ``mailferry check`` lists, per account, what the source holds
that the target can't take (area ``blockers``), with what happens to it, the fix and the exit code.

One source and a few targets for the whole module; each test is one account (its own user on the
servers) with exactly one blocker planted, checked alone, so that each exit code is its own. A
clean account says ready.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import cli, write_project
from imapclient import IMAPClient

from mailferry.connectors.sieve import SieveEndpoint, SieveLogin, SieveStore
from mailferry.errors import ExitCode
from mailferry.sandbox.servers import seed_messages

NAMES = (
    "clean",
    "big",
    "tally",
    "allbig",
    "kw",
    "kwgone",
    "longname",
    "badchar",
    "deep",
    "ghostacl",
    "sieveoff",
    "sieveon",
    "bob",
)
USERS = {n: f"{n}pw" for n in NAMES}
DOVECOT_ADMIN = ("admin", "adminpw")
CYRUS_ADMIN = ("cyrus", "cyruspw")
FOREVERYPART = b'require ["foreverypart"];\nforeverypart {\n  keep;\n}\n'  # Dovecot has it, Cyrus 3.6 not
PLAIN = b'require ["fileinto"];\nif header :contains "subject" "x" { fileinto "INBOX"; }\n'


def message(i: int, size: int = 0) -> bytes:
    return (
        (
            f"From: a@example.org\r\nTo: b@example.org\r\nSubject: m{i}\r\n"
            f"Message-ID: <b{i}.{size}@example.org>\r\n\r\n"
        ).encode()
        + b"x" * size
        + b"\r\n"
    )


@pytest.fixture(scope="module")
def servers(dovecot_factory: Any, cyrus_factory: Any) -> dict[str, Any]:
    src = dovecot_factory(style="slash", users=USERS, acl=True, sieve=True, max_keyword_length=200)
    out = {
        "src": src,
        "cyrus": cyrus_factory(users=USERS, max_message_size=60_000),  # APPENDLIMIT=60000
        "dovecot": dovecot_factory(style="slash", users=USERS),  # mail_max_keyword_length: the default, 50
        "dotted": dovecot_factory(style="dotted", users=USERS),  # Maildir++: a name of at most 254 bytes
    }
    for user in NAMES:  # every account holds some ordinary mail in ordinary folders
        seed_messages(src.host, src.port, user, USERS[user], "INBOX", [message(i) for i in range(3)])
        seed_messages(src.host, src.port, user, USERS[user], "Projects/2024", [message(9)], flags=("$Client",))
    return out


def project(
    tmp: Path, servers: dict[str, Any], user: str, target: str, *, sieve: bool = False, extra: str = ""
) -> Path:
    tgt = servers[target]
    if sieve:
        extra += (
            f'\n[source.sieve]\nurl = "sieve://127.0.0.1:{servers["src"].sieve_port}"\nsecurity = "none"\n'
            f'[target.sieve]\nurl = "sieve://127.0.0.1:{tgt.sieve_port}"\nsecurity = "none"\n'
        )
    return write_project(
        tmp / f"{user}-{target}{'-x' if extra else ''}",
        servers["src"],
        tgt,
        [user],
        source_admin=DOVECOT_ADMIN,
        target_admin=CYRUS_ADMIN if target == "cyrus" else DOVECOT_ADMIN,
        extra=extra,
    )


def blockers(result: Any, user: str) -> list[dict[str, Any]]:
    data = result.json()
    [area] = [a for a in data["areas"] if a["area"] == "blockers"]
    mine = [c for c in area["checks"] if c.get("account") == user]
    [row] = [r for r in data["accounts"] if r["account"] == user]
    assert row["blockers"] == mine  # the account's row carries the same checks
    return mine


def only_problem(result: Any, user: str, status: str) -> dict[str, Any]:
    """The one check of ``user`` that is not ok: its area, status, account, and a fix."""
    bad = [c for c in blockers(result, user) if c["status"] != "ok"]
    assert len(bad) == 1, bad
    [c] = bad
    assert c["area"] == "blockers" and c["status"] == status and c["account"] == user, c
    assert c["fix"] and c["what"], c
    return c


def create(server: Any, user: str, name: str) -> None:
    c = IMAPClient(server.host, server.port, ssl=False, timeout=20)
    c.login(user, USERS[user])
    try:
        c.create_folder(name)
    finally:
        c.logout()


def test_a_clean_account_has_no_blocker(servers: dict[str, Any], tmp_path: Path) -> None:
    for target in ("cyrus", "dovecot", "dotted"):
        r = cli("check", project(tmp_path, servers, "clean", target), "--json")
        assert r.code == ExitCode.OK, r.out
        [c] = blockers(r, "clean")
        assert c["status"] == "ok" and c["facts"]["messages"] == 4 and c["facts"]["folders"] >= 2, c
        [row] = r.json()["accounts"]
        assert row["verdict"] == "ready" and r.json()["verdict"] == "ready", row


def test_a_message_over_the_targets_limit(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    seed_messages(src.host, src.port, "big", USERS["big"], "Projects/2024", [message(50, 100_000)])
    r = cli("check", project(tmp_path, servers, "big", "cyrus"), "--json")
    c = only_problem(r, "big", "warning")
    assert "1 message over the target's limit of 60 KB" in c["what"] and "stay on the source" in c["what"]
    assert "maxmessagesize" in c["fix"] and "100 KB" in c["fix"], c
    assert c["facts"]["over_limit"] == 1 and c["facts"]["limit"] == 60_000
    assert r.code == ExitCode.OK  # a warning holds nothing back
    assert cli("check", project(tmp_path, servers, "big", "cyrus"), "--strict").code == ExitCode.FINDINGS
    # A folder the project leaves out doesn't count: its messages don't go anywhere.
    excluded = project(tmp_path, servers, "big", "cyrus", extra='[folders]\nexclude = ["^Projects/"]\n')
    r = cli("check", excluded, "--json")
    [ok] = blockers(r, "big")
    assert ok["status"] == "ok" and ok["facts"]["messages"] == 3 and r.code == ExitCode.OK, ok


def test_check_reads_totals_and_the_large_messages_not_every_message(servers: dict[str, Any], tmp_path: Path) -> None:
    """A source with STATUS=SIZE (Dovecot): check takes each folder's totals from STATUS, its
    keywords from SELECT confirmed by SEARCH, and names only the messages over the target's
    limit (SEARCH LARGER): no FETCH of every message's size, as a 10,000-message mailbox would
    otherwise cost. The figures are those of reading every message."""
    from mailferry.sandbox.servers import TcpProxy

    src = servers["src"]
    seed_messages(src.host, src.port, "tally", USERS["tally"], "Projects/2024", [message(60, 100_000)])
    proxy = TcpProxy.start(src.host, src.port, record=True)
    try:
        path = write_project(
            tmp_path / "tally",
            src,
            servers["cyrus"],
            ["tally"],
            source_admin=DOVECOT_ADMIN,
            target_admin=CYRUS_ADMIN,
            source_port=proxy.port,
        )
        r = cli("check", path, "--json")
        up = proxy.transcript("up").decode(errors="replace")
    finally:
        proxy.stop()
    c = only_problem(r, "tally", "warning")
    assert c["facts"]["over_limit"] == 1 and c["facts"]["messages"] == 5, c
    [row] = r.json()["accounts"]
    assert row["source"]["messages"] == 5 and row["source"]["bytes"] > 100_000, row["source"]
    assert "(MESSAGES SIZE)" in up and "LARGER 60000" in up and "RETURN (MIN) KEYWORD $Client" in up, up
    assert "RFC822.SIZE INTERNALDATE" not in up  # no per-message inventory of the source
    fetched = [line for line in up.splitlines() if "FETCH" in line]
    assert all("1:*" not in line for line in fetched), fetched


def test_every_message_over_the_targets_limit_blocks_the_account(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    c = IMAPClient(src.host, src.port, ssl=False, timeout=20)
    c.login("allbig", USERS["allbig"])
    for folder in ("INBOX", "Projects/2024"):  # make it hold only big messages
        c.select_folder(folder)
        c.delete_messages(c.search("ALL"))
        c.expunge()
    c.logout()
    seed_messages(src.host, src.port, "allbig", USERS["allbig"], "INBOX", [message(i, 70_000) for i in range(2)])
    r = cli("check", project(tmp_path, servers, "allbig", "cyrus"), "--json")
    c2 = only_problem(r, "allbig", "blocked")
    assert "every message" in c2["what"]
    assert r.code == ExitCode.FINDINGS and r.json()["verdict"] == "blocked"


def test_a_keyword_longer_than_the_target_stores(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    long = "$" + "k" * 59
    seed_messages(src.host, src.port, "kw", USERS["kw"], "INBOX", [message(60)], flags=(long, "$Fine"))
    r = cli("check", project(tmp_path, servers, "kw", "dovecot"), "--json")
    c = only_problem(r, "kw", "warning")
    assert long in c["what"] and "$Fine" not in c["what"] and "keyword-dropped" in c["what"]
    assert "mail_max_keyword_length = 60" in c["fix"], c
    assert r.code == ExitCode.OK
    # Cyrus takes it: no blocker there.
    ok = cli("check", project(tmp_path, servers, "kw", "cyrus"), "--json")
    assert [c["status"] for c in blockers(ok, "kw")] == ["ok"]


def test_a_keyword_no_message_carries_any_more_is_no_blocker(servers: dict[str, Any], tmp_path: Path) -> None:
    """Dovecot keeps a keyword in the folder's FLAGS once it was set, on a message or not: check
    names only the keywords messages carry (each confirmed by SEARCH KEYWORD), not the history."""
    src = servers["src"]
    long = "$" + "g" * 59
    seed_messages(src.host, src.port, "kwgone", USERS["kwgone"], "INBOX", [message(61)], flags=(long,))
    r = cli("check", project(tmp_path, servers, "kwgone", "dovecot"), "--json")
    assert long in only_problem(r, "kwgone", "warning")["what"]  # while a message carries it
    c = IMAPClient(src.host, src.port, ssl=False, timeout=20)
    try:
        c.login("kwgone", USERS["kwgone"])
        c.select_folder("INBOX")
        c.remove_flags(c.search(["KEYWORD", long]), [long])
        c.close_folder()
        flags = c.select_folder("INBOX", readonly=True)[b"FLAGS"]  # still defined in the folder
    finally:
        c.logout()
    assert long.encode() in flags
    r = cli("check", project(tmp_path / "again", servers, "kwgone", "dovecot"), "--json")
    assert [c["status"] for c in blockers(r, "kwgone")] == ["ok"], blockers(r, "kwgone")
    [row] = r.json()["accounts"]
    assert not any(long in w for w in row["warnings"]) and r.code == ExitCode.OK, row


def test_a_folder_name_too_long_for_cyrus(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    name = "/".join(("Archive" + "a" * 193, "b" * 200, "c" * 100))  # 502 bytes: Dovecot takes it, Cyrus not
    seed_messages(src.host, src.port, "longname", USERS["longname"], name, [message(70)])
    r = cli("check", project(tmp_path, servers, "longname", "cyrus"), "--json")
    c = only_problem(r, "longname", "blocked")
    assert "490" in c["what"] and "fails the whole account" in c["what"] and name in c["facts"]["folders"]
    assert "[[folders.rename]]" in c["fix"]
    assert r.code == ExitCode.FINDINGS and r.json()["accounts"][0]["verdict"] == "blocked"
    # What the check predicts is what the server does: Cyrus refuses that very name.
    cy = servers["cyrus"]
    with pytest.raises(Exception, match="Invalid mailbox name"):
        create(cy, "longname", "INBOX/" + name)
    # Dovecot's slash layout takes it (created on the source so): only a warning there, since a
    # Dovecot with the same separator may store Maildir++, which would refuse it.
    ok = cli("check", project(tmp_path, servers, "longname", "dovecot"), "--json")
    assert "Maildir++" in only_problem(ok, "longname", "warning")["what"] and ok.code == ExitCode.OK


def test_a_folder_name_with_a_character_cyrus_refuses(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    seed_messages(src.host, src.port, "badchar", USERS["badchar"], "Q&A; notes", [message(80)])
    r = cli("check", project(tmp_path, servers, "badchar", "cyrus"), "--json")
    c = only_problem(r, "badchar", "blocked")
    assert "';'" not in c["what"] and ";" in c["what"] and "Q&A; notes" in c["facts"]["folders"]
    assert r.code == ExitCode.FINDINGS


def test_a_folder_too_deep_for_maildir_plus_plus(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    name = "/".join(f"level{i:02d}" for i in range(30))  # 239 bytes, 30 levels: 245 with the prefix dots
    name += "/" + "z" * 20
    seed_messages(src.host, src.port, "deep", USERS["deep"], name, [message(90)])
    r = cli("check", project(tmp_path, servers, "deep", "dotted"), "--json")
    c = only_problem(r, "deep", "blocked")
    assert "Maildir++" in c["what"] and "254" in c["what"]
    assert r.code == ExitCode.FINDINGS
    dotted = servers["dotted"]
    with pytest.raises(Exception):  # noqa: B017 - Dovecot answers "NO Not found" to a name that long
        create(dotted, "deep", "INBOX." + name.replace("/", "."))
    # The slash layout takes it (a warning only: whether it stores Maildir++ can't be seen).
    slash = cli("check", project(tmp_path, servers, "deep", "dovecot"), "--json")
    assert slash.code == ExitCode.OK
    only_problem(slash, "deep", "warning")


def test_an_acl_identifier_without_mapping(servers: dict[str, Any], tmp_path: Path) -> None:
    src = servers["src"]
    c = IMAPClient(src.host, src.port, ssl=False, timeout=20)
    c.login("ghostacl", USERS["ghostacl"])
    c.setacl("Projects/2024", "ghost", "lr")  # no account of the project
    c.logout()
    r = cli("check", project(tmp_path, servers, "ghostacl", "cyrus"), "--json")
    ch = only_problem(r, "ghostacl", "warning")
    assert ch["facts"]["kind"] == "acl-unmapped" and "ghost" in ch["what"] and "'lr'" in ch["what"]
    assert "accounts CSV" in ch["fix"] and "ghost" in ch["fix"]
    assert r.code == ExitCode.OK


def sieve_put(server: Any, user: str, name: str, content: bytes, *, active: bool) -> None:
    st = SieveStore(
        SieveEndpoint("127.0.0.1", server.sieve_port, "none", timeout=20),
        SieveLogin(user, DOVECOT_ADMIN[1], admin=DOVECOT_ADMIN[0]),
        readonly=False,
    )
    try:
        st.put(name, content)
        if active:
            st.set_active(name)
    finally:
        st.close()


@pytest.mark.parametrize("active", [False, True], ids=["inactive", "active"])
def test_a_sieve_script_needing_an_extension_the_target_lacks(
    servers: dict[str, Any], tmp_path: Path, active: bool
) -> None:
    user = "sieveon" if active else "sieveoff"
    src = servers["src"]
    sieve_put(src, user, "main", PLAIN, active=not active)
    sieve_put(src, user, "parts", FOREVERYPART, active=active)
    r = cli("check", project(tmp_path, servers, user, "cyrus", sieve=True), "--json")
    c = only_problem(r, user, "blocked" if active else "warning")
    assert "'parts'" in c["what"] and "foreverypart" in c["what"] and "foreverypart" in c["fix"]
    assert c["facts"] == {"script": "parts", "missing": ["foreverypart"], "active": active}
    assert ("no longer filtered" in c["what"]) is active
    assert r.code == (ExitCode.FINDINGS if active else ExitCode.OK)


def test_an_acl_right_the_target_cant_grant(cyrus_factory: Any, dovecot_factory: Any, tmp_path: Path) -> None:
    """Cyrus' site right ``1`` has no letter on Dovecot: the entry goes without it, a warning."""
    users = {"rights": "rightspw", "bob": "bobpw"}
    src = cyrus_factory(users=users)
    tgt = dovecot_factory(style="slash", users=users, acl=True)
    seed_messages(src.host, src.port, "rights", "rightspw", "INBOX/Team", [message(1)])
    c = IMAPClient(src.host, src.port, ssl=False, timeout=20)
    c.login("rights", "rightspw")
    c.setacl("INBOX/Team", "bob", "lr1")
    c.logout()
    csv = "source_user,target_user\nrights,rights\nbob,bob\n"  # bob is an account of the project: mapped
    p = write_project(tmp_path / "p", src, tgt, [], csv_text=csv, source_admin=CYRUS_ADMIN)
    r = cli("check", p, "--account", "rights", "--json")
    ch = only_problem(r, "rights", "warning")
    assert ch["facts"]["kind"] == "acl-rights-unsupported" and "can't grant '1'" in ch["what"] and "bob" in ch["what"]
    assert [e["left_out"] for e in ch["facts"]["entries"]] == ["1"]
    assert r.code == ExitCode.OK
    # Without that right, nothing to say.
    c = IMAPClient(src.host, src.port, ssl=False, timeout=20)
    c.login("rights", "rightspw")
    c.setacl("INBOX/Team", "bob", "lr")
    c.logout()
    ok = cli("check", p, "--account", "rights", "--json")
    assert [x["status"] for x in blockers(ok, "rights")] == ["ok"] and ok.code == ExitCode.OK


def test_tasks_into_a_target_calendar_that_takes_only_events(dovecot_factory: Any, tmp_path: Path) -> None:
    """A calendar already on the target (Radicale) declares only VEVENT; the source's calendar of
    that name holds a task: a warning naming the calendar, the count and the fix."""
    from dav_org import dav_only_project, event, put_named, store, todo

    from mailferry.sandbox.dav_servers import RadicaleServer

    users = {"alice": "alicepw"}
    rs = RadicaleServer.start(tmp_path / "rs", users=users)
    rt = RadicaleServer.start(tmp_path / "rt", users=users)
    try:
        st = store(rs.url, "alice", "alicepw")
        put_named(st, "Work", "calendar", [("e1", event("e1", "Plan", "20271104T100000Z")), ("t1", todo("t1"))])
        put_named(st, "Home", "calendar", [("t2", todo("t2"))])
        st.close()
        st = store(rt.url, "alice", "alicepw")
        put_named(st, "Work", "calendar", [], components=("VEVENT",))
        st.close()
        imap = dovecot_factory(style="slash", users=users)
        project = dav_only_project(tmp_path / "p", imap, imap, rs.url, rt.url, users)
        r = cli("check", project, "--json")
        [area] = [a for a in r.json()["areas"] if a["area"] == "blockers"]
        [c] = [c for c in area["checks"] if c["subject"].startswith("calendar ")]
        assert c["subject"] == "calendar Work" and c["status"] == "warning" and c["account"] == "alice", c
        assert "1 task would go into the target's calendar 'Work', which takes only VEVENT" in c["what"]
        assert "VTODO" in c["fix"] and c["facts"]["outside"] == {"VTODO": 1}
        assert r.code == ExitCode.OK  # Home is created by migrate with the source's set: no warning
    finally:
        rs.close()
        rt.close()
