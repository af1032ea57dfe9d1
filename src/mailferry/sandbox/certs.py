"""Certificates made by the tests: a private CA and server certificates, good and broken.

Used to give a sandbox server (``DovecotServer.start(tls_files=...)``) a certificate whose one
fault is known: expired, naming another host, issued by a CA the client doesn't trust, expiring
soon, or a weak key. Nothing here touches the network; keys are small and fast (EC P-256 unless
a weak RSA key is asked for).

Terminology: ``CertAuthority`` is a CA (its certificate and key); ``issue`` makes a leaf signed by
it and writes ``(ca_pem, cert_pem, key_pem)`` files, the shape ``tls_files`` takes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _key(rsa_bits: int | None) -> PrivateKey:
    if rsa_bits is not None:
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class CertAuthority:
    """A private CA: its certificate and key."""

    name: str
    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, name: str = "mailferry test CA", *, now: datetime | None = None) -> CertAuthority:
        now = now or datetime.now(UTC)
        key = _key(None)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, cert, key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.pem)
        return path

    def leaf(
        self,
        names: tuple[str, ...],
        *,
        not_before: datetime,
        not_after: datetime,
        rsa_bits: int | None = None,
        hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A server certificate for ``names`` (host names and IP addresses, all in the SAN; the
        first is the CN too)."""
        key = _key(rsa_bits)
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        return builder.sign(self.key, hash_algorithm or hashes.SHA256()), key

    def issue(
        self,
        directory: Path,
        names: tuple[str, ...],
        *,
        days: float = 365,
        not_before: datetime | None = None,
        now: datetime | None = None,
        rsa_bits: int | None = None,
        trust: CertAuthority | None = None,
    ) -> tuple[Path, Path, Path]:
        """Write ``(ca.pem, server.pem, server.key)`` under ``directory``: a leaf for ``names``
        valid from ``not_before`` (default: a day before ``now``) until ``now + days`` (negative:
        already expired). ``ca.pem`` holds ``trust`` (default: this CA), the CA a client should
        be given: another CA's makes an untrusted chain."""
        now = now or datetime.now(UTC)
        start = not_before or now - timedelta(days=max(2.0, -days + 2))
        cert, key = self.leaf(names, not_before=start, not_after=now + timedelta(days=days), rsa_bits=rsa_bits)
        directory.mkdir(parents=True, exist_ok=True)
        ca_path = (trust or self).write(directory / "ca.pem")
        cert_path, key_path = directory / "server.pem", directory / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return ca_path, cert_path, key_path


def certificate_set(
    directory: Path, good_names: tuple[str, ...], *, now: datetime | None = None
) -> dict[str, tuple[Path, Path, Path]]:
    """The certificate set the readiness tests use, each ``(ca, cert, key)`` as a client is
    given the CA: ``good`` (for ``good_names``, a year), ``expired`` (ended 3 days ago),
    ``wrong-name`` (only ``mail.other.test`` and the addresses among ``good_names``),
    ``untrusted`` (issued by another CA than the ``ca`` given), ``expiring`` (5 days left)."""
    now = now or datetime.now(UTC)
    ca, other = CertAuthority.create("mailferry test CA", now=now), CertAuthority.create("unknown CA", now=now)
    addresses = tuple(n for n in good_names if _is_address(n))
    return {
        "good": ca.issue(directory / "good", good_names, now=now),
        "expired": ca.issue(directory / "expired", good_names, days=-3, now=now),
        "wrong-name": ca.issue(directory / "wrong-name", ("mail.other.test", *addresses), now=now),
        "untrusted": other.issue(directory / "untrusted", good_names, now=now, trust=ca),
        "expiring": ca.issue(directory / "expiring", good_names, days=5, now=now),
    }


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
