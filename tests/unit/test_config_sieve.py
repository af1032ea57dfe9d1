"""The ManageSieve part of the project file: [source.sieve]/[target.sieve] and the "filters" item."""

from __future__ import annotations

from pathlib import Path

from test_config import GOOD, line_of, problems_of, write

from mailferry.config import load_project, render_project

SIEVE = """
[source.sieve]
url = "sieve://imap.old.example"
[target.sieve]
url = "sieve://127.0.0.1:14190"
security = "none"
"""


def test_sieve_sides_add_filters_by_default(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, GOOD + SIEVE))
    assert p.items == ("mail", "filters", "permissions", "metadata")
    assert p.source.sieve is not None and (p.source.sieve.host, p.source.sieve.port) == ("imap.old.example", 4190)
    assert p.source.sieve.security == "starttls" and p.source.sieve.verify_certificates
    assert p.target.sieve is not None and (p.target.sieve.port, p.target.sieve.security) == (14190, "none")


def test_filters_need_both_sides(tmp_path: Path) -> None:
    text = GOOD.replace('ledger = "acme.ledger.sqlite"', 'ledger = "acme.ledger.sqlite"\nitems = ["mail", "filters"]')
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "[source and target.sieve]" in problems[0]


def test_every_sieve_problem_at_once_with_line_and_key(tmp_path: Path) -> None:
    bad = """
[source.sieve]
url = "imap://imap.old.example"
secutiry = "tls"
[target.sieve]
url = "sieve://mail.new.example:4190"
security = "none"
"""
    text = GOOD + bad
    problems = problems_of(tmp_path, text)
    joined = "\n".join(problems)
    assert len(problems) == 3, problems
    assert f"project.toml:{line_of(text, 'imap://imap.old.example')}: source.sieve.url" in joined
    assert "secutiry" in joined
    assert "target.sieve.security" in joined and "not a loopback address" in joined


def test_init_template_shows_sieve_tables_commented(tmp_path: Path) -> None:
    text = render_project(
        name="p",
        source_url="imap://127.0.0.1:1143",
        target_url="imap://127.0.0.1:2143",
        accounts_csv="accounts.csv",
        source_admin="admin",
        source_admin_password="env:A",
        target_admin="admin",
        target_admin_password="env:B",
        ledger=None,
    )
    assert "# [source.sieve]" in text and '# url = "sieve://mail.new.example:4190"' in text
    uncommented = text.replace("# [source.sieve]", "[source.sieve]").replace(
        '# url = "sieve://mail.old.example:4190"', 'url = "sieve://mail.old.example:4190"'
    )
    (tmp_path / "accounts.csv").write_text("source_user,target_user\na,a\n")
    (tmp_path / "p.toml").write_text(uncommented)
    assert load_project(tmp_path / "p.toml").source.sieve is not None
