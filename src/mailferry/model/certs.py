"""Pure value types of the certificate checks: a TLS endpoint to look at, and what its server
presented.

Terminology:

endpoint     one TLS service of the target: ``service`` (``imap``, ``dav``, ``sieve``,
             ``submission``, ``ldap``), ``host``/``port``, how TLS starts (``tls``: implicit;
             ``starttls``: the protocol's upgrade command), the CA file the project trusts it
             with (None: the system store), and the name to present in SNI.
certificate  the server's leaf as seen without verifying it (so an expired or untrusted one can
             still be described), and the verdict of a separate, verifying handshake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

Service = Literal["imap", "dav", "sieve", "submission", "ldap"]
Start = Literal["tls", "starttls"]


@dataclass(frozen=True, slots=True)
class TlsEndpoint:
    """One TLS endpoint. ``server_name``: sent as SNI and verified against (default: ``host``);
    ``config``: where the project file sets it (``[target]``, ``[target.dav]`` ...), for fixes."""

    service: Service
    host: str
    port: int
    start: Start
    ca_file: Path | None = None
    server_name: str = ""
    timeout: float = 10.0
    config: str = "[target]"

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.service} {host}:{self.port}"

    @property
    def name(self) -> str:
        return self.server_name or self.host


@dataclass(frozen=True, slots=True)
class CertificateSeen:
    """A certificate as presented. ``dns_names``/``ip_addresses``: its subjectAltName entries
    (names lower-case, as written, wildcards kept); ``key_type``: ``RSA``, ``EC``, ``Ed25519``...;
    ``key_bits``: the key size (RSA modulus, EC curve); ``signature_hash``: ``sha256``, ``sha1``...
    (empty for Ed25519/Ed448, which have none)."""

    subject: str
    issuer: str
    common_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_type: str
    key_bits: int
    signature_hash: str
    self_signed: bool = False
    serial: str = ""
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Probe:
    """What one endpoint showed: ``error`` when no certificate could be fetched (no connection,
    no TLS, STARTTLS refused); else ``certificate``, and ``verified`` with the verifier's reason
    when it failed (``verify_code``: OpenSSL's X509_V_ERR number, 0 when verified or unknown)."""

    endpoint: TlsEndpoint
    certificate: CertificateSeen | None = None
    verified: bool = False
    verify_reason: str = ""
    verify_code: int = 0
    error: str = ""
    tls_version: str = ""
    facts: dict[str, str] = field(default_factory=dict)
