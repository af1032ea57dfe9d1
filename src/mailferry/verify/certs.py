"""Judges the certificate each TLS endpoint of the target presents (pure: no I/O, ``now`` given).

For each endpoint: does the chain verify (with the CA the project trusts it with, or the system
store), do its names cover every name clients use for it (the configured host, the
organization's ``target_names``; the caller may add names DNS points at), how many days are
left, and whether the key or signature is weak. Each is a :class:`Check` of area
``certificates``; those that are not ok say what mail clients will see and the fix.

Name matching follows RFC 6125 as clients do today: subjectAltName entries only (the subject CN
is not looked at when the certificate has a subjectAltName, and browsers and most mail clients
ignore it anyway), case-insensitive, a wildcard only as the whole leftmost label, standing for
exactly one label, never directly under a top-level name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from datetime import datetime

from mailferry.model.certs import CertificateSeen, Probe
from mailferry.model.readiness import Check

AREA = "certificates"
# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID / _HAS_EXPIRED: the chain was built to a trusted
# root (time checks come after), so the dates alone are at fault; the expiry check says so.
_DATE_ERRORS = (9, 10)
_WEAK_HASHES = ("md5", "sha1")


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _address(name: str) -> str | None:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return None


def name_matches(pattern: str, name: str) -> bool:
    """Whether the subjectAltName DNS entry ``pattern`` covers host name ``name`` (RFC 6125 6.4):
    ``*.new.test`` covers ``mail.new.test``, not ``a.b.new.test`` nor ``new.test``."""
    p, n = _norm(pattern), _norm(name)
    if not p or not n:
        return False
    if "*" not in p:
        return p == n
    head, _, rest = p.partition(".")
    if head != "*" or "*" in rest or rest.count(".") < 1:
        return False  # partial-label and multi-label wildcards, '*.tld': none of them count
    first, _, n_rest = n.partition(".")
    return bool(first) and n_rest == rest


def covers(cert: CertificateSeen, name: str) -> bool:
    """Whether ``cert`` is valid for ``name`` (a host name or an IP address)."""
    addr = _address(name)
    if addr is not None:
        return any(_address(a) == addr for a in cert.ip_addresses)
    return any(name_matches(p, name) for p in cert.dns_names)


def judge(probe: Probe, names: Sequence[str], now: datetime, warning_days: int) -> list[Check]:
    """The checks of one endpoint: ``names`` are those clients use for it (duplicates and empty
    ones are dropped)."""
    ep = probe.endpoint
    subject = ep.label
    if probe.error or probe.certificate is None:
        return [
            Check(
                AREA,
                subject,
                "blocked",
                f"no certificate could be read from {ep.label} ({ep.start}): {probe.error or 'none presented'}",
                f"make sure {ep.service} on {ep.host} port {ep.port} answers with "
                f"{'TLS' if ep.start == 'tls' else 'STARTTLS'}, or correct {ep.config} in the project file",
            )
        ]
    cert = probe.certificate
    facts = {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "names": list(cert.dns_names) + list(cert.ip_addresses),
        "not_after": cert.not_after.isoformat(),
        "key": f"{cert.key_type} {cert.key_bits}",
    }
    return [
        _chain(probe, subject, facts),
        _names(probe, cert, names, subject),
        _expiry(probe, cert, now, warning_days, subject),
        *_key(probe, cert, subject),
    ]


def _chain(probe: Probe, subject: str, facts: Mapping[str, object]) -> Check:
    ep, cert = probe.endpoint, probe.certificate
    assert cert is not None
    trust = f"the CA in {ep.ca_file}" if ep.ca_file else "the system's trusted CAs"
    if probe.verified or probe.verify_code in _DATE_ERRORS:
        return Check(AREA, subject, "ok", f"the chain verifies with {trust} (issuer {cert.issuer})", facts=facts)
    if ep.ca_file:
        fix = (
            f"install on {ep.label} a certificate issued by the CA in {ep.ca_file} (with its intermediates), "
            f"or set ca_file in {ep.config} to the CA that issued {cert.issuer}"
        )
    else:
        fix = (
            f"install on {ep.label} a certificate from a CA clients trust, with its intermediate certificates "
            f"(or, for a private CA, set ca_file in {ep.config} and install that CA on every client)"
        )
    return Check(
        AREA,
        subject,
        "blocked",
        f"mail clients will refuse to connect: the certificate of {ep.label} does not verify with {trust} "
        f"({probe.verify_reason or 'unknown reason'}; issuer {cert.issuer})",
        fix,
        facts={**facts, "verify_reason": probe.verify_reason},
    )


def _names(probe: Probe, cert: CertificateSeen, names: Sequence[str], subject: str) -> Check:
    ep = probe.endpoint
    wanted = list(dict.fromkeys(n for n in (_norm(x) for x in names) if n))
    missing = [n for n in wanted if not covers(cert, n)]
    has = ", ".join([*cert.dns_names, *cert.ip_addresses]) or "no subjectAltName"
    if not missing:
        return Check(AREA, subject, "ok", f"the certificate names {', '.join(wanted)}", facts={"names": wanted})
    return Check(
        AREA,
        subject,
        "blocked",
        f"mail clients will refuse to connect: the certificate names {has}, clients use {', '.join(missing)}",
        f"issue a certificate whose subjectAltName holds {', '.join(missing)} and install it on {ep.label}",
        facts={"names": wanted, "missing": missing, "certificate_names": [*cert.dns_names, *cert.ip_addresses]},
    )


def _expiry(probe: Probe, cert: CertificateSeen, now: datetime, warning_days: int, subject: str) -> Check:
    ep = probe.endpoint
    days = (cert.not_after - now).total_seconds() / 86400
    facts = {"days_left": int(days // 1), "not_after": cert.not_after.isoformat()}
    renew = (
        f"renew the certificate of {ep.label} ({cert.common_name or cert.subject}), install it and reload the server"
    )
    if now < cert.not_before:
        return Check(
            AREA,
            subject,
            "blocked",
            f"mail clients will refuse to connect: the certificate of {ep.label} is not valid before "
            f"{cert.not_before:%Y-%m-%d %H:%M} UTC",
            f"install a certificate valid now on {ep.label} (or correct the server's clock)",
            facts=facts,
        )
    if days < 0:
        return Check(
            AREA,
            subject,
            "blocked",
            f"mail clients will refuse to connect: the certificate of {ep.label} expired on "
            f"{cert.not_after:%Y-%m-%d} ({int(-days)} days ago)",
            renew,
            facts=facts,
        )
    if days < warning_days:
        return Check(
            AREA,
            subject,
            "warning",
            f"the certificate of {ep.label} expires on {cert.not_after:%Y-%m-%d}, in {int(days)} days: "
            "after that mail clients will refuse to connect",
            renew + " before then",
            facts=facts,
        )
    return Check(AREA, subject, "ok", f"the certificate is valid for {int(days)} more days", facts=facts)


def _key(probe: Probe, cert: CertificateSeen, subject: str) -> list[Check]:
    ep = probe.endpoint
    weak = []
    if (cert.key_type in ("RSA", "DSA") and cert.key_bits < 2048) or (cert.key_type == "EC" and cert.key_bits < 256):
        weak.append(f"a {cert.key_type} key of {cert.key_bits} bits")
    if cert.key_type == "DSA":
        weak.append("a DSA key")
    if cert.signature_hash in _WEAK_HASHES:
        weak.append(f"a {cert.signature_hash.upper()} signature")
    if not weak:
        return []
    return [
        Check(
            AREA,
            subject,
            "warning",
            f"the certificate of {ep.label} has {' and '.join(dict.fromkeys(weak))}: current clients may refuse it",
            f"issue a certificate with an RSA key of 2048 bits or more (or EC P-256) signed with SHA-256 "
            f"and install it on {ep.label}",
            facts={"key": f"{cert.key_type} {cert.key_bits}", "signature_hash": cert.signature_hash},
        )
    ]
