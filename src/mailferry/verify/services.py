"""Judges what each target service showed (``check``'s ``services`` area): it answers, it offers
what mail clients and mailferry need (STARTTLS, AUTH, CalDAV, CardDAV, scheduling), and the
version it announces. Pure: the probes are made by ``engine.services`` through connectors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailferry.errors import ExitCode
from mailferry.model.readiness import Check

AREA = "services"
DOWN_EXIT = int(ExitCode.TEMPFAIL)  # the service could not be talked to
CERT_EXIT = int(ExitCode.CONFIG)  # as a TLSVerifyError: trust (ca_file) or the certificate must change


@dataclass(frozen=True, slots=True)
class Seen:
    """What one service showed. ``error`` set: it could not be talked to. ``version``: the
    product/version it announces ("" when it names none); ``features``: the capabilities it
    offers (upper case: IMAP CAPABILITY, Sieve extensions and ``STARTTLS``, DAV header words);
    ``facts``: anything else worth showing (JSON-ready)."""

    service: str  # "IMAP", "ManageSieve", "DAV", "LDAP", "submission"
    where: str  # host:port or URL
    error: str = ""
    version: str = ""
    features: frozenset[str] = frozenset()
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submission:
    """What an SMTP submission service showed (see ``connectors.smtp.SubmissionProbe``)."""

    where: str
    implicit_tls: bool
    banner: str = ""
    starttls: bool = False
    tls: bool = False
    auth: tuple[str, ...] = ()
    size: int = 0
    error: str = ""
    stage: str = ""


def _subject(service: str, where: str) -> str:
    return f"target {service} {where}"


def _down(seen: Seen, what: str, fix: str) -> Check:
    return Check(
        AREA,
        _subject(seen.service, seen.where),
        "blocked",
        f"the target's {seen.service} service does not answer ({seen.error}): {what}",
        fix,
        facts=dict(seen.facts),
        exit_code=DOWN_EXIT,
    )


def _ok(seen: Seen, what: str) -> Check:
    facts = {"version": seen.version, **dict(seen.facts)}
    return Check(AREA, _subject(seen.service, seen.where), "ok", what, facts=facts)


def _named(version: str, service: str) -> str:
    return f"{version} {service}" if version else service


def imap(seen: Seen) -> Check:
    if seen.error:
        return _down(
            seen,
            "no mailbox can be written, users can't read mail",
            f"start the IMAP service on {seen.where}, or correct [target] host/port",
        )
    caps = sorted(
        c for c in seen.features if c in {"IMAP4REV1", "IMAP4REV2", "STARTTLS", "IDLE", "QUOTA", "ACL", "METADATA"}
    )
    return _ok(seen, f"{_named(seen.version, 'IMAP')}: " + (" ".join(caps) or "answers"))


def sieve(seen: Seen) -> Check:
    if seen.error:
        return _down(
            seen,
            "the users' filters (Sieve scripts) can't be carried over, and clients can't edit them",
            f"start the ManageSieve service on {seen.where} (Dovecot: protocols = ... sieve, "
            "package dovecot-managesieved), or correct [target.sieve] url",
        )
    ext = seen.facts.get("sieve_extensions", "")
    return _ok(seen, f"{_named(seen.version, 'ManageSieve')}: " + (str(ext) or "no Sieve extension announced"))


def dav(seen: Seen, *, calendars: bool, contacts: bool) -> list[Check]:
    if seen.error:
        return [
            _down(
                seen,
                "calendars and contacts can't be carried over, and clients can't sync them",
                f"start the CalDAV/CardDAV server at {seen.where}, or correct [target.dav] url",
            )
        ]
    words = {w.lower() for w in seen.features}
    subject = _subject("DAV", seen.where)
    facts = {"version": seen.version, "dav": sorted(words), **dict(seen.facts)}
    out: list[Check] = []
    if calendars and "calendar-access" not in words:
        out.append(
            Check(
                AREA,
                subject,
                "blocked",
                "the target's DAV server does not offer CalDAV (no calendar-access in its DAV header): "
                "calendars can't be carried over",
                "enable CalDAV on the target DAV server, or point [target.dav] url at its CalDAV endpoint",
                facts=facts,
            )
        )
    if contacts and "addressbook" not in words:
        out.append(
            Check(
                AREA,
                subject,
                "blocked",
                "the target's DAV server does not offer CardDAV (no addressbook in its DAV header): "
                "contacts can't be carried over",
                "enable CardDAV on the target DAV server, or point [target.dav] url at its CardDAV endpoint",
                facts=facts,
            )
        )
    if calendars and "calendar-access" in words and "calendar-auto-schedule" not in words:
        out.append(
            Check(
                AREA,
                subject,
                "warning",
                "the target's CalDAV server does no scheduling (no calendar-auto-schedule): invitations "
                "and replies are not delivered by the server, free/busy lookups of colleagues fail",
                "enable CalDAV scheduling (RFC 6638) on the target, or tell users invitations go by mail only",
                facts=facts,
            )
        )
    if out:
        return out
    offered = " ".join(w for w in ("calendar-access", "addressbook", "calendar-auto-schedule") if w in words)
    return [Check(AREA, subject, "ok", f"{_named(seen.version, 'DAV')}: {offered or 'answers'}", facts=facts)]


def ldap(seen: Seen) -> Check:
    if seen.error:
        return _down(
            seen,
            "the directory (users, groups, addresses) can't be written",
            f"start the LDAP server at {seen.where}, or correct [directory.target] url and bind account",
        )
    return _ok(seen, f"{_named(seen.version, 'LDAP')}: answers, bind account accepted")


_SMTP_PRODUCTS = ("Dovecot", "Postfix", "Exim", "Sendmail", "OpenSMTPD", "Stalwart", "Haraka", "Microsoft", "Zimbra")


def smtp_product(banner: str) -> str:
    """The server software an SMTP banner names ("mx.example ESMTP Postfix" -> "Postfix"), else ""."""
    lower = banner.lower()
    return next((name for name in _SMTP_PRODUCTS if name.lower() in lower), "")


def submission(seen: Submission) -> Check:
    subject = _subject("submission", seen.where)
    facts: dict[str, Any] = {
        "banner": seen.banner,
        "implicit_tls": seen.implicit_tls,
        "starttls": seen.starttls,
        "auth": list(seen.auth),
        "size": seen.size,
    }
    if seen.error and seen.stage == "connect":
        return Check(
            AREA,
            subject,
            "blocked",
            f"the target's submission service does not answer ({seen.error}): mail clients can't send mail",
            f"start the submission service on {seen.where} (Dovecot: protocols = ... submission, package "
            "dovecot-submissiond; Postfix: the submission line in master.cf), or correct [target.submission] url",
            facts=facts,
            exit_code=DOWN_EXIT,
        )
    if seen.stage == "certificate":
        return Check(
            AREA,
            subject,
            "blocked",
            f"the target's submission service has a certificate clients refuse ({seen.error}): "
            "mail clients can't send mail",
            "give the submission service a certificate that names this host and chains to a trusted CA "
            "(or name the CA in [target.submission] ca_file)",
            facts=facts,
            exit_code=CERT_EXIT,
        )
    if seen.error:
        return Check(
            AREA,
            subject,
            "blocked",
            f"the target's submission service fails at {seen.stage or 'start'} ({seen.error}): "
            "mail clients can't send mail",
            f"look at the submission server's log for what it refused on {seen.where}",
            facts=facts,
            exit_code=DOWN_EXIT,
        )
    if not seen.tls:
        return Check(
            AREA,
            subject,
            "blocked",
            "the target's submission service offers no STARTTLS (and is not implicit TLS): mail clients "
            "refuse to send passwords in clear text, so users can't send mail",
            "give the submission service a certificate and enable TLS (Dovecot: ssl = yes with ssl_cert/ssl_key; "
            "Postfix: smtpd_tls_security_level = encrypt), or use submissions:// on port 465",
            facts=facts,
        )
    if not seen.auth:
        return Check(
            AREA,
            subject,
            "blocked",
            "the target's submission service offers no AUTH after TLS: users can't log in to send mail",
            "enable SASL authentication on the submission service (Dovecot: auth_mechanisms = plain login; "
            "Postfix: smtpd_sasl_auth_enable = yes)",
            facts=facts,
        )
    product = smtp_product(seen.banner)
    parts = ["implicit TLS" if seen.implicit_tls else "STARTTLS", "AUTH " + " ".join(seen.auth)]
    if seen.size:
        parts.append(f"SIZE {seen.size}")
    name = f"{product} submission" if product else "submission"
    return Check(AREA, subject, "ok", f"{name}: {', '.join(parts)}", facts={"version": product, **facts})
