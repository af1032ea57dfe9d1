"""The project file: typed values, every problem at once with its line, the template round trip."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from mailferry.config import (
    KNOWN_KEYS,
    LineIndex,
    Project,
    check_secrets,
    is_loopback,
    load_project,
    parse_date,
    parse_server_url,
    parse_size,
    render_project,
)
from mailferry.errors import ConfigError, UsageError

GOOD = """\
[project]
name = "acme-2026"
ledger = "acme.ledger.sqlite"

[source]
host = "imap.old.example"
port = 993
security = "tls"
timeout = 30

[source.admin]
user = "mailadmin"
password = "env:SRC_ADMIN_PASSWORD"

[target]
host = "imap.new.example"
security = "starttls"
max_connections = 4

[target.admin]
user = "admin"
password = "file:secrets/target-admin"
method = "dovecot-master"

[accounts]
csv = "accounts.csv"

[[accounts.override]]
source_user = "carol"
skip = true

[[accounts.override]]
source_user = "bob"
target_user = "robert.smith"
source_password = "file:secrets/bob"
exclude_folders = ["^Archive/2010$"]

[folders]
exclude = [
  "^Junk$",
  "^Trash$",
]

[[folders.rename]]
pattern = '^Old Archive/(.*)$'
replacement = 'Archive/\\1'

[messages]
since = "2015-01-01"
before = 2026-01-01
max_size = "50 MB"

[performance]
batch_bytes = "8 MiB"
"""

CSV = """\
# accounts of acme
source_user,target_user
alice,
bob,bob
carol,carol.new
"""


def write(tmp_path: Path, text: str, csv: str = CSV) -> Path:
    (tmp_path / "accounts.csv").write_text(csv, encoding="utf-8")
    path = tmp_path / "project.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, csv: str = CSV) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_project(write(tmp_path, text, csv))
    return caught.value.problems


def line_of(text: str, needle: str, nth: int = 0) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return lines[nth]


def test_good_project_is_typed(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD))
    assert isinstance(project, Project)
    assert project.name == "acme-2026"
    assert project.ledger_path == tmp_path / "acme.ledger.sqlite"
    assert project.reports_dir == tmp_path / "reports"
    assert project.source.port == 993 and project.source.timeout == 30.0
    assert project.source.admin is not None and str(project.source.admin.password) == "env:SRC_ADMIN_PASSWORD"
    assert project.target.port == 143 and project.target.security == "starttls"
    assert project.target.admin is not None and project.target.admin.method == "dovecot-master"
    assert [(a.source_user, a.target_user) for a in project.accounts] == [
        ("alice", "alice"),
        ("bob", "robert.smith"),
    ]
    bob = project.accounts[1]
    assert bob.exclude_folders == ("^Archive/2010$",) and bob.line == 4
    assert bob.source_password is not None and bob.source_password.ref == "file:secrets/bob"
    assert project.folders.exclude == ("^Junk$", "^Trash$")
    assert project.folders.renames[0].replacement == "Archive/\\1"
    assert project.messages.since == date(2015, 1, 1) and project.messages.before == date(2026, 1, 1)
    assert project.messages.max_size == 50_000_000
    assert project.performance.batch_bytes == 8 * 1024 * 1024
    assert project.performance.retries == 5


def test_defaults(tmp_path: Path) -> None:
    text = """
