"""End to end against real servers: ``mailferry check`` says, in its ``services`` area, that
each target service the project uses answers and is usable (IMAP, ManageSieve, SMTP submission
with STARTTLS and AUTH), with the version it announces; each broken service, one at a time, is
blocked with what breaks, the fix and the exit code.

Servers for the whole module: a source Dovecot with ManageSieve, a good target (Dovecot with
TLS, ManageSieve and submission relaying to the sandbox's SMTP sink), a target without TLS (its
submission offers no STARTTLS), two slapd (the [directory]) and one Radicale (DAV: CalDAV and
CardDAV without scheduling, a warning)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, write_project

from mailferry.sandbox.servers import free_port

USERS = {"alice": "alicepw"}


@pytest.fixture(scope="module")
def servers(dovecot_factory: Any) -> dict[str, Any]:
    return {
        "src": dovecot_factory(users=USERS, sieve=True),
        "good": dovecot_factory(users=USERS, tls=True, sieve=True, submission=True),
        "plain": dovecot_factory(users=USERS, sieve=True, submission=True),
    }


def project(
    tmp: Path,
    servers: dict[str, Any],
    target: str = "good",
    *,
    submission_port: int | None = None,
    sieve_port: int | None = None,
    directory: str = "",
    ca_file: bool = True,
) -> Path:
    tgt = servers[target]
    extra = (
        f'\n[source.sieve]\nurl = "sieve://127.0.0.1:{servers["src"].sieve_port}"\nsecurity = "none"\n'
        f'[target.sieve]\nurl = "sieve://127.0.0.1:{sieve_port or tgt.sieve_port}"\nsecurity = "none"\n'
        f'[target.submission]\nurl = "submission://127.0.0.1:{submission_port or tgt.submission_port}"\n'
    )
    if tgt.ca_file is not None and ca_file:
        extra += f'ca_file = "{tgt.ca_file}"\n'
    return write_project(tmp, servers["src"], tgt, list(USERS), extra=extra + directory)


def services(result: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    data = result.json()
    [area] = [a for a in data["areas"] if a["area"] == "services"]
    return area["verdict"], {c["subject"].split(" ")[1]: c for c in area["checks"]}


def test_good_target_services_are_ready(tmp_path: Path, servers: dict[str, Any]) -> None:
    result = cli("check", project(tmp_path, servers), "--json")
    verdict, checks = services(result)
    assert verdict == "ready", checks
    assert set(checks) == {"IMAP", "ManageSieve", "submission"}
    sub = checks["submission"]
    assert sub["status"] == "ok"
    assert sub["what"].startswith("Dovecot submission: STARTTLS, AUTH PLAIN LOGIN, SIZE ")
    assert sub["facts"]["version"] == "Dovecot"
    assert checks["IMAP"]["facts"]["version"] == "Dovecot"
    assert "Pigeonhole" in checks["ManageSieve"]["facts"]["version"]
    assert "fileinto" in checks["ManageSieve"]["what"]
    assert result.json()["verdict"] == "ready"
    assert result.code == 0


@pytest.mark.parametrize(
    ("broken", "subject", "fix_words", "code"),
    [
        ("submission down", "submission", "dovecot-submissiond", 75),
        ("submission without STARTTLS", "submission", "ssl = yes", 1),
        ("ManageSieve down", "ManageSieve", "dovecot-managesieved", 75),
        ("submission certificate untrusted", "submission", "ca_file", 78),
    ],
)
def test_each_broken_service_blocks(
    tmp_path: Path, servers: dict[str, Any], broken: str, subject: str, fix_words: str, code: int
) -> None:
    if broken == "submission down":
        path = project(tmp_path, servers, submission_port=free_port())
    elif broken == "ManageSieve down":
        path = project(tmp_path, servers, sieve_port=free_port())
    elif broken == "submission certificate untrusted":  # the sandbox CA is not in the system store
        path = project(tmp_path, servers, ca_file=False)
    else:
        path = project(tmp_path, servers, "plain")
    result = cli("check", path, "--json")
    verdict, checks = services(result)
    assert verdict == "blocked"
    bad = [c for c in checks.values() if c["status"] != "ok"]
    assert [c["subject"].split(" ")[1] for c in bad] == [subject], bad
    assert bad[0]["status"] == "blocked"
    assert fix_words in bad[0]["fix"]
    assert bad[0]["what"]
    assert result.json()["verdict"] == "blocked"
    assert result.code == code


@pytest.fixture(scope="module")
def slapds(slapd_factory: Any) -> tuple[Any, Any]:
    return slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw"), slapd_factory(
        suffix="dc=tgt,dc=test", root_pw="tgtpw"
    )


def directory_block(src: Any, tgt: Any, target_port: int) -> str:
    os.environ["MF_SVC_SRC"], os.environ["MF_SVC_TGT"] = src.root_pw, tgt.root_pw
    return f"""
