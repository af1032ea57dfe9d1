"""Mail filters and out-of-office (Sieve, RFC 5228, over ManageSieve RFC 5804) between Dovecot
(Pigeonhole) and Cyrus (timsieved), both directions, with a renamed user and a new mail domain.

Done when: scripts arrive rewritten (addresses through the address map, ``fileinto`` folders
through the mail engine's folder map) and the active one active; a mail delivered over LMTP on
the TARGET runs the carried script there (the vacation reply is the target's, the fileinto lands
in the target's folder); bad scripts each get a finding and the rest goes on; a second migrate
sends no PUTSCRIPT.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from helpers import cli, write_project
from imapclient import IMAPClient

from mailferry.connectors.sieve import SieveEndpoint, SieveLogin, SieveStore
from mailferry.errors import ExitCode
from mailferry.state.ledger import SqliteLedger

CYRUS_ADMIN = ("cyrus", "cyruspw")
DOVECOT_ADMIN = ("admin", "adminpw")

ADDRESSES = """
[calendars.addresses]
"alice@old.example" = "alice.t@new.example"
[calendars.domains]
"old.example" = "new.example"
"""

MAIN = """require ["fileinto", "vacation", "envelope"];
# mail from bob goes to the list folder; "bob@old.example" in a comment stays as it is
if address :is "from" "bob@old.example" {{
  fileinto "{lists}";
  stop;
}}
if header :contains "subject" "release" {{ fileinto "{dotted}"; stop; }}
vacation :days 1 :from "Alice <alice@old.example>" :addresses ["alice@old.example"]
  :subject "Away" text:
