"""End to end against real Dovecot: what a target can't hold, and what it can.

Keywords longer than the target stores (Dovecot's ``mail_max_keyword_length``) cost the keyword,
never the message; folders whose names differ only in case keep their names where the target holds
them apart; messages the target refused (over quota) stay outstanding, are retried by every pass
and keep the exit code off 0 until they are copied.
"""

from __future__ import annotations

from pathlib import Path

from helpers import cli, folder_names, holdings, write_project
from imapclient import IMAPClient

from mailferry.errors import ExitCode
from mailferry.sandbox.servers import TcpProxy, seed_messages

USERS = {"alice": "alicepw", "bob": "bobpw"}


def message(i: int, size: int = 0, folder: str = "") -> bytes:
    return (
        (
            f"From: a@example.org\r\nTo: alice@example.org\r\nSubject: message {i} {folder}\r\n"
            f"Message-ID: <m{i}.{folder.lower() or 'inbox'}@example.org>\r\n\r\nbody {i}\r\n"
        ).encode()
        + b"x" * size
        + b"\r\n"
    )


# -- keywords longer than the target stores ----------------------------------------------------

LONG60, LONG55, LONG51, JUST50 = "$" + "k" * 59, "$" + "m" * 54, "$" + "n" * 50, "$" + "o" * 49


def keywords_of(i: int) -> tuple[str, ...]:
    return [("\\Seen", "$Short", LONG60), ("$Label1", LONG55), ("\\Flagged", JUST50, LONG51), ()][i % 4]


def test_keywords_over_the_targets_limit_cost_the_keyword_never_the_message(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False, max_keyword_length=200)
    tgt = dovecot_factory(style="slash", users=USERS)  # mail_max_keyword_length: Dovecot's default, 50
    inbox = [message(i) for i in range(40)]
    flags = [keywords_of(i) for i in range(40)]
    seed_messages(src.host, src.port, "alice", "alicepw", "INBOX", inbox, per_message_flags=flags)
    projects = [message(i, folder="Projects") for i in range(10)]
    seed_messages(src.host, src.port, "alice", "alicepw", "INBOX.Projects", projects, flags=("$Client", LONG60, LONG51))
    long = {LONG60, LONG55, LONG51}
    proxy = TcpProxy.start(tgt.host, tgt.port, record=True)
    try:
        project = write_project(tmp_path / "p", src, tgt, ["alice"], target_port=proxy.port)
        # check can't ask the target without writing to it, but it warns of the likely limit.
        [warning] = cli("check", project, "--json").json()["accounts"][0]["warnings"]
        assert all(k in warning for k in long) and JUST50 not in warning and "$Short" not in warning
        r = cli("migrate", project, "--json")
        refusals = proxy.transcript("down").count(b"Keyword length too long")
        assert r.code == ExitCode.FINDINGS, r.out + r.err
        data = r.json()
        assert data["refused"] == 0 and data["copied"] == 50, r.out
        # Every message is on the target, byte for byte, with every keyword but the long ones.
        held = holdings(tgt, "alice", "alicepw")
        kept = [tuple(sorted(k.encode() for k in f if k not in long)) for f in flags]
        assert held["INBOX"] == sorted(zip(inbox, kept, strict=True))
        assert held["Projects"] == sorted((b, (b"$Client",)) for b in projects)
        # Each dropped keyword is named with its message (folder, UID, Message-ID): one finding each.
        dropped = [f for f in data["findings"] if f["kind"] == "keyword-dropped"]
        assert {f["kind"] for f in data["findings"]} == {"keyword-dropped"}
        assert len(dropped) == len({(f["source_folder"], f["source_uid"]) for f in dropped}) == 30 + 10
        for f in dropped:
            d = f["details"]
            assert d["message_id"] and d["message_id"] in f["message"] and f"UID {f['source_uid']}" in f["message"]
            assert d["keywords"] and set(d["keywords"]) <= long and all(repr(k) in f["message"] for k in d["keywords"])
        assert {(f["source_folder"], tuple(sorted(f["details"]["keywords"]))) for f in dropped} == {
            ("INBOX", (LONG60,)),
            ("INBOX", (LONG55,)),
            ("INBOX", (LONG51,)),
            ("INBOX.Projects", tuple(sorted((LONG60, LONG51)))),
        }
        # Learned, not retried per message: a few refusals to learn the limit, not one a message.
        assert 0 < refusals <= 12, refusals

        # Keywords added on the source later, one over the limit: the rest is carried, it is named.
        c = IMAPClient(src.host, src.port, ssl=False)
        c.login("alice", "alicepw")
        c.select_folder("INBOX")
        c.add_flags([4], [b"\\Answered", b"$" + b"z" * 70, b"$Fine"])
        c.logout()
        again = cli("migrate", project, "--json")
        assert again.code == ExitCode.FINDINGS, again.out + again.err
        assert again.json()["flag_updates"] == 1
        [f] = again.json()["findings"]
        assert f["kind"] == "keyword-dropped" and f["source_uid"] == 4 and f["details"]["keywords"] == ["$" + "z" * 70]
        assert f["details"]["message_id"] == "<m3.inbox@example.org>"
        held = holdings(tgt, "alice", "alicepw")
        assert (inbox[3], (b"$Fine", b"\\Answered")) in held["INBOX"]
        # Nothing is outstanding: every message is on the target.
        assert cli("migrate", project, "--json").code == ExitCode.OK
        assert cli("report", project, "--json").json()["outstanding"] == []
    finally:
        proxy.stop()


