"""CalDAV (RFC 4791) and CardDAV (RFC 6352) over httpx: one account's collections on one server.

Implements :class:`~mailferry.connectors.base.DavWriteStore` (contract there; terms in
:mod:`mailferry.model.dav`). One ``httpx.Client`` per store: HTTP/1.1 keep-alive, a pool of
``max_connections``, safe to share between the engine's threads (httpx clients are thread-safe;
the store keeps no other mutable state but the cached discovery, set once under a lock).

Decisions (why):

- Discovery (RFC 6764): ``/.well-known/caldav``, then ``/.well-known/carddav`` (redirects
  followed), then the base URL itself (it may be the root or already the principal); the first
  ``current-user-principal`` wins. The principal gives the homes, the outbox and the addresses;
  OPTIONS on the calendar home gives the ``DAV`` tokens (Cyrus splits them over several headers).
- Bodies are bytes end to end. The one exception is the XML of multiget answers: an XML parser
  turns every CRLF into LF (XML 1.0 §2.11), so when the server sent CRLF in the body, LF is
  turned back into CRLF in the item data (iCalendar and vCard lines end in CRLF). A server that
  escapes CR as ``&#13;`` keeps exact bytes without that step.
- XML from servers is parsed with ``defusedxml`` (no entity expansion); requests are built from
  fixed templates with every value escaped.
- Errors: connection refused, time-outs, dropped connections, 502/504 -> TemporaryFailure;
  429/503 -> Throttled (a TemporaryFailure with the server's ``Retry-After``, which the engine
  waits out, pausing every writer to that server, before it sends the request again);
  401 -> AuthError; a certificate that does not verify -> TLSVerifyError; a refusal of one item
  or collection -> ItemRefused with the status and the server's words (:func:`status_words`).
  Messages carry the label, the href and the server's words, never a password (the
  Authorization header is built by httpx and never formatted anywhere).
- A read-only store (``readonly=True``, every source) raises :class:`ReadOnlyViolation` from every
  write method before anything is sent: a bug guard, not a server answer.

Admin logins (``DavLogin.admin``), as found with the sandbox servers (tests/servers/test_dav_store.py):

- Radicale 3.9: no proxy authorization; the admin logs in as itself and opens the account's
  collections by path (``admin_method="path"``) under a rights-file rule granting it ``RWrw`` on
  every user (:class:`mailferry.sandbox.dav_servers.RadicaleServer`). Discovery finds the admin's
  own principal (``/admin/``) and swaps its last segment for the account (``/alice/``).
- Cyrus 3.6 (standalone): the ``Authorize-As`` header (``admin_method="authorize-as"``) is
  refused with 401: Cyrus httpd allows proxy authorization only on a Murder backend
  (``mupdate_server`` and ``proxyservers`` set). The admin's own requests to
  ``/dav/calendars/user/alice/...`` are redirected to its own home's view of alice's collections
  (``/dav/calendars/user/<admin>/alice.Default/``) and refused with 403 (need-privileges) until
  alice's calendar mailbox grants the admin rights (IMAP ``SETACL user/alice/#calendars/Default
  <admin> lrswipkxtecdan``); then a PUT there works, but MKCALENDAR for alice does not (403
  calendar-collection-location-ok) and the admin's principal lists only its own home. So on a
  standalone Cyrus the connector needs each account's own login (or a Murder backend for
  Authorize-As).

Sharing (``shares``/``set_share``), per server mechanism:

- ``resource-sharing`` in the DAV header (Cyrus; draft-pot-webdav-resource-sharing): read with
  PROPFIND ``D:invite`` (sharees' hrefs, ``D:read``/``D:read-write``), written with POST
  ``D:share-resource`` (``application/davsharing+xml``). Cyrus applies it at once (the sharee
  gets a notification; no acceptance is needed to read or write). Expresses read and read-write.
- Radicale's own API (``POST /.sharing/v1/map/...``, Radicale >= 3.7 with ``[sharing]``): read
  with ``map/list``, written with ``map/create`` (the owner's collection appears under the
  sharee's principal as ``<owner>.<name>``, permissions ``r`` or ``rw``). The sharee must still
  enable it (``map/enable``, Radicale's "security by default"). Expresses read and read-write.
- Otherwise ``shares`` is None and ``set_share`` raises ItemRefused(status=501). ``freebusy``
  and ``admin`` access can't be granted through either mechanism (501).

Who may see an account's free/busy (``freebusy_access``/``set_freebusy_access``):

- Read from the ``DAV:acl`` of the account's scheduling inbox (RFC 6638 §6.1.2:
  ``schedule-query-freebusy``, or the aggregate ``schedule-deliver``/``DAV:all``). Cyrus answers
  it (its right ``9`` on ``#calendars/Inbox``; every account by default). Radicale has no
  scheduling inbox: free/busy there is the ``f`` permission of its rights file, which no request
  shows, so ``freebusy_access`` is None.
- Written on Cyrus through IMAP: Cyrus 3.6 refuses the WebDAV ACL method on the scheduling inbox
  (405 "ACLs can only be set on collections"), but the account itself may SETACL its own
  ``INBOX/#calendars/Inbox`` mailbox (hidden from LIST, there all the same). The store is given
  an ``imap_acl`` factory for that (the account's IMAP login on the same server, composed by
  ``api``). Elsewhere ``set_freebusy_access`` raises ItemRefused(status=501).
"""

from __future__ import annotations

import functools
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import httpx
from defusedxml import ElementTree as SafeET

from mailferry.connectors.base import MailboxAcl
from mailferry.errors import (
    AuthError,
    ItemRefused,
    MailferryError,
    ServerError,
    TemporaryFailure,
    Throttled,
    TLSVerifyError,
)
from mailferry.model.dav import (
    Access,
    BusyPeriod,
    Changes,
    Collection,
    CollectionKind,
    DavItem,
    DavServerInfo,
    FreeBusyAccess,
    Share,
)

__all__ = [
    "DavEndpoint",
    "DavLogin",
    "DavStore",
    "ReadOnlyViolation",
    "freebusy_access_of",
    "parse_freebusy",
    "status_words",
]

