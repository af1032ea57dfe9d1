"""End to end, Dovecot to Dovecot, through the CLI in-process: what the target really holds.

Source and target are configured differently so the translation is exercised: Courier-style
(``INBOX.`` prefix, ``.``) against ``/`` without prefix, with special-use folders on one side only.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from helpers import bad_project, cli, folder_names, holdings, seed_sample, write_project
from imapclient import IMAPClient

from conftest import corpus_messages
from mailferry.errors import ExitCode
from mailferry.sandbox.servers import seed_messages

USERS = {"alice": "alicepw", "bob": "bobpw"}


def crlf(b: bytes) -> bytes:
    """What an IMAP server serves for stored bytes: CRLF line ends (RFC 5322)."""
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def bodies(h: dict[str, list[tuple[bytes, tuple[bytes, ...]]]]) -> Counter[tuple[bytes, tuple[bytes, ...]]]:
    return Counter(x for msgs in h.values() for x in msgs)


@pytest.fixture
def pair(dovecot_factory, tmp_path: Path):
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS, special_use=True)
    corpus = [b for _, b in corpus_messages()]
    seed_sample(src, "alice", USERS["alice"], corpus=corpus)
    seed_sample(src, "bob", USERS["bob"], messages=10)
    project = write_project(tmp_path / "p", src, tgt, USERS)
    return src, tgt, project


def test_migrate_translates_names_carries_every_byte_and_verifies_deep(pair) -> None:
    src, tgt, project = pair
    before = holdings(src, "alice", USERS["alice"])

    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.err + r.out
    data = r.json()
    assert data["refused"] == 0 and data["copied"] == sum(len(v) for v in before.values()) + 10 + 2

    names = folder_names(tgt, "alice", USERS["alice"])
    # Courier-style names land in the target's own hierarchy and special-use folders.
    assert "Projects/2024" in names and "Projects/2025/Q1" in names
    assert "Ärger & Ökonomie" in names
    assert "Empty" in names  # empty folders too
    assert b"\\Sent" in names["Sent"] and b"\\Trash" in names["Trash"] and b"\\Junk" in names["Junk"]
    assert "a_b test" in names  # the source name holds '/': mapped visibly, not split into a hierarchy
    assert "a" not in names
    notices = [f for f in data["findings"] if f["kind"] == "folder-name"]
    assert any("a/b test" in f["message"] for f in notices)

    # Byte for byte, with flags and keywords, message for message (corpus included).
    after = holdings(tgt, "alice", USERS["alice"])
    assert bodies(after) == bodies(before)
    for _, raw in corpus_messages():
        assert any(body == crlf(raw) for body, _ in bodies(after)), "a corpus message did not arrive intact"

    # The source was not touched: same messages, same flags (nothing marked \Seen by reading).
    assert holdings(src, "alice", USERS["alice"]) == before

    v = cli("verify", project, "--deep", "--json")
    assert v.code == ExitCode.OK, v.out
    assert v.json()["clean"] is True

    again = cli("migrate", project, "--json")
    assert again.code == ExitCode.OK
    assert again.json()["copied"] == 0 and again.json()["matched"] == 0


def test_internaldate_flags_and_keywords_survive(pair) -> None:
    src, tgt, project = pair
    assert cli("migrate", project, "--json").code == ExitCode.OK

    def dates(server, folder):
        c = IMAPClient(server.host, server.port, ssl=False)
        c.login("bob", USERS["bob"])
        c.select_folder(folder, readonly=True)
        d = c.fetch(c.search("ALL"), ["INTERNALDATE", "FLAGS", "RFC822.SIZE"])
        c.logout()
        return sorted((v[b"INTERNALDATE"].timestamp(), v[b"RFC822.SIZE"], sorted(v[b"FLAGS"])) for v in d.values())

    assert dates(src, "INBOX.Sent Items") == dates(tgt, "Sent")
    assert dates(src, "INBOX") == dates(tgt, "INBOX")


def test_delta_pass_carries_new_messages_and_flag_changes(pair) -> None:
    src, tgt, project = pair
    assert cli("migrate", project, "--json").code == ExitCode.OK
    c = IMAPClient(src.host, src.port, ssl=False)
    c.login("bob", USERS["bob"])
    c.append("INBOX", b"From: x@y\r\nSubject: late arrival\r\n\r\nhello\r\n", flags=[b"$Late"])
    c.select_folder("INBOX")
    first = min(c.search("ALL"))
    c.add_flags([first], [b"\\Flagged", b"$Important"])
    c.logout()

    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    assert r.json()["copied"] == 1 and r.json()["flag_updates"] == 1
    v = cli("verify", project, "--json")
    assert v.json()["clean"], v.out
    assert cli("migrate", project, "--json").json()["copied"] == 0


def test_messages_already_on_the_target_are_not_duplicated(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="slash", users=USERS, special_use=True)
    tgt = dovecot_factory(style="dotted", users=USERS, special_use=False)
    seed_sample(src, "alice", USERS["alice"], messages=12)
    # Another tool copied two INBOX messages before us (same bytes, same dates).
    c = IMAPClient(src.host, src.port, ssl=False)
    c.login("alice", USERS["alice"])
    c.select_folder("INBOX", readonly=True)
    got = c.fetch(sorted(c.search("ALL"))[:2], ["BODY.PEEK[]", "INTERNALDATE"])
    c.logout()
    t = IMAPClient(tgt.host, tgt.port, ssl=False)
    t.login("alice", USERS["alice"])
    for d in got.values():
        t.append("INBOX", d[b"BODY[]"], msg_time=d[b"INTERNALDATE"])
    t.logout()
    project = write_project(tmp_path / "p", src, tgt, ["alice"])
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out
    assert r.json()["matched"] == 2
    src_inbox = Counter(b for b, _ in holdings(src, "alice", USERS["alice"])["INBOX"])
    tgt_inbox = Counter(b for b, _ in holdings(tgt, "alice", USERS["alice"])["INBOX"])
    assert src_inbox == tgt_inbox  # identical twins stay two, pre-copied ones are not doubled
    # '.' inside a source name meets a '.'-separated target: mapped visibly.
    assert "INBOX.v1_2 release" in folder_names(tgt, "alice", USERS["alice"])
    v = cli("verify", project, "--deep", "--json")
    assert v.json()["clean"], v.out


def test_refused_message_is_a_finding_and_the_run_goes_on(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS, max_message_size=30_000)
    seed_sample(src, "alice", USERS["alice"], messages=30)
    big = b"From: a@b\r\nSubject: the big one\r\nMessage-ID: <big@x>\r\n\r\n" + b"x" * 76 + b"\r\n"
    seed_messages(
        src.host,
        src.port,
        "alice",
        USERS["alice"],
        "INBOX.Projects",
        [big * 1] + [big.replace(b"x" * 76, b"y" * 76) * 500],
    )
    project = write_project(tmp_path / "p", src, tgt, ["alice"])
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.FINDINGS, r.out + r.err
    data = r.json()
    refused = [f for f in data["findings"] if f["kind"] == "refused"]
    assert refused and data["refused"] == len(refused)
    f = refused[0]
    for part in ("alice", "folder", "UID", "Message-ID", "subject", "bytes", "refused by the target"):
        assert part in f["message"]
    assert f["details"]["size"] > 30_000 and "server" in f["details"]
    assert data["copied"] > 20  # everything else went
    v = cli("verify", project, "--json").json()
    kinds = {d["kind"] for a in v["accounts"] for fo in a["folders"] for d in fo["discrepancies"]}
    assert kinds == {"refused"}  # known refusals, nothing unexplained


def test_wrong_password_fails_that_account_and_the_others_go_on(dovecot_factory, tmp_path: Path, monkeypatch) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=5)
    seed_sample(src, "bob", USERS["bob"], messages=5)
    monkeypatch.setenv("MF_WRONG_PW", "not-bobs-password-4711")
    monkeypatch.setenv("MF_ALICE_PW", USERS["alice"])
    csv = (
        "source_user,target_user,source_password,target_password\n"
        "alice,alice,env:MF_ALICE_PW,\nbob,bob,env:MF_WRONG_PW,\n"
    )
    project = write_project(tmp_path / "p", src, tgt, [], source_admin=None, csv_text=csv)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.AUTH, r.out + r.err
    accounts = {a["account"]: a for a in r.json()["accounts"]}
    assert accounts["alice"]["status"] == "ok" and accounts["alice"]["copied"] == 7
    assert accounts["bob"]["status"] == "failed" and "login refused for bob" in accounts["bob"]["error"]
    assert "not-bobs-password-4711" not in r.out + r.err


def test_no_secret_reaches_output_reports_or_ledger(dovecot_factory, tmp_path: Path, monkeypatch) -> None:
    secret = "S3cr3t-Adm1n-Pa55"
    src = dovecot_factory(style="dotted", users=USERS, special_use=False, master=("admin", secret))
    tgt = dovecot_factory(style="slash", users=USERS, master=("admin", secret), max_message_size=30_000)
    seed_sample(src, "alice", USERS["alice"], messages=20)
    project = write_project(
        tmp_path / "p", src, tgt, ["alice"], source_admin=("admin", secret), target_admin=("admin", secret)
    )
    outputs = [
        cli(*args)
        for args in (
            ("check", project),
            ("check", project, "--json"),
            ("plan", project),
            ("migrate", project),
            ("migrate", project, "--json"),
            ("verify", project, "--deep"),
            ("report", project),
            ("report", project, "--json"),
        )
    ]
    # A wrong admin password: the refusal text must not echo it either.
    monkeypatch.setenv("MF_BAD", secret + "-wrong")
    bad = project.read_text().replace('password = "env:MF_P_TGT"', 'password = "env:MF_BAD"')
    (tmp_path / "p" / "bad.toml").write_text(bad)
    outputs.append(cli("migrate", tmp_path / "p" / "bad.toml"))
    assert outputs[-1].code == ExitCode.AUTH
    for o in outputs:
        assert secret not in o.out and secret not in o.err
    for path in (tmp_path / "p").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    db = sqlite3.connect(tmp_path / "p" / "project.ledger.sqlite")
    dump = "\n".join(db.iterdump())
    assert secret not in dump


def test_bad_project_file_reports_every_problem_with_lines(tmp_path: Path) -> None:
    r = cli("migrate", bad_project(tmp_path))
    assert r.code == ExitCode.CONFIG
    assert "p.toml:8" in r.err and "source.port" in r.err
    assert "verify_certificates" in r.err  # did you mean
    assert "hunter2" not in r.err


def test_second_run_on_the_same_project_is_refused(pair) -> None:
    from mailferry.config.load import load_project
    from mailferry.state.ledger import SqliteLedger

    _src, _tgt, project = pair
    holder = SqliteLedger(load_project(project).ledger_path)
    holder.acquire("migrate (the other run)")
    try:
        r = cli("migrate", project)
        assert r.code == ExitCode.TEMPFAIL
        assert "another mailferry run is using this project" in r.err
    finally:
        holder.close()


def test_usage_error_exit_code() -> None:
    assert cli("migrate").code == ExitCode.USAGE
    assert cli("frobnicate").code == ExitCode.USAGE
    h = cli("--help")
    assert h.code == 0 and "77" in h.out and "75" in h.out


def test_tls_is_verified_and_a_bad_certificate_fails_only_that_side(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False, tls=True)
    tgt = dovecot_factory(style="slash", users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=6)
    project = write_project(tmp_path / "p", src, tgt, ["alice"], source_port=src.tls_port)
    untrusted = project.read_text().replace('security = "none"', 'security = "tls"', 1)
    project.write_text(untrusted)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.CONFIG, r.out + r.err
    err = r.json()["accounts"][0]["error"]
    assert "TLS certificate" in err and "does not verify" in err and "ca_file" in err

    trusted = untrusted.replace('security = "tls"', f'security = "tls"\nca_file = "{src.ca_file}"', 1)
    project.write_text(trusted)
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    assert cli("verify", project, "--deep", "--json").json()["clean"]


def test_plan_writes_nothing_anywhere(pair) -> None:
    src, tgt, project = pair
    before_src, before_tgt = holdings(src, "alice", USERS["alice"]), holdings(tgt, "alice", USERS["alice"])
    files_before = sorted(p.name for p in project.parent.iterdir())
    r = cli("plan", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    alice = next(a for a in r.json()["accounts"] if a["account"] == "alice")
    sent = next(f for f in alice["folders"] if f["source_folder"] == "INBOX.Sent Items")
    assert sent["target_folder"] == "Sent" and "Sent Items" in sent["rule"] and sent["copy"] > 0
    assert alice["messages"] == sum(len(v) for v in before_src.values())
    assert sorted(p.name for p in project.parent.iterdir()) == files_before  # no ledger, no report
    assert holdings(src, "alice", USERS["alice"]) == before_src
    assert holdings(tgt, "alice", USERS["alice"]) == before_tgt == {"INBOX": []}


def test_deletions_are_propagated_only_when_asked_and_only_ours(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="slash", users=USERS)
    tgt = dovecot_factory(style="slash", users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=6)
    project = write_project(tmp_path / "p", src, tgt, ["alice"])
    assert cli("migrate", project, "--json").code == ExitCode.OK
    # The user got new mail on the target already; someone deletes a message on the source.
    seed_messages(tgt.host, tgt.port, "alice", USERS["alice"], "INBOX", [b"Subject: new on target\r\n\r\nhi\r\n"])
    c = IMAPClient(src.host, src.port, ssl=False)
    c.login("alice", USERS["alice"])
    c.select_folder("INBOX")
    victim = min(c.search("ALL"))
    c.delete_messages([victim])
    c.expunge()
    c.logout()
    n_before = len(holdings(tgt, "alice", USERS["alice"])["INBOX"])
    r = cli("migrate", project, "--json")
    assert r.json()["deleted"] == 0 and len(holdings(tgt, "alice", USERS["alice"])["INBOX"]) == n_before
    optin = project.read_text().replace("[performance]", "[messages]\npropagate_deletions = true\n\n[performance]")
    project.write_text(optin)
    r = cli("migrate", project, "--json", "--full")
    assert r.code == ExitCode.OK, r.out + r.err
    assert r.json()["deleted"] == 1
    inbox = [b for b, _ in holdings(tgt, "alice", USERS["alice"])["INBOX"]]
    assert len(inbox) == n_before - 1
    assert any(b"new on target" in b for b in inbox)  # not ours: never deleted


def test_source_uidvalidity_change_rematches_instead_of_recopying(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=12)
    project = write_project(tmp_path / "p", src, tgt, ["alice"])
    assert cli("migrate", project, "--json").code == ExitCode.OK
    c = IMAPClient(src.host, src.port, ssl=False)
    c.login("alice", USERS["alice"])
    old = c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    c.logout()
    src.stop()
    for f in src.maildir("alice").iterdir():  # INBOX's UID list and indexes: Dovecot starts over
        if f.is_file() and (f.name.startswith("dovecot-uidlist") or f.name.startswith("dovecot.index")):
            f.unlink()
    src.restart()
    c = IMAPClient(src.host, src.port, ssl=False)
    c.login("alice", USERS["alice"])
    assert c.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"] != old
    c.logout()
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    assert r.json()["copied"] == 0
    assert Counter(holdings(tgt, "alice", USERS["alice"])["INBOX"]) == Counter(
        holdings(src, "alice", USERS["alice"])["INBOX"]
    )
    v = cli("verify", project, "--deep", "--json")
    assert v.json()["clean"], v.out
