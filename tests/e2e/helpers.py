"""Shared pieces of the end-to-end tests: a project file between two sandbox servers, seeding,
running the CLI in-process and reading what a server really holds."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from mailferry.cli.main import main
from mailferry.sandbox.seed import seed_sample  # noqa: F401 - re-exported for the tests


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str) -> CliResult:
    """Run the CLI in-process. Every ``--json`` output is checked against its JSON Schema
    (src/mailferry/schemas): the contract scripts rely on."""
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    result = CliResult(code, out.getvalue(), err.getvalue())
    if "--json" in argv:
        check_json_contract(argv, result)
    return result


def check_json_contract(argv: Sequence[str], result: CliResult) -> None:
    from contract import validate

    data = result.json()  # whatever happened, stdout holds one JSON object
    assert isinstance(data, dict), result.out
    assert data["exit_code"] == result.code, (data.get("exit_code"), result.code)
    words = [a for a in argv if not a.startswith("-")]
    command = "-".join(words[:2]) if words[:1] in (["directory"], ["cutover"], ["ledger"]) else words[0]
    validate("error" if isinstance(data.get("error"), dict) else command, data)


def server_block(role: str, server: Any, *, admin: tuple[str, str] | None, env: str, port: int | None = None) -> str:
    lines = [
        f"[{role}]",
        'host = "127.0.0.1"',
        f"port = {port or server.port}",
        'security = "none"',
        "timeout = 20",
    ]
    if admin:
        os.environ[env] = admin[1]
        lines += [f"[{role}.admin]", f'user = "{admin[0]}"', f'password = "env:{env}"']
    return "\n".join(lines) + "\n"


def write_project(
    tmp: Path,
    source: Any,
    target: Any,
    users: Sequence[str] | dict[str, str],
    *,
    source_admin: tuple[str, str] | None = ("admin", "adminpw"),
    target_admin: tuple[str, str] | None = ("admin", "adminpw"),
    source_port: int | None = None,
    target_port: int | None = None,
    extra: str = "",
    csv_text: str | None = None,
    write_accounts: bool = True,
) -> Path:
    """project.toml (and accounts.csv, unless ``write_accounts`` is off: ``directory apply``
    writes it) for two sandbox servers, admin logins by env: references; ``extra`` is appended."""
    tmp.mkdir(parents=True, exist_ok=True)
    tag = "".join(ch if ch.isalnum() else "_" for ch in tmp.name.upper())
    if csv_text is None:
        csv_text = "source_user,target_user\n" + "".join(f"{u},{u}\n" for u in users)
    if write_accounts:
        (tmp / "accounts.csv").write_text(csv_text)
    text = (
        '[project]\nname = "t"\n\n[accounts]\ncsv = "accounts.csv"\n\n'
        + server_block("source", source, admin=source_admin, env=f"MF_{tag}_SRC", port=source_port)
        + server_block("target", target, admin=target_admin, env=f"MF_{tag}_TGT", port=target_port)
        + "\n[performance]\nretries = 4\n"
        + extra
    )
    path = tmp / "project.toml"
    path.write_text(text)
    return path


def bad_project(tmp: Path) -> Path:
    """A project file with several problems (a port that is no number, a literal password, a
    misspelt key), for the tests of configuration errors."""
    (tmp / "accounts.csv").write_text("source_user,target_user\nalice,alice\n")
    path = tmp / "p.toml"
    path.write_text(
        '[project]\nname = "x"\n[accounts]\ncsv = "accounts.csv"\n'
        '[source]\nhost = "mail.example.org"\nsecurity = "none"\nport = "abc"\n'
        '[source.admin]\nuser = "a"\npassword = "hunter2"\n'
        '[target]\nhost = "127.0.0.1"\nsecurity = "tls"\nverfy_certificates = false\n'
    )
    return path


def dir_project(tmp: Path, source: Any, target: Any, directory_block: str, **kw: Any) -> Path:
    """A project with a [directory] section and no accounts CSV yet (``kw``: see write_project)."""
    return write_project(tmp, source, target, [], extra=directory_block, write_accounts=False, **kw)


def holdings(server: Any, user: str, password: str) -> dict[str, list[tuple[bytes, tuple[bytes, ...]]]]:
    """folder -> sorted (body, flags) of every message, read with BODY.PEEK."""
    c = IMAPClient(server.host, server.port, ssl=False, timeout=30)
    c.login(user, password)
    out: dict[str, list[tuple[bytes, tuple[bytes, ...]]]] = {}
    try:
        for flags, _delim, name in c.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            c.select_folder(name, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS"]) if uids else {}
            out[name] = sorted(
                (d[b"BODY[]"], tuple(sorted(f for f in d[b"FLAGS"] if f != b"\\Recent"))) for d in data.values()
            )
    finally:
        c.logout()
    return out


def folder_names(server: Any, user: str, password: str) -> dict[str, tuple[bytes, ...]]:
    c = IMAPClient(server.host, server.port, ssl=False, timeout=30)
    c.login(user, password)
    try:
        return {name: flags for flags, _d, name in c.list_folders()}
    finally:
        c.logout()