D, C, R, CS, A = (
    "DAV:",
    "urn:ietf:params:xml:ns:caldav",
    "urn:ietf:params:xml:ns:carddav",
    "http://calendarserver.org/ns/",
    "http://apple.com/ns/ical/",
)
_XMLNS = f'xmlns:D="{D}" xmlns:C="{C}" xmlns:R="{R}" xmlns:CS="{CS}" xmlns:A="{A}"'
_XML_TYPE = "application/xml; charset=utf-8"
_TEMPORARY = frozenset({429, 502, 503, 504})
_THROTTLING = frozenset({429, 503})  # the server asks for less, often with a Retry-After


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """An HTTP ``Retry-After`` (RFC 9110 10.2.3: delay-seconds or an HTTP-date) as seconds from
    ``now`` (Unix time; the clock when None), never negative; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a zone-less one is taken as such
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_WORDS_LIMIT = 200


class ReadOnlyViolation(MailferryError):
    """A write method was called on a read-only (source) store: a bug in the caller."""


@dataclass(frozen=True, slots=True)
class DavEndpoint:
    base_url: str
    verify_certificates: bool = True
    ca_file: Path | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class DavLogin:
    """``user`` is the account whose collections the store opens. With ``admin``, the login is
    the admin's (``password`` is then the admin's) by ``admin_method`` (see the module docstring)."""

    user: str
    password: str = field(repr=False)
    admin: str | None = None
    admin_method: Literal["path", "authorize-as"] = "path"


# --------------------------------------------------------------------------- pure helpers


def status_words(status: int, content_type: str, body: bytes, *, limit: int = _WORDS_LIMIT) -> str:
    """The server's own words for a refusal: the element names inside a ``DAV:error`` body (the
    precondition, RFC 4918 §16) and its ``responsedescription``, else the text of an HTML or plain
    body; whitespace collapsed, truncated to ``limit`` characters. Pure."""
    words = ""
    text = body.decode("utf-8", errors="replace")
    if "xml" in content_type or text.lstrip().startswith("<?xml"):
        try:
            root = SafeET.fromstring(body)
        except Exception:  # noqa: BLE001 - not XML after all: fall back to the text
            root = None
        if root is not None:
            names = [_local(e.tag) for e in root if _local(e.tag) != "responsedescription"]
            desc = " ".join(t.strip() for e in root.iter(f"{{{D}}}responsedescription") for t in e.itertext())
            words = ", ".join(names) + (f": {desc}" if desc else "")
            if not words:
                words = " ".join(root.itertext())
    if not words:
        if "<" in text:
            title = re.search(r"<p>(.*?)</p>", text, re.S) or re.search(r"<title>(.*?)</title>", text, re.S)
            text = title.group(1) if title else re.sub(r"<[^>]*>", " ", text)
        words = text
    words = " ".join(words.split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def parse_freebusy(text: str) -> list[BusyPeriod]:
    """The FREEBUSY periods of a VFREEBUSY (RFC 5545 §3.8.2.6), unfolded; a period given as
    start/duration is kept as the server wrote it. Pure."""
    unfolded = re.sub(r"\r?\n[ \t]", "", text)
    out: list[BusyPeriod] = []
    for line in unfolded.splitlines():
        name, sep, value = line.partition(":")
        if not sep or not name.upper().startswith("FREEBUSY"):
            continue
        params = dict(p.split("=", 1) for p in name.split(";")[1:] if "=" in p)
        fbtype = params.get("FBTYPE", "BUSY").upper()
        for period in value.split(","):
            start, _, end = period.partition("/")
            out.append(BusyPeriod(start=start.strip(), end=end.strip(), fbtype=fbtype))
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: Element | None) -> str | None:
    if element is None:
        return None
    return "".join(element.itertext()).strip()


def _hrefs(element: Element | None) -> list[str]:
    if element is None:
        return []
    return [h.text.strip() for h in element.iter(f"{{{D}}}href") if h.text]


def _props(response: Element) -> dict[str, Element]:
    """The properties of a multistatus response that came with status 200."""
    out: dict[str, Element] = {}
    for propstat in response.iter(f"{{{D}}}propstat"):
        status = _text(propstat.find(f"{{{D}}}status")) or ""
        if " 200 " not in f"{status} ":
            continue
        prop = propstat.find(f"{{{D}}}prop")
        for child in prop if prop is not None else ():
            out[child.tag] = child
    return out


def _path(href: str) -> str:
    """An href as an absolute path (hrefs may be full URLs)."""
    return urlsplit(href).path if "://" in href else href


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """One verifying TLS context per CA file, shared by every store: building one reads the
    whole trust store (about 25 ms), which a pass over many accounts paid per store."""
    return ssl.create_default_context(cafile=ca_file)


def _invite_shares(root: Element, qualified: bool = False) -> list[Share]:
    """The sharees of a ``D:invite`` property (draft-pot-webdav-resource-sharing), by account;
    ``qualified``: the server's logins are whole addresses (``bob@example.com``), so a
    ``mailto:`` sharee keeps its domain."""
    out: list[Share] = []
    for sharee in root.iter(f"{{{D}}}sharee"):
        href = _hrefs(sharee)
        access = sharee.find(f"{{{D}}}share-access")
        if not href or access is None:
            continue
        kinds = {_local(c.tag) for c in access}
        level: Access | None = "read-write" if "read-write" in kinds else "read" if "read" in kinds else None
        if level is not None:
            out.append(Share(principal=_account(href[0], qualified), access=level))
    return sorted(out, key=lambda s: s.principal)


_FREEBUSY_PRIVILEGES = {
    f"{{{C}}}schedule-query-freebusy",
    f"{{{C}}}schedule-deliver",  # the aggregate of the three schedule-deliver-* (RFC 6638 §6.1.1)
    f"{{{D}}}all",
}


def freebusy_access_of(root: Element, owner: str) -> FreeBusyAccess | None:
    """Who may query free/busy, from the ``DAV:acl`` (RFC 3744 §5.5) of a scheduling inbox in a
    PROPFIND answer: granted to ``DAV:all`` or ``DAV:authenticated`` -> everyone; to a principal
    href -> that account. The owner (``DAV:self``, or its own href) is left out. None when the
    answer has no ACL or denies something (this reading knows grant-only ACLs). Pure."""
    acl = next(root.iter(f"{{{D}}}acl"), None)
    if acl is None:
        return None
    everyone = False
    names: set[str] = set()
    for ace in acl.findall(f"{{{D}}}ace"):
        if ace.find(f"{{{D}}}deny") is not None:
            return None
        grant = ace.find(f"{{{D}}}grant")
        principal = ace.find(f"{{{D}}}principal")
        if grant is None or principal is None:
            continue
        privileges = {p.tag for priv in grant.findall(f"{{{D}}}privilege") for p in priv}
        if not privileges & _FREEBUSY_PRIVILEGES:
            continue
        for who in principal:
            if who.tag in (f"{{{D}}}all", f"{{{D}}}authenticated"):
                everyone = True
            elif who.tag == f"{{{D}}}href" and who.text:
                name = _account(who.text.strip())
                if name and name != owner:
                    names.add(name)
    return FreeBusyAccess(everyone=everyone, principals=frozenset(names))


def _shared_in(props: dict[str, Element], coll: Collection, me: str) -> bool:
    """True for a collection in this account's home that another account owns and shares with it
    (Cyrus: ``D:share-access`` read/read-write, owner the other account; Radicale: a share map
    ``<owner>.<name>`` whose owner is the other account)."""
    access = props.get(f"{{{D}}}share-access")
    if access is not None and any(_local(c.tag) in ("read", "read-write") for c in access):
        return True
    return bool(coll.owner) and coll.owner != me


def _radicale_shares(listed: Mapping[str, object], href: str, me: str) -> list[Share]:
    """The shares of the collection at ``href`` in an answer of Radicale's ``map/list``."""
    found: list[Share] = []
    rows = listed.get("Content")
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or row.get("PathMapped") != href:
            continue
        perms = str(row.get("Permissions", ""))
        user = str(row.get("User", ""))
        if user and user != me:
            found.append(Share(principal=user, access="read-write" if "w" in perms else "read"))
    return sorted(found, key=lambda s: s.principal)


