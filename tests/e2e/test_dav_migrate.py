"""Calendars and contacts with the mail of the same accounts, between real servers:
Radicale -> Cyrus, Cyrus -> Radicale and Cyrus -> Cyrus; ORGANIZER/ATTENDEE rewritten to the
target's addresses; verify --deep clean; a second migrate copies nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dav_org import OLD, REFUSED_BY_SOURCE, holdings, seed_org, store
from helpers import cli, seed_sample, write_project

from mailferry.errors import ExitCode
from mailferry.formats import ical
from mailferry.sandbox.dav_servers import RadicaleServer

USERS = {"alice": "alicepw", "bob": "bobpw"}


@pytest.fixture
def radicale_factory(tmp_path: Path):
    started: list[RadicaleServer] = []

    def make(name: str = "radicale") -> RadicaleServer:
        server = RadicaleServer.start(tmp_path / name, users=dict(USERS))
        started.append(server)
        return server

    yield make
    for s in started:
        s.close()


def domain_of(url: str, user: str) -> str:
    st = store(url, user, USERS[user], readonly=True)
    try:
        mails = [a for a in st.info().addresses if a.lower().startswith("mailto:")]
    finally:
        st.close()
    return mails[0].split("@", 1)[1] if mails else "new.example"


def dav_project(
    tmp: Path,
    src_imap,
    tgt_imap,
    src_url: str,
    tgt_url: str,
    *,
    src_admin: bool,
    tgt_admin: bool,
    new_domain: str,
    users: dict[str, str] = USERS,
) -> Path:
    tag = tmp.name.upper().replace("-", "_")
    for u, pw in users.items():
        os.environ[f"MF_{tag}_{u.upper()}"] = pw
    cols = "source_user,target_user,source_password,target_password\n"

    def ref(u: str, admin: bool) -> str:
        return "" if admin else f"env:MF_{tag}_{u.upper()}"

    rows = "".join(f"{u},{u},{ref(u, src_admin)},{ref(u, tgt_admin)}\n" for u in users)
    os.environ[f"MF_{tag}_DAVADMIN"] = "adminpw"
    extra = f'\n[source.dav]\nurl = "{src_url}"\n'
    if src_admin:
        extra += f'[source.dav.admin]\nuser = "admin"\npassword = "env:MF_{tag}_DAVADMIN"\n'
    extra += f'\n[target.dav]\nurl = "{tgt_url}"\n'
    if tgt_admin:
        extra += f'[target.dav.admin]\nuser = "admin"\npassword = "env:MF_{tag}_DAVADMIN"\n'
    extra += f'\n[calendars.domains]\n"{OLD}" = "{new_domain}"\n'
    return write_project(
        tmp,
        src_imap,
        tgt_imap,
        users,
        source_admin=("admin", "adminpw") if src_admin else None,
        target_admin=("admin", "adminpw") if tgt_admin else None,
        csv_text=cols + rows,
        extra=extra,
    )


def assert_carried(src_url: str, tgt_url: str, new_domain: str) -> None:
    for user in USERS:
        source, target = holdings(src_url, user, USERS[user]), holdings(tgt_url, user, USERS[user])
        for name, items in source.items():
            assert name in target, (user, name, sorted(target))
            assert set(items) <= set(target[name]), (user, name, set(items) - set(target[name]))
    m1 = holdings(tgt_url, "alice", USERS["alice"])["Work"]["m1@t"].decode()
    unfolded = m1.replace("\r\n ", "")
    assert f"mailto:alice@{new_domain}" in unfolded and f"mailto:bob@{new_domain}" in unfolded
    assert "mailto:ext@partner.example" in unfolded  # external people untouched
    assert f"@{OLD}" not in unfolded
    obj = ical.inspect(m1.encode())
    assert obj.uid == "m1@t"
    assert "PARTSTAT=ACCEPTED" in unfolded and "PARTSTAT=TENTATIVE" in unfolded


def migrate_and_verify(project: Path) -> dict:
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.OK, r.out + r.err
    data = r.json()
    alice = next(a for a in data["accounts"] if a["account"] == "alice")
    assert alice["calendars"]["copied"] > 0 and alice["calendars"]["rewritten"] >= 2
    v = cli("verify", project, "--deep", "--json")
    assert v.code == ExitCode.OK and v.json()["clean"], v.out
    again = cli("migrate", project, "--json").json()
    assert again["copied"] == 0 and again["calendars"]["copied"] == 0 and again["calendars"]["updated"] == 0
    return data


def test_radicale_to_cyrus_with_mail(dovecot_factory, cyrus_factory, radicale_factory, tmp_path) -> None:
    src_imap = dovecot_factory(users=USERS)
    seed_sample(src_imap, "alice", USERS["alice"], messages=6)
    src = radicale_factory()
    tgt = cyrus_factory(users=USERS)
    seed_org(src.url, USERS, real=False)
    new = domain_of(tgt.dav_url, "alice")
    project = dav_project(
        tmp_path / "r2c", src_imap, tgt, src.url, tgt.dav_url, src_admin=True, tgt_admin=False, new_domain=new
    )
    data = migrate_and_verify(project)
    assert data["items"] == ["mail", "calendars", "contacts", "permissions", "metadata"] and data["copied"] > 0
    assert_carried(src.url, tgt.dav_url, new)
    print("left out (refused by the source server):", REFUSED_BY_SOURCE)


def test_cyrus_to_radicale_with_mail(dovecot_factory, cyrus_factory, radicale_factory, tmp_path) -> None:
    src = cyrus_factory(users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=6)
    tgt_imap = dovecot_factory(users=USERS)
    tgt = radicale_factory()
    seed_org(src.dav_url, USERS, real=False)
    project = dav_project(
        tmp_path / "c2r", src, tgt_imap, src.dav_url, tgt.url, src_admin=False, tgt_admin=True, new_domain="new.example"
    )
    migrate_and_verify(project)
    assert_carried(src.dav_url, tgt.url, "new.example")


def test_cyrus_to_cyrus(cyrus_factory, tmp_path) -> None:
    src = cyrus_factory(users=USERS)
    tgt = cyrus_factory(users=USERS)
    seed_org(src.dav_url, USERS, real=False)
    new = domain_of(tgt.dav_url, "alice")
    project = dav_project(
        tmp_path / "c2c", src, tgt, src.dav_url, tgt.dav_url, src_admin=False, tgt_admin=False, new_domain=new
    )
    migrate_and_verify(project)
    assert_carried(src.dav_url, tgt.dav_url, new)
