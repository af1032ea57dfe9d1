"""Fetches the certificate a TLS endpoint presents, and whether it verifies.

Two handshakes: the first with no verification at all (``CERT_NONE``), so an expired, untrusted
or misnamed certificate can still be described; the second with a verifying context (the
endpoint's CA file or the system store, host names not checked: names are judged in
:mod:`mailferry.verify.certs`), whose failure reason is kept. TLS starts as the endpoint says:
implicitly, or with the protocol's STARTTLS (IMAP, ManageSieve, SMTP submission, LDAP).
Nothing is written to the server and no one logs in.
"""

from __future__ import annotations

import socket
import ssl
from datetime import UTC

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from mailferry.model.certs import CertificateSeen, Probe, TlsEndpoint

# LDAPMessage { messageID 1, extendedReq { requestName "1.3.6.1.4.1.1466.20037" } } (RFC 4511 4.14)
_LDAP_STARTTLS = bytes.fromhex("301d02010177188016") + b"1.3.6.1.4.1.1466.20037"


class _Refused(Exception):
    """The server would not start TLS (no STARTTLS, or it said no)."""


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise _Refused("the server closed the connection")
        data += chunk
        if len(data) > 8192:
            raise _Refused("the server sent a line too long")
    return data


def _starttls(sock: socket.socket, service: str) -> None:
    """Speak the protocol up to the point where the TLS handshake starts."""
    if service == "imap":
        _read_line(sock)
        sock.sendall(b"a1 STARTTLS\r\n")
        while True:
            line = _read_line(sock)
            if line.startswith(b"a1 "):
                if not line[3:].upper().startswith(b"OK"):
                    raise _Refused(f"STARTTLS refused: {line.decode(errors='replace').strip()}")
                return
    elif service == "sieve":
        while not _read_line(sock).upper().startswith((b"OK", b"NO", b"BYE")):
            pass
        sock.sendall(b"STARTTLS\r\n")
        line = _read_line(sock)
        if not line.upper().startswith(b"OK"):
            raise _Refused(f"STARTTLS refused: {line.decode(errors='replace').strip()}")
    elif service == "submission":
        while _read_line(sock)[3:4] == b"-":
            pass
        sock.sendall(b"EHLO mailferry.invalid\r\n")
        while _read_line(sock)[3:4] == b"-":
            pass
        sock.sendall(b"STARTTLS\r\n")
        line = _read_line(sock)
        if not line.startswith(b"220"):
            raise _Refused(f"STARTTLS refused: {line.decode(errors='replace').strip()}")
    elif service == "ldap":
        sock.sendall(_LDAP_STARTTLS)
        answer = sock.recv(4096)
        # ExtendedResponse: its resultCode is the first ENUMERATED (0a 01 xx) of the message.
        at = answer.find(b"\x0a\x01")
        if at < 0 or at + 2 >= len(answer) or answer[at + 2] != 0:
            raise _Refused("the LDAP server refused StartTLS")
    else:
        raise _Refused(f"no STARTTLS for {service}")


def _handshake(endpoint: TlsEndpoint, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.timeout)
    try:
        if endpoint.start == "starttls":
            _starttls(sock, endpoint.service)
        sni = endpoint.name if not _is_address(endpoint.name) else None
        return context.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def _is_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def describe(der: bytes) -> CertificateSeen:
    """The plain facts of a DER certificate."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type, bits = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, bits = "EC", key.curve.key_size
    elif isinstance(key, dsa.DSAPublicKey):
        key_type, bits = "DSA", key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key_type, bits = "Ed25519", 256
    elif isinstance(key, ed448.Ed448PublicKey):
        key_type, bits = "Ed448", 456
    else:
        key_type, bits = type(key).__name__, 0
    algo = cert.signature_hash_algorithm
    return CertificateSeen(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=str(cns[0].value) if cns else "",
        dns_names=dns,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        key_type=key_type,
        key_bits=bits,
        signature_hash=algo.name if algo is not None else "",
        self_signed=cert.subject == cert.issuer,
        serial=format(cert.serial_number, "x"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def probe(endpoint: TlsEndpoint) -> Probe:
    """Fetch ``endpoint``'s certificate, then verify it in a second handshake. Never raises for
    what the server does: a failure is the probe's ``error``."""
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    try:
        with _handshake(endpoint, loose) as tls:
            der = tls.getpeercert(binary_form=True)
            version = tls.version() or ""
    except (OSError, _Refused) as e:
        return Probe(endpoint, error=_reason(e))
    if not der:
        return Probe(endpoint, error="the server presented no certificate")
    try:
        seen = describe(der)
    except ValueError as e:
        return Probe(endpoint, error=f"the certificate could not be read: {e}")
    strict = ssl.create_default_context(cafile=str(endpoint.ca_file) if endpoint.ca_file else None)
    strict.check_hostname = False
    try:
        with _handshake(endpoint, strict):
            pass
    except ssl.SSLCertVerificationError as e:
        return Probe(endpoint, seen, False, e.verify_message or str(e), e.verify_code or 0, tls_version=version)
    except (OSError, _Refused) as e:
        return Probe(endpoint, seen, False, _reason(e), tls_version=version)
    return Probe(endpoint, seen, True, tls_version=version)


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return str(e) or type(e).__name__