I am away until Monday.
.
;
"""
BROKEN = b'require "fileinto";\nif header :is "subject" "x" {\n  fileinto "Lists/Python";\n'
FOREVERYPART = b'require ["foreverypart"];\nforeverypart {\n  keep;\n}\n'  # Dovecot has it, Cyrus 3.6 not
EDITHEADER = b'require ["editheader"];\naddheader "X-Seen" "yes";\n'  # Cyrus has it, Dovecot (default) not


def sieve(server, port: int, user: str, admin: tuple[str, str], *, readonly: bool = True) -> SieveStore:
    return SieveStore(
        SieveEndpoint("127.0.0.1", port, "none", timeout=20),
        SieveLogin(user, admin[1], admin=admin[0]),
        readonly=readonly,
    )


def scripts_of(port: int, user: str, admin: tuple[str, str]) -> tuple[dict[str, bytes], str | None]:
    st = sieve(None, port, user, admin)
    try:
        listed = st.list_scripts()
        return {n: st.get(n) for n, _ in listed}, next((n for n, a in listed if a), None)
    finally:
        st.close()


def make_folders(server, user: str, password: str, names: list[str]) -> None:
    c = IMAPClient(server.host, server.port, ssl=False, timeout=20)
    c.login(user, password)
    try:
        for name in names:
            c.create_folder(name)
            seed = b"From: x@ext.example\r\nSubject: seed\r\nMessage-ID: <" + name.encode() + b"@s>\r\n\r\nx\r\n"
            c.append(name, seed)
    finally:
        c.logout()


def messages_in(server, user: str, password: str, folder: str) -> list[bytes]:
    c = IMAPClient(server.host, server.port, ssl=False, timeout=20)
    c.login(user, password)
    try:
        c.select_folder(folder, readonly=True)
        uids = c.search("ALL")
        return [d[b"BODY[]"] for d in c.fetch(uids, ["BODY.PEEK[]"]).values()] if uids else []
    finally:
        c.logout()


def project_for(
    tmp: Path, src, tgt, src_sieve: int, tgt_sieve: int, *, source_admin, target_admin, addresses: str = ADDRESSES
) -> Path:
    extra = (
        f'\n[source.sieve]\nurl = "sieve://127.0.0.1:{src_sieve}"\nsecurity = "none"\n'
        f'[target.sieve]\nurl = "sieve://127.0.0.1:{tgt_sieve}"\nsecurity = "none"\n' + addresses
    )
    return write_project(
        tmp,
        src,
        tgt,
        [],
        csv_text="source_user,target_user\nalice,alice.t\nbob,bob\n",
        source_admin=source_admin,
        target_admin=target_admin,
        extra=extra,
    )


def cyrus_message_files(server) -> set[Path]:
    return {p for p in Path(server.data_dir.resolve(), "spool").rglob("*.") if p.name[:-1].isdigit()}


def findings(result, kind: str) -> list[dict]:
    return [f for f in result.json()["findings"] if f["kind"] == kind]


def wait_for(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_dovecot_to_cyrus(dovecot_factory, cyrus_factory, tmp_path) -> None:
    users = {"alice": "alicepw", "bob": "bobpw"}
    src = dovecot_factory(style="slash", users=users, sieve=True)
    tgt = cyrus_factory(users={"alice.t": "alicepw", "bob": "bobpw"})
    make_folders(src, "alice", "alicepw", ["Lists", "Lists/Python", "v1.2"])
    put = sieve(src, src.sieve_port, "alice", DOVECOT_ADMIN, readonly=False)
    try:
        put.put("main", MAIN.format(lists="Lists/Python", dotted="v1.2").encode())
        put.put("parts", FOREVERYPART)
        put.put("gone", b'require "fileinto";\nfileinto "Nowhere/Else";\n')
        put.set_active("main")
    finally:
        put.close()
    # A script with a syntax error can't be uploaded: it got there some other way (an old server).
    home = src.home("alice")
    (home / "sieve" / "broken.sieve").write_bytes(BROKEN)
    os.chown(home / "sieve" / "broken.sieve", (home / "sieve").stat().st_uid, (home / "sieve").stat().st_gid)
    project = project_for(
        tmp_path / "p", src, tgt, src.sieve_port, tgt.sieve_port, source_admin=DOVECOT_ADMIN, target_admin=CYRUS_ADMIN
    )

    check = cli("check", project, "--json")
    alice_check = next(a for a in check.json()["accounts"] if a["account"] == "alice")["filters"]
    assert alice_check["source"]["ok"] and alice_check["target"]["ok"], check.out
    assert alice_check["source"]["active"] == "main" and alice_check["source"]["scripts"] == 4
    assert "foreverypart" in alice_check["source"]["extensions"]
    assert "foreverypart" not in alice_check["target"]["extensions"]
    assert alice_check["missing_extensions"] == ["foreverypart"]
    # A warning tells the admin what will happen; it holds nothing back (exit code 0, unless --strict).
    alice = next(a for a in check.json()["accounts"] if a["account"] == "alice")
    assert alice["verdict"] == "ready with warnings" and check.code == 0, check.out
    assert cli("check", project, "--strict").code == ExitCode.FINDINGS

    plan = cli("plan", project, "--json")
    assert plan.code == ExitCode.FINDINGS, plan.out + plan.err
    alice_plan = next(a for a in plan.json()["accounts"] if a["account"] == "alice")["filters"]
    main_plan = next(p for p in alice_plan["plan"] if p["script"] == "main")
    assert main_plan["action"] == "put"
    assert '+if address :is "from" "bob@new.example" {' in main_plan["diff"]
    assert '+  fileinto "INBOX/Lists/Python";' in main_plan["diff"]
    assert "foreverypart" in next(p for p in alice_plan["plan"] if p["script"] == "parts")["refused"]
    assert scripts_of(tgt.sieve_port, "alice.t", CYRUS_ADMIN) == ({}, None)  # plan wrote nothing

    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    refused = {f["details"]["script"]: f for f in findings(r, "sieve-refused")}
    assert set(refused) == {"broken", "parts"}, r.out
    assert "foreverypart" in refused["parts"]["message"] and refused["parts"]["account"] == "alice"
    assert "syntax error" in refused["broken"]["details"]["server"]
    unmapped = findings(r, "sieve-folder-unmapped")
    assert [(f["details"]["script"], f["details"]["folder"]) for f in unmapped] == [("gone", "Nowhere/Else")]

    scripts, active = scripts_of(tgt.sieve_port, "alice.t", CYRUS_ADMIN)
    assert active == "main" and set(scripts) == {"main", "gone"}
    assert scripts["gone"] == b'require "fileinto";\nfileinto "Nowhere/Else";\n'  # carried as written
    main = scripts["main"].decode()
    assert 'address :is "from" "bob@new.example"' in main
    assert 'fileinto "INBOX/Lists/Python";' in main and 'fileinto "INBOX/v1.2";' in main
    assert ':from "Alice <alice.t@new.example>" :addresses ["alice.t@new.example"]' in main
    assert '# mail from bob goes to the list folder; "bob@old.example" in a comment' in main

    # The target runs the carried script: bob's mail is filed, a stranger gets the target's reply.
    tgt.deliver("alice.t", b"From: bob@new.example\r\nTo: alice.t@new.example\r\nSubject: hi\r\n\r\nlist\r\n")
    assert any(b"Subject: hi" in m for m in messages_in(tgt, "alice.t", "alicepw", "INBOX/Lists/Python"))
    before = len(tgt.imip_messages())
    tgt.deliver(
        "alice.t",
        b"From: carol@ext.example\r\nTo: alice.t@new.example\r\nSubject: question\r\nMessage-ID: <q1@ext>\r\n\r\n?\r\n",
        mail_from="carol@ext.example",
    )
    replies = wait_for(lambda: tgt.imip_messages()[before:])
    assert replies, "no vacation reply from the target"
    assert replies[-1].recipients == ("carol@ext.example",)
    assert b"alice.t@new.example" in replies[-1].data and b"I am away until Monday." in replies[-1].data

    # A second migrate sends no PUTSCRIPT. Cyrus 3.6 keeps scripts as messages of the user's
    # #sieve mailbox, each PUTSCRIPT a new message file: the spool's message files stay the same.
    stamp = cyrus_message_files(tgt)
    again = cli("migrate", project, "--json")
    filters = next(a for a in again.json()["accounts"] if a["account"] == "alice")["filters"]
    assert filters["put"] == 0 and filters["unchanged"] == 2 and filters["activated"] == 0, again.out
    assert cyrus_message_files(tgt) == stamp

    # Put but not recorded (kill -9 between the two): the next run matches it, writes nothing.
    db = sqlite3.connect(next(Path(tmp_path / "p").glob("*.ledger.sqlite")))
    db.execute("DELETE FROM settings WHERE kind = 'sieve'")
    db.commit()
    db.close()
    third = cli("migrate", project, "--json")
    filters = next(a for a in third.json()["accounts"] if a["account"] == "alice")["filters"]
    assert filters["put"] == 0 and filters["unchanged"] == 2, third.out
    assert cyrus_message_files(tgt) == stamp
    db = sqlite3.connect(next(Path(tmp_path / "p").glob("*.ledger.sqlite")))
    rows = db.execute("SELECT key, state FROM settings WHERE kind = 'sieve' AND account = 'alice'").fetchall()
    db.close()
    assert ("main", "set") in rows  # recorded again, from what the target holds

    v = cli("verify", project, "--json")
    vf = next(a for a in v.json()["accounts"] if a["account"] == "alice")["filters"]
    # the refused scripts are the differences verify names; main is equal after rewriting
    assert {(d["script"], d["what"]) for d in vf["differences"]} == {("broken", "missing"), ("parts", "missing")}


def test_cyrus_to_dovecot(dovecot_factory, cyrus_factory, tmp_path) -> None:
    src = cyrus_factory(users={"alice": "alicepw", "bob": "bobpw"})
    tgt = dovecot_factory(style="dotted", users={"alice.t": "alicepw", "bob": "bobpw"}, sieve=True)
    make_folders(src, "alice", "alicepw", ["INBOX/Lists", "INBOX/Lists/Python", "INBOX/v1.2"])
    put = sieve(src, src.sieve_port, "alice", CYRUS_ADMIN, readonly=False)
    try:
        put.put("main", MAIN.format(lists="INBOX/Lists/Python", dotted="INBOX/v1.2").encode())
        put.put("edit", EDITHEADER)
        put.set_active("main")
    finally:
        put.close()
    # alice's new address comes from the identity map, as `directory apply` leaves it in the ledger
    project = project_for(
        tmp_path / "p",
        src,
        tgt,
        src.sieve_port,
        tgt.sieve_port,
        source_admin=CYRUS_ADMIN,
        target_admin=DOVECOT_ADMIN,
        addresses='\n[calendars.domains]\n"old.example" = "new.example"\n',
    )
    ledger = SqliteLedger(tmp_path / "p" / "project.ledger.sqlite")
    run = ledger.start_run("directory apply", "2026-01-01T00:00:00Z")
    ledger.save_identity(
        run,
        [
            {
                "source_dn": "uid=alice,dc=old",
                "source_login": "alice",
                "source_mail": "alice@old.example",
                "target_dn": "uid=alice.t,dc=new",
                "target_login": "alice.t",
                "target_mail": "alice.t@new.example",
                "how": "login",
                "kind": "user",
            }
        ],
    )
    ledger.close()
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    refused = {f["details"]["script"]: f for f in findings(r, "sieve-refused")}
    assert set(refused) == {"edit"} and "editheader" in refused["edit"]["details"]["server"], r.out

    scripts, active = scripts_of(tgt.sieve_port, "alice.t", DOVECOT_ADMIN)
    assert active == "main" and set(scripts) == {"main"}
    main = scripts["main"].decode()
    assert 'fileinto "INBOX.Lists.Python";' in main
    assert 'fileinto "INBOX.v1_2";' in main  # '.' in a Cyrus name meets Dovecot's '.' separator
    assert ':addresses ["alice.t@new.example"]' in main

    tgt.deliver("alice.t", b"From: bob@new.example\r\nTo: alice.t@new.example\r\nSubject: hi\r\n\r\nlist\r\n")
    assert any(b"Subject: hi" in m for m in messages_in(tgt, "alice.t", "alicepw", "INBOX.Lists.Python"))
    tgt.deliver("alice.t", b"From: dev@ext.example\r\nTo: alice.t@new.example\r\nSubject: release 2\r\n\r\nr\r\n")
    assert any(b"Subject: release 2" in m for m in messages_in(tgt, "alice.t", "alicepw", "INBOX.v1_2"))
    tgt.deliver(
        "alice.t",
        b"From: carol@ext.example\r\nTo: alice.t@new.example\r\nSubject: question\r\nMessage-ID: <q2@ext>\r\n\r\n?\r\n",
        mail_from="carol@ext.example",
    )
    replies = wait_for(tgt.sent_messages)
    assert replies, "no vacation reply from the target"
    assert replies[-1].rcpt_to == ("carol@ext.example",)
    assert b"alice.t@new.example" in replies[-1].data and b"I am away until Monday." in replies[-1].data

    stored = tgt.home("alice.t") / "sieve" / "main.sieve"
    stamp = (stored.stat().st_ino, stored.stat().st_mtime_ns)
    again = cli("migrate", project, "--json")
    filters = next(a for a in again.json()["accounts"] if a["account"] == "alice")["filters"]
    assert filters["put"] == 0 and filters["unchanged"] == 1, again.out
    assert (stored.stat().st_ino, stored.stat().st_mtime_ns) == stamp


@pytest.mark.parametrize("only", ["filters"])
def test_only_filters_needs_both_sieve_sides(dovecot_factory, tmp_path, only: str) -> None:
    src = dovecot_factory(style="slash", users={"alice": "alicepw"})
    project = write_project(tmp_path / "p", src, src, ["alice"])
    r = cli("migrate", project, "--only", only, "--json")
    assert r.code == ExitCode.USAGE and "filters" in r.out


def test_terminal_output_shows_diff_and_refusals(dovecot_factory, cyrus_factory, tmp_path) -> None:
    src = dovecot_factory(style="slash", users={"alice": "alicepw", "bob": "bobpw"}, sieve=True)
    tgt = cyrus_factory(users={"alice.t": "alicepw", "bob": "bobpw"})
    make_folders(src, "alice", "alicepw", ["Lists", "Lists/Python", "v1.2"])
    put = sieve(src, src.sieve_port, "alice", DOVECOT_ADMIN, readonly=False)
    try:
        put.put("main", MAIN.format(lists="Lists/Python", dotted="v1.2").encode())
        put.put("parts", FOREVERYPART)
        put.set_active("main")
    finally:
        put.close()
    project = project_for(
        tmp_path / "p", src, tgt, src.sieve_port, tgt.sieve_port, source_admin=DOVECOT_ADMIN, target_admin=CYRUS_ADMIN
    )
    out = cli("plan", project).out
    assert "filter 'main': put" in out and '+  fileinto "INBOX/Lists/Python";' in out
    assert "filter 'parts': put" in out and "foreverypart" in out
    out = cli("check", project).out
    assert "filters target: Cyrus timsieved" in out and "foreverypart" in out
    r = cli("migrate", project)
    assert r.code == ExitCode.FINDINGS and "alice filters: 1 put, 0 unchanged, 1 refused, 1 activated" in r.out
    v = cli("verify", project)
    assert "filters (Sieve): DIFFERENCES" in v.out and "'parts' is not on the target" in v.out


def test_only_filters_dovecot_to_dovecot_other_layout(dovecot_factory, tmp_path) -> None:
    """`--only filters` moves scripts and no mail; fileinto follows the folder map all the same
    (slash layout without prefix -> dotted layout under INBOX.)."""
    src = dovecot_factory(style="slash", users={"alice": "alicepw", "bob": "bobpw"}, sieve=True)
    tgt = dovecot_factory(style="dotted", users={"alice.t": "alicepw", "bob": "bobpw"}, sieve=True)
    make_folders(src, "alice", "alicepw", ["Lists", "Lists/Python", "v1.2"])
    put = sieve(src, src.sieve_port, "alice", DOVECOT_ADMIN, readonly=False)
    try:
        put.put("main", MAIN.format(lists="Lists/Python", dotted="v1.2").encode())
        put.set_active("main")
    finally:
        put.close()
    project = project_for(
        tmp_path / "p", src, tgt, src.sieve_port, tgt.sieve_port, source_admin=DOVECOT_ADMIN, target_admin=DOVECOT_ADMIN
    )
    r = cli("migrate", project, "--only", "filters", "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    assert r.json()["copied"] == 0 and r.json()["items"] == ["filters"]
    scripts, active = scripts_of(tgt.sieve_port, "alice.t", DOVECOT_ADMIN)
    assert active == "main"
    assert 'fileinto "INBOX.Lists.Python";' in scripts["main"].decode()
    assert 'fileinto "INBOX.v1_2";' in scripts["main"].decode()  # '.' in a name meets the '.' separator
    v = cli("verify", project, "--json")
    alice = next(a for a in v.json()["accounts"] if a["account"] == "alice")
    assert alice["filters"]["clean"] and alice["filters"]["differences"] == []

    # An account is ready only when every part it moves is: a ManageSieve login that fails makes
    # check say "not ready" for the account, not only add a problem under filters.
    ready = cli("check", project, "--json")
    assert all(a["ready"] for a in ready.json()["accounts"]), ready.out
    from mailferry.sandbox.servers import free_port

    text = project.read_text().replace(f"sieve://127.0.0.1:{tgt.sieve_port}", f"sieve://127.0.0.1:{free_port()}")
    project.write_text(text)
    broken = cli("check", project, "--json")
    assert broken.code == ExitCode.TEMPFAIL  # unreachable: try again later
    alice = next(a for a in broken.json()["accounts"] if a["account"] == "alice")
    assert alice["filters"]["problems"] and alice["ready"] is False, broken.out
