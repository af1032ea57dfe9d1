"""`mailferry check`, certificates area: a real Dovecot target serving certificates the tests
made (good, expired, wrong name, untrusted, expiring soon), one fault at a time, over implicit
TLS and STARTTLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, write_project

from mailferry.errors import ExitCode
from mailferry.sandbox.certs import certificate_set

USERS = {"alice": "alicepw"}
GOOD_NAMES = ("mail.new.test", "127.0.0.1")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    return certificate_set(tmp_path_factory.mktemp("certs"), GOOD_NAMES)


@pytest.fixture(scope="module")
def source(dovecot_factory: Callable[..., Any]) -> Any:
    return dovecot_factory(users=USERS)


def project_for(tmp: Path, source: Any, target: Any, ca: Path, *, starttls: bool = False) -> Path:
    port = target.port if starttls else target.tls_port
    security = "starttls" if starttls else "tls"
    path = write_project(
        tmp, source, target, ["alice"], target_port=port, extra='\n[organization]\ntarget_names = ["mail.new.test"]\n'
    )
    text = path.read_text()
    head, _, tail = text.partition("[target]")
    tail = tail.replace('security = "none"', f'security = "{security}"\nca_file = "{ca}"', 1)
    path.write_text(head + "[target]" + tail)
    return path


def area(report: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [a for a in report["areas"] if a["area"] == name]
    return found


def run(
    tmp: Path,
    source: Any,
    dovecot_factory: Callable[..., Any],
    files: tuple[Path, Path, Path],
    *,
    starttls: bool = False,
) -> tuple[int, dict[str, Any]]:
    target = dovecot_factory(users=USERS, tls=True, tls_files=files)
    r = cli("check", project_for(tmp, source, target, files[0], starttls=starttls), "--json")
    return r.code, r.json()


@pytest.mark.parametrize("starttls", [False, True], ids=["tls", "starttls"])
def test_a_good_certificate_is_ready(
    tmp_path: Path, source: Any, dovecot_factory: Callable[..., Any], certs: Any, starttls: bool
) -> None:
    code, report = run(tmp_path, source, dovecot_factory, certs["good"], starttls=starttls)
    found = area(report, "certificates")
    assert found["verdict"] == "ready", [c["what"] for c in found["checks"]]
    assert {c["status"] for c in found["checks"]} == {"ok"}
    assert any(c.get("facts", {}).get("days_left", 0) >= 360 for c in found["checks"])
    assert code == ExitCode.OK, report


CASES = {
    # kind: (status, words in `what`, words in `fix`, exit code). Expired and untrusted: the
    # account's own login verifies the certificate too and fails (a configuration error, 78);
    # the wrong name still names 127.0.0.1, which mailferry connects to, so only the
    # certificates area blocks (1); expiring soon is a warning (0 unless --strict).
    "expired": ("blocked", "expired", "renew the certificate", ExitCode.CONFIG),
    "wrong-name": ("blocked", "clients use mail.new.test", "subjectAltName holds mail.new.test", ExitCode.FINDINGS),
    "untrusted": ("blocked", "does not verify", "ca_file", ExitCode.CONFIG),
    "expiring": ("warning", "expires on", "renew the certificate", ExitCode.OK),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_bad_certificate_is_reported_with_its_fix(
    tmp_path: Path, source: Any, dovecot_factory: Callable[..., Any], certs: Any, kind: str
) -> None:
    status, what, fix, expected_code = CASES[kind]
    code, report = run(tmp_path, source, dovecot_factory, certs[kind], starttls=kind == "wrong-name")
    found = area(report, "certificates")
    assert report["verdict"] == found["verdict"]
    bad = [c for c in found["checks"] if c["status"] != "ok"]
    assert len(bad) == 1, bad
    assert bad[0]["status"] == status and what in bad[0]["what"] and fix in bad[0]["fix"], bad[0]
    assert found["verdict"] == ("blocked" if status == "blocked" else "ready with warnings")
    assert code == expected_code, report


def test_strict_turns_the_expiry_warning_into_exit_1(
    tmp_path: Path, source: Any, dovecot_factory: Callable[..., Any], certs: Any
) -> None:
    target = dovecot_factory(users=USERS, tls=True, tls_files=certs["expiring"])
    project = project_for(tmp_path, source, target, certs["expiring"][0])
    assert cli("check", project, "--json", "--strict").code == ExitCode.FINDINGS


def test_a_target_without_tls_has_no_certificate_checks(tmp_path: Path, source: Any) -> None:
    r = cli("check", write_project(tmp_path, source, source, ["alice"]), "--json")
    assert [a for a in r.json()["areas"] if a["area"] == "certificates"] == []
    assert r.code == ExitCode.OK, r.out


def test_managesieve_over_starttls_is_checked_too(
    tmp_path: Path, source: Any, dovecot_factory: Callable[..., Any], certs: Any
) -> None:
    ca, _, _ = files = certs["expired"]
    target = dovecot_factory(users=USERS, tls=True, tls_files=files, sieve=True)
    project = project_for(tmp_path, source, target, ca)
    project.write_text(
        project.read_text()
        + f'\n[target.sieve]\nurl = "sieve://127.0.0.1:{target.sieve_port}"\nsecurity = "starttls"\nca_file = "{ca}"\n'
    )
    report = cli("check", project, "--json").json()
    bad = [c for c in area(report, "certificates")["checks"] if c["status"] != "ok"]
    assert sorted(c["subject"] for c in bad) == sorted(
        [f"imap 127.0.0.1:{target.tls_port}", f"sieve 127.0.0.1:{target.sieve_port}"]
    ), bad
    assert all("expired" in c["what"] and c["fix"].startswith("renew") for c in bad)


@pytest.mark.parametrize("kind", ["good", "untrusted"])
def test_ldap_starttls_certificate_is_fetched_and_verified(
    slapd_factory: Callable[..., Any], certs: Any, kind: str
) -> None:
    from datetime import UTC, datetime

    from mailferry.connectors.tlsprobe import probe
    from mailferry.model.certs import TlsEndpoint
    from mailferry.verify.certs import judge

    ca = certs["good"][0]
    server = slapd_factory(tls_files=certs[kind])
    seen = probe(TlsEndpoint("ldap", "127.0.0.1", server.port, "starttls", ca, timeout=5, config="[directory.target]"))
    assert seen.error == "" and seen.certificate is not None, seen
    assert seen.certificate.dns_names == ("mail.new.test",) and seen.certificate.ip_addresses == ("127.0.0.1",)
    assert seen.verified == (kind == "good"), seen.verify_reason
    statuses = [c.status for c in judge(seen, ["127.0.0.1", "mail.new.test"], datetime.now(UTC), 21)]
    assert statuses == (["ok", "ok", "ok"] if kind == "good" else ["blocked", "ok", "ok"])


def test_a_server_without_starttls_is_one_blocked_check(source: Any) -> None:
    from datetime import UTC, datetime

    from mailferry.connectors.tlsprobe import probe
    from mailferry.model.certs import TlsEndpoint
    from mailferry.verify.certs import judge

    seen = probe(TlsEndpoint("imap", "127.0.0.1", source.port, "starttls", timeout=5))
    assert seen.certificate is None and "STARTTLS" in seen.error, seen
    (check,) = judge(seen, ["127.0.0.1"], datetime.now(UTC), 21)
    assert check.status == "blocked" and "STARTTLS" in check.fix
