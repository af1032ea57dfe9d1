"""The [directory] section: typed values, every bad value named with its key and line, the
accounts CSV that `directory apply` writes, the template's commented block, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailferry.config import (
    LDAP_LOGICAL_ATTRIBUTES,
    TEMPLATE_PLACEHOLDERS,
    check_secrets,
    load_project,
    parse_ldap_url,
    render_project,
)
from mailferry.config.load import dn_problem, filter_problem, template_problems
from mailferry.errors import ConfigError

BASE = """\
[project]
name = "acme"

[source]
host = "imap.old.example"

[source.admin]
user = "mailadmin"
password = "env:SRC_ADMIN_PASSWORD"

[target]
host = "imap.new.example"

[target.admin]
user = "admin"
password = "env:TGT_ADMIN_PASSWORD"

[accounts]
csv = "accounts.csv"
"""

DIRECTORY = """
[directory]
target_container = "OU=Migrated,DC=tgt,DC=test"
rules = ["custom", "x500", "smtp"]
custom_attribute = "employeeID"
include_contacts = true
include_groups = false
keep_old_addresses = false
accounts_csv = "out/identity.csv"
account_key = "mail"
confirm_mailboxes = false

[directory.source]
url = "ldaps://dc1.old.example"
bind_dn = "CN=Administrator,CN=Users,DC=src,DC=test"
password = "env:SRC_LDAP_PASSWORD"
dialect = "ad"
bases = ["OU=Sales\\\\, Europe,DC=src,DC=test", "OU=IT,DC=src,DC=test"]
filter = "(!(department=Test))"
tls_server_name = "dc1.src.test"
timeout = 10
page_size = 500

[directory.source.attributes]
alias = "proxyAddresses"

[directory.target]
url = "ldap+starttls://[2001:db8::5]:10389"
bind_dn = "cn=admin,dc=tgt,dc=test"
password = "file:secrets/tgt-ldap"
dialect = "generic"
verify_certificates = false

[directory.create]
objectClass = "top person organizationalPerson inetOrgPerson"
description = "Migrated: $login costs $$5 (${given} ${sn})"

[directory.mail_attributes]
mail = "${login}@tgt.test"
mailAlternateAddress = "${primary_smtp}"

[directory.lock]
pwdAccountLockedTime = "000001010000Z"
"""

MINIMAL = """
[directory]
target_container = "OU=Migrated,DC=tgt,DC=test"

[directory.source]
url = "ldaps://dc1.old.example"
bind_dn = "CN=Administrator,CN=Users,DC=src,DC=test"
password = "env:SRC_LDAP_PASSWORD"

