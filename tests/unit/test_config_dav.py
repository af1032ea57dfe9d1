"""The DAV part of the project file: [source.dav]/[target.dav], [project] items, [calendars]."""

from __future__ import annotations

from pathlib import Path

from test_config import GOOD, problems_of, write

from mailferry.config import load_project, render_project

DAV = """
[source.dav]
url = "https://dav.old.example/dav"
[source.dav.admin]
user = "cyrus"
password = "env:SRC_DAV"
method = "authorize-as"

[target.dav]
url = "http://127.0.0.1:5232"
[target.dav.admin]
user = "admin"
password = "env:TGT_DAV"

[calendars]
scheduling = "paused"
propagate_deletions = true
[calendars.addresses]
"Ann@old.example" = "ann.smith@new.example"
[calendars.domains]
"old.example" = "new.example"
"""


def test_dav_sides_items_and_rules_are_typed(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, GOOD + DAV))
    assert p.items == ("mail", "calendars", "contacts", "permissions", "metadata")  # both sides have DAV: all
    assert p.source.dav is not None and p.source.dav.url == "https://dav.old.example/dav/"
    assert p.source.dav.admin is not None and p.source.dav.admin.method == "authorize-as"
    assert p.target.dav is not None and p.target.dav.url == "http://127.0.0.1:5232/"
    assert p.target.dav.admin is not None and p.target.dav.admin.method == "path"
    assert p.calendars.scheduling == "paused" and p.calendars.propagate_deletions
    assert p.calendars.addresses == {"ann@old.example": "ann.smith@new.example"}
    assert p.calendars.domains == {"old.example": "new.example"}


def test_without_dav_mail_and_folder_settings(tmp_path: Path) -> None:
    assert load_project(write(tmp_path, GOOD)).items == ("mail", "permissions", "metadata")


def test_items_narrow_and_need_both_dav_sides(tmp_path: Path) -> None:
    text = GOOD.replace('ledger = "acme.ledger.sqlite"', 'ledger = "acme.ledger.sqlite"\nitems = ["contacts"]')
    assert load_project(write(tmp_path, text + DAV)).items == ("contacts",)
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "need the DAV side of both servers" in problems[0]
    assert "[source and target.dav]" in problems[0]
    bad = GOOD.replace('ledger = "acme.ledger.sqlite"', 'ledger = "acme.ledger.sqlite"\nitems = ["mail", "tasks"]')
    assert 'unknown item type "tasks"' in problems_of(tmp_path, bad + DAV)[0]


def test_plain_http_only_to_loopback_and_no_login_in_url(tmp_path: Path) -> None:
    text = GOOD + DAV.replace("http://127.0.0.1:5232", "http://dav.new.example").replace(
        "https://dav.old.example/dav", "https://cyrus:secret@dav.old.example/"
    )
    problems = problems_of(tmp_path, text)
    assert any("target.dav.url" in p and "not a loopback address" in p for p in problems)
    assert any("source.dav.url" in p and "must not hold a login" in p for p in problems)
    assert not any("secret" in p for p in problems)


def test_accounts_without_password_need_a_dav_admin(tmp_path: Path) -> None:
    text = GOOD + DAV.replace('[target.dav.admin]\nuser = "admin"\npassword = "env:TGT_DAV"\n', "")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "target.dav" in problems[0] and "no target password reference" in problems[0]


def test_calendar_rules_are_checked(tmp_path: Path) -> None:
    text = GOOD + DAV.replace('scheduling = "paused"', 'scheduling = "pause"').replace(
        '"old.example" = "new.example"', '"old.example" = "not a domain"'
    )
    problems = problems_of(tmp_path, text)
    assert any('did you mean "paused"' in p for p in problems)
    assert any("calendars.domains" in p for p in problems)


def test_init_writes_a_loadable_dav_project(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text("source_user,target_user\nalice,alice\n")
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
        source_dav="http://127.0.0.1:5232",
        target_dav="http://127.0.0.1:8008/dav/",
    )
    text = text.replace('# [source.dav.admin]\n# user = "davadmin"', '[source.dav.admin]\nuser = "davadmin"')
    text = text.replace('# password = "env:SOURCE_DAV_ADMIN_PASSWORD"', 'password = "env:SOURCE_DAV_ADMIN_PASSWORD"')
    text = text.replace('# [target.dav.admin]\n# user = "davadmin"', '[target.dav.admin]\nuser = "davadmin"')
    text = text.replace('# password = "env:TARGET_DAV_ADMIN_PASSWORD"', 'password = "env:TARGET_DAV_ADMIN_PASSWORD"')
    path = tmp_path / "p.toml"
    path.write_text(text)
    p = load_project(path)
    assert p.items == ("mail", "calendars", "contacts", "permissions", "metadata")
    assert p.target.dav is not None and p.target.dav.url == "http://127.0.0.1:8008/dav/"