[directory]
target_container = "{tgt.suffix}"
rules = ["smtp", "login"]
confirm_mailboxes = false
[directory.source]
url = "ldap://127.0.0.1:{src.port}"
bind_dn = "{src.root_dn}"
password = "env:MF_SVC_SRC"
dialect = "generic"
[directory.target]
url = "ldap://127.0.0.1:{target_port}"
bind_dn = "{tgt.root_dn}"
password = "env:MF_SVC_TGT"
dialect = "generic"
[directory.lock]
employeeType = "locked"
"""


def test_target_directory_answers_with_its_vendor(
    tmp_path: Path, servers: dict[str, Any], slapds: tuple[Any, Any]
) -> None:
    src, tgt = slapds
    result = cli("check", project(tmp_path, servers, directory=directory_block(src, tgt, tgt.port)), "--json")
    verdict, checks = services(result)
    assert verdict == "ready", checks
    assert checks["LDAP"]["status"] == "ok"
    assert checks["LDAP"]["facts"]["version"] == "OpenLDAP"
    assert checks["LDAP"]["what"] == "OpenLDAP LDAP: answers, bind account accepted"


def test_target_directory_down_blocks(tmp_path: Path, servers: dict[str, Any], slapds: tuple[Any, Any]) -> None:
    src, tgt = slapds
    result = cli("check", project(tmp_path, servers, directory=directory_block(src, tgt, free_port())), "--json")
    verdict, checks = services(result)
    assert verdict == "blocked"
    ldap = checks["LDAP"]
    assert ldap["status"] == "blocked"
    assert "[directory.target]" in ldap["fix"] and "does not answer" in ldap["what"]
    assert [c["subject"].split(" ")[1] for c in checks.values() if c["status"] != "ok"] == ["LDAP"]
    assert result.code == 75


@pytest.fixture(scope="module")
def radicale() -> Any:
    from mailferry.sandbox.dav_servers import RadicaleServer

    server = RadicaleServer.start(users=dict(USERS))
    yield server
    server.close()


def dav_block(source_url: str, target_url: str) -> str:
    os.environ["MF_SVC_DAVADMIN"] = "adminpw"
    admin = 'user = "admin"\npassword = "env:MF_SVC_DAVADMIN"\n'
    return (
        f'\n[source.dav]\nurl = "{source_url}"\n[source.dav.admin]\n{admin}'
        f'[target.dav]\nurl = "{target_url}"\n[target.dav.admin]\n{admin}'
    )


def test_dav_without_scheduling_is_a_warning(tmp_path: Path, servers: dict[str, Any], radicale: Any) -> None:
    result = cli("check", project(tmp_path, servers, directory=dav_block(radicale.url, radicale.url)), "--json")
    verdict, checks = services(result)
    assert verdict == "ready with warnings", checks
    dav = checks["DAV"]
    assert dav["status"] == "warning"
    assert "calendar-auto-schedule" in dav["what"] and "RFC 6638" in dav["fix"]
    assert {"calendar-access", "addressbook"} <= set(dav["facts"]["dav"])
    assert [c["subject"].split(" ")[1] for c in checks.values() if c["status"] != "ok"] == ["DAV"]
    assert result.code == 0
    assert (
        cli(
            "check",
            project(tmp_path / "strict", servers, directory=dav_block(radicale.url, radicale.url)),
            "--json",
            "--strict",
        ).code
        == 1
    )


def test_dav_down_blocks(tmp_path: Path, servers: dict[str, Any], radicale: Any) -> None:
    down = f"http://127.0.0.1:{free_port()}/"
    result = cli("check", project(tmp_path, servers, directory=dav_block(radicale.url, down)), "--json")
    verdict, checks = services(result)
    assert verdict == "blocked"
    dav = checks["DAV"]
    assert dav["status"] == "blocked" and "[target.dav]" in dav["fix"] and "does not answer" in dav["what"]
    assert result.code == 75