[directory.target]
url = "ldap://127.0.0.12"
bind_dn = "CN=Administrator,CN=Users,DC=tgt,DC=test"
password = "env:TGT_LDAP_PASSWORD"
"""

CSV = "source_user,target_user\nalice,\nbob,bob\n"


def write(tmp_path: Path, text: str, csv: str | None = CSV) -> Path:
    if csv is not None:
        (tmp_path / "accounts.csv").write_text(csv, encoding="utf-8")
    path = tmp_path / "project.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, csv: str | None = CSV) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_project(write(tmp_path, text, csv))
    return caught.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_full_directory_section_is_typed(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, BASE + DIRECTORY))
    d = project.directory
    assert d is not None
    assert d.target_container == "OU=Migrated,DC=tgt,DC=test"
    assert d.rules == ("custom", "x500", "smtp") and d.custom_attribute == "employeeID"
    assert (d.include_contacts, d.include_groups, d.keep_old_addresses, d.confirm_mailboxes) == (
        True,
        False,
        False,
        False,
    )
    assert d.accounts_csv == tmp_path / "out" / "identity.csv" and d.account_key == "mail"
    assert dict(d.create) == {
        "objectClass": "top person organizationalPerson inetOrgPerson",
        "description": "Migrated: $login costs $$5 (${given} ${sn})",
    }
    assert dict(d.mail_attributes) == {"mail": "${login}@tgt.test", "mailAlternateAddress": "${primary_smtp}"}
    assert dict(d.lock) == {"pwdAccountLockedTime": "000001010000Z"}
    s, t = d.source, d.target
    assert (s.host, s.port, s.security, s.dialect) == ("dc1.old.example", 636, "tls", "ad")
    assert s.bind_dn == "CN=Administrator,CN=Users,DC=src,DC=test" and s.password.ref == "env:SRC_LDAP_PASSWORD"
    assert s.bases == ("OU=Sales\\, Europe,DC=src,DC=test", "OU=IT,DC=src,DC=test")
    assert s.filter == "(!(department=Test))" and s.tls_server_name == "dc1.src.test"
    assert (s.timeout, s.page_size, dict(s.attributes)) == (10.0, 500, {"alias": "proxyAddresses"})
    assert s.verify_certificates and not s.allow_plaintext_login
    assert (t.host, t.port, t.security, t.dialect) == ("2001:db8::5", 10389, "starttls", "generic")
    assert t.password.ref == "file:secrets/tgt-ldap" and not t.verify_certificates
    assert (t.bases, t.filter, t.timeout, t.page_size, dict(t.attributes)) == ((), "", 30.0, 1000, {})
    # The IMAP side is untouched by [directory].
    assert [a.source_user for a in project.accounts] == ["alice", "bob"]


def test_directory_defaults(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, BASE + MINIMAL))
    d = project.directory
    assert d is not None
    assert d.rules == ("sid", "x500", "smtp", "login") and d.custom_attribute == ""
    assert not d.include_contacts and not d.include_groups and d.keep_old_addresses and d.confirm_mailboxes
    assert d.accounts_csv == tmp_path / "accounts.csv" and d.account_key == "login"
    assert dict(d.create) == dict(d.mail_attributes) == dict(d.lock) == {}
    # ldap:// to loopback is fine without allow_plaintext_login; the port defaults to 389.
    assert (d.target.host, d.target.port, d.target.security) == ("127.0.0.12", 389, "none")


def test_no_directory_section(tmp_path: Path) -> None:
    assert load_project(write(tmp_path, BASE)).directory is None


# (old, new, key path, marker of the line, words in the problem)
BAD = [
    ('url = "ldaps://dc1.old.example"', 'url = "https://dc1.old.example"', "directory.source.url",
     'url = "https', 'unknown scheme "https"'),
    ('url = "ldaps://dc1.old.example"', 'url = "ldaps://dc1.old.example/DC=src"', "directory.source.url",
     'url = "ldaps', "only scheme, host and port"),
    ('dialect = "generic"', 'dialect = "openldap"', "directory.target.dialect",
     'dialect = "openldap"', 'must be one of "ad", "generic"'),
    ('dialect = "ad"', 'dialect = "add"', "directory.source.dialect", 'dialect = "add"', 'did you mean "ad"?'),
    ('rules = ["custom", "x500", "smtp"]', 'rules = ["custom", "x500", "smpt"]', "directory.rules[2]",
     "rules = [", 'got "smpt"; did you mean "smtp"?'),
    ('rules = ["custom", "x500", "smtp"]', 'rules = ["custom", "x500", "custom"]', "directory.rules[2]",
     "rules = [", '"custom" is already rules[0]'),
    ('rules = ["custom", "x500", "smtp"]', "rules = []", "directory.rules", "rules = []", "at least one rule"),
    ('rules = ["custom", "x500", "smtp"]', 'rules = ["sid", "custom"]', "directory.rules",
     "rules = [", 'must hold "x500", "smtp" or "login"'),
    ('custom_attribute = "employeeID"', 'custom_attribute = ""', "directory.custom_attribute",
     "custom_attribute", 'the "custom" rule needs the attribute'),
    ('rules = ["custom", "x500", "smtp"]', 'rules = ["x500", "smtp"]', "directory.custom_attribute",
     "custom_attribute", 'rules does not hold "custom"'),
    ('url = "ldap+starttls://[2001:db8::5]:10389"', 'url = "ldap://[2001:db8::5]:10389"', "directory.target.url",
     'url = "ldap://', "unencrypted to 2001:db8::5"),
    ('mail = "${login}@tgt.test"', 'mail = "${uid}@tgt.test"', "directory.mail_attributes.mail",
     'mail = "${uid}', "unknown placeholder ${uid}"),
    ('mail = "${login}@tgt.test"', 'mail = "${logon}@tgt.test"', "directory.mail_attributes.mail",
     'mail = "${logon}', "did you mean ${login}?"),
    ('description = "Migrated', 'description = "Costs $5. Migrated', "directory.create.description",
     "description =", 'the "$" at character 7 starts no placeholder'),
    ('target_container = "OU=Migrated,DC=tgt,DC=test"', 'target_container = "Migrated"',
     "directory.target_container", "target_container", 'part "Migrated" is not attribute=value'),
    ('target_container = "OU=Migrated,DC=tgt,DC=test"', 'target_container = "OU=Migrated,,DC=test"',
     "directory.target_container", "target_container", "has an empty part"),
    ('bind_dn = "cn=admin,dc=tgt,dc=test"', 'bind_dn = "cn=admin,dc="', "directory.target.bind_dn",
     "bind_dn = \"cn=admin,dc=\"", 'part "dc=" has no value'),
    ('"OU=IT,DC=src,DC=test"', '"OU=IT,DC=src,DC=test\\\\"', "directory.source.bases[1]", "bases = ", "lone \\"),
    ('alias = "proxyAddresses"', 'alais = "proxyAddresses"', "directory.source.attributes.alais",
     'alais = "proxy', 'unknown logical attribute; did you mean "alias"?'),
    ('tls_server_name = "dc1.src.test"', 'tls_servername = "dc1.src.test"', "directory.source.tls_servername",
     "tls_servername", 'unknown key; did you mean "tls_server_name"?'),
    ("[directory.mail_attributes]", "[directory.mail_attribute]", "directory.mail_attribute",
     "[directory.mail_attribute]", 'unknown table; did you mean "mail_attributes"?'),
    ("page_size = 500", "page_size = 0", "directory.source.page_size", "page_size = 0",
     "between 1 and 100000, got 0"),
    ("page_size = 500", "page_size = 100001", "directory.source.page_size", "page_size = 100001",
     "between 1 and 100000, got 100001"),
    ('filter = "(!(department=Test))"', 'filter = "(!(department=Test)"', "directory.source.filter",
     "filter = ", '1 "(" not closed'),
    ('filter = "(!(department=Test))"', 'filter = "department=Test"', "directory.source.filter",
     "filter = ", "in parentheses"),
    ('account_key = "mail"', 'account_key = "upn"', "directory.account_key", "account_key", 'one of "login", "mail"'),
    ('objectClass = "top', '"object class" = "top', 'directory.create.object class', "object class",
     "must be an LDAP attribute name"),
    ('pwdAccountLockedTime = "000001010000Z"', 'pwdAccountLockedTime = ""', "directory.lock.pwdAccountLockedTime",
     "pwdAccountLockedTime", "must not be empty"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "key", "marker", "words"), BAD)
def test_bad_value_names_key_and_line(tmp_path: Path, old: str, new: str, key: str, marker: str, words: str) -> None:
    assert old in DIRECTORY
    text = BASE + DIRECTORY.replace(old, new, 1)
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"project.toml:{line_of(text, marker)}: {key}: "), problems
    assert words in problems[0], problems


def test_literal_password_is_refused_and_never_shown(tmp_path: Path) -> None:
    text = BASE + DIRECTORY.replace('password = "env:SRC_LDAP_PASSWORD"', 'password = "Pa55w0rd!xyz"')
    problems = problems_of(tmp_path, text)
    assert problems == [
        f"project.toml:{line_of(text, 'Pa55w0rd')}: directory.source.password: "
        "passwords go in by reference: env:NAME or file:PATH"
    ]


def test_login_in_url_is_not_shown(tmp_path: Path) -> None:
    text = BASE + DIRECTORY.replace("ldaps://dc1.old.example", "ldaps://admin:S3cretPW@dc1.old.example")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "must not hold a login" in problems[0]
    assert "S3cretPW" not in problems[0]


def test_plaintext_allowed_when_the_file_says_so(tmp_path: Path) -> None:
    text = BASE + DIRECTORY.replace(
        'url = "ldap+starttls://[2001:db8::5]:10389"',
        'url = "ldap://[2001:db8::5]"\nallow_plaintext_login = true',
    )
    d = load_project(write(tmp_path, text)).directory
    assert d is not None and d.target.security == "none" and d.target.port == 389 and d.target.allow_plaintext_login


def test_missing_required_keys_and_tables(tmp_path: Path) -> None:
    text = BASE + '\n[directory]\n\n[directory.source]\ndialect = "ad"\n'
    problems = problems_of(tmp_path, text)
    header, source = line_of(text, "[directory]"), line_of(text, "[directory.source]")
    assert problems == [
        f"project.toml:{source}: directory.source.url: missing (required)",
        f"project.toml:{source}: directory.source.bind_dn: missing (required)",
        f"project.toml:{source}: directory.source.password: missing (required): "
        "passwords go in by reference: env:NAME or file:PATH",
        f"project.toml:{header}: directory.target: missing table [directory.target] (required)",
        f"project.toml:{header}: directory.target_container: missing (required)",
    ]


def test_generic_target_needs_a_lock_marker(tmp_path: Path) -> None:
    text = BASE + DIRECTORY.replace('[directory.lock]\npwdAccountLockedTime = "000001010000Z"\n', "")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith(f"project.toml:{line_of(text, '[directory]')}: directory.lock: missing")


def test_many_problems_at_once(tmp_path: Path) -> None:
    text = BASE + DIRECTORY
    for old, new in [
        ('url = "ldaps://dc1.old.example"', 'url = "ftp://x"'),
        ('dialect = "generic"', 'dialect = "novell"'),
        ("page_size = 500", "page_size = -1"),
        ('mail = "${login}@tgt.test"', 'mail = "${who}"'),
    ]:
        text = text.replace(old, new)
    keys = [p.split(": ")[1] for p in problems_of(tmp_path, text)]
    assert keys == [
        "directory.source.url",
        "directory.source.page_size",
        "directory.target.dialect",
        "directory.mail_attributes.mail",
    ]


# --- the accounts CSV that `directory apply` writes -------------------------------------------------


def test_missing_accounts_csv_is_allowed_with_directory(tmp_path: Path) -> None:
    text = BASE + '\n[[accounts.override]]\nsource_user = "carol"\nskip = true\n' + MINIMAL
    project = load_project(write(tmp_path, text, csv=None))
    assert project.accounts == () and project.directory is not None


def test_existing_accounts_csv_is_still_checked_with_directory(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, BASE + MINIMAL, csv="source_user,target_user\nalice,\nalice,\n")
    assert len(problems) == 1 and problems[0].startswith("accounts.csv:3: ")


def test_missing_accounts_csv_is_refused_without_directory(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, BASE, csv=None)
    assert problems == [
        f"project.toml:{line_of(BASE, 'csv = ')}: accounts.csv: no such file: {tmp_path / 'accounts.csv'}"
    ]


def test_accounts_table_stays_required_with_directory(tmp_path: Path) -> None:
    text = BASE.replace('[accounts]\ncsv = "accounts.csv"\n', "") + MINIMAL
    assert problems_of(tmp_path, text, csv=None) == ["project.toml: accounts: missing table [accounts] (required)"]


def test_check_secrets_includes_directory_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = load_project(write(tmp_path, BASE + MINIMAL))
    for name in ("SRC_LDAP_PASSWORD", "TGT_LDAP_PASSWORD", "SRC_ADMIN_PASSWORD", "TGT_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    problems, _ = check_secrets(project)
    assert [p.split(":")[1].split()[0] for p in problems[:2]] == ["SRC_LDAP_PASSWORD", "TGT_LDAP_PASSWORD"]


# --- template ---------------------------------------------------------------------------------------


def render() -> str:
    return render_project(
        name="acme",
        source_url="imaps://imap.old.example",
        target_url="imaps://imap.new.example",
        accounts_csv="accounts.csv",
        source_admin="mailadmin",
        source_admin_password=None,
        target_admin="admin",
        target_admin_password=None,
        ledger=None,
    )


def uncomment_directory(text: str) -> str:
    """Remove "# " before each table header and key line of the [directory] block."""
    head, block = text.split("# [directory]\n", 1)
    block = "# [directory]\n" + block
    return head + re.sub(r"^# (?=\[|[A-Za-z_]+ = )", "", block, flags=re.MULTILINE)


def test_template_directory_block_is_commented_out(tmp_path: Path) -> None:
    text = render()
    block = text[text.index("# Directory migration") :]
    assert all(line.startswith("# ") for line in block.splitlines() if line)
    assert load_project(write(tmp_path, text)).directory is None


def test_template_directory_block_loads_once_uncommented(tmp_path: Path) -> None:
    text = uncomment_directory(render())
    assert "\n[directory]\n" in text and "\n[directory.lock]\n" in text
    # The values the operator fills in; the example ones are valid too.
    text = text.replace("OU=Migrated,DC=new,DC=example", "OU=People,DC=tgt,DC=test")
    project = load_project(write(tmp_path, text, csv=None))
    d = project.directory
    assert d is not None and project.accounts == ()
    assert d.target_container == "OU=People,DC=tgt,DC=test"
    assert (d.source.host, d.source.port, d.source.security) == ("dc1.old.example", 636, "tls")
    assert d.source.password.ref == "env:SOURCE_LDAP_PASSWORD" and d.target.password.ref == "env:TARGET_LDAP_PASSWORD"
    assert dict(d.source.attributes) == {"alias": "mailAlternateAddress"}
    assert (
        set(d.create) == {"description"}
        and set(d.mail_attributes) == {"mail"}
        and set(d.lock) == {"pwdAccountLockedTime"}
    )
    assert dict(d.resolve) == {"CN=Frank Fox,OU=Staff,DC=old,DC=example": "CN=Frank Fox,OU=Sales,DC=new,DC=example"}
    assert d.upn_suffix == ""


# --- pure helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ldaps://dc1.example", ("dc1.example", 636, "tls")),
        ("ldaps://dc1.example:10636/", ("dc1.example", 10636, "tls")),
        ("ldap+starttls://dc1.example", ("dc1.example", 389, "starttls")),
        ("LDAP://127.0.0.11", ("127.0.0.11", 389, "none")),
        ("ldap://[::1]:3389", ("::1", 3389, "none")),
    ],
)
def test_parse_ldap_url(url: str, expected: tuple[str, int, str]) -> None:
    assert parse_ldap_url(url) == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("imaps://x", 'unknown scheme "imaps"'),
        ("dc1.example", "no scheme"),
        ("ldaps://", "no host"),
        ("ldaps://x:0", "between 1 and 65535"),
        ("ldaps://x:99999", "out of range"),
        ("ldaps://x/?cn", "only scheme, host and port"),
        ("ldaps://u:p@x", "must not hold a login"),
    ],
)
def test_parse_ldap_url_refuses(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)) as caught:
        parse_ldap_url(url)
    assert "@" not in str(caught.value)


@pytest.mark.parametrize(
    "dn",
    [
        "DC=example,DC=com",
        "CN=Smith\\, John,OU=Sales,DC=example,DC=com",
        "cn=a+sn=b,dc=x",
        "CN=J\\C3\\BCrgen,DC=x",
        "CN=a=b,DC=x",
        "1.3.6.1.4.1.1466.0=x,dc=y",
        " OU = Migrated , DC=x ",
    ],
)
def test_dn_accepted(dn: str) -> None:
    assert dn_problem(dn) is None


@pytest.mark.parametrize(
    ("dn", "words"),
    [
        ("DC=example,", "empty part"),
        ("Smith, John", "not attribute=value"),
        ("9x=y", "invalid attribute type"),
        ("CN=x\\", "lone"),
        ("CN=x\\q", "unknown escape"),
        ("CN=,DC=x", "no value"),
    ],
)
def test_dn_refused(dn: str, words: str) -> None:
    problem = dn_problem(dn)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("(a=1)", True),
        ("(&(a=1)(|(b=2)(c=\\28x\\29)))", True),
        ("(a=1)(b=2)", False),
        ("((a=1)", False),
        ("(a=1))", False),
        ("()", False),
        ("a=1", False),
    ],
)
def test_filter_problem(text: str, ok: bool) -> None:
    assert (filter_problem(text) is None) == ok


def test_template_problems() -> None:
    assert template_problems("${login}.$sn $$ ${primary_smtp}") == []
    assert template_problems("${Login}") == ["unknown placeholder ${Login}; did you mean ${login}?"]
    assert len(template_problems("$ ${x y}")) == 2


def test_names_agree_with_planner_and_connector() -> None:
    from mailferry.config import DIRECTORY_RULES
    from mailferry.config.load import _REFINDING_RULES
    from mailferry.connectors.ldap import DEFAULT_ATTRIBUTES
    from mailferry.model.directory import MATCH_RULES
    from mailferry.plan.directory import PLACEHOLDERS, REFINDING_RULES

    assert set(TEMPLATE_PLACEHOLDERS) == set(PLACEHOLDERS)
    assert set(LDAP_LOGICAL_ATTRIBUTES) == {name for names in DEFAULT_ATTRIBUTES.values() for name in names}
    assert set(_REFINDING_RULES) == REFINDING_RULES
    assert tuple(DIRECTORY_RULES) == tuple(MATCH_RULES)


# --- secrets ----------------------------------------------------------------------------------------

# URL and TOML punctuation often, so the secret lands where parsers quote what they could not read.
_alphabet = st.one_of(st.sampled_from("/:@?#[]\\\"' ="), st.characters(blacklist_categories=("Cs", "Cc")))
# A secret made of plain words (Hypothesis found "source") is in every message as a key name: only
# secrets with a character no message or key name holds can show a leak.
_secret = st.text(alphabet=_alphabet, min_size=6, max_size=40).filter(
    lambda s: (
        not s.strip().startswith(("env:", "file:"))
        and s.strip() == s
        and len(set(s)) > 3
        and any(c in "@?#[]\\\"'" or ord(c) > 127 for c in s)
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=_secret)
def test_random_secrets_never_reach_problem_text(tmp_path: Path, secret: str) -> None:
    # Also make other problems, so messages have a reason to show values.
    escaped = secret.replace("\\", "\\\\").replace('"', '\\"')
    text = BASE + DIRECTORY.replace('password = "env:SRC_LDAP_PASSWORD"', f'password = "{escaped}"').replace(
        'password = "file:secrets/tgt-ldap"', f"password = {len(secret)}"
    ).replace("ldaps://dc1.old.example", f"ldaps://admin:{escaped}@dc1.old.example").replace(
        "page_size = 500", "page_size = 0"
    )
    with pytest.raises(ConfigError) as caught:
        load_project(write(tmp_path, text))
    shown = "\n".join(caught.value.problems) + str(caught.value)
    assert secret not in shown
    assert "directory.source.password" in shown and "directory.target.password" in shown


# --- the admin's decisions: [[directory.resolve]] ---------------------------------------------------

RESOLVE = """
upn_suffix = "Corp.Example"

