"""IMAP connector: one account's mailbox on an IMAP server, as a :mod:`base` store.

Built on IMAPClient (its MULTIAPPEND sends LITERAL+ literals without waiting for continuations).
Folder names are passed to IMAPClient already encoded (``folder_encode=False``) so that odd names
are decoded by :mod:`mailferry.formats.mutf7` and reported, not crashed on. Times are kept
tz-aware (``normalise_times=False``) so INTERNALDATE survives exactly.

A source store is opened read-only: folders are EXAMINEd and bodies fetched with ``BODY.PEEK``;
the write methods refuse to run on it.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import imapclient
from imapclient.datetime_util import datetime_to_INTERNALDATE
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imapclient import _literal
from imapclient.response_parser import parse_response

from mailferry.errors import AuthError, ItemRefused, MailferryError, TemporaryFailure, TLSVerifyError
from mailferry.formats import mutf7
from mailferry.formats.acl import parse_listrights
from mailferry.formats.folders import canonical_use, in_namespace
from mailferry.formats.identity import IDENTITY_FIELDS, identity
from mailferry.formats.imap_fetch import Fetched, FetchParseError, format_internaldate, parse_fetch
from mailferry.formats.server_words import server_words
from mailferry.model.mail import AppendItem, FolderInfo, FolderStatus, MessageMeta, Namespace, ServerInfo

Security = Literal["tls", "starttls", "none"]

_FETCH_HEADER = "BODY.PEEK[HEADER.FIELDS (" + " ".join(IDENTITY_FIELDS) + ")]"
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.I)
_THROTTLE = re.compile(rb"\[(UNAVAILABLE|LIMIT|INUSE|SERVERBUG)\]", re.I)  # for APPEND see _append_call
_ITEM_REFUSAL = re.compile(r"\[(TOOBIG|LIMIT|OVERQUOTA)\]", re.I)
_APPENDLIMIT = re.compile(r"^APPENDLIMIT=(\d+)$", re.I)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach a server. Holds no secret."""

    host: str
    port: int
    security: Security = "tls"
    verify_certificates: bool = True
    ca_file: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Login:
    """How to log in as ``user``. ``password`` is the resolved secret: never logged or shown.

    ``admin`` set: log in as the admin for ``user`` — ``method`` ``sasl-authzid`` sends
    AUTHENTICATE PLAIN with authorization identity ``user`` (RFC 4616, Dovecot master users and
    Cyrus admins), ``dovecot-master`` sends ``LOGIN user*admin``.
    """

    user: str
    password: str
    admin: str | None = None
    method: str = "sasl-authzid"
    master_separator: str = "*"

    def __repr__(self) -> str:  # never show the password
        return f"Login(user={self.user!r}, admin={self.admin!r}, method={self.method!r})"


def _uidset(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        if b":" in part:
            a, b = (int(x) for x in part.split(b":"))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        else:
            out.append(int(part))
    return out


def parse_appenduid(response: bytes | str) -> tuple[int, list[int]] | None:
    """(UIDVALIDITY, UIDs) from an ``[APPENDUID ...]`` response code (RFC 4315), else None."""
    raw = response.encode() if isinstance(response, str) else response
    m = _APPENDUID.search(raw)
    return (int(m.group(1)), _uidset(m.group(2))) if m else None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _no_recent(flags: tuple[str, ...] | None) -> tuple[str, ...]:
    """Flags without \\Recent: session state (RFC 3501 2.3.2), not part of the message."""
    return tuple(f for f in flags or () if f.lower() != "\\recent")


def _flag_str(f: object) -> str:
    return f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f)


@dataclass(frozen=True, slots=True)
class FolderTally:
    """A folder's totals as ``check`` reads them: messages, bytes, the sizes of its messages over
    a threshold (largest first) and the keywords its messages carry."""

    messages: int
    bytes: int
    large: list[int]
    keywords: set[str]


def uid_ranges(uids: Sequence[int]) -> str:
    """Compact IMAP sequence set for ascending-sortable UIDs: 1:5,7,9:10."""
    s = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        parts.append(str(s[i]) if i == j else f"{s[i]}:{s[j]}")
        i = j + 1
    return ",".join(parts)


_LITERAL_AT_END = re.compile(rb"\{(\d+)\}$")


def read_fetch(imap: Any, tag: bytes) -> tuple[str, list[bytes | tuple[bytes, bytes]]]:
    """The answer to the UID FETCH command ``tag`` just sent on ``imap`` (an ``imaplib.IMAP4``):
    (the tagged status, its FETCH data shaped as ``imaplib`` gives it to ``parse_fetch``), or
    for a status other than OK, the status and its text.

    imaplib's own response loop (``_command_complete``) matches several regular expressions and
    keeps a log entry for every line: for the 10,000-message inventory it cost about a third of
    mailferry's CPU, more than parsing the data. This reads the lines straight off the
    connection (``imap.readline``/``imap.read``), keeps the FETCH responses and drops the other
    untagged ones (EXISTS, EXPUNGE, OK [...]: nothing the caller asks for), and raises
    ``imaplib.IMAP4.abort`` on BYE or a lost connection, as imaplib would.
    """
    prefix = tag + b" "
    data: list[bytes | tuple[bytes, bytes]] = []
    try:
        while True:
            line = imap.readline()
            if not line.endswith(b"\r\n"):
                raise imaplib.IMAP4.abort("socket error: EOF" if not line else "socket error: unterminated line")
            line = line[:-2]
            if line.startswith(prefix):
                status, _, text = line[len(prefix) :].partition(b" ")
                typ = status.decode("ascii", "replace").upper()
                return typ, data if typ == "OK" else [text]
            if not line.startswith(b"* "):
                raise imaplib.IMAP4.abort(f"unexpected response {line[:80]!r}")
            number, _, rest = line[2:].partition(b" ")
            kind, _, rest = rest.partition(b" ")
            fetch = number.isdigit() and kind.upper() == b"FETCH"
            if not fetch and number.upper() == b"BYE":
                raise imaplib.IMAP4.abort(f"server said BYE {line[6:80]!r}")
            dat = number + b" " + rest
            while (m := _LITERAL_AT_END.search(dat)) is not None:
                literal = imap.read(int(m.group(1)))
                if fetch:
                    data.append((dat, literal))
                dat = imap.readline()
                if not dat.endswith(b"\r\n"):
                    raise imaplib.IMAP4.abort("socket error: EOF in a FETCH response")
                dat = dat[:-2]
            if fetch:
                data.append(dat)
    finally:
        imap.tagged_commands.pop(tag, None)