def _segment(href: str) -> str:
    return unquote(href.rstrip("/").rsplit("/", 1)[-1])


# --------------------------------------------------------------------------- the store


class DavStore:
    """One account's calendars and address books on one CalDAV/CardDAV server."""

    def __init__(
        self,
        endpoint: DavEndpoint,
        login: DavLogin,
        *,
        readonly: bool,
        label: str,
        batch_size: int = 100,
        max_connections: int = 8,
        known: DavServerInfo | None = None,
        imap_acl: Callable[[], MailboxAcl] | None = None,
        sync_tokens: bool = True,
    ) -> None:
        """``known``: what an earlier discovery found for this account (the ledger keeps it), so
        that a pass with nothing new reads one PROPFIND per home; found stale (a home that is no
        longer there), it is discovered again. ``imap_acl``: opens this account's IMAP session on
        the same server, for what the server keeps as mailbox ACLs only (see the module docstring).
        ``sync_tokens=False``: collections are listed without their sync token and CTag (a target's:
        a server computes each over all the collection's members, Radicale under its storage lock)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.endpoint = endpoint
        self.login = login
        self.readonly = readonly
        self.label = label
        self.batch_size = batch_size
        verify: ssl.SSLContext | bool = False
        if endpoint.verify_certificates:
            verify = _tls_context(str(endpoint.ca_file) if endpoint.ca_file else None)
        headers = {"User-Agent": "mailferry"}
        if login.admin is not None and login.admin_method == "authorize-as":
            headers["Authorize-As"] = login.user
        self._client = httpx.Client(
            base_url=endpoint.base_url,
            auth=httpx.BasicAuth(login.admin or login.user, login.password),
            verify=verify,
            timeout=endpoint.timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=2),
            headers=headers,
            follow_redirects=True,
        )
        self._imap_acl = imap_acl
        self._sync_tokens = sync_tokens
        self._info: DavServerInfo | None = known
        self._known = known is not None  # discovery skipped: rediscover once if a home is gone
        self._lock = threading.Lock()

    # ---- plumbing

    def _url(self, href: str) -> str:
        return urljoin(self.endpoint.base_url, href)

    def _send(
        self,
        method: str,
        href: str,
        body: bytes | str | None = None,
        *,
        depth: str | None = None,
        content_type: str = _XML_TYPE,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        h = dict(headers or {})
        if body is not None:
            h["Content-Type"] = content_type
        if depth is not None:
            h["Depth"] = depth
        content = body.encode() if isinstance(body, str) else body
        what = f"{self.label}: {method} {_path(href)}"
        try:
            for attempt in range(_RESENDS + 1):
                try:
                    response = self._client.request(method, self._url(href), content=content, headers=h)
                    break
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                    # A kept-alive connection the server closed as this request went out (Radicale
                    # closes idle ones; under load Cyrus too): sent again on a fresh one. Safe for
                    # every request here: writes are conditional (If-None-Match / If-Match), and a
                    # PUT that did land before is recognised by its UID (412, then adopted).
                    if attempt == _RESENDS:
                        raise
                    time.sleep(0.05 * (attempt + 1))
        except httpx.ConnectError as exc:
            if _is_verify_error(exc):
                raise TLSVerifyError(f"{what}: the server's certificate did not verify") from None
            raise TemporaryFailure(f"{what}: cannot connect to {self.endpoint.base_url} ({_reason(exc)})") from None
        except httpx.TimeoutException:
            raise TemporaryFailure(f"{what}: timed out after {self.endpoint.timeout:g} s") from None
        except (httpx.TransportError, httpx.TooManyRedirects) as exc:
            raise TemporaryFailure(f"{what}: connection failed ({_reason(exc)})") from None
        if response.status_code == 401:
            who = self.login.admin or self.login.user
            raise AuthError(f"{what}: the server refused the login of {who!r} (401)")
        if response.status_code in _THROTTLING:
            wait = retry_after_seconds(response.headers.get("retry-after"))
            asked = f" (it asks to wait {wait:g} s)" if wait is not None else ""
            raise Throttled(f"{what}: {response.status_code} {self._words(response)}{asked}", retry_after=wait)
        if response.status_code in _TEMPORARY:
            raise TemporaryFailure(f"{what}: {response.status_code} {self._words(response)}")
        return response

    @staticmethod
    def _words(response: httpx.Response) -> str:
        words = status_words(response.status_code, response.headers.get("content-type", ""), response.content)
        return words or response.reason_phrase  # Cyrus answers 413 with an empty body

    def _refused(self, response: httpx.Response, method: str, href: str) -> ItemRefused:
        return ItemRefused(
            f"{self.label}: {method} {_path(href)} refused: {response.status_code} {self._words(response)}",
            status=response.status_code,
        )

    def _multistatus(self, response: httpx.Response, method: str, href: str) -> Element:
        if response.status_code != 207:
            words = self._words(response)
            raise ServerError(f"{self.label}: {method} {_path(href)}: expected 207, got {response.status_code} {words}")
        try:
            root: Element = SafeET.fromstring(response.content)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the peer's fault
            raise ServerError(f"{self.label}: {method} {_path(href)}: unreadable multistatus ({exc})") from None
        return root

    def _propfind(self, href: str, props: Sequence[str], depth: str) -> Element:
        body = f'<?xml version="1.0" encoding="utf-8"?><D:propfind {_XMLNS}><D:prop>'
        body += "".join(f"<{p}/>" for p in props) + "</D:prop></D:propfind>"
        return self._multistatus(self._send("PROPFIND", href, body, depth=depth), "PROPFIND", href)

    def _guard(self, method: str) -> None:
        if self.readonly:
            raise ReadOnlyViolation(f"{self.label}: {method} on a read-only store (nothing was sent)")

    # ---- discovery

    def info(self) -> DavServerInfo:
        with self._lock:
            if self._info is None:
                self._info = self._discover()
            return self._info

    def _discover(self) -> DavServerInfo:
        principal = None
        base_path = urlsplit(self.endpoint.base_url).path or "/"
        for start in ("/.well-known/caldav", "/.well-known/carddav", base_path):
            response = self._send(
                "PROPFIND",
                start,
                f'<?xml version="1.0"?><D:propfind {_XMLNS}><D:prop><D:current-user-principal/></D:prop></D:propfind>',
                depth="0",
            )
            if response.status_code != 207:
                continue
            root = self._multistatus(response, "PROPFIND", start)
            for r in root.iter(f"{{{D}}}response"):
                found = _hrefs(_props(r).get(f"{{{D}}}current-user-principal"))
                if found:
                    principal = _path(found[0])
                    break
            if principal:
                break
        if not principal:
            raise ServerError(f"{self.label}: no current-user-principal at {self.endpoint.base_url} (RFC 6764)")
        if self.login.admin is not None and self.login.admin_method == "path":
            if _segment(principal) != self.login.admin:
                raise ServerError(f"{self.label}: the admin's principal {principal} does not end in its name")
            principal = principal.rstrip("/").rsplit("/", 1)[0] + "/" + quote(self.login.user) + "/"
        missing = (
            self.login.admin is not None
            and self._send("PROPFIND", principal, _PROPFIND_RTYPE, depth="0").status_code == 404
        )
        if missing and self.readonly:
            # A source account that never used the server: nothing to read (its home is its
            # principal on Radicale, where this route is the admin's); collections() finds none.
            dav, product = self._options(base_path)
            return DavServerInfo(
                dav=dav,
                product=product,
                principal=principal,
                calendar_home=principal,
                addressbook_home=principal,
            )
        if missing:
            # Radicale makes a principal collection at its user's first login only; an admin
            # opening a never-used target account makes it (MKCOL needs W there: the admin rule).
            made = self._send("MKCOL", principal)
            if made.status_code not in (200, 201):
                raise self._refused(made, "MKCOL", principal)
        root = self._propfind(
            principal,
            [
                "C:calendar-home-set",
                "R:addressbook-home-set",
                "C:schedule-outbox-URL",
                "C:schedule-inbox-URL",
                "C:calendar-user-address-set",
            ],
            "0",
        )
        props: dict[str, Element] = {}
        for r in root.iter(f"{{{D}}}response"):
            props.update(_props(r))
        cal = _hrefs(props.get(f"{{{C}}}calendar-home-set"))
        book = _hrefs(props.get(f"{{{R}}}addressbook-home-set"))
        outbox = _hrefs(props.get(f"{{{C}}}schedule-outbox-URL"))
        inbox = _hrefs(props.get(f"{{{C}}}schedule-inbox-URL"))
        addresses = tuple(_hrefs(props.get(f"{{{C}}}calendar-user-address-set")))
        calendar_home = _path(cal[0]) if cal else None
        dav, product = self._options(calendar_home or principal)
        return DavServerInfo(
            dav=dav,
            product=product,
            principal=principal,
            calendar_home=calendar_home,
            addressbook_home=_path(book[0]) if book else None,
            outbox=_path(outbox[0]) if outbox else None,
            addresses=addresses,
            inbox=_path(inbox[0]) if inbox else None,
        )

    def dav_header(self) -> frozenset[str]:
        """The server's DAV header now (OPTIONS on the calendar home): what it does may change
        between runs (scheduling paused for a migration window, then switched back on)."""
        info = self.info()
        return self._options(info.calendar_home or info.principal)[0]

    def _options(self, href: str) -> tuple[frozenset[str], str]:
        """OPTIONS: the DAV header's tokens, lower-cased (Cyrus splits them over several
        headers), and the Server header."""
        options = self._send("OPTIONS", href)
        dav = frozenset(
            t.strip().lower() for value in options.headers.get_list("dav") for t in value.split(",") if t.strip()
        )
        return dav, options.headers.get("server", "")

    # ---- reading

    _COLLECTION_PROPS = (
        "D:resourcetype",
        "D:displayname",
        "C:calendar-description",
        "R:addressbook-description",
        "A:calendar-color",
        "A:calendar-order",
        "C:calendar-timezone",
        "C:supported-calendar-component-set",
        "C:schedule-calendar-transp",
        "D:sync-token",
        "CS:getctag",
        "D:owner",
        "D:share-access",
        "D:invite",
    )

    def collections(self) -> list[Collection]:
        try:
            return self._collections()
        except ServerError:
            if not self._known:
                raise
        with self._lock:  # the discovery the ledger kept is stale: discover again
            self._known = False
            self._info = self._discover()
        return self._collections()

    def _collections(self) -> list[Collection]:
        info = self.info()
        homes = [h for h in dict.fromkeys([info.calendar_home, info.addressbook_home]) if h]
        me = self._account_user()
        out: dict[str, Collection] = {}
        for home in homes:
            # Without CS:getctag first: a server computes each token over all members (Radicale:
            # ~30 ms per 400 items each), and the sync token is the one mailferry uses; the CTag
            # is asked for only where a server gives no sync token.
            wanted = self._listing_props()
            body = f'<?xml version="1.0" encoding="utf-8"?><D:propfind {_XMLNS}><D:prop>'
            body += "".join(f"<{p}/>" for p in wanted) + "</D:prop></D:propfind>"
            response = self._send("PROPFIND", home, body, depth="1")
            if response.status_code == 404 and not self._known:
                continue  # an account that never used the server (Radicale makes its home at first login)
            root = self._multistatus(response, "PROPFIND", home)
            for r in root.iter(f"{{{D}}}response"):
                href = _path(_text(r.find(f"{{{D}}}href")) or "")
                if not href or href.rstrip("/") == home.rstrip("/"):
                    continue
                props = _props(r)
                coll = self._collection(href, props)
                if coll is None or _shared_in(props, coll, me):
                    continue  # another account's collection shared with this one: its owner's to move
                out.setdefault(coll.href, coll)
        if self._sync_tokens and any(c.sync_token is None for c in out.values()):
            out = self._with_ctags(homes, out)
        if self.readonly and out and "resource-sharing" not in info.dav and self.login.admin is None:
            out = self._with_radicale_shares(out)
        return sorted(out.values(), key=lambda c: c.href)

    def _with_radicale_shares(self, found: dict[str, Collection]) -> dict[str, Collection]:
        """A source's collections with their sharing from one ``map/list`` of Radicale's sharing
        API (all of the account's shares in one request), so that a pass with nothing else new
        sees a share added since, as Cyrus' listing (``D:invite``) shows it."""
        listed = self._radicale_sharing("list", {})
        if listed is None:
            return found
        return {
            href: replace(c, shares=tuple(_radicale_shares(listed, href, self._account_user())))
            for href, c in found.items()
        }

    def _listing_props(self) -> list[str]:
        return [p for p in self._COLLECTION_PROPS if p != "CS:getctag" and (self._sync_tokens or p != "D:sync-token")]

    def _with_ctags(self, homes: Sequence[str], found: dict[str, Collection]) -> dict[str, Collection]:
        """The collections with their CTag, for a server without sync tokens (RFC 6578)."""
        out = dict(found)
        for home in homes:
            root = self._propfind(home, ["CS:getctag"], "1")
            for r in root.iter(f"{{{D}}}response"):
                href = _path(_text(r.find(f"{{{D}}}href")) or "")
                href = href if href.endswith("/") else href + "/"
                ctag = _text(_props(r).get(f"{{{CS}}}getctag"))
                if href in out and ctag:
                    out[href] = replace(out[href], ctag=ctag)
        return out

    def _collection(self, href: str, props: dict[str, Element]) -> Collection | None:
        rtype = props.get(f"{{{D}}}resourcetype")
        kinds = {child.tag for child in rtype} if rtype is not None else set()
        kind: CollectionKind
        if f"{{{C}}}calendar" in kinds:
            kind = "calendar"
        elif f"{{{R}}}addressbook" in kinds:
            kind = "addressbook"
        else:
            return None  # scheduling inbox/outbox, notifications, plain folders
        href = href if href.endswith("/") else href + "/"
        comps = props.get(f"{{{C}}}supported-calendar-component-set")
        transp = props.get(f"{{{C}}}schedule-calendar-transp")
        desc = props.get(f"{{{C}}}calendar-description" if kind == "calendar" else f"{{{R}}}addressbook-description")
        owner = _hrefs(props.get(f"{{{D}}}owner")) or [_text(props.get(f"{{{D}}}owner")) or ""]
        return Collection(
            href=href,
            kind=kind,
            name=_segment(href),
            displayname=_text(props.get(f"{{{D}}}displayname")) or None,
            description=_text(desc) or None,
            color=_text(props.get(f"{{{A}}}calendar-color")) or None,
            order=_text(props.get(f"{{{A}}}calendar-order")) or None,
            timezone=_text(props.get(f"{{{C}}}calendar-timezone")) or None,
            components=tuple(c.get("name", "") for c in comps) if comps is not None and kind == "calendar" else (),
            transparent=(transp.find(f"{{{C}}}transparent") is not None) if transp is not None else None,
            sync_token=_text(props.get(f"{{{D}}}sync-token")) or None,
            ctag=_text(props.get(f"{{{CS}}}getctag")) or None,
            owner=_segment(owner[0]) if owner[0] else None,
            shares=tuple(_invite_shares(invite, self._qualified()))
            if (invite := props.get(f"{{{D}}}invite")) is not None
            else None,
        )

    def members(self, collection: Collection) -> dict[str, str | None]:
        root = self._propfind(collection.href, ["D:resourcetype", "D:getetag"], "1")
        out: dict[str, str | None] = {}
        for r in root.iter(f"{{{D}}}response"):
            href = _path(_text(r.find(f"{{{D}}}href")) or "")
            props = _props(r)
            rtype = props.get(f"{{{D}}}resourcetype")
            if not href or href.rstrip("/") == collection.href.rstrip("/"):
                continue
            if rtype is not None and rtype.find(f"{{{D}}}collection") is not None:
                continue
            out[href] = _text(props.get(f"{{{D}}}getetag")) or None
        return out

    def changes(self, collection: Collection, token: str) -> Changes | None:
        changed: dict[str, str | None] = {}
        removed: list[str] = []
        for _round in range(1000):
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><D:sync-collection {_XMLNS}>'
                f"<D:sync-token>{escape(token)}</D:sync-token><D:sync-level>1</D:sync-level>"
                "<D:prop><D:getetag/></D:prop></D:sync-collection>"
            )
            response = self._send("REPORT", collection.href, body, depth="0")
            if response.status_code != 207:
                # 403/409 valid-sync-token: the token expired; 400/403/404/405/501: no sync-collection
                return None
            root = self._multistatus(response, "REPORT", collection.href)
            truncated = False
            for r in root.iter(f"{{{D}}}response"):
                href = _path(_text(r.find(f"{{{D}}}href")) or "")
                status = _text(r.find(f"{{{D}}}status")) or ""
                if href.rstrip("/") == collection.href.rstrip("/"):
                    truncated = truncated or " 507" in status  # RFC 6578 §3.6: more to come
                    continue
                if " 404" in status:
                    removed.append(href)
                    changed.pop(href, None)
                else:
                    changed[href] = _text(_props(r).get(f"{{{D}}}getetag")) or None
                    if href in removed:
                        removed.remove(href)
            new = _text(root.find(f"{{{D}}}sync-token"))
            if not new:
                return None
            token = new
            if not truncated:
                return Changes(token=token, changed=changed, removed=tuple(removed))
        raise ServerError(f"{self.label}: sync-collection of {collection.href} never ends (507 without progress)")

    def fetch(self, collection: Collection, hrefs: Sequence[str]) -> Iterator[DavItem]:
        if collection.kind == "calendar":
            report, data_tag = "C:calendar-multiget", f"{{{C}}}calendar-data"
            prop = "<C:calendar-data/>"
        else:
            report, data_tag = "R:addressbook-multiget", f"{{{R}}}address-data"
            prop = "<R:address-data/>"
        for i in range(0, len(hrefs), self.batch_size):
            batch = hrefs[i : i + self.batch_size]
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><{report} {_XMLNS}><D:prop><D:getetag/>{prop}</D:prop>'
                + "".join(f"<D:href>{escape(h)}</D:href>" for h in batch)
                + f"</{report}>"
            )
            response = self._send("REPORT", collection.href, body, depth="1")
            root = self._multistatus(response, "REPORT", collection.href)
            crlf = b"\r\n" in response.content
            for r in root.iter(f"{{{D}}}response"):
                href = _path(_text(r.find(f"{{{D}}}href")) or "")
                props = _props(r)
                data = props.get(data_tag)
                if not href or data is None:
                    continue  # gone since it was listed (404 in its own status)
                text = "".join(data.itertext())
                if crlf:
                    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
                yield DavItem(href=href, etag=_text(props.get(f"{{{D}}}getetag")) or None, data=text.encode("utf-8"))

    # ---- writing

    def create_collection(self, collection: Collection) -> Collection:
        self._guard("create_collection")
        info = self.info()
        home = info.calendar_home if collection.kind == "calendar" else info.addressbook_home
        if home is None:
            raise ItemRefused(f"{self.label}: the server has no {collection.kind} home for this account", status=501)
        href = home.rstrip("/") + "/" + quote(collection.name) + "/"
        exists = self._send("PROPFIND", href, _PROPFIND_RTYPE, depth="0").status_code == 207
        props = _set_props(collection)
        if exists:
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate {_XMLNS}>'
                f"<D:set><D:prop>{props}</D:prop></D:set></D:propertyupdate>"
            )
            response = self._send("PROPPATCH", href, body)
            if response.status_code != 207:
                raise self._refused(response, "PROPPATCH", href)
        elif collection.kind == "calendar":
            comps = "".join(f'<C:comp name="{escape(c)}"/>' for c in collection.components)
            extra = f"<C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set>" if comps else ""
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><C:mkcalendar {_XMLNS}>'
                f"<D:set><D:prop>{props}{extra}</D:prop></D:set></C:mkcalendar>"
            )
            response = self._send("MKCALENDAR", href, body)
            if response.status_code not in (200, 201):
                raise self._refused(response, "MKCALENDAR", href)
        else:
            rtype = "<D:resourcetype><D:collection/><R:addressbook/></D:resourcetype>"
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><D:mkcol {_XMLNS}>'
                f"<D:set><D:prop>{rtype}{props}</D:prop></D:set></D:mkcol>"
            )
            response = self._send("MKCOL", href, body)
            if response.status_code not in (200, 201):
                raise self._refused(response, "MKCOL", href)
        asked = list(self._COLLECTION_PROPS) if self._sync_tokens else self._listing_props()
        root = self._propfind(href, asked, "0")
        for r in root.iter(f"{{{D}}}response"):
            created = self._collection(href, _props(r))
            if created is not None:
                return created
        raise ServerError(f"{self.label}: {href} is not a {collection.kind} after creating it")

    def put(self, collection: Collection, name: str, data: bytes, *, etag: str | None = None) -> str | None:
        self._guard("put")
        href = collection.href + quote(name)
        ctype = "text/calendar; charset=utf-8" if collection.kind == "calendar" else "text/vcard; charset=utf-8"
        cond = {"If-Match": etag} if etag is not None else {"If-None-Match": "*"}
        response = self._send("PUT", href, data, content_type=ctype, headers=cond)
        if response.status_code not in (200, 201, 204):
            raise self._refused(response, "PUT", href)
        new_etag: str | None = response.headers.get("etag")
        return new_etag

    def delete(self, href: str, etag: str | None) -> None:
        self._guard("delete")
        response = self._send("DELETE", href, headers={"If-Match": etag} if etag else None)
        if response.status_code not in (200, 204, 404):
            raise self._refused(response, "DELETE", href)

    # ---- sharing

    def shares(self, collection: Collection) -> list[Share] | None:
        if "resource-sharing" in self.info().dav:
            return _invite_shares(self._propfind(collection.href, ["D:invite"], "0"), self._qualified())
        if self.login.admin is not None:
            return None  # Radicale's sharing API answers as the caller: the admin sees only its own
        listed = self._radicale_sharing("list", {"PathMapped": collection.href})
        if listed is None:
            return None
        return _radicale_shares(listed, collection.href, self._account_user())

    def set_share(self, collection: Collection, share: Share) -> None:
        self._guard("set_share")
        if share.access not in ("read", "read-write"):
            raise ItemRefused(
                f"{self.label}: {share.access!r} access for {share.principal} on {collection.href}: "
                "no sharing mechanism of this server expresses it",
                status=501,
            )
        info = self.info()
        if "resource-sharing" in info.dav:
            sharee = self._sharee_address(info, share.principal)
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><D:share-resource {_XMLNS}><D:sharee>'
                f"<D:href>{escape(sharee)}</D:href><D:share-access><D:{share.access}/></D:share-access>"
                "</D:sharee></D:share-resource>"
            )
            response = self._send(
                "POST", collection.href, body, content_type="application/davsharing+xml; charset=utf-8"
            )
            if response.status_code not in (200, 201, 204):
                raise self._refused(response, "POST share-resource", collection.href)
            return
        if self.login.admin is not None:
            raise ItemRefused(
                f"{self.label}: sharing {collection.href} with {share.principal}: Radicale's sharing API acts as the "
                "logged-in account only, and this is the admin's login: give the account's own password reference "
                "(accounts CSV) or grant the access in Radicale's rights file",
                status=501,
            )
        owner = self._account_user()
        principals = info.principal.rstrip("/").rsplit("/", 1)[0]
        path = f"{principals}/{share.principal}/{owner}.{collection.name}/"
        request = {
            "PathMapped": collection.href,
            "PathOrToken": path,
            "User": share.principal,
            "Permissions": "rw" if share.access == "read-write" else "r",
            "Enabled": True,
            "Hidden": False,
        }
        answer = self._radicale_sharing("create", request)
        if answer is not None and answer.get("Status") not in ("success",):
            answer = self._radicale_sharing("update", request)
        if answer is None or answer.get("Status") != "success":
            status = 501 if answer is None else 403
            raise ItemRefused(
                f"{self.label}: sharing {collection.href} with {share.principal} refused: "
                f"{(answer or {}).get('Status', 'no sharing mechanism')}",
                status=status,
            )

    # ---- who may see free/busy

    def freebusy_access(self) -> FreeBusyAccess | None:
        info = self.info()
        if info.inbox is None and self._known and info.outbox is not None:
            with self._lock:  # a discovery kept by an older mailferry, before the inbox was asked
                self._known = False
                self._info = info = self._discover()
        if info.inbox is None:
            return None
        response = self._send(
            "PROPFIND",
            info.inbox,
            f'<?xml version="1.0" encoding="utf-8"?><D:propfind {_XMLNS}><D:prop><D:acl/></D:prop></D:propfind>',
            depth="0",
        )
        if response.status_code != 207:
            return None
        return freebusy_access_of(self._multistatus(response, "PROPFIND", info.inbox), self._account_user())

    def set_freebusy_access(self, access: FreeBusyAccess) -> None:
        self._guard("set_freebusy_access")
        info = self.info()
        if info.inbox is None or self._imap_acl is None or "cyrus" not in info.product.lower():
            raise ItemRefused(
                f"{self.label}: who may see free/busy ({access.describe()}): this server offers no way to set it "
                "over DAV"
                + ("" if info.inbox else " (no scheduling inbox: Radicale gives free/busy by its rights file)"),
                status=501,
            )
        me = self._account_user()
        session = self._imap_acl()
        try:
            mailbox = session.dav_mailbox(("#calendars", _segment(info.inbox)))
            current = session.get_acl(mailbox)
            wanted = {"anyone": access.everyone, **{p: True for p in access.principals}}
            for who in sorted(set(current) | set(wanted)):
                if who == me or who == "anonymous":
                    continue
                rights = current.get(who, "")
                new = rights.replace("9", "") + ("9" if wanted.get(who, False) else "")
                if new != rights:
                    session.set_acl(mailbox, who, new)
        except MailferryError as e:
            what = f"{self.label}: who may see free/busy ({access.describe()})"
            raise ItemRefused(f"{what}: {e.message}", status=403) from None
        finally:
            session.close()

    def accept_shares(self) -> int:
        """Accept every share offered to this account that it has not accepted yet, so that the
        shared collections show in its home as they did on the source; the number accepted.
        Cyrus: the invite notifications in ``/dav/notifications/user/<me>/`` get an
        ``invite-reply`` (access works before, the home listing only after). Radicale: the
        sharee's ``map/enable`` and ``map/unhide`` (it can't open the share before)."""
        self._guard("accept_shares")
        info = self.info()
        if "resource-sharing" in info.dav:
            return self._accept_invites(info)
        if self.login.admin is not None:
            return 0  # see set_share: the admin can't accept for the account
        listed = self._radicale_sharing("list", {})
        if listed is None:
            return 0
        me = self._account_user()
        n = 0
        rows = listed.get("Content")
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or row.get("User") != me or row.get("Owner") == me:
                continue
            request = {"PathOrToken": row.get("PathOrToken"), "PathMapped": row.get("PathMapped")}
            if not row.get("EnabledByUser"):
                self._radicale_sharing("enable", request)
                n += 1
            if row.get("HiddenByUser"):
                self._radicale_sharing("unhide", request)
        return n

    def _accept_invites(self, info: DavServerInfo) -> int:
        folder = info.principal.replace("/principals/", "/notifications/", 1)
        response = self._send("PROPFIND", folder, _PROPFIND_RTYPE, depth="1")
        if response.status_code != 207:
            return 0
        root = self._multistatus(response, "PROPFIND", folder)
        me = next((a for a in info.addresses if a.lower().startswith("mailto:")), None)
        home = info.calendar_home
        n = 0
        for r in root.iter(f"{{{D}}}response"):
            href = _path(_text(r.find(f"{{{D}}}href")) or "")
            if not href.endswith(".xml"):
                continue
            note = self._send("GET", href)
            if note.status_code != 200 or b"invite-notification" not in note.content:
                continue
            if b"invite-accepted" in note.content or me is None:
                continue
            target_home = info.addressbook_home if b"addressbook" in note.content else home
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><D:invite-reply {_XMLNS}><D:href>{escape(me)}</D:href>'
                f"<D:invite-accepted/><D:create-in><D:href>{escape(target_home or '')}</D:href></D:create-in>"
                "</D:invite-reply>"
            )
            answer = self._send("POST", href, body, content_type="application/davsharing+xml; charset=utf-8")
            if answer.status_code in (200, 201, 204):
                n += 1
        return n

    @staticmethod
    def _sharee_address(info: DavServerInfo, account: str) -> str:
        """The sharee as Cyrus records it: a calendar-user address in this account's mail domain
        (``mailto:bob@internal``). Cyrus answers 204 to a principal-path sharee but records no
        share; the draft allows either."""
        if "@" in account:  # a domain-qualified login is its own address
            return f"mailto:{account}"
        mine = next((a for a in info.addresses if a.lower().startswith("mailto:") and "@" in a), None)
        if mine is None:
            return info.principal.rstrip("/").rsplit("/", 1)[0] + "/" + quote(account) + "/"
        return f"mailto:{account}@{mine.split('@', 1)[1]}"

    def _account_user(self) -> str:
        return _segment(self.info().principal)

    def _qualified(self) -> bool:
        """Whether this server's logins are whole addresses (Cyrus with virtual domains)."""
        return "@" in self._account_user()

    def _radicale_sharing(self, action: str, request: Mapping[str, object]) -> dict[str, object] | None:
        """Radicale's sharing API (``POST /.sharing/v1/map/<action>``, JSON in and out); None when
        the server has none (404/405/501)."""
        import json

        response = self._send(
            "POST",
            f"/.sharing/v1/map/{action}",
            json.dumps(request),
            content_type="application/json",
            headers={"Accept": "application/json"},
        )
        if response.status_code in (404, 405, 501):
            return None
        if response.status_code != 200:
            raise self._refused(response, f"POST sharing {action}", "/.sharing/v1/map/")
        try:
            answer = response.json()
        except ValueError:
            raise ServerError(f"{self.label}: unreadable answer of Radicale's sharing API") from None
        return answer if isinstance(answer, dict) else None

    # ---- free/busy

    def freebusy(self, account_address: str, start: str, end: str) -> list[BusyPeriod] | None:
        info = self.info()
        if info.outbox and info.addresses:
            return self._freebusy_outbox(info, account_address, start, end)
        return self._freebusy_report(account_address, start, end)

    def _freebusy_outbox(self, info: DavServerInfo, address: str, start: str, end: str) -> list[BusyPeriod] | None:
        assert info.outbox is not None
        me = next((a for a in info.addresses if a.lower().startswith("mailto:")), info.addresses[0])
        import uuid

        body = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailferry//freebusy//EN\r\nMETHOD:REQUEST\r\n"
            f"BEGIN:VFREEBUSY\r\nUID:{uuid.uuid4()}\r\nDTSTAMP:{start}\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
            f"ORGANIZER:{me}\r\nATTENDEE:{address}\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n"
        )
        response = self._send(
            "POST",
            info.outbox,
            body,
            content_type="text/calendar; charset=utf-8",
            headers={"Originator": me, "Recipient": address},
        )
        if response.status_code != 200:
            return None
        try:
            root: Element = SafeET.fromstring(response.content)
        except Exception:  # noqa: BLE001
            return None
        for resp in root.iter(f"{{{C}}}response"):
            status = _text(resp.find(f"{{{C}}}request-status")) or ""
            data = _text(resp.find(f"{{{C}}}calendar-data"))
            if status.startswith("2.") and data is not None:
                return parse_freebusy(data)
        return None

    def _freebusy_report(self, address: str, start: str, end: str) -> list[BusyPeriod] | None:
        """free-busy-query (RFC 4791 §7.10) on each calendar of the other account's home, which is
        its principal path (``/bob/``, Radicale's calendar-user-address) or derived from ours."""
        if address.lower().startswith("mailto:"):
            user = address[7:].split("@", 1)[0]
            home = self.info().principal.rstrip("/").rsplit("/", 1)[0] + "/" + quote(user) + "/"
        else:
            home = _path(address)
        response = self._send("PROPFIND", home, _PROPFIND_RTYPE, depth="1")
        if response.status_code != 207:
            return None
        root = self._multistatus(response, "PROPFIND", home)
        calendars = [
            _path(_text(r.find(f"{{{D}}}href")) or "")
            for r in root.iter(f"{{{D}}}response")
            if (rt := _props(r).get(f"{{{D}}}resourcetype")) is not None and rt.find(f"{{{C}}}calendar") is not None
        ]
        periods: list[BusyPeriod] = []
        seen = False
        query = (
            f'<?xml version="1.0" encoding="utf-8"?><C:free-busy-query {_XMLNS}>'
            f'<C:time-range start="{escape(start)}" end="{escape(end)}"/></C:free-busy-query>'
        )
        for cal in calendars:
            answer = self._send("REPORT", cal, query, depth="1")
            if answer.status_code == 200:
                seen = True
                periods.extend(parse_freebusy(answer.text))
        return sorted(set(periods), key=lambda p: (p.start, p.end)) if seen else None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DavStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PROPFIND_RTYPE = (
    f'<?xml version="1.0" encoding="utf-8"?><D:propfind {_XMLNS}><D:prop><D:resourcetype/></D:prop></D:propfind>'
)