[[directory.resolve]]
source = "CN=Frank Fox,OU=Staff,DC=src,DC=test"
target = "CN=Frank One,OU=Users,DC=tgt,DC=test"

[[directory.resolve]]
source = "CN=Gina Gnu,OU=Staff,DC=src,DC=test"
target = "Create"
"""


def with_resolve(block: str) -> str:
    return BASE + MINIMAL.replace('target_container = "OU=Migrated,DC=tgt,DC=test"\n',
                                  'target_container = "OU=Migrated,DC=tgt,DC=test"\n' + block, 1)  # fmt: skip


def test_resolutions_are_typed(tmp_path: Path) -> None:
    d = load_project(write(tmp_path, with_resolve(RESOLVE))).directory
    assert d is not None and d.upn_suffix == "corp.example"
    assert dict(d.resolve) == {
        "CN=Frank Fox,OU=Staff,DC=src,DC=test": "CN=Frank One,OU=Users,DC=tgt,DC=test",
        "CN=Gina Gnu,OU=Staff,DC=src,DC=test": "create",
    }


def test_every_bad_resolution_is_reported_at_once(tmp_path: Path) -> None:
    block = """upn_suffix = "not a domain"

[[directory.resolve]]
source = "Frank Fox"
target = "CN=A,DC=tgt,DC=test"

[[directory.resolve]]
source = "CN=Gina,DC=src,DC=test"
target = "somewhere"

[[directory.resolve]]
source = "CN=Hal,DC=src,DC=test"
target = "CN=A,DC=tgt,DC=test"

[[directory.resolve]]
source = "cn=hal,dc=src,dc=test"
target = "create"

[[directory.resolve]]
source = "CN=Ida,DC=src,DC=test"
target = "cn=a,dc=tgt,dc=test"

[[directory.resolve]]
source = "CN=Jo,DC=src,DC=test"
whom = "create"
"""
    text = with_resolve(block)
    problems = problems_of(tmp_path, text)
    keys = [p.split(": ")[1] for p in problems]
    assert sorted(keys) == [
        "directory.resolve[0].source",
        "directory.resolve[1].target",
        "directory.resolve[3].source",
        "directory.resolve[4].target",
        "directory.resolve[5].target",
        "directory.resolve[5].whom",
        "directory.upn_suffix",
    ], problems
    said = dict(zip(keys, problems, strict=True))
    assert "is resolved already in resolve[2]" in said["directory.resolve[3].source"]
    assert "two people can't be one entry" in said["directory.resolve[4].target"]
    assert 'must be a target DN or "create"' in said["directory.resolve[1].target"]
