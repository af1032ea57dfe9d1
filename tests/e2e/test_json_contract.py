"""One JSON contract for scripts (issue 6): the same names everywhere, per-account exit codes,
every finding with its run, errors as JSON on stdout too. ``helpers.cli`` validates every
``--json`` output of every e2e test against src/mailferry/schemas; these tests pin the rest."""

from __future__ import annotations

from pathlib import Path

from helpers import bad_project, cli, seed_sample, write_project

from contract import schema_names
from mailferry.cli.main import app
from mailferry.errors import ExitCode
from mailferry.sandbox.servers import seed_messages

USERS = {"alice": "alicepw", "bob": "bobpw"}


def test_every_command_with_json_has_a_schema() -> None:
    import typer.main

    group = typer.main.get_command(app)
    commands: list[str] = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        for sub_name, sub in (subs or {name: cmd}).items():
            if any("--json" in p.opts for p in sub.params):
                commands.append(f"{name}-{sub_name}" if subs else name)
    assert "migrate" in commands and "directory-plan" in commands
    assert "directory-restore" in commands
    assert sorted(set(commands) - set(schema_names())) == []


def test_per_account_exit_codes_and_findings_with_their_run(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="slash", users=USERS)
    tgt = dovecot_factory(style="slash", users=USERS, max_message_size=30_000)
    seed_sample(src, "alice", USERS["alice"], messages=4)
    seed_sample(src, "bob", USERS["bob"], messages=4)
    big = b"From: a@b\r\nSubject: too big\r\nMessage-ID:  <big@x.example>\r\n\r\n" + b"y" * 40_000 + b"\r\n"
    seed_messages(src.host, src.port, "alice", USERS["alice"], "INBOX", [big])
    project = write_project(tmp_path / "p", src, tgt, USERS)

    m = cli("migrate", project, "--json")
    assert m.code == ExitCode.FINDINGS, m.out + m.err
    data = m.json()
    codes = {a["account"]: (a["target_account"], a["exit_code"]) for a in data["accounts"]}
    assert codes == {"alice": ("alice", ExitCode.FINDINGS), "bob": ("bob", ExitCode.OK)}
    refused = [f for f in data["findings"] if f["kind"] == "refused"]
    assert len(refused) == 1
    f = refused[0]
    assert (f["run"], f["account"], f["source_folder"]) == (data["run"], "alice", "INBOX")
    assert f["message_id"] == "<big@x.example>" and isinstance(f["source_uid"], int)
    assert all(x["run"] == data["run"] for x in data["findings"])

    rep = cli("report", project, "--json").json()
    assert [r["run"] for r in rep["runs"]] == [data["run"]]
    assert {(a["run"], a["account"], a["target_account"]) for a in rep["accounts"]} == {
        (data["run"], "alice", "alice"),
        (data["run"], "bob", "bob"),
    }
    assert [x for x in rep["findings"] if x["kind"] == "refused"] == refused

    p = cli("plan", project, "--json").json()
    assert {a["account"]: a["target_account"] for a in p["accounts"]} == {"alice": "alice", "bob": "bob"}
    v = cli("verify", project, "--json").json()
    assert {a["account"]: a["exit_code"] for a in v["accounts"]} == {"alice": ExitCode.FINDINGS, "bob": ExitCode.OK}
    d = next(x for a in v["accounts"] for fo in a["folders"] for x in fo["discrepancies"])
    assert (d["source_folder"], d["source_uid"], d["message_id"]) == ("INBOX", f["source_uid"], "<big@x.example>")


def test_errors_are_json_on_stdout_too(tmp_path: Path) -> None:
    project = bad_project(tmp_path)
    r = cli("migrate", project, "--json")  # validated against error.schema.json
    assert r.code == ExitCode.CONFIG
    e = r.json()
    assert e["command"] == "migrate" and e["error"]["fault"] == "config" and len(e["error"]["problems"]) >= 2
    assert any("p.toml:8" in p for p in e["error"]["problems"]) and "hunter2" not in r.out
    assert "p.toml:8" in r.err  # people still read it on stderr

    u = cli("plan", project, "--account", "nobody", "--json")
    assert u.code == ExitCode.CONFIG and u.json()["command"] == "plan"
    assert cli("frobnicate", "--json").json()["error"]["fault"] == "usage"