def _set_props(collection: Collection) -> str:
    parts: list[str] = []

    def add(tag: str, value: str | None) -> None:
        if value is not None:
            parts.append(f"<{tag}>{escape(value)}</{tag}>")

    add("D:displayname", collection.displayname)
    if collection.kind == "calendar":
        add("C:calendar-description", collection.description)
        add("A:calendar-color", collection.color)
        add("A:calendar-order", collection.order)
        add("C:calendar-timezone", collection.timezone)
        if collection.transparent is not None:
            transp = "transparent" if collection.transparent else "opaque"
            parts.append(f"<C:schedule-calendar-transp><C:{transp}/></C:schedule-calendar-transp>")
    else:
        add("R:addressbook-description", collection.description)
    return "".join(parts)


def _account(href: str, qualified: bool = False) -> str:
    """An account name from a sharee href: ``mailto:bob@internal`` -> ``bob`` (``bob@internal``
    where logins are ``qualified`` addresses), a principal path ``/dav/principals/user/bob/`` -> ``bob``."""
    if href.lower().startswith("mailto:"):
        return href[7:] if qualified else href[7:].split("@", 1)[0]
    return _segment(_path(href))


def _is_verify_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_RESENDS = 2  # a request whose kept-alive connection dropped before any answer is sent again this often


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_WORDS_LIMIT]


def probe_options(
    url: str, *, verify_certificates: bool = True, ca_file: str | None = None, timeout: float = 10.0
) -> tuple[frozenset[str], str]:
    """An unauthenticated OPTIONS on ``url``: the DAV header's tokens (lower case) and the Server
    header. Raises httpx.HTTPError when the server does not answer."""
    verify: ssl.SSLContext | bool = _tls_context(ca_file) if verify_certificates else False
    with httpx.Client(verify=verify, timeout=timeout) as client:
        answer = client.request("OPTIONS", url)
    values = answer.headers.get_list("dav")
    dav = frozenset(t.strip().lower() for value in values for t in value.split(",") if t.strip())
    return dav, answer.headers.get("server", "")