class ImapStore:
    """One account on one IMAP server. Not thread-safe: one store per thread/connection."""

    def __init__(self, endpoint: Endpoint, login: Login, *, readonly: bool, label: str = "") -> None:
        self.endpoint = endpoint
        self._login = login
        self.readonly = readonly
        self.label = label or f"{login.user}@{endpoint.host}"
        self._c: Any = None
        self._selected: tuple[str, bool] | None = None
        self._caps: frozenset[str] = frozenset()
        self._utf8 = False
        self._condstore = False
        self._appendlimit: int | None = None
        self._id_item: str | None | bool = False  # STATUS item naming a folder's own id; False: not probed
        self.greeting = ""
        self.permanent_flags: dict[str, tuple[str, ...]] = {}
        self.connect()

    # -- connection ---------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return _ssl_context(self.endpoint)

    def connect(self) -> None:
        ep = self.endpoint
        where = f"{ep.host}:{ep.port}"
        try:
            c = imapclient.IMAPClient(
                ep.host,
                port=ep.port,
                ssl=ep.security == "tls",
                ssl_context=self._ssl_context() if ep.security != "none" else None,
                timeout=ep.timeout,
            )
            if ep.security == "starttls":
                c.starttls(self._ssl_context())
        except ssl.SSLCertVerificationError as e:
            raise TLSVerifyError(
                f"{self.label}: TLS certificate of {where} does not verify: {e.verify_message}"
            ) from None
        except ssl.SSLError as e:
            raise TemporaryFailure(f"{self.label}: TLS with {where} failed: {e.reason}") from None
        except socket.gaierror as e:
            raise TemporaryFailure(
                f"{self.label}: unknown host {ep.host}: {e.strerror}", hint="check the host name in the project file"
            ) from None
        except (OSError, IMAPClientError, imaplib.IMAP4.error) as e:
            raise TemporaryFailure(f"{self.label}: cannot connect to {where}: {_safe(e)}") from None
        c.folder_encode = False
        c.normalise_times = False
        self.greeting = _text(getattr(c, "welcome", b""))[:300]
        # IMAPClient turns imaplib's debug level up to 5 to forward its traces to logging: that
        # formats every response, message bodies included, with %r (most of mailferry's CPU time
        # in the benchmark) and would put LOGIN lines, passwords included, into debug logs.
        c._imap.debug = 0
        # imaplib writes a command in several small pieces (line, literal, rest): without
        # TCP_NODELAY, Nagle's algorithm and delayed ACKs stall each one by ~40 ms.
        with contextlib.suppress(OSError, AttributeError):
            c._imap.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._c = c
        self._authenticate()
        self._selected = None
        try:
            self._after_login(c)
        except (OSError, EOFError, imaplib.IMAP4.abort) as e:
            self._drop()
            raise TemporaryFailure(f"{self.label}: connection lost after login: {_safe(e)}") from None

    def _after_login(self, c: Any) -> None:
        caps = {_text(x).upper() for x in c.capabilities()}
        self._caps = frozenset(caps)
        limits = [int(m.group(1)) for cap in caps if (m := _APPENDLIMIT.match(cap))]
        self._appendlimit = limits[0] if limits else None
        if "UTF8=ACCEPT" in caps:
            try:
                c.enable("UTF8=ACCEPT")
                self._utf8 = True
            except IMAPClientError:
                self._utf8 = False
        if "CONDSTORE" in caps or "QRESYNC" in caps:
            with contextlib.suppress(IMAPClientError):  # Dovecot enables it on first use anyway
                c.enable("CONDSTORE")
            self._condstore = True

    def _authenticate(self) -> None:
        lg, c = self._login, self._c
        who = f"{lg.user}" + (f" (as admin {lg.admin})" if lg.admin else "")
        try:
            if lg.admin is None:
                c.login(lg.user, lg.password)
            elif lg.method == "dovecot-master":
                c.login(f"{lg.user}{lg.master_separator}{lg.admin}", lg.password)
            else:
                c.plain_login(identity=lg.admin, password=lg.password, authorization_identity=lg.user)
        except LoginError as e:
            # IMAPClient reports a connection lost during login as a LoginError too; a server that
            # really said NO keeps the connection open, so ask it once more to tell them apart.
            alive = True
            try:
                c.noop()
            except Exception:
                alive = False
            self._drop()
            if not alive:
                raise TemporaryFailure(f"{self.label}: connection lost during login: {_safe(e, lg.password)}") from None
            raise AuthError(f"{self.label}: login refused for {who}: {_safe(e, lg.password)}") from None
        except (OSError, IMAPClientError, imaplib.IMAP4.abort) as e:
            self._drop()
            raise TemporaryFailure(f"{self.label}: connection lost during login: {_safe(e, lg.password)}") from None

    def _drop(self) -> None:
        try:
            if self._c is not None:
                self._c.shutdown()
        except Exception:  # noqa: S110 - already broken; nothing to save
            pass
        self._c = None
        self._selected = None

    def reconnect(self) -> None:
        self._drop()
        self.connect()

    def close(self) -> None:
        if self._c is None:
            return
        try:
            self._c.logout()
        except Exception:
            self._drop()
        self._c = None

    # -- helpers ------------------------------------------------------------------------------

    def _wire(self, name: str) -> str:
        """The folder name as sent on the wire (modified UTF-7 unless UTF8=ACCEPT is on)."""
        return name if self._utf8 else mutf7.encode(name)

    def _call(self, what: str, fn: str | Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run one IMAPClient call (a method name, or a function of the client), turning its
        exceptions into ours. Connects first when an earlier failure dropped the connection."""
        if self._c is None:
            self.connect()
        try:
            if isinstance(fn, str):
                return getattr(self._c, fn)(*args, **kw)
            return fn(self._c, *args, **kw)
        except (IMAPClientAbortError, imaplib.IMAP4.abort, OSError, EOFError) as e:
            self._drop()
            raise TemporaryFailure(f"{self.label}: connection lost during {what}: {_safe(e)}") from None
        except IMAPClientError as e:
            msg = _safe(e)
            if _THROTTLE.search(msg.encode()):
                raise TemporaryFailure(f"{self.label}: server is throttling {what}: {msg}") from None
            raise ServerRefused(f"{self.label}: {what}: {msg}") from None

    def _fetch(self, what: str, msgset: str, items: Sequence[str], modifiers: Sequence[str] = ()) -> dict[int, Fetched]:
        """UID FETCH over a sequence set given as text (``1:*``, ``3:5,9``), parsed by our own
        parser (see :mod:`mailferry.formats.imap_fetch` for why).

        IMAPClient 4's ``fetch`` also drops every response whose UID was not listed one by one in
        the request, which loses all of them for a range.
        """

        def run(c: Any) -> dict[int, Fetched]:
            args: list[Any] = ["UID", "FETCH", msgset, "(" + " ".join(items) + ")"]
            if modifiers:
                args.append("(" + " ".join(modifiers) + ")")
            tag = c._imap._command(*args)
            typ, data = read_fetch(c._imap, tag)
            if typ != "OK":
                raise IMAPClientError(f"FETCH failed: {_text(data[-1]) if data else typ}")
            try:
                return parse_fetch(data)
            except FetchParseError as e:
                raise IMAPClientError(f"unparseable FETCH response: {e}") from None

        result: dict[int, Fetched] = self._call(what, run)
        return result

    def _select(self, folder: str, *, write: bool = False) -> dict[bytes, Any]:
        if self._selected == (folder, write):
            return {}
        if write and self.readonly:
            raise MailferryError(f"{self.label}: refusing to open {folder!r} for writing on the source")
        resp: dict[bytes, Any] = self._call(f"SELECT {folder}", "select_folder", self._wire(folder), readonly=not write)
        self._selected = (folder, write)
        pf = resp.get(b"PERMANENTFLAGS")
        if pf is not None and write:  # EXAMINE answers PERMANENTFLAGS () by definition
            self.permanent_flags[folder] = tuple(_flag_str(f) for f in pf)
        return resp

    # -- ReadStore ----------------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        return self._caps

    @property
    def condstore(self) -> bool:
        return self._condstore

    def info(self, *, quota: bool = True) -> ServerInfo:
        """``quota``: ask for it too (GETQUOTAROOT: a Dovecot with quotas may add up the account's
        messages for it, ~20 ms for 10,000; a migration's folder mapping does not need it)."""
        si = ServerInfo(capabilities=self._caps)
        if "NAMESPACE" in self._caps:
            ns = self._call("NAMESPACE", "namespace")
            if ns.personal:
                prefix, delim = ns.personal[0]
                si.namespace = Namespace(_decode_name(prefix, self._utf8), _text(delim) if delim else "/")
        else:
            folders = self._call("LIST", "list_folders", "", "INBOX")
            delim = _text(folders[0][1]) if folders and folders[0][1] else "/"
            si.namespace = Namespace("", delim)
        for cap in self._caps:
            m = _APPENDLIMIT.match(cap)
            if m:
                si.appendlimit = int(m.group(1))
        if quota and "QUOTA" in self._caps:
            try:
                roots = self._call("GETQUOTAROOT", "get_quota_root", "INBOX")
                for q in roots[1]:
                    if _text(q.resource).upper() == "STORAGE":
                        si.quota_used_kb, si.quota_limit_kb = int(q.usage), int(q.limit)
            except (ServerRefused, IndexError, ValueError):
                pass  # no quota root (IMAPClient 3 trips over the empty answer): no quota to report
        return si

    def list_folders(self) -> list[FolderInfo]:
        rows: list[tuple[tuple[object, ...], object, object]]
        subscribed: set[str] = set()
        if "LIST-EXTENDED" in self._caps and "SPECIAL-USE" in self._caps:

            def extended(c: Any) -> Any:
                typ, dat = c._imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE SUBSCRIBED)")
                typ, dat = c._imap._untagged_response(typ, dat, "LIST")
                if typ != "OK":
                    raise IMAPClientError(f"LIST failed: {dat}")
                return c._proc_folder_list(dat)

            rows = self._call("LIST", extended)
        else:
            rows = self._call("LIST", "list_folders")
            subscribed = {self._name(r[2]) for r in self._call("LSUB", "list_sub_folders")}
        out: list[FolderInfo] = []
        for flags, delim, raw in rows:
            attrs = frozenset(_flag_str(f).lower() for f in flags)
            use = next((u for u in (canonical_use(a) for a in attrs) if u), None)
            name = self._name(raw)
            out.append(
                FolderInfo(
                    name=name,
                    delimiter=_text(delim) if delim else None,
                    attributes=attrs,
                    special_use=use,
                    subscribed=("\\subscribed" in attrs) or name in subscribed,
                )
            )
        return out

    def _name(self, raw: object) -> str:
        return _decode_name(raw, self._utf8)

    def status(self, folder: str) -> FolderStatus:
        if self._selected is not None and self._selected[0] == folder:
            # STATUS of the selected folder may answer from this session's view of it, which
            # misses what other connections (this account's writers) appended since (Dovecot
            # answers it so): selected afresh first, so the view, and the FETCHes after, are now.
            write = self._selected[1]
            self._selected = None
            self._select(folder, write=write)
        what = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if self._condstore else [])
        st = self._call(f"STATUS {folder}", "folder_status", self._wire(folder), what)
        hms = st.get(b"HIGHESTMODSEQ")
        return FolderStatus(
            uidvalidity=int(st[b"UIDVALIDITY"]),
            uidnext=int(st[b"UIDNEXT"]),
            messages=int(st[b"MESSAGES"]),
            highestmodseq=int(hms) if hms is not None else None,
        )

    # -- identity of folders and accounts -----------------------------------------------------

    @property
    def server_product(self) -> str:
        """The server software as its greeting names it ("Cyrus IMAP", "Dovecot"), else ""."""
        return self.product(self.greeting)

    @staticmethod
    def product(greeting: str) -> str:
        for name in ("Cyrus IMAP", "Dovecot", "Courier", "Zimbra", "Microsoft Exchange", "Stalwart"):
            if name.lower() in greeting.lower():
                return name
        return ""

    def mailbox_id(self, folder: str) -> str | None:
        """The server's own unique id of ``folder``: RFC 8474 MAILBOXID where the server has
        OBJECTID, else Dovecot's STATUS X-GUID (tried once per connection), else None (the server
        gives none, or an id that is not one). Raises :class:`ServerRefused` when the folder does
        not exist or may not be looked at.

        Asked for alone: Cyrus 3.6 answers ``STATUS f (MESSAGES MAILBOXID)`` on a folder created in
        the same session with random bytes in place of the id (``STATUS f (MAILBOXID)`` is right)."""
        if self._id_item is False:
            if "OBJECTID" in self._caps:
                self._id_item = "MAILBOXID"
            else:
                try:
                    st = self._call(f"STATUS {folder}", "folder_status", self._wire(folder), ["X-GUID"])
                except ServerRefused:
                    # BAD, or a NO from a server that refuses unknown items that way: a plain
                    # STATUS tells "no such item" (it works) from "no such folder" (it fails too).
                    self._call(f"STATUS {folder}", "folder_status", self._wire(folder), ["MESSAGES"])
                    self._id_item = None
                    return None
                self._id_item = "X-GUID"
                return _id_value(st.get(b"X-GUID"))
        item = self._id_item
        if not isinstance(item, str):
            return None
        st = self._call(f"STATUS {folder}", "folder_status", self._wire(folder), [item])
        return _id_value(st.get(item.encode()))

    def own_folders(self) -> list[FolderInfo]:
        """The account's own folders: INBOX and those of its personal namespace, without the
        "Other Users" and shared namespaces (RFC 2342) that LIST "*" also shows (public folders,
        folders other people share): those are not this account's mailbox."""
        personal, others = "", []
        if "NAMESPACE" in self._caps:
            ns = self._call("NAMESPACE", "namespace")
            if ns.personal:
                personal = _decode_name(ns.personal[0][0], self._utf8)
            for group in (ns.other or (), ns.shared or ()):
                for prefix, _delim in group:
                    p = _decode_name(prefix, self._utf8)
                    if p:
                        others.append(p)

        def own(name: str) -> bool:
            if name.upper() == "INBOX":
                return True
            if personal:  # Cyrus "INBOX/": a shared namespace may have the empty prefix
                return name.startswith(personal)
            # Dovecot lists a namespace's root ("Public" of "Public/") as \Noselect: not a folder of its own.
            return not any(name.startswith(p) or name == p[:-1] for p in others)

        return [f for f in self.list_folders() if own(f.name)]

    def namespaces(self) -> dict[str, list[tuple[str, str]]]:
        """NAMESPACE (RFC 2342) as ``{"personal"|"other"|"shared": [(prefix, delimiter)]}``; a
        server without it has one personal namespace with the empty prefix."""
        if "NAMESPACE" not in self._caps:
            delim = self._call("LIST", "list_folders", "", "INBOX")
            d = _text(delim[0][1]) if delim and delim[0][1] else "/"
            return {"personal": [("", d)], "other": [], "shared": []}
        ns = self._call("NAMESPACE", "namespace")
        return {
            role: [(_decode_name(p, self._utf8), _text(d) if d else "") for p, d in group or ()]
            for role, group in (("personal", ns.personal), ("other", ns.other), ("shared", ns.shared))
        }

    def folders_under(self, prefix: str) -> list[FolderInfo]:
        """The folders of the namespace with ``prefix`` (a public or shared namespace, RFC 2342
        third group): those whose name starts with it, without INBOX and without those of every
        other namespace whose prefix is longer (Cyrus' shared namespace has the empty prefix and
        holds ``INBOX/`` and ``user/`` inside it). The namespace's root itself (Dovecot lists
        ``Public`` as \\Noselect) is not one of its folders."""
        ns = self.namespaces()
        prefixes = [p for group in ns.values() for p, _ in group]
        personal = [p for p, _ in ns["personal"]]
        hidden: list[str] = []
        if self.server_product == "Cyrus IMAP":
            # Cyrus shows its admins the mailboxes deleted but kept (delete_mode: delayed) under
            # "DELETED/" (``deletedprefix``), at the top of the shared namespace: not folders.
            delim = next((d for group in ns.values() for p, d in group if p == prefix), "") or "/"
            hidden.append("DELETED" + delim)
        return [f for f in self.list_folders() if in_namespace(f.name, prefix, prefixes, hidden, personal)]

    def my_rights(self, folder: str) -> str | None:
        """MYRIGHTS (RFC 4314) of this login on ``folder``; None where the server has no ACL."""
        if "ACL" not in self._caps:
            return None

        def run(c: Any) -> str:
            typ, data = c._imap._simple_command("MYRIGHTS", _quoted(self._wire(folder)))
            if typ != "OK":
                raise IMAPClientError(f"MYRIGHTS: {_text(data[-1]) if data else typ}")
            _typ, rows = c._imap._untagged_response(typ, data, "MYRIGHTS")
            line = _text(rows[-1]) if rows and rows[-1] is not None else ""
            return line.rsplit(" ", 1)[-1] if " " in line else ""

        result: str = self._call(f"MYRIGHTS {folder}", run)
        return result

    def login_identity(self) -> str:
        """Who this store acts as: the user (for an admin logging in for a user, that user)."""
        return self._login.user

    def folder_exists(self, name: str) -> bool:
        return bool(self._call(f"LIST {name}", "folder_exists", self._wire(name)))

    def other_users_prefix(self) -> tuple[str, str] | None:
        """(prefix, delimiter) of the "Other Users" namespace (RFC 2342), where an administrator
        sees every account's mailbox (Cyrus: ``user/``), or None."""
        if "NAMESPACE" not in self._caps:
            return None
        ns = self._call("NAMESPACE", "namespace")
        if not ns.other:
            return None
        prefix, delim = ns.other[0]
        return _decode_name(prefix, self._utf8), _text(delim) if delim else "/"

    def storable(self, folder: str) -> tuple[str, ...] | None:
        if folder not in self.permanent_flags:
            self._select(folder, write=True)
        return self.permanent_flags.get(folder)

    def inventory(
        self, folder: str, after_uid: int = 0, *, uids: Sequence[int] | None = None, write: bool = False
    ) -> list[MessageMeta]:
        if uids is not None and not uids:
            return []
        self._select(folder, write=write)
        items = ["UID", "RFC822.SIZE", "INTERNALDATE", "FLAGS", _FETCH_HEADER]
        if self._condstore:
            items.append("MODSEQ")
        wanted = None if uids is None else set(uids)
        data = self._fetch(f"FETCH {folder}", f"{after_uid + 1}:*" if uids is None else uid_ranges(uids), items)
        out: list[MessageMeta] = []
        for uid, d in data.items():
            if uid <= after_uid:  # "N:*" always matches the highest UID (RFC 3501 6.4.8)
                continue
            if wanted is not None and uid not in wanted:
                continue
            if d.size is None or d.internaldate is None or d.flags is None:
                raise ServerRefused(f"{self.label}: FETCH {folder}: UID {uid} came back incomplete")
            ident = identity(d.literal or b"", d.size)
            out.append(
                MessageMeta(
                    uid=uid,
                    size=d.size,
                    internaldate=d.internaldate,
                    flags=_no_recent(d.flags),
                    key=ident.key,
                    message_id=ident.message_id,
                    subject=ident.subject,
                    date=ident.date,
                    modseq=d.modseq,
                )
            )
        out.sort(key=lambda m: m.uid)
        return out

    def tally(self, folder: str, *, larger_than: int | None) -> FolderTally | None:
        """What ``check`` needs of ``folder`` without reading each message: MESSAGES and SIZE from
        STATUS (RFC 8438 ``STATUS=SIZE``), the keywords the folder's messages carry (SELECT's
        FLAGS, each confirmed by ``UID SEARCH KEYWORD``: a server lists keywords once defined, in
        use or not), and the sizes of the messages larger than ``larger_than`` (``UID SEARCH
        LARGER``, then their RFC822.SIZE only). None when the server lacks STATUS=SIZE (the
        caller reads the folder message by message)."""
        if "STATUS=SIZE" not in self._caps:
            return None
        st = self._call(f"STATUS {folder}", "folder_status", self._wire(folder), ["MESSAGES", "SIZE"])
        self._selected = None  # a fresh SELECT: its FLAGS are wanted
        resp = self._select(folder)
        defined = [f for f in (_flag_str(x) for x in resp.get(b"FLAGS", ())) if not f.startswith("\\")]
        keywords = {k for k in defined if self.carries_keyword(folder, k)}
        large: list[int] = []
        if larger_than is not None:
            over = [int(u) for u in self._call(f"SEARCH LARGER {folder}", "search", ["LARGER", str(larger_than)])]
            if over:
                data = self._fetch(f"FETCH RFC822.SIZE {folder}", uid_ranges(sorted(over)), ["UID", "RFC822.SIZE"])
                large = sorted((d.size for d in data.values() if d.size is not None), reverse=True)
        return FolderTally(int(st[b"MESSAGES"]), int(st[b"SIZE"]), large, keywords)

    def carries_keyword(self, folder: str, keyword: str) -> bool:
        """Whether a message of the selected ``folder`` carries ``keyword``: ``UID SEARCH RETURN
        (MIN)`` where the server offers ESEARCH (RFC 4731; one UID back, not the thousands a
        keyword on every message would list), else a plain ``UID SEARCH``."""
        if "ESEARCH" not in self._caps:
            return bool(self._call(f"SEARCH KEYWORD {folder}", "search", ["KEYWORD", keyword]))

        def run(c: Any) -> bool:
            tag = c._imap._command("UID", "SEARCH", "RETURN", "(MIN)", "KEYWORD", keyword)
            typ, data = c._imap._command_complete("SEARCH", tag)
            if typ != "OK":
                raise IMAPClientError(f"SEARCH failed: {_text(data[-1]) if data else typ}")
            _typ, rows = c._imap._untagged_response(typ, data, "ESEARCH")
            # ``(TAG "A5") UID MIN 3`` when a message matches, ``(TAG "A5") UID`` when none does
            return any(b"MIN" in row.upper().split() for row in rows if isinstance(row, bytes))

        found: bool = self._call(f"SEARCH KEYWORD {folder}", run)
        return found

    def uids(self, folder: str) -> list[int]:
        self._select(folder)
        return sorted(int(u) for u in self._call(f"SEARCH {folder}", "search", "ALL"))

    def changed_flags(self, folder: str, since_modseq: int) -> dict[int, tuple[tuple[str, ...], int]]:
        self._select(folder)
        data = self._fetch(f"FETCH CHANGEDSINCE {folder}", "1:*", ["UID", "FLAGS"], [f"CHANGEDSINCE {since_modseq}"])
        return {uid: (_no_recent(d.flags), d.modseq or 0) for uid, d in data.items()}

    def flags(self, folder: str) -> dict[int, tuple[str, ...]]:
        self._select(folder)
        data = self._fetch(f"FETCH FLAGS {folder}", "1:*", ["UID", "FLAGS"])
        return {uid: _no_recent(d.flags) for uid, d in data.items()}

    def fetch(self, folder: str, uids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """Bodies of ``uids`` in the order given; one FETCH per call (callers batch)."""
        if not uids:
            return iter(())
        self._select(folder)
        data = self._fetch(f"FETCH BODY {folder}", uid_ranges(uids), ["BODY.PEEK[]"])
        return ((u, lit) for u in uids if u in data and (lit := data[u].literal) is not None)

    # -- WriteStore ---------------------------------------------------------------------------

    def _refuse_on_source(self, what: str) -> None:
        if self.readonly:
            raise MailferryError(f"{self.label}: refusing to {what} on the source (read-only)")

    def create_folder(self, name: str, special_use: str | None = None) -> None:
        self._refuse_on_source("create a folder")
        wire = self._wire(name)
        try:
            if special_use and "CREATE-SPECIAL-USE" in self._caps:

                def create_with_use(c: Any) -> Any:
                    typ, dat = c._imap._simple_command("CREATE", c._imap._quote(wire), f"(USE ({special_use}))")
                    if typ != "OK":
                        raise IMAPClientError(f"CREATE failed: {_text(dat[-1]) if dat else typ}")
                    return typ

                try:
                    self._call(f"CREATE {name}", create_with_use)
                    return
                except ServerRefused:
                    pass  # e.g. the server allows only one folder per use: create it plain below
            self._call(f"CREATE {name}", "create_folder", wire)
        except ServerRefused as e:
            if self._call("LIST", "folder_exists", wire):
                return
            raise e

    def subscribe(self, name: str) -> None:
        self._refuse_on_source("subscribe")
        self._call(f"SUBSCRIBE {name}", "subscribe_folder", self._wire(name))

    def _check_appendlimit(self, folder: str, items: Sequence[AppendItem]) -> None:
        too_big = [len(it.body) for it in items if self._appendlimit is not None and len(it.body) > self._appendlimit]
        if too_big:
            # RFC 7889: don't send what the server announced it won't take (Cyrus resets the
            # connection in the middle of such a literal).
            raise ItemRefused(
                f"{self.label}: APPEND {folder}: {too_big[0]} bytes is over the server's "
                f"APPENDLIMIT {self._appendlimit}"
            )

    def append(self, folder: str, items: Sequence[AppendItem]) -> list[int | None]:
        self._refuse_on_source("append")
        if not items:
            return []
        self._check_appendlimit(folder, items)
        wire = self._wire(folder)
        if "MULTIAPPEND" in self._caps:
            return self._appenduids(self._append_call(folder, self._raw_append, wire, items), len(items))
        out: list[int | None] = []
        for it in items:
            out.extend(self._appenduids(self._append_call(folder, self._raw_append, wire, [it]), 1))
        return out

    def append_send(self, folder: str, items: Sequence[AppendItem]) -> Callable[[], list[int | None]] | None:
        """A pipelined APPEND: the command is sent now, its answer read by the function returned
        (which gives what :meth:`append` gives, and raises what it raises). Meanwhile the caller
        may send the next APPEND on this connection, so the server goes on to it without waiting
        for us to read the answer, record it and send again. None where the server can't take an
        APPEND without waiting for continuations (no LITERAL+, or several messages and no
        MULTIAPPEND): use :meth:`append`. When the connection was lost or renewed in between, the
        answer is a TemporaryFailure: whether the messages landed is unknown."""
        self._refuse_on_source("append")
        if not items or "LITERAL+" not in self._caps or (len(items) > 1 and "MULTIAPPEND" not in self._caps):
            return None
        self._check_appendlimit(folder, items)
        wire = self._wire(folder)
        tag = self._append_call(folder, self._send_append, wire, items)
        conn = self._c

        def answer() -> list[int | None]:
            if self._c is not conn:
                raise TemporaryFailure(f"{self.label}: connection lost before the answer to APPEND {folder}")
            return self._appenduids(self._append_call(folder, self._append_answer, tag), len(items))

        return answer

    @staticmethod
    def _append_head(wire: str, items: Sequence[AppendItem]) -> tuple[bytes, bytes, list[bytes]]:
        """The mailbox argument (quoted, or a literal for an 8-bit name) and each message's
        ``" (flags) "date"`` in wire form."""
        raw = wire.encode("utf-8")
        if any(b > 0x7E or b < 0x20 for b in raw):
            mailbox: bytes = b"{%d+}\r\n" % len(raw) + raw  # 8-bit name (UTF8=ACCEPT): a literal
        else:
            mailbox = b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        heads = [
            b" ("
            + " ".join(it.flags).encode()
            + b') "'
            + (format_internaldate(it.internaldate) or datetime_to_INTERNALDATE(it.internaldate).encode())
            + b'"'
            for it in items
        ]
        return raw, mailbox, heads

    def _send_append(self, c: Any, wire: str, items: Sequence[AppendItem]) -> bytes:
        """APPEND streamed with LITERAL+ (RFC 7888) literals, no waiting; returns its tag. Each
        body is written to the socket as it is (no copy: the benchmark showed IMAPClient's
        literal handling copying every body twice)."""
        _, mailbox, heads = self._append_head(wire, items)
        imap = c._imap
        tag: bytes = imap._new_tag()  # registers the tag for _command_complete
        imap.send(tag + b" APPEND " + mailbox)
        for head, it in zip(heads, items, strict=True):
            lead = head + b" {%d+}\r\n" % len(it.body)
            if len(it.body) < 65536:
                imap.send(lead + it.body)  # small: one write
            else:
                imap.send(lead)
                imap.send(it.body)
        imap.send(b"\r\n")
        return tag

    @staticmethod
    def _append_answer(c: Any, tag: bytes) -> Any:
        typ, data = c._imap._command_complete("APPEND", tag)
        if typ != "OK":
            raise IMAPClientError(f"APPEND failed: {_text(data[-1]) if data else typ}")
        return data[-1] if data else b""

    def _raw_append(self, c: Any, wire: str, items: Sequence[AppendItem]) -> Any:
        """APPEND (MULTIAPPEND, RFC 3502, when several messages).

        With LITERAL+ (RFC 7888) the whole command is streamed without waiting, each message
        body written to the socket as it is (no copy: the benchmark showed IMAPClient's literal
        handling copying every body twice). Without it, IMAPClient's synchronising literals.
        Folder names are already in wire form, which IMAPClient's multiappend can't take.
        """
        if "LITERAL+" in self._caps:
            return self._append_answer(c, self._send_append(c, wire, items))
        raw, mailbox, heads = self._append_head(wire, items)
        args: list[bytes] = [mailbox if b"{" not in mailbox else _literal(raw)]
        for head, it in zip(heads, items, strict=True):
            flags, date = head[1:].split(b") ", 1)
            args += [flags + b")", date, _literal(it.body)]
        typ, data = c._raw_command(b"APPEND", args, uid=False)
        if typ != "OK":
            raise IMAPClientError(f"APPEND failed: {_text(data[-1]) if data else typ}")
        return data[-1] if data else b""

    def _append_call(self, folder: str, fn: Any, *args: Any) -> Any:
        """An APPEND: a NO is the message refused. So is [TOOBIG]/[LIMIT]/[OVERQUOTA] (RFC 5530)
        even where it would otherwise read as load or a lost connection: Dovecot says [LIMIT] for
        a message over its size limit, and Cyrus' [TOOBIG] for a LITERAL+ message over its limit
        reaches us through imaplib as an abort (the connection is then renewed on next use)."""
        try:
            return self._call(f"APPEND {folder}", fn, *args)
        except ServerRefused as e:
            raise ItemRefused(e.message) from None
        except TemporaryFailure as e:
            if _ITEM_REFUSAL.search(e.message):
                words = e.message.replace("server is throttling ", "").replace("connection lost during ", "")
                raise ItemRefused(words) from None
            raise

    @staticmethod
    def _appenduids(resp: Any, n: int) -> list[int | None]:
        parsed = parse_appenduid(resp if isinstance(resp, bytes | str) else repr(resp))
        if parsed is None or len(parsed[1]) != n:
            return [None] * n
        return list(parsed[1])

    def store_flags(self, folder: str, changes: Iterable[tuple[int, tuple[str, ...]]]) -> None:
        self._refuse_on_source("change flags")
        self._select(folder, write=True)
        by_flags: dict[tuple[str, ...], list[int]] = {}
        for uid, fl in changes:
            by_flags.setdefault(tuple(sorted(fl)), []).append(uid)
        for fl, uids in by_flags.items():
            try:
                self._call(f"STORE {folder}", "set_flags", uid_ranges(uids), list(fl), silent=True)
            except ServerRefused as e:  # e.g. Dovecot: [CANNOT] Keyword length too long
                raise ItemRefused(e.message) from None

    def case_sensitive_names(self, prefix: str = "") -> bool | None:
        """Whether this server holds folder names that differ only in case apart (``Archive`` and
        ``archive``). RFC 3501 makes names case-sensitive (but INBOX), yet Exchange, or Dovecot on
        a case-insensitive file system, is not, and nothing in the protocol says which. So ask by
        doing: CREATE ``<prefix>MailferryCaseProbe-<random>``, then the same name in lower case,
        then LIST both. Two folders listed: True. The second CREATE refused ("already exists") or
        one folder listed: False. The first CREATE refused (no right to create there): None, not
        known. Every probe folder is deleted again, and those an interrupted earlier call left are
        deleted first; they are never subscribed.
        """
        self._refuse_on_source("probe folder names")
        stem = "MailferryCaseProbe-"

        def listed(pattern: str) -> set[str]:
            return {self._name(r[2]) for r in self._call("LIST", "list_folders", "", self._wire(pattern))}

        def delete(name: str) -> None:
            with contextlib.suppress(ServerRefused):
                self._call(f"DELETE {name}", "delete_folder", self._wire(name))

        for name in listed(prefix + stem + "%") | listed(prefix + stem.lower() + "%"):
            delete(name)
        token = uuid.uuid4().hex[:8]  # hex digits: the same in both cases
        upper, lower = prefix + stem + token, prefix + (stem + token).lower()
        try:
            self._call(f"CREATE {upper}", "create_folder", self._wire(upper))
        except ServerRefused:
            return None
        try:
            try:
                self._call(f"CREATE {lower}", "create_folder", self._wire(lower))
            except ServerRefused:
                return False
            return len(listed(prefix + "%" + token)) == 2
        finally:
            delete(lower)
            delete(upper)

    # -- MailboxAcl (RFC 4314) -----------------------------------------------------------------

    def dav_mailbox(self, parts: Sequence[str]) -> str:
        prefix, sep = "", "/"
        if "NAMESPACE" in self._caps:
            ns = self._call("NAMESPACE", "namespace")
            if ns.personal:
                prefix = _decode_name(ns.personal[0][0], self._utf8)
                sep = _text(ns.personal[0][1]) if ns.personal[0][1] else sep
        return prefix + sep.join(parts)

    @property
    def acl(self) -> bool:
        """The server has RFC 4314 ACLs (GETACL, SETACL, LISTRIGHTS, MYRIGHTS)."""
        return "ACL" in self._caps

    def get_acl(self, mailbox: str) -> dict[str, str]:
        """``mailbox``'s ACL: identifier -> rights, as the server words them. Raises
        :class:`AclRefused` when the server has no ACL or won't show this one (the login lacks
        the ``a`` right there, RFC 4314 3.3)."""
        if not self.acl:
            raise AclRefused(f"{self.label}: the server has no ACL (RFC 4314): GETACL {mailbox} not sent")
        try:
            rows = self._call(f"GETACL {mailbox}", "getacl", self._wire(mailbox))
        except ServerRefused as e:
            raise AclRefused(e.message) from None
        return {_text(who): _text(rights) for who, rights in rows}

    def list_rights(self, mailbox: str, identifier: str) -> list[str]:
        """LISTRIGHTS (RFC 4314 3.7): the rights words for ``identifier`` on ``mailbox``, the
        first one what is always granted, each other a group granted only together."""
        rows = self._untagged_acl("LISTRIGHTS", mailbox, identifier)
        return parse_listrights(rows[-1])[2]

    def _untagged_acl(self, command: str, mailbox: str, *args: str) -> list[bytes]:
        if not self.acl:
            raise AclRefused(f"{self.label}: the server has no ACL (RFC 4314): {command} {mailbox} not sent")
        wire = [_quoted(self._wire(mailbox)).encode(), *(_quoted(a).encode() for a in args)]

        def run(c: Any) -> list[bytes]:
            data = c._raw_command_untagged(command.encode(), wire, uid=False)
            return [d if isinstance(d, bytes) else b" ".join(x for x in d if isinstance(x, bytes)) for d in data]

        try:
            rows: list[bytes] = self._call(f"{command} {mailbox}", run)
        except ServerRefused as e:
            raise AclRefused(e.message) from None
        if not rows:
            raise ServerRefused(f"{self.label}: {command} {mailbox}: no answer")
        return rows

    def set_acl(self, mailbox: str, identifier: str, rights: str) -> None:
        self._refuse_on_source("change an ACL")
        wire = self._wire(mailbox)
        if rights:
            self._call(f"SETACL {mailbox} {identifier}", "setacl", wire, identifier, rights)
            return

        def delete(c: Any) -> None:  # IMAPClient has no DELETEACL; its SETACL "" is refused (Cyrus: BAD)
            typ, data = c._imap._simple_command("DELETEACL", _quoted(wire), _quoted(identifier))
            if typ != "OK":
                raise IMAPClientError(f"DELETEACL: {_text(data[-1]) if data else typ}")

        self._call(f"DELETEACL {mailbox} {identifier}", delete)

    # -- folder METADATA (RFC 5464) -------------------------------------------------------------

    @property
    def metadata(self) -> bool:
        """The server has folder METADATA (RFC 5464)."""
        return "METADATA" in self._caps

    def get_metadata(self, mailbox: str, entries: Sequence[str]) -> dict[str, bytes | None]:
        """The values of ``entries`` (``/private/comment``...) on ``mailbox``; None for an entry
        it does not have. Entry names come back lower-cased (they are case-insensitive)."""
        if not self.metadata:
            raise ServerRefused(f"{self.label}: the server has no METADATA: GETMETADATA {mailbox} not sent")
        args = [_quoted(self._wire(mailbox)).encode(), ("(" + " ".join(_quoted(e) for e in entries) + ")").encode()]

        def run(c: Any) -> Any:
            return c._raw_command_untagged(b"GETMETADATA", args, response_name="METADATA", uid=False)

        data = self._call(f"GETMETADATA {mailbox}", run)
        out: dict[str, bytes | None] = {e.lower(): None for e in entries}
        for _box, pairs in _metadata_responses(data):
            for i in range(0, len(pairs) - 1, 2):
                value = pairs[i + 1]
                if not (isinstance(value, bytes) or value is None):
                    value = str(value).encode()  # a number-like atom
                out[_text(pairs[i]).lower()] = value
        return out

    def set_metadata(self, mailbox: str, entry: str, value: bytes | None) -> None:
        """SETMETADATA one entry; None removes it. A value is sent as a literal (LITERAL+, RFC
        7888: it may hold any byte), or quoted where the server lacks LITERAL+ and it can be."""
        self._refuse_on_source("change folder metadata")
        wire = _quoted(self._wire(mailbox)).encode()

        def run(c: Any) -> None:
            imap = c._imap
            if value is None:
                body = b"NIL"
            elif "LITERAL+" in self._caps:
                body = b"{%d+}\r\n" % len(value) + value
            elif all(0x20 <= b < 0x7F for b in value):
                body = _quoted(value.decode()).encode()
            else:
                raise IMAPClientError("the value needs a literal and the server has no LITERAL+")
            tag = imap._new_tag()
            imap.send(tag + b" SETMETADATA " + wire + b" (" + _quoted(entry).encode() + b" " + body + b")\r\n")
            typ, data = imap._command_complete("SETMETADATA", tag)
            if typ != "OK":
                raise IMAPClientError(f"SETMETADATA: {_text(data[-1]) if data else typ}")

        self._call(f"SETMETADATA {mailbox} {entry}", run)

    def add_flags(self, folder: str, uids: Sequence[int], flags: Sequence[str], *, remove: bool = False) -> None:
        """STORE +FLAGS (or -FLAGS) on ``uids``: leaves every other flag as it is (on a public
        folder other flags are shared by everyone, \\Seen may be the login's own)."""
        self._refuse_on_source("change flags")
        if not uids:
            return
        self._select(folder, write=True)
        fn = "remove_flags" if remove else "add_flags"
        try:
            self._call(f"STORE {folder}", fn, uid_ranges(uids), list(flags), silent=True)
        except ServerRefused as e:
            raise ItemRefused(e.message) from None

    def expunge_uids(self, folder: str, uids: Sequence[int]) -> None:
        self._refuse_on_source("delete messages")
        if not uids:
            return
        self._select(folder, write=True)
        self._call(f"STORE {folder}", "add_flags", uid_ranges(uids), [b"\\Deleted"], silent=True)
        if "UIDPLUS" in self._caps:
            self._call(f"UID EXPUNGE {folder}", "uid_expunge", uid_ranges(uids))
        else:
            raise MailferryError(f"{self.label}: the target lacks UIDPLUS; deletions are not propagated safely")


def _metadata_responses(data: Sequence[Any]) -> list[tuple[Any, tuple[Any, ...]]]:
    """(mailbox, (entry, value, ...)) of each untagged METADATA response (RFC 5464 4.4.1), as
    imaplib hands them over (literals as (prefix, bytes) tuples), parsed by IMAPClient's parser."""
    out: list[tuple[Any, tuple[Any, ...]]] = []
    parsed = parse_response([d for d in data if d is not None])
    for i in range(0, len(parsed) - 1, 2):
        box, pairs = parsed[i], parsed[i + 1]
        if isinstance(pairs, tuple):
            out.append((box, pairs))
    return out


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=endpoint.ca_file or None)
    if not endpoint.verify_certificates:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_greeting(endpoint: Endpoint) -> str:
    """The server's greeting, read without logging in (a failed login costs time — Dovecot delays
    every NO — and lands in the server's security logs)."""
    ctx = _ssl_context(endpoint) if endpoint.security != "none" else None
    try:
        c = imapclient.IMAPClient(
            endpoint.host, port=endpoint.port, ssl=endpoint.security == "tls", ssl_context=ctx, timeout=endpoint.timeout
        )
    except (OSError, IMAPClientError, imaplib.IMAP4.error):
        return ""
    try:
        return _text(getattr(c, "welcome", b""))[:300]
    finally:
        with contextlib.suppress(Exception):
            c.logout()


