"""The pure certificate judge: chain, names (RFC 6125 wildcards), expiry, weak keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailferry.model.certs import CertificateSeen, Probe, TlsEndpoint
from mailferry.verify.certs import covers, judge, name_matches

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
EP = TlsEndpoint("imap", "mail.new.test", 993, "tls", Path("/ca.pem"))
CERT = CertificateSeen(
    subject="CN=mail.new.test",
    issuer="CN=test CA",
    common_name="mail.new.test",
    dns_names=("mail.new.test", "*.new.test"),
    ip_addresses=("127.0.0.1",),
    not_before=NOW - timedelta(days=10),
    not_after=NOW + timedelta(days=300),
    key_type="EC",
    key_bits=256,
    signature_hash="sha256",
)


def run(cert: CertificateSeen = CERT, names: tuple[str, ...] = ("mail.new.test",), **kw: object) -> dict[str, object]:
    checks = judge(Probe(EP, cert, **({"verified": True} | kw)), names, NOW, 21)  # type: ignore[arg-type]
    assert all(c.area == "certificates" and c.subject == "imap mail.new.test:993" for c in checks)
    return {"statuses": [c.status for c in checks], "bad": [c for c in checks if c.status != "ok"]}


def test_a_good_certificate_gives_only_ok_checks_with_days_left() -> None:
    checks = judge(Probe(EP, CERT, verified=True), ["mail.new.test", "127.0.0.1", "imap.new.test"], NOW, 21)
    assert [c.status for c in checks] == ["ok", "ok", "ok"]
    assert checks[2].facts["days_left"] == 300


def test_wrong_name_says_which_names_and_the_fix() -> None:
    other = replace(CERT, dns_names=("mail.other.test",))
    (bad,) = run(other)["bad"]  # type: ignore[misc]
    assert bad.status == "blocked"
    assert "the certificate names mail.other.test, 127.0.0.1, clients use mail.new.test" in bad.what
    assert "subjectAltName holds mail.new.test" in bad.fix and "imap mail.new.test:993" in bad.fix


def test_an_address_is_matched_against_ip_entries_only() -> None:
    assert covers(CERT, "127.0.0.1") and not covers(CERT, "127.0.0.2")
    assert not covers(replace(CERT, dns_names=("127.0.0.2",), ip_addresses=()), "127.0.0.2")


def test_untrusted_chain_is_blocked_with_the_reason_and_ca_file_fix() -> None:
    (bad,) = run(verified=False, verify_reason="unable to get local issuer certificate", verify_code=20)["bad"]  # type: ignore[misc]
    assert bad.status == "blocked" and "unable to get local issuer certificate" in bad.what
    assert "ca_file" in bad.fix and "/ca.pem" in bad.fix


def test_expired_is_blocked_once_not_also_as_a_chain_fault() -> None:
    old = replace(CERT, not_after=NOW - timedelta(days=3))
    (bad,) = run(old, verified=False, verify_reason="certificate has expired", verify_code=10)["bad"]  # type: ignore[misc]
    assert bad.status == "blocked" and "expired" in bad.what and "3 days ago" in bad.what
    assert bad.fix.startswith("renew the certificate")


def test_not_yet_valid_is_blocked() -> None:
    (bad,) = run(replace(CERT, not_before=NOW + timedelta(days=1)), verified=False, verify_code=9)["bad"]  # type: ignore[misc]
    assert bad.status == "blocked" and "not valid before" in bad.what


def test_expiring_soon_is_a_warning_at_the_configured_days() -> None:
    soon = replace(CERT, not_after=NOW + timedelta(days=5, hours=1))
    (bad,) = run(soon)["bad"]  # type: ignore[misc]
    assert bad.status == "warning" and "in 5 days" in bad.what and "renew" in bad.fix
    assert run(replace(CERT, not_after=NOW + timedelta(days=22)))["bad"] == []


def test_weak_keys_and_sha1_are_warnings() -> None:
    (bad,) = run(replace(CERT, key_type="RSA", key_bits=1024, signature_hash="sha1"))["bad"]  # type: ignore[misc]
    assert bad.status == "warning" and "1024 bits" in bad.what and "SHA1" in bad.what
    assert run(replace(CERT, key_type="RSA", key_bits=2048))["bad"] == []


def test_no_certificate_is_one_blocked_check() -> None:
    (c,) = judge(Probe(EP, error="connection refused"), ["mail.new.test"], NOW, 21)
    assert c.status == "blocked" and "connection refused" in c.what and "[target]" in c.fix


def test_rfc6125_wildcards() -> None:
    assert name_matches("*.new.test", "mail.new.test")
    assert name_matches("*.NEW.test.", "Mail.new.test")
    assert not name_matches("*.new.test", "a.b.new.test")
    assert not name_matches("*.new.test", "new.test")
    assert not name_matches("*.test", "new.test")
    assert not name_matches("m*.new.test", "mail.new.test")
    assert not name_matches("mail.*.test", "mail.new.test")


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(st.lists(label, min_size=2, max_size=4), st.lists(label, min_size=0, max_size=3))
def test_a_wildcard_covers_exactly_one_more_label(base: list[str], prefix: list[str]) -> None:
    parent = ".".join(base)
    name = ".".join([*prefix, parent]) if prefix else parent
    assert name_matches("*." + parent, name) == (len(prefix) == 1)
    assert name_matches(name, name.upper())