# -- folders whose names differ only in case ---------------------------------------------------


def test_folders_differing_only_in_case_keep_their_names_on_a_target_that_holds_them_apart(
    dovecot_factory, tmp_path: Path
) -> None:
    src = dovecot_factory(style="slash", users=USERS, special_use=True)  # "Archive", "Sent" declared
    contents = {"Archive": 2, "archive": 3, "Sent": 1, "sent": 4, "Projects": 1, "projects": 2}
    for name, n in contents.items():
        seed_messages(src.host, src.port, "alice", "alicepw", name, [message(i, folder=name) for i in range(n)])
    for style in ("slash", "dotted"):
        tgt = dovecot_factory(style=style, users=USERS, special_use=True)
        project = write_project(tmp_path / style, src, tgt, ["alice"])

        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
        names = folder_names(tgt, "alice", "alicepw")
        held = holdings(tgt, "alice", "alicepw")
        for name, n in contents.items():
            on_target = tgt.folder(name)
            assert on_target in names, (on_target, sorted(names))
            assert len(held[on_target]) == n  # each folder's own messages, under its own name
            assert all(f"{name}".encode() in body for body, _ in held[on_target])
        assert not [n for n in names if "(" in n or "probe" in n.lower()], sorted(names)  # no counter, no probe left
        assert b"\\Archive" in names[tgt.folder("Archive")] and b"\\Sent" in names[tgt.folder("Sent")]
        # Visible: the folder that did not get the special-use role says so.
        notes = [f["message"] for f in r.json()["findings"] if f["kind"] == "folder-name"]
        assert any("'archive'" in n and "went to 'Archive'" in n for n in notes), notes
        v = cli("verify", project, "--deep", "--json")
        assert v.code == ExitCode.OK and v.json()["clean"], v.out
        assert cli("migrate", project, "--json").json()["copied"] == 0


# -- refusals stay outstanding until copied ----------------------------------------------------


def test_refused_messages_are_retried_by_every_pass_and_keep_the_run_from_exiting_0(
    dovecot_factory, tmp_path: Path
) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS, quota_mb=1)
    seed_messages(src.host, src.port, "alice", "alicepw", "INBOX", [message(i, 100_000) for i in range(16)])
    seed_messages(src.host, src.port, "alice", "alicepw", "INBOX.Small", [message(i, 100, "Small") for i in range(3)])
    seed_messages(src.host, src.port, "bob", "bobpw", "INBOX", [message(i, 100) for i in range(3)])
    project = write_project(tmp_path / "p", src, tgt, USERS)

    first = cli("migrate", project, "--json")
    assert first.code == ExitCode.FINDINGS, first.out + first.err
    refused = first.json()["refused"]
    assert 0 < refused < 16, first.out
    alice = next(a for a in first.json()["accounts"] if a["account"] == "alice")
    assert alice["outstanding"] == refused

    def outstanding() -> list[dict]:
        r = cli("report", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
        return r.json()["outstanding"]

    listed = outstanding()
    assert len(listed) == refused  # each once
    assert len({(o["source_folder"], o["source_uid"]) for o in listed}) == refused
    assert {o["run"] for o in listed} == {first.json()["run"]} and {o["account"] for o in listed} == {"alice"}
    assert all("OVERQUOTA" in o["details"]["server"] or "uota" in o["message"] for o in listed), listed

    # Nothing changed on the source: the pass still tries the refused messages again (and only
    # them), and the run is not clean.
    second = cli("migrate", project, "--json")
    assert second.code == ExitCode.FINDINGS, second.out + second.err
    assert second.json()["refused"] == refused and second.json()["copied"] == 0
    listed = outstanding()
    assert len(listed) == refused and {o["run"] for o in listed} == {second.json()["run"]}
    alice = next(x for x in second.json()["accounts"] if x["account"] == "alice")
    # only the folders holding refusals were planned again; the others stayed on the fast path
    assert alice["folders_unchanged"] == alice["folders"] - len({o["source_folder"] for o in listed}) > 0

    # The target's quota is raised: a plain re-run (no --full) copies them, and is clean.
    tgt.set_limits(quota_mb=100)
    third = cli("migrate", project, "--json")
    assert third.code == ExitCode.OK, third.out + third.err
    assert third.json()["copied"] == refused and third.json()["refused"] == 0
    assert outstanding() == []
    held = holdings(tgt, "alice", "alicepw")
    assert len(held["INBOX"]) == 16 and len(held["Small"]) == 3
    v = cli("verify", project, "--deep", "--json")
    assert v.code == ExitCode.OK and v.json()["clean"], v.out
    assert cli("migrate", project, "--json").code == ExitCode.OK
