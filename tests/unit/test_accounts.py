"""The accounts CSV: header, comments, blanks, BOM, duplicates, references, line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailferry.config import AccountConfig, SecretRef, parse_accounts_csv, read_accounts_csv


def parse(text: str) -> tuple[list[AccountConfig], list[str]]:
    return parse_accounts_csv(text, label="accounts.csv")


def test_good_file(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(
        "\ufeff# migrated in May\n"
        "Source_User , target_user,source_password,target_password\n"
        "\n"
        "  alice , alice.smith ,env:ALICE_OLD, file:secrets/alice\n"
        "   # a comment after blanks\n"
        "bob,,,\n"
        '"jörg",jorg,,\n'.encode()
    )
    accounts, problems = read_accounts_csv(path)
    assert problems == []
    assert accounts == [
        AccountConfig("alice", "alice.smith", SecretRef("env:ALICE_OLD"), SecretRef("file:secrets/alice"), (), 4),
        AccountConfig("bob", "bob", None, None, (), 6),
        AccountConfig("jörg", "jorg", None, None, (), 7),
    ]


def test_two_columns_are_enough() -> None:
    accounts, problems = parse("target_user,source_user\nnew,old\n")
    assert problems == [] and accounts == [AccountConfig("old", "new", line=2)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "",
            [
                "accounts.csv:1: no header row: the first line must be "
                "source_user,target_user,source_password,target_password"
            ],
        ),
        (
            "# only a comment\n\n",
            [
                "accounts.csv:1: no header row: the first line must be "
                "source_user,target_user,source_password,target_password"
            ],
        ),
        ("source_user,target_user\n", ["accounts.csv: lists no accounts"]),
        (
            "alice,Hunter2pw\n",
            [
                "accounts.csv:1: no header row: the first line must be "
                "source_user,target_user[,source_password,target_password]"
            ],
        ),
        (
            "source_user,target_usr\nalice,\n",
            [
                'accounts.csv:1: header: unknown column "target_usr"; did you mean "target_user"?',
                'accounts.csv:1: header: missing column "target_user"; the first line must be '
                "source_user,target_user[,source_password,target_password]",
            ],
        ),
        (
            "source_user,target_user,target_user\nalice,,\n",
            ['accounts.csv:1: header: column "target_user" appears twice'],
        ),
        (
            "source_user,target_user\nalice,a\nbob\ncarol,c,d\n",
            [
                "accounts.csv:3: expected 2 fields (source_user,target_user), got 1",
                "accounts.csv:4: expected 2 fields (source_user,target_user), got 3",
            ],
        ),
        ("source_user,target_user\n,x\n", ["accounts.csv:2: source_user: empty"]),
        (
            "source_user,target_user\nalice,\nAlice,x\n",
            ['accounts.csv:3: source_user: "Alice" is listed twice (first on line 2)'],
        ),
        (
            "source_user,target_user\nalice,\n\nbob,ALICE\n",
            ['accounts.csv:4: target_user: "ALICE" is the target of two accounts (first on line 2)'],
        ),
        (
            'source_user,target_user\n"alice,x\n',
            ["accounts.csv:2: cannot read this row as CSV: unexpected end of data"],
        ),
        (
            "source_user,target_user,source_password\nalice,,Hunter2pw\nbob,,env:\n",
            [
                "accounts.csv:2: source_password: passwords go in by reference: env:NAME or file:PATH "
                '(account "alice")',
                "accounts.csv:3: source_password: env: needs an environment variable name "
                "(letters, digits and _, "
                'not starting with a digit) (account "bob")',
            ],
        ),
    ],
)
def test_problems(text: str, expected: list[str]) -> None:
    accounts, problems = parse(text)
    assert problems == expected
    assert all("Hunter2pw" not in p for p in problems)


def test_valid_rows_survive_bad_ones() -> None:
    accounts, problems = parse("source_user,target_user\nalice,\nalice,\nbob,\n")
    assert [a.source_user for a in accounts] == ["alice", "bob"]
    assert len(problems) == 1


def test_unreadable_files(tmp_path: Path) -> None:
    assert read_accounts_csv(tmp_path / "none.csv") == (
        [],
        [f"none.csv: file {tmp_path / 'none.csv'} does not exist"],
    )
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"source_user,target_user,source_password\nj\xf6rg,,\n")
    assert read_accounts_csv(path) == ([], ["latin1.csv:2: not UTF-8 text (save the file as UTF-8)"])


def test_crlf_line_endings() -> None:
    accounts, problems = parse("source_user,target_user\r\nalice,a\r\nbob,b\r\n")
    assert problems == [] and [(a.target_user, a.line) for a in accounts] == [("a", 2), ("b", 3)]
