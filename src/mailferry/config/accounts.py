"""The accounts CSV: one account to migrate per line.

Format (UTF-8, an optional BOM)::

    # comment lines and blank lines are ignored
    source_user,target_user,source_password,target_password
    alice,alice.smith,env:ALICE_OLD,file:secrets/alice-new
    bob,,,

The header row is required: ``source_user`` and ``target_user`` are, the password columns are
optional (each cell a reference ``env:NAME`` / ``file:PATH``, or empty). Cells are stripped of
blanks; an empty ``target_user`` means the same name as ``source_user``. User names are compared
without regard to case when looking for duplicates, as IMAP servers mostly treat logins so.

Problems are returned as text ``"<file name>:<line>: <column>: <what is wrong>"``; a problem never
repeats a password cell, which may hold a password typed where a reference belongs.
"""

from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path

from mailferry.config.model import AccountConfig
from mailferry.config.secrets import SecretRef, parse_secret_ref

REQUIRED_COLUMNS = ("source_user", "target_user")
OPTIONAL_COLUMNS = ("source_password", "target_password")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


def read_accounts_csv(path: Path) -> tuple[list[AccountConfig], list[str]]:
    """Read the accounts CSV at ``path``: (the valid rows, every problem found)."""
    label = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], [f"{label}: file {path} does not exist"]
    except OSError as error:
        return [], [f"{label}: cannot read {path}: {error.strerror}"]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # Not str(error): it quotes the byte, which may belong to a password cell.
        line = data.count(b"\n", 0, error.start) + 1
        return [], [f"{label}:{line}: not UTF-8 text (save the file as UTF-8)"]
    return parse_accounts_csv(text, label=label)


def parse_accounts_csv(text: str, *, label: str = "accounts.csv") -> tuple[list[AccountConfig], list[str]]:
    """Parse the text of an accounts CSV; ``label`` names the file in problems."""
    problems: list[str] = []
    accounts: list[AccountConfig] = []
    columns: list[str] | None = None
    first_source: dict[str, int] = {}
    first_target: dict[str, int] = {}

    # One physical line is one row: user names and references never hold a line break, and
    # reading line by line keeps comment skipping and line numbers exact.
    # Not str.splitlines(): it also breaks at form feeds and other characters a cell may hold.
    for number, raw in enumerate(_lines(text), start=1):
        if raw.strip() == "" or raw.lstrip().startswith("#"):
            continue
        try:
            cells = [cell.strip() for cell in next(csv.reader([raw], strict=True))]
        except csv.Error as error:
            problems.append(f"{label}:{number}: cannot read this row as CSV: {error}")
            continue

        if columns is None:
            columns = [cell.lower() for cell in cells]
            header_problems = _check_header(columns, label, number)
            problems.extend(header_problems)
            if header_problems:
                return [], problems
            continue

        if len(cells) != len(columns):
            problems.append(f"{label}:{number}: expected {len(columns)} fields ({','.join(columns)}), got {len(cells)}")
            continue
        row = dict(zip(columns, cells, strict=True))
        source_user = row["source_user"]
        target_user = row["target_user"] or source_user
        row_ok = True
        if source_user == "":
            problems.append(f"{label}:{number}: source_user: empty")
            row_ok = False
        passwords: dict[str, SecretRef | None] = {}
        for column in OPTIONAL_COLUMNS:
            cell = row.get(column, "")
            passwords[column] = None
            if cell:
                try:
                    passwords[column] = parse_secret_ref(cell)
                except ValueError as error:
                    who = f" (account {_q(source_user)})" if source_user else ""
                    problems.append(f"{label}:{number}: {column}: {error}{who}")
                    row_ok = False
        if source_user:
            key = source_user.casefold()
            if key in first_source:
                # A repeated row is reported once, as a repeated source_user.
                problems.append(
                    f"{label}:{number}: source_user: {_q(source_user)} is listed twice "
                    f"(first on line {first_source[key]})"
                )
                row_ok = False
                continue
            first_source[key] = number
            key = target_user.casefold()
            if key in first_target:
                problems.append(
                    f"{label}:{number}: target_user: {_q(target_user)} is the target of two accounts "
                    f"(first on line {first_target[key]})"
                )
                row_ok = False
            else:
                first_target[key] = number
        if row_ok:
            accounts.append(
                AccountConfig(
                    source_user=source_user,
                    target_user=target_user,
                    source_password=passwords["source_password"],
                    target_password=passwords["target_password"],
                    line=number,
                )
            )

    if columns is None:
        problems.append(f"{label}:1: no header row: the first line must be {','.join(COLUMNS)}")
    elif not accounts and not problems:
        problems.append(f"{label}: lists no accounts")
    return accounts, problems


def _lines(text: str) -> list[str]:
    """The physical lines of ``text``: ends are \\n, \\r\\n or a lone \\r, as the csv module has it."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _check_header(columns: list[str], label: str, number: int) -> list[str]:
    if "source_user" not in columns:
        # Most likely a data row where the header belongs: do not echo it (it may hold a password).
        return [
            f"{label}:{number}: no header row: the first line must be "
            f"{','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]"
        ]
    problems: list[str] = []
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            problems.append(f"{label}:{number}: header: column {_q(column)} appears twice")
        seen.add(column)
        if column not in COLUMNS:
            close = difflib.get_close_matches(column, COLUMNS, n=1)
            hint = f"; did you mean {_q(close[0])}?" if close else f"; the columns are {','.join(COLUMNS)}"
            problems.append(f"{label}:{number}: header: unknown column {_q(column)}{hint}")
    for column in REQUIRED_COLUMNS:
        if column not in seen:
            problems.append(
                f"{label}:{number}: header: missing column {_q(column)}; "
                f"the first line must be {','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]"
            )
    return problems