class ServerRefused(MailferryError):
    """The server answered NO/BAD to a command (not a connection problem)."""

    exit_code = TemporaryFailure.exit_code
    fault = "server"


class AclRefused(ServerRefused):
    """The server has no ACL, or won't show or change this one (no ``a`` right there)."""


def _decode_name(raw: object, utf8: bool) -> str:
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, bytes):
        if utf8:
            return raw.decode("utf-8", "replace")
        try:
            return mutf7.decode(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
    text = str(raw)
    if utf8:
        return text
    try:
        return mutf7.decode(text)
    except ValueError:
        return text


_OBJECTID = re.compile(r"[A-Za-z0-9_-]{1,255}")  # RFC 8474 objectid (X-GUID: 32 hex digits fits too)


def _id_value(value: object) -> str | None:
    """A STATUS id item's value: ``MAILBOXID (abc)`` parses as a tuple, ``X-GUID abc`` as a word.
    None where it isn't an id at all (see :meth:`ImapStore.mailbox_id`)."""
    if isinstance(value, tuple | list):
        value = value[0] if len(value) == 1 else None
    if not isinstance(value, bytes | str):
        return None
    text = _text(value).strip()
    return text if _OBJECTID.fullmatch(text) else None


def _safe(e: BaseException, *secrets: str) -> str:
    """The text of an exception with any secret removed (servers sometimes echo the command)."""
    text = str(e)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return server_words(text)[:500]