[project]
name = "x"
[source]
host = "127.0.0.1"
security = "none"
[source.admin]
user = "a"
password = "env:A"
[target]
host = "::1"
security = "none"
[target.admin]
user = "a"
password = "env:A"
[accounts]
csv = "accounts.csv"
"""
    project = load_project(write(tmp_path, text))
    assert project.ledger_path == tmp_path / "project.ledger.sqlite"
    assert project.source.port == 143 and project.source.max_connections == 24
    assert project.folders.include == () and project.folders.subscriptions
    assert not project.messages.propagate_deletions and project.messages.sync_flags
    assert project.performance.batch_bytes == 16_000_000
    assert len(project.accounts) == 3


def replace_line(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (old text, new text, key path in the problem, line marker in the new text, words in the problem)
BAD = [
    (
        "port = 993",
        'port = "abc"',
        "source.port",
        'port = "abc"',
        'must be an integer between 1 and 65535, got "abc"',
    ),
    ("port = 993", "port = 70000", "source.port", "port = 70000", "between 1 and 65535"),
    ("port = 993", "port = true", "source.port", "port = true", "got true"),
    ('security = "tls"', 'security = "ssl"', "source.security", 'security = "ssl"', "must be one of"),
    (
        'security = "starttls"',
        'security = "startls"',
        "target.security",
        'security = "startls"',
        'did you mean "starttls"?',
    ),
    ("timeout = 30", "timeout = -1", "source.timeout", "timeout = -1", "above 0"),
    (
        "timeout = 30",
        "tiemout = 30",
        "source.tiemout",
        "tiemout = 30",
        'unknown key; did you mean "timeout"?',
    ),
    (
        "max_connections = 4",
        'max_connections = "4"',
        "target.max_connections",
        'max_connections = "4"',
        "must be an integer",
    ),
    (
        'method = "dovecot-master"',
        'method = "master"',
        "target.admin.method",
        'method = "master"',
        "must be one of",
    ),
    (
        'password = "env:SRC_ADMIN_PASSWORD"',
        'password = "env:1BAD"',
        "source.admin.password",
        'password = "env:1BAD"',
        "environment variable name",
    ),
    (
        'password = "env:SRC_ADMIN_PASSWORD"',
        "password = 5",
        "source.admin.password",
        "password = 5",
        "must be a reference string",
    ),
    ('user = "mailadmin"\n', "", "source.admin.user", "[source.admin]", "missing (required)"),
    (
        'host = "imap.old.example"',
        'host = "imaps://imap.old.example"',
        "source.host",
        "imaps://",
        "must be a host name",
    ),
    ('name = "acme-2026"', "name = 2026", "project.name", "name = 2026", "must be a string, got 2026"),
    ('name = "acme-2026"', 'name = ""', "project.name", 'name = ""', "must not be empty"),
    ("[project]", "[projekt]", "projekt", "[projekt]", 'unknown table; did you mean "project"?'),
    ('csv = "accounts.csv"', 'csv = "nope.csv"', "accounts.csv", 'csv = "nope.csv"', "no such file"),
    ("skip = true", 'skip = "yes"', "accounts.override[0].skip", 'skip = "yes"', "must be true or false"),
    (
        'source_user = "carol"',
        'source_user = "dave"',
        "accounts.override[0].source_user",
        'source_user = "dave"',
        'no account "dave" in accounts.csv',
    ),
    (
        'exclude_folders = ["^Archive/2010$"]',
        'exclude_folders = ["(oops"]',
        "accounts.override[1].exclude_folders[0]",
        "(oops",
        "invalid regular expression",
    ),
    ('"^Trash$",', '"^Trash[",', "folders.exclude[1]", "exclude = [", "invalid regular expression"),
    (
        "replacement = 'Archive/\\1'",
        "replacement = 'Archive/\\2'",
        "folders.rename[0].replacement",
        "replacement =",
        'refers to group "2"',
    ),
    (
        "pattern = '^Old Archive/(.*)$'",
        "pattern = '^Old Archive/(.*$'",
        "folders.rename[0].pattern",
        "pattern =",
        "invalid regular expression",
    ),
    (
        'since = "2015-01-01"',
        'since = "2015-13-01"',
        "messages.since",
        "since =",
        'must be a date like "2015-01-01", got "2015-13-01"',
    ),
    ('since = "2015-01-01"', 'since = "2027-01-01"', "messages.before", "before =", "must be after since"),
    ('max_size = "50 MB"', 'max_size = "50 MBB"', "messages.max_size", "max_size =", 'got "50 MBB"'),
    (
        'max_size = "50 MB"',
        'max_size = "1 KB"\nmin_size = "2 KB"',
        "messages.min_size",
        "min_size =",
        "must not be above max_size",
    ),
    (
        'batch_bytes = "8 MiB"',
        "batch_bytes = [1]",
        "performance.batch_bytes",
        "batch_bytes =",
        "got an array",
    ),
    (
        'batch_bytes = "8 MiB"',
        "connections_per_account = 5",
        "performance.connections_per_account",
        "connections_per_account",
        "must not be above target.max_connections (4)",
    ),
    (
        "[folders]",
        '[folders]\nseparator_substitute = "/"',
        "folders.separator_substitute",
        "separator_substitute",
        'must not hold "/"',
    ),
]


@pytest.mark.parametrize(("old", "new", "key", "marker", "words"), BAD, ids=[b[2] + ":" + b[1] for b in BAD])
def test_bad_value_names_key_and_line(tmp_path: Path, old: str, new: str, key: str, marker: str, words: str) -> None:
    text = replace_line(GOOD, old, new)
    problems = problems_of(tmp_path, text)
    expected_prefix = f"project.toml:{line_of(text, marker)}: {key}: "
    matching = [p for p in problems if p.startswith(expected_prefix)]
    assert matching, (expected_prefix, problems)
    assert words in matching[0]


def test_five_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD
    text = replace_line(text, "port = 993", 'port = "abc"')
    text = replace_line(text, 'security = "starttls"', 'security = "tls-ish"')
    text = replace_line(text, 'max_size = "50 MB"', 'max_size = "big"')
    text = replace_line(text, '"^Junk$",', '"[Junk",')
    text = replace_line(text, "[performance]", "[performance]\nretires = 3")
    problems = problems_of(tmp_path, text)
    assert [p.split(": ")[1] for p in problems] == [
        "source.port",
        "target.security",
        "folders.exclude[0]",
        "messages.max_size",
        "performance.retires",
    ]
    assert problems[-1].endswith('did you mean "retries"?')
    for problem in problems:
        assert re.match(r"project\.toml:\d+: ", problem)


def test_missing_tables_and_keys(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[project]\n\n[source]\nport = 993\n")
    assert "project.toml:1: project.name: missing (required)" in problems
    assert "project.toml:3: source.host: missing (required)" in problems
    assert "project.toml: target: missing table [target] (required)" in problems
    assert "project.toml: accounts: missing table [accounts] (required)" in problems


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[project]\nname = \n", 2),
        ('[project]\nname = "x"\nname = "y"\n', 3),
        ('[project]\nname = "x\n', 2),
        ("[project\n", 1),
        ("a = [1,\n", 1),
    ],
)
def test_toml_syntax_error_has_line(tmp_path: Path, text: str, line: int) -> None:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith(f"project.toml:{line}: TOML syntax error: ")


def test_missing_project_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_project(tmp_path / "none.toml")


def test_plaintext_to_remote_host_refused(tmp_path: Path) -> None:
    text = replace_line(GOOD, 'security = "tls"', 'security = "none"')
    problems = problems_of(tmp_path, text)
    line = line_of(text, 'security = "none"')
    assert problems == [
        f'project.toml:{line}: source.security: "none" would send passwords '
        'unencrypted to imap.old.example, which is not a loopback address; use "tls" or "starttls", '
        "or set allow_plaintext_login = true"
    ]
    allowed = replace_line(text, 'security = "none"', 'security = "none"\nallow_plaintext_login = true')
    assert load_project(write(tmp_path, allowed)).source.security == "none"
    local = replace_line(text, 'host = "imap.old.example"', 'host = "localhost"')
    assert load_project(write(tmp_path, local)).source.security == "none"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("::2", False),
        ("localhost.example", False),
        ("10.0.0.1", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_account_without_login_on_a_side(tmp_path: Path) -> None:
    text = GOOD.replace(
        '[target.admin]\nuser = "admin"\npassword = "file:secrets/target-admin"\nmethod = "dovecot-master"\n',
        "",
    )
    problems = problems_of(tmp_path, text)
    assert problems == [
        'accounts.csv:3: target_password: account "alice" has no target password reference and there is '
        "no [target.admin] login",
        'accounts.csv:4: target_password: account "bob" has no target password reference and there is '
        "no [target.admin] login",
    ]  # carol is skipped, so she needs nothing


def test_many_accounts_without_login_collapse_into_one_problem(tmp_path: Path) -> None:
    text = GOOD.replace('[source.admin]\nuser = "mailadmin"\npassword = "env:SRC_ADMIN_PASSWORD"\n', "")
    text = text.replace('source_password = "file:secrets/bob"\n', "")
    csv = "source_user,target_user\n" + "".join(f"u{i},\n" for i in range(10)) + "bob,\ncarol,\n"
    problems = problems_of(tmp_path, text, csv)
    assert problems == [
        f"project.toml:{line_of(text, '[source]')}: source.admin: none of the 11 accounts in accounts.csv "
        "has a source_password reference and there is no [source.admin] login: give one or the other"
    ]


def test_csv_problems_are_reported_with_the_project_ones(tmp_path: Path) -> None:
    csv = "source_user,target_user\nalice,\nalice,x\nbob,bob,extra\ncarol,\n"
    text = replace_line(GOOD, "port = 993", "port = 0")
    problems = problems_of(tmp_path, text, csv)
    assert problems[0].startswith("project.toml:7: source.port:")
    assert 'accounts.csv:3: source_user: "alice" is listed twice (first on line 2)' in problems
    assert any(p.startswith("accounts.csv:4: expected 2 fields") for p in problems)


def test_override_problems(tmp_path: Path) -> None:
    text = GOOD + '\n[[accounts.override]]\nsource_user = "BOB"\n'
    text = text.replace('target_user = "robert.smith"', 'target_user = "alice"')
    problems = problems_of(tmp_path, text)
    bob, first, alice = (
        line_of(text, 'source_user = "BOB"'),
        line_of(text, "[[accounts.override]]", 1),
        line_of(text, 'target_user = "alice"'),
    )
    assert problems == [
        f'project.toml:{bob}: accounts.override[2].source_user: "BOB" has another override (line {first})',
        f'project.toml:{alice}: accounts.override[1].target_user: "alice" would be the target of two accounts',
    ]


def test_ca_file_relative_to_project(tmp_path: Path) -> None:
    text = replace_line(GOOD, "timeout = 30", 'timeout = 30\nca_file = "ca.pem"')
    problems = problems_of(tmp_path, text)
    assert problems == [f"project.toml:10: source.ca_file: no such file: {tmp_path / 'ca.pem'}"]
    (tmp_path / "ca.pem").write_text("pem")
    assert load_project(write(tmp_path, text)).source.ca_file == tmp_path / "ca.pem"


# --- line index ------------------------------------------------------------------------------------

INDEX_TEXT = '''\
top = 1
[a]
x = 1  # [not.a.header]
"quoted key" = 2
multi = """
y = 3
[fake]
"""
arr = [
  1,
  [2, 3],
]
inline = { p = 1, q = 2 }
d.e = 5

[[t]]
k = 1
[[t]]

k = 2
[ b . c ]
z = 'lit'
'''


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("top",), 1),
        (("a",), 2),
        (("a", "x"), 3),
        (("a", "quoted key"), 4),
        (("a", "multi"), 5),
        (("a", "y"), 2),  # the y inside the string is no key: falls back to [a]
        (("fake",), None),
        (("a", "arr"), 9),
        (("a", "arr", 1), 9),
        (("a", "inline", "q"), 13),
        (("a", "d", "e"), 14),
        (("a", "d"), 2),  # no line of its own: falls back to the enclosing table
        (("t", 0), 16),
        (("t", 0, "k"), 17),
        (("t", 1), 18),
        (("t", 1, "k"), 20),
        (("t", 1, "missing"), 18),
        (("b", "c", "z"), 22),
        (("nothing",), None),
    ],
)
def test_line_index(path: tuple[str | int, ...], line: int | None) -> None:
    assert LineIndex(INDEX_TEXT).line_of(path) == line


# --- value parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("50 MB", 50_000_000),
        ("50MB", 50_000_000),
        ("1 KiB", 1024),
        ("1.5 kib", 1536),
        ("100", 100),
        ("7 B", 7),
        ("2 GiB", 2 * 1024**3),
        ("1 GB", 10**9),
        ("0", 0),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1 MB", "5 XB", "1,5 MB", "5 M B", "1e3"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="must be a size"):
        parse_size(text)


def test_parse_date() -> None:
    assert parse_date("2015-01-01") == date(2015, 1, 1)
    for bad in ["2015-1-1", "20150101", "2015-02-30", "yesterday"]:
        with pytest.raises(ValueError, match="must be a date"):
            parse_date(bad)


# --- template ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("imaps://mail.example", ("mail.example", 993, "tls")),
        ("imaps://mail.example:10993/", ("mail.example", 10993, "tls")),
        ("imap+starttls://mail.example", ("mail.example", 143, "starttls")),
        ("imap://127.0.0.1:1143", ("127.0.0.1", 1143, "none")),
        ("IMAPS://[::1]", ("::1", 993, "tls")),
        ("imap://[2001:db8::1]:143", ("2001:db8::1", 143, "none")),
    ],
)
def test_parse_server_url(url: str, expected: tuple[str, int, str]) -> None:
    assert parse_server_url(url) == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://mail.example", "unknown scheme 'https'"),
        ("mail.example", "no scheme"),
        ("imaps://", "no host"),
        ("imaps://mail.example:99999", "Port out of range"),
        ("imaps://mail.example:abc", "imaps://"),
        ("imaps://mail.example/INBOX", "only scheme, host and port"),
        ("imaps://[::1", "imaps://"),
        ("imaps://mail.example:0", "between 1 and 65535"),
    ],
)
def test_parse_server_url_refuses(url: str, words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        parse_server_url(url)


def test_parse_server_url_never_echoes_a_login() -> None:
    with pytest.raises(UsageError) as caught:
        parse_server_url("imaps://admin:Sup3rSecret@mail.example")
    assert "Sup3rSecret" not in str(caught.value)
    assert "must not hold a login" in str(caught.value)


def render(**overrides: str | None) -> str:
    arguments: dict[str, str | None] = {
        "name": 'acme "2026"',
        "source_url": "imaps://imap.old.example",
        "target_url": "imap+starttls://[2001:db8::1]:1143",
        "accounts_csv": "accounts.csv",
        "source_admin": "mailadmin",
        "source_admin_password": None,
        "target_admin": "admin",
        "target_admin_password": "file:secrets/target",
        "ledger": None,
    }
    arguments.update(overrides)
    return render_project(**arguments)  # type: ignore[arg-type]


def test_template_round_trip(tmp_path: Path) -> None:
    text = render()
    project = load_project(write(tmp_path, text))
    assert project.name == 'acme "2026"'
    assert (project.source.host, project.source.port, project.source.security) == (
        "imap.old.example",
        993,
        "tls",
    )
    assert (project.target.host, project.target.port, project.target.security) == (
        "2001:db8::1",
        1143,
        "starttls",
    )
    assert project.source.admin is not None and project.source.admin.password.ref == "env:SOURCE_ADMIN_PASSWORD"
    assert project.target.admin is not None and project.target.admin.password.ref == "file:secrets/target"
    assert project.ledger_path == tmp_path / "project.ledger.sqlite"
    assert len(project.accounts) == 3


def test_template_without_admins_and_with_ledger(tmp_path: Path) -> None:
    text = render(
        source_admin=None,
        target_admin=None,
        target_admin_password=None,
        ledger="x.sqlite",
        source_url="imap://localhost:1143",
    )
    csv = "source_user,target_user,source_password,target_password\nalice,,env:A,file:b\n"
    project = load_project(write(tmp_path, text, csv))
    assert project.source.admin is None and project.target.admin is None
    assert project.source.security == "none" and project.ledger_path == tmp_path / "x.sqlite"


def test_template_plaintext_remote_is_left_for_the_operator_to_decide(tmp_path: Path) -> None:
    text = render(source_url="imap://imap.old.example")
    assert "WARNING" in text
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "allow_plaintext_login = true" in problems[0]


@pytest.mark.parametrize("admins", [True, False])
def test_template_documents_every_key(admins: bool) -> None:
    text = render() if admins else render(source_admin=None, target_admin=None, target_admin_password=None)
    for table, keys in KNOWN_KEYS.items():
        if table:
            assert f"[{table}]" in text, table
        for key in keys:
            if f"{table}.{key}" in KNOWN_KEYS or not table:
                continue
            assert re.search(rf"^(# )?{key} = ", text, re.MULTILINE), f"{table}.{key}"
    # Each key line is preceded by a comment or is a commented example.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[a-z_]+ = ", line):
            assert lines[i - 1].startswith("#"), line


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"source_url": "pop3://x"}, "unknown scheme"),
        ({"name": " "}, "name must not be empty"),
        ({"source_admin_password": "hunter2"}, "passwords go in by reference"),
        ({"target_admin": None}, "target admin password given without a target admin login"),
    ],
)
def test_template_refuses(overrides: dict[str, str | None], words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        render(**overrides)
    assert "hunter2" not in str(caught.value)


# --- check_secrets ----------------------------------------------------------------------------------


def test_check_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = load_project(write(tmp_path, GOOD))
    monkeypatch.delenv("SRC_ADMIN_PASSWORD", raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "target-admin").write_text("pw\n")
    (secrets / "target-admin").chmod(0o644)
    problems, warnings = check_secrets(project)
    assert problems == [
        "secret env:SRC_ADMIN_PASSWORD: environment variable SRC_ADMIN_PASSWORD is not set",
        f"secret file:secrets/bob: file {secrets / 'bob'} does not exist",
    ]
    assert len(warnings) == 1 and "chmod 600" in warnings[0]
