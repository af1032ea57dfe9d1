"""ManageSieve (RFC 5804): one account's Sieve scripts on one server.

Terminology: *script* one named Sieve script of an account (bytes, UTF-8 by RFC 5228); the
*active* script is the one the server runs on delivery (at most one); *extensions* the Sieve
extensions the server implements (the ``SIEVE`` capability, e.g. ``fileinto vacation``).

A small client of our own, not ``sievelib`` (1.6.0) or ``managesieve``: sievelib's GETSCRIPT
rejoins the script's lines with ``\\n`` (CRLF and a missing last newline are lost: a script would
never compare equal after a round trip), its TLS takes no CA file and no "don't verify" switch,
and its commands answer ``False`` with the server's words in a side attribute; ``managesieve``
has no CHECKSCRIPT. What mailferry needs is a few hundred lines: STARTTLS / implicit TLS with the
project's verification settings, SASL PLAIN with an authorization identity (Dovecot master users,
Cyrus admins; RFC 4616) or Dovecot's ``user*master`` login, literals both ways, and the server's
words of every NO kept for the finding.

Contracts:

- ``SieveStore(endpoint, login, readonly=...)`` connects and logs in, or raises
  :class:`~mailferry.errors.TemporaryFailure` / :class:`~mailferry.errors.AuthError` /
  :class:`~mailferry.errors.TLSVerifyError`; no exception text ever holds the password.
- ``list_scripts()``: ``[(name, active)]`` in the server's order.
- ``get(name)``: the script's bytes exactly as stored.
- ``check(content)``: None when the server accepts it, else its words; raises
  :class:`NoCheckScript` on a server without CHECKSCRIPT (ManageSieve before ``VERSION 1.0``).
- ``put(name, content)`` / ``set_active(name)``: raise :class:`ScriptRefused` with the server's
  words on NO; refused on a store opened ``readonly`` (the source) before anything is sent.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from mailferry.errors import AuthError, ItemRefused, MailferryError, TemporaryFailure, TLSVerifyError

__all__ = [
    "NoCheckScript",
    "Response",
    "ScriptRefused",
    "SieveEndpoint",
    "SieveLogin",
    "SieveStore",
    "parse_capabilities",
    "parse_response",
    "probe",
    "quote",
]

Word = str | bytes  # a quoted string (text) or a literal (bytes); atoms are str too


@dataclass(frozen=True, slots=True)
class SieveEndpoint:
    """Where and how to reach a ManageSieve server. Holds no secret. ``security``: ``tls``
    (implicit), ``starttls`` (RFC 5804 section 2.2) or ``none`` (loopback tests)."""

    host: str
    port: int
    security: str = "starttls"
    verify_certificates: bool = True
    ca_file: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class SieveLogin:
    """As :class:`mailferry.connectors.imap.Login`: ``admin`` set logs in as the admin for
    ``user`` (``sasl-authzid``: PLAIN with authorization identity; ``dovecot-master``:
    PLAIN as ``user*admin``). ``password`` is never shown."""

    user: str
    password: str
    admin: str | None = None
    method: str = "sasl-authzid"
    master_separator: str = "*"

    def __repr__(self) -> str:
        return f"SieveLogin(user={self.user!r}, admin={self.admin!r}, method={self.method!r})"


class ScriptRefused(ItemRefused):
    """The server said NO to a script (PUTSCRIPT, CHECKSCRIPT, SETACTIVE): ``words`` is its text."""

    def __init__(self, message: str, words: str) -> None:
        super().__init__(message, hint="see the server's words; fix the script on the source or the target's setup")
        self.words = words


class NoCheckScript(MailferryError):
    """The server has no CHECKSCRIPT (ManageSieve without ``VERSION``)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A ManageSieve response: the lines before it (each a list of words) and the final
    ``OK``/``NO``/``BYE`` with its optional response code and human text."""

    status: str
    code: str
    text: str
    lines: tuple[tuple[Word, ...], ...] = ()


_FINAL = re.compile(rb"\s*(OK|NO|BYE)(?![^\s(])", re.IGNORECASE)
_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r?\n?$")
_TOKEN = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|\(([^)]*)\)|\{(\d+)\+?\}|([^\s"(){}]+))')


def quote(text: str) -> bytes:
    """A quoted string for a command, or a literal when the text can't be quoted (RFC 5804:
    quoted strings hold no CR, LF or NUL and at most 1024 octets)."""
    raw = text.encode("utf-8")
    if len(raw) > 1000 or any(c in raw for c in b"\r\n\0"):
        return b"{%d+}\r\n" % len(raw) + raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _unquote(raw: bytes) -> str:
    return re.sub(rb"\\(.)", rb"\1", raw).decode("utf-8", "replace")


def _words(line: bytes, literals: list[bytes]) -> list[Word]:
    """The words of one response line; ``{n}`` takes the next of ``literals``."""
    out: list[Word] = []
    pos = 0
    line = line.rstrip(b"\r\n")
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        if m.group(1) is not None:
            out.append(_unquote(m.group(1)))
        elif m.group(2) is not None:
            out.append("(" + m.group(2).decode("utf-8", "replace") + ")")
        elif m.group(3) is not None:
            out.append(literals.pop(0) if literals else b"")
        elif m.group(4) is not None:
            out.append(m.group(4).decode("utf-8", "replace"))
    return out


def parse_response(lines: Sequence[tuple[bytes, list[bytes]]]) -> Response:
    """Pure: the logical lines of one response (each line's text with the literals it
    announced) -> :class:`Response`. The last line is the ``OK``/``NO``/``BYE`` one."""
    body: list[tuple[Word, ...]] = []
    for text, literals in lines[:-1]:
        body.append(tuple(_words(text, list(literals))))
    text, literals = lines[-1]
    words = _words(text, list(literals))
    status = str(words[0]).upper() if words else ""
    code = ""
    human = ""
    for w in words[1:]:
        if isinstance(w, str) and w.startswith("(") and not code:
            code = w[1:-1]
        elif isinstance(w, bytes):
            human = w.decode("utf-8", "replace")
        else:
            human = w
    return Response(status, code, human.strip(), tuple(body))


def parse_capabilities(lines: Sequence[Sequence[Word]]) -> dict[str, str]:
    """``"SIEVE" "fileinto vacation"`` lines -> {"SIEVE": "fileinto vacation", ...} (names upper case)."""
    out: dict[str, str] = {}
    for words in lines:
        if words:
            name = words[0] if isinstance(words[0], str) else words[0].decode("utf-8", "replace")
            value = words[1] if len(words) > 1 else ""
            out[name.upper()] = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return out


def _ssl_context(endpoint: SieveEndpoint) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=endpoint.ca_file or None)
    if not endpoint.verify_certificates:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SieveStore:
    """One account's scripts on one ManageSieve server. Not thread-safe."""

    def __init__(self, endpoint: SieveEndpoint, login: SieveLogin | None, *, readonly: bool, label: str = "") -> None:
        """``login=None``: connect (and STARTTLS) only, to read the capabilities (:func:`probe`)."""
        self.endpoint = endpoint
        self.readonly = readonly
        who = f"{login.user}@" if login is not None else ""
        self.label = label or f"{who}{endpoint.host} (ManageSieve)"
        self._sock: socket.socket | None = None
        self._file: object = None
        self.capabilities: dict[str, str] = {}
        self._connect(login)

    # -- connection ---------------------------------------------------------------------------

    @property
    def extensions(self) -> frozenset[str]:
        """The Sieve extensions the server implements (lower case)."""
        return frozenset(self.capabilities.get("SIEVE", "").lower().split())

    @property
    def implementation(self) -> str:
        return self.capabilities.get("IMPLEMENTATION", "")

    @property
    def has_checkscript(self) -> bool:
        """CHECKSCRIPT came with ManageSieve ``VERSION 1.0`` (RFC 5804 section 2.12)."""
        return "VERSION" in self.capabilities

    def _connect(self, login: SieveLogin | None) -> None:
        ep = self.endpoint
        where = f"{ep.host}:{ep.port}"
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=ep.timeout)
            if ep.security == "tls":
                sock = _ssl_context(ep).wrap_socket(sock, server_hostname=ep.host)
            self._set(sock)
            greeting = self._read_response()
            self.capabilities = parse_capabilities(greeting.lines)
            if ep.security == "starttls":
                if "STARTTLS" not in self.capabilities:
                    raise TemporaryFailure(
                        f"{self.label}: {where} offers no STARTTLS",
                        hint='use security = "tls" if it speaks TLS at once, or "none" on loopback only',
                    )
                answer = self._command(b"STARTTLS")
                if answer.status != "OK":
                    raise TemporaryFailure(f"{self.label}: STARTTLS refused by {where}: {answer.text}")
                assert self._sock is not None
                self._set(_ssl_context(ep).wrap_socket(self._sock, server_hostname=ep.host))
                # RFC 5804 2.2: the server sends its capabilities again after the handshake.
                self.capabilities = parse_capabilities(self._read_response().lines)
        except ssl.SSLCertVerificationError as e:
            self.close()
            why = e.verify_message
            raise TLSVerifyError(f"{self.label}: TLS certificate of {where} does not verify: {why}") from None
        except ssl.SSLError as e:
            self.close()
            raise TemporaryFailure(f"{self.label}: TLS with {where} failed: {e.reason}") from None
        except OSError as e:
            self.close()
            why = e.strerror or type(e).__name__
            raise TemporaryFailure(f"{self.label}: cannot connect to {where}: {why}") from None
        if login is not None:
            self._authenticate(login)

    def _set(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")

    def _authenticate(self, login: SieveLogin) -> None:
        if login.admin is None:
            authzid, authcid = "", login.user
        elif login.method == "dovecot-master":
            authzid, authcid = "", f"{login.user}{login.master_separator}{login.admin}"
        else:
            authzid, authcid = login.user, login.admin
        token = base64.b64encode(b"\0".join(x.encode("utf-8") for x in (authzid, authcid, login.password)))
        try:
            answer = self._command(b'AUTHENTICATE "PLAIN" ' + quote(token.decode()))
        except OSError as e:
            self.close()
            raise TemporaryFailure(f"{self.label}: connection lost at login: {type(e).__name__}") from None
        if answer.status != "OK":
            self.close()
            who = f"{login.admin} for {login.user}" if login.admin else login.user
            raise AuthError(f"{self.label}: ManageSieve login as {who} refused: {answer.text or answer.status}")
        # Some servers (Cyrus) send capabilities again after login; they are already known.

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendall(b"LOGOUT\r\n")
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._file = None

    # -- the wire ------------------------------------------------------------------------------

    def _readline(self) -> bytes:
        line: bytes = self._file.readline(1 << 20)  # type: ignore[attr-defined]
        if not line:
            raise ConnectionError("connection closed by the server")
        return line

    def _read_response(self) -> Response:
        lines: list[tuple[bytes, list[bytes]]] = []
        while True:
            text = self._readline()
            literals: list[bytes] = []
            whole = b""
            while (m := _LITERAL_END.search(text)) is not None:
                n = int(m.group(1))
                data: bytes = self._file.read(n)  # type: ignore[attr-defined]
                if len(data) != n:
                    raise ConnectionError("connection closed inside a literal")
                literals.append(data)
                whole += text
                text = self._readline()
            whole += text
            lines.append((whole, literals))
            if _FINAL.match(whole):
                return parse_response(lines)

    def _command(self, line: bytes) -> Response:
        if self._sock is None:
            raise TemporaryFailure(f"{self.label}: not connected")
        self._sock.sendall(line + b"\r\n")
        return self._read_response()

    def _run(self, line: bytes, what: str) -> Response:
        try:
            answer = self._command(line)
        except OSError as e:
            self.close()
            raise TemporaryFailure(f"{self.label}: connection lost at {what}: {type(e).__name__}") from None
        if answer.status == "BYE":
            self.close()
            raise TemporaryFailure(f"{self.label}: the server closed the connection at {what}: {answer.text}")
        return answer

    def _refuse_if_readonly(self, what: str) -> None:
        if self.readonly:
            raise MailferryError(f"{self.label}: {what} refused: this store is read-only (a source is never written)")

    # -- scripts -------------------------------------------------------------------------------

    def list_scripts(self) -> list[tuple[str, bool]]:
        answer = self._run(b"LISTSCRIPTS", "LISTSCRIPTS")
        if answer.status != "OK":
            raise TemporaryFailure(f"{self.label}: LISTSCRIPTS refused: {answer.text}")
        out: list[tuple[str, bool]] = []
        for words in answer.lines:
            if not words:
                continue
            name = words[0] if isinstance(words[0], str) else words[0].decode("utf-8", "replace")
            active = any(isinstance(w, str) and w.upper() == "ACTIVE" for w in words[1:])
            out.append((name, active))
        return out

    def get(self, name: str) -> bytes:
        answer = self._run(b"GETSCRIPT " + quote(name), "GETSCRIPT")
        if answer.status != "OK":
            raise TemporaryFailure(f"{self.label}: GETSCRIPT {name!r} refused: {answer.text}")
        for words in answer.lines:
            for w in words:
                if isinstance(w, bytes):
                    return w
        return b""

    def check(self, content: bytes) -> str | None:
        """None when the server accepts ``content``; else the server's words."""
        if not self.has_checkscript:
            raise NoCheckScript(f"{self.label}: the server has no CHECKSCRIPT")
        answer = self._run(b"CHECKSCRIPT {%d+}\r\n" % len(content) + content, "CHECKSCRIPT")
        if answer.status == "OK":
            return None
        return answer.text or answer.code or "refused"

    def put(self, name: str, content: bytes) -> None:
        self._refuse_if_readonly(f"PUTSCRIPT {name!r}")
        answer = self._run(b"PUTSCRIPT " + quote(name) + b" {%d+}\r\n" % len(content) + content, "PUTSCRIPT")
        if answer.status != "OK":
            words = answer.text or answer.code or "refused"
            raise ScriptRefused(f"{self.label}: PUTSCRIPT {name!r} refused: {words}", words)

    def set_active(self, name: str) -> None:
        self._refuse_if_readonly(f"SETACTIVE {name!r}")
        answer = self._run(b"SETACTIVE " + quote(name), "SETACTIVE")
        if answer.status != "OK":
            words = answer.text or answer.code or "refused"
            raise ScriptRefused(f"{self.label}: SETACTIVE {name!r} refused: {words}", words)


def probe(endpoint: SieveEndpoint) -> dict[str, str]:
    """The server's capabilities (after STARTTLS when ``endpoint`` asks for it), without logging
    in. Raises TemporaryFailure / TLSVerifyError like a store does."""
    store = SieveStore(endpoint, None, readonly=True)
    try:
        return dict(store.capabilities)
    finally:
        store.close()
