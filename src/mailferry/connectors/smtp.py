"""Probes an SMTP submission service (RFC 6409, RFC 8314) with smtplib: greeting, EHLO before and
after STARTTLS, the AUTH mechanisms and SIZE it offers. Never logs in, never sends mail."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SubmissionProbe", "probe_submission"]


@dataclass(frozen=True, slots=True)
class SubmissionProbe:
    """What a submission service showed. ``error`` set: it could not be talked to (``stage``
    says where: ``connect``, ``tls``, ``certificate``, ``ehlo``). ``tls``: the session ended up encrypted
    (implicit TLS or STARTTLS), ``starttls``: STARTTLS was offered in plain text. ``auth``: the
    SASL mechanisms offered in the last EHLO (after TLS when there was TLS); ``size``: SIZE, 0
    when not announced."""

    host: str
    port: int
    implicit_tls: bool
    banner: str = ""
    ehlo_plain: tuple[str, ...] = ()
    ehlo: tuple[str, ...] = ()
    starttls: bool = False
    tls: bool = False
    auth: tuple[str, ...] = ()
    size: int = 0
    error: str = ""
    stage: str = ""
    facts: dict[str, str] = field(default_factory=dict)


def _context(verify: bool, ca_file: Path | str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _lines(reply: bytes) -> tuple[str, ...]:
    return tuple(x.strip() for x in reply.decode("utf-8", "replace").splitlines() if x.strip())


def _auth(client: smtplib.SMTP) -> tuple[str, ...]:
    return tuple(client.esmtp_features.get("auth", "").upper().split())


def _size(client: smtplib.SMTP) -> int:
    words = client.esmtp_features.get("size", "").split()
    return int(words[0]) if words and words[0].isdigit() else 0


def probe_submission(
    host: str,
    port: int,
    *,
    implicit_tls: bool = False,
    verify_certificates: bool = True,
    ca_file: Path | str | None = None,
    timeout: float = 10.0,
) -> SubmissionProbe:
    """Connect, read the banner, EHLO, STARTTLS when offered (or implicit TLS), EHLO again, QUIT."""
    ctx = _context(verify_certificates, ca_file)
    stage = "connect"
    client: smtplib.SMTP | None = None
    banner = ""
    plain: tuple[str, ...] = ()
    offered = False
    try:
        if implicit_tls:
            stage = "tls"
            client = smtplib.SMTP_SSL(timeout=timeout, context=ctx)
        else:
            client = smtplib.SMTP(timeout=timeout)
        # The name STARTTLS and implicit TLS check the certificate against: only __init__ sets it,
        # and connecting in __init__ would throw the banner away.
        client._host = host  # type: ignore[attr-defined]
        _code, greeting = client.connect(host, port)
        banner = greeting.decode("utf-8", "replace").strip()
        stage = "ehlo"
        code, reply = client.ehlo("mailferry.invalid")
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)
        first = _lines(reply)
        tls = implicit_tls
        if not implicit_tls:
            plain = first
            offered = client.has_extn("starttls")
            if offered:
                stage = "tls"
                client.starttls(context=ctx)
                stage = "ehlo"
                code, reply = client.ehlo("mailferry.invalid")
                if code != 250:
                    raise smtplib.SMTPResponseException(code, reply)
                tls = True
        result = SubmissionProbe(
            host,
            port,
            implicit_tls,
            banner=banner,
            ehlo_plain=plain,
            ehlo=_lines(reply),
            starttls=offered,
            tls=tls,
            auth=_auth(client),
            size=_size(client),
        )
    except ssl.SSLCertVerificationError as e:
        return SubmissionProbe(
            host,
            port,
            implicit_tls,
            banner,
            plain,
            starttls=offered,
            error=f"the TLS certificate does not verify: {e.verify_message}",
            stage="certificate",
        )
    except (TimeoutError, smtplib.SMTPException, OSError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return SubmissionProbe(host, port, implicit_tls, banner, plain, starttls=offered, error=why, stage=stage)
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    return result
