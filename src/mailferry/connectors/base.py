"""The store protocols: what the engine may ask of a mail server, and what each answer means.

Terminology: see :mod:`mailferry.model.mail` (account, mailbox, folder, message, ItemRef,
ItemKey). A *store* is one account's mailbox on one server, opened by a connector. Source and
target are roles: any store can play either, but a source store is opened read-only.

Contract (every implementation, the in-memory one and IMAP alike):

- Folder names are decoded Unicode, full server names including the namespace prefix.
- ``status`` never selects the folder for writing and never changes \\Recent or \\Seen.
- ``inventory`` lists messages with UID > ``after_uid`` (or those of ``uids`` that exist) in
  ascending UID order, reading headers only with ``BODY.PEEK``; it never marks anything read.
- ``fetch`` yields (uid, exact bytes) for the UIDs asked that still exist, in the order asked;
  UIDs that vanished are left out, not errors.
- ``append`` adds messages in order and returns the new UIDs in the same order (None where the
  server does not say, i.e. no UIDPLUS). It raises :class:`~mailferry.errors.ItemRefused` when the
  server refuses the batch; callers narrow a refused batch down to the message by retrying singly.
- Methods raise :class:`~mailferry.errors.TemporaryFailure` for connection trouble (the caller may
  reconnect and retry), :class:`~mailferry.errors.AuthError` for a refused login.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from mailferry.model.mail import AppendItem, FolderInfo, FolderStatus, MessageMeta, ServerInfo

if TYPE_CHECKING:  # the calendar model: not imported by a mail-only run
    from mailferry.model.dav import BusyPeriod, Changes, Collection, DavItem, DavServerInfo, FreeBusyAccess, Share


class ReadStore(Protocol):
    label: str  # names the account and role in every message ("alice (source)")

    @property
    def condstore(self) -> bool:
        """True when ``status`` gives HIGHESTMODSEQ and ``changed_flags`` works (RFC 7162)."""
        ...

    def reconnect(self) -> None:
        """Drop the connection and log in again (after a temporary failure)."""
        ...

    def info(self, *, quota: bool = True) -> ServerInfo:
        """Capabilities, namespace, APPENDLIMIT and (``quota``) quota of this account."""
        ...

    def list_folders(self) -> list[FolderInfo]:
        """Every folder, recursively, with special-use and subscription state."""
        ...

    def own_folders(self) -> list[FolderInfo]:
        """The account's own folders: INBOX and its personal namespace, never the shared or
        "Other Users" namespaces (RFC 2342) that ``list_folders`` shows too."""
        ...

    def namespaces(self) -> dict[str, list[tuple[str, str]]]:
        """NAMESPACE (RFC 2342): ``personal``, ``other`` and ``shared`` lists of (prefix, delimiter)."""
        ...

    def folders_under(self, prefix: str) -> list[FolderInfo]:
        """The folders of the shared (public) namespace with ``prefix``: not INBOX, not the
        personal or "Other Users" folders, not the namespace's root."""
        ...

    def my_rights(self, folder: str) -> str | None:
        """This login's rights on ``folder`` (MYRIGHTS, RFC 4314); None without ACL support."""
        ...

    def status(self, folder: str) -> FolderStatus:
        """UIDVALIDITY, UIDNEXT, MESSAGES and HIGHESTMODSEQ (when the server has CONDSTORE)."""
        ...

    def inventory(
        self, folder: str, after_uid: int = 0, *, uids: Sequence[int] | None = None, write: bool = False
    ) -> list[MessageMeta]:
        """Metadata and ItemKey of each message with UID > after_uid; with ``uids``, of those of
        them the folder still holds (UIDs gone are left out, not errors). ``write``: the folder is
        opened for writing (a target's, which is written next), never on a read-only store."""
        ...

    def changed_flags(self, folder: str, since_modseq: int) -> dict[int, tuple[tuple[str, ...], int]]:
        """UID -> (flags, modseq) for messages whose flags changed after since_modseq (CONDSTORE)."""
        ...

    def flags(self, folder: str) -> dict[int, tuple[str, ...]]:
        """UID -> flags of every message (the fallback when the server has no CONDSTORE)."""
        ...

    def fetch(self, folder: str, uids: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """Exact bytes of each message, streamed in batches."""
        ...

    def uids(self, folder: str) -> list[int]:
        """Every UID the folder holds now, ascending."""
        ...

    def close(self) -> None: ...


class WriteStore(ReadStore, Protocol):
    def storable(self, folder: str) -> tuple[str, ...] | None:
        """The folder's PERMANENTFLAGS (``\\*``: any keyword), None when the server doesn't say."""
        ...

    def create_folder(self, name: str, special_use: str | None = None) -> None:
        """Create ``name`` (and missing parents). Creating an existing folder is not an error."""
        ...

    def subscribe(self, name: str) -> None: ...

    def mailbox_id(self, folder: str) -> str | None:
        """The server's own unique id of the folder (RFC 8474 MAILBOXID; Dovecot's X-GUID), None
        when the server names none. Raises a MailferryError when the folder does not exist."""
        ...

    def append(self, folder: str, items: Sequence[AppendItem]) -> list[int | None]:
        """Append in one MULTIAPPEND where the server has it; see the module contract."""
        ...

    def append_send(self, folder: str, items: Sequence[AppendItem]) -> Callable[[], list[int | None]] | None:
        """Send the append now and return what reads its answer later (what :meth:`append`
        gives or raises), so that the next one can go out meanwhile; None where the store can't
        send without waiting (then :meth:`append`)."""
        ...

    def store_flags(self, folder: str, changes: Iterable[tuple[int, tuple[str, ...]]]) -> None:
        """Set the flags of each UID to exactly the given ones. Raises ItemRefused when the server
        refuses the change (e.g. a keyword it can't store); some UIDs may then have been changed."""
        ...

    def case_sensitive_names(self, prefix: str = "") -> bool | None:
        """Whether the server holds folder names differing only in case apart (None: not known).
        Finds out by creating and deleting probe folders under ``prefix``; touches nothing else."""
        ...

    def add_flags(self, folder: str, uids: Sequence[int], flags: Sequence[str], *, remove: bool = False) -> None:
        """Add (``remove``: take away) ``flags`` on ``uids``, every other flag left as it is."""
        ...

    def set_acl(self, mailbox: str, identifier: str, rights: str) -> None:
        """SETACL (empty ``rights``: DELETEACL)."""
        ...

    def get_acl(self, mailbox: str) -> dict[str, str]:
        """identifier -> rights (GETACL); raises AclRefused without ACL or the ``a`` right."""
        ...

    def login_identity(self) -> str:
        """The identity this store acts as (the user an admin logs in for)."""
        ...

    def expunge_uids(self, folder: str, uids: Sequence[int]) -> None:
        """Remove these messages (used only for the opt-in propagation of source deletions)."""
        ...


# -- calendars and contacts -----------------------------------------------------------------------
#
# A DavStore is one account's calendars and address books on one CalDAV/CardDAV server (terms:
# :mod:`mailferry.model.dav`). Contract (every implementation):
#
# - hrefs are absolute paths on the server, percent-encoded as the server gives them; collection
#   hrefs end in "/". ETags are kept exactly as the server quotes them (with their quotes).
# - ``collections`` lists the account's own calendars and address books (its calendar-home-set and
#   addressbook-home-set, one level down), never the scheduling inbox/outbox, notifications or
#   another account's collections shared with it.
# - ``members`` and ``changes`` never read item bodies; ``fetch`` reads them in multiget batches and
#   leaves out hrefs that vanished (not an error).
# - ``put`` with ``etag=None`` creates only (``If-None-Match: *``): an existing resource at that href
#   is :class:`~mailferry.errors.ItemRefused` with status 412; with an ETag it replaces only that
#   version (``If-Match``). It returns the new ETag, or None when the server does not say.
# - A refused item raises :class:`~mailferry.errors.ItemRefused` whose ``status`` is the HTTP status
#   and whose message carries the server's words; connection trouble raises TemporaryFailure (the
#   caller may retry), a refused login AuthError. Nothing here ever writes to a source store.


class DavReadStore(Protocol):
    label: str

    def info(self) -> DavServerInfo:
        """The DAV header, product, principal and home-set hrefs of this account (RFC 6764)."""
        ...

    def dav_header(self) -> frozenset[str]:
        """The DAV header as the server sends it now (``info`` may come from an earlier run)."""
        ...

    def collections(self) -> list[Collection]:
        """Every calendar and address book the account owns, with its properties."""
        ...

    def members(self, collection: Collection) -> dict[str, str | None]:
        """href -> ETag of every item of the collection (PROPFIND depth 1)."""
        ...

    def changes(self, collection: Collection, token: str) -> Changes | None:
        """What changed since ``token`` (RFC 6578 sync-collection); None when the server has no
        sync-collection or no longer accepts the token (the caller falls back to ``members``)."""
        ...

    def fetch(self, collection: Collection, hrefs: Sequence[str]) -> Iterator[DavItem]:
        """The exact bytes of each item asked for that still exists (calendar-/addressbook-multiget)."""
        ...

    def shares(self, collection: Collection) -> list[Share] | None:
        """Who else may use the collection, in the server's own sharing mechanism; None when the
        server can't tell (no ACL property, no sharing)."""
        ...

    def freebusy(self, account_address: str, start: str, end: str) -> list[BusyPeriod] | None:
        """The busy periods of another account between two UTC times (``YYYYMMDDTHHMMSSZ``) as this
        account sees them: RFC 6638 outbox POST, else the free-busy-query REPORT on each of its
        calendars. None when this account may not see them."""
        ...

    def freebusy_access(self) -> FreeBusyAccess | None:
        """Who may see this account's free/busy (the ACL of its scheduling inbox); None when the
        server does not tell (Radicale: its rights file)."""
        ...

    def close(self) -> None: ...


class DavWriteStore(DavReadStore, Protocol):
    def create_collection(self, collection: Collection) -> Collection:
        """MKCALENDAR (calendars) or extended MKCOL (address books, RFC 5689) under this account's
        home, named ``collection.name``, with its properties; returns the collection as created
        (its target href). Creating one that exists is not an error: its properties are updated."""
        ...

    def put(self, collection: Collection, name: str, data: bytes, *, etag: str | None = None) -> str | None:
        """Write one item as ``collection.href + name``; see the contract above."""
        ...

    def delete(self, href: str, etag: str | None) -> None:
        """Remove one item (only for the opt-in propagation of source deletions)."""
        ...

    def set_share(self, collection: Collection, share: Share) -> None:
        """Grant ``share.principal`` ``share.access`` to the collection in the server's own sharing
        mechanism. Raises ItemRefused (status 501 when the server has no such mechanism)."""
        ...

    def set_freebusy_access(self, access: FreeBusyAccess) -> None:
        """Let exactly ``access`` see this account's free/busy (others who could lose it; the owner
        keeps it). Raises ItemRefused (status 501 where the server offers no way to set it)."""
        ...

    def accept_shares(self) -> int:
        """Accept, as this account, the shares offered to it (where the server asks the sharee to:
        Radicale's sharing API, Cyrus' invite notifications); the number accepted."""
        ...


class MailboxAcl(Protocol):
    """RFC 4314 rights on one account's own mailboxes, for a server that keeps a DAV feature as
    a mailbox ACL (Cyrus: who may see free/busy is right ``9`` on ``#calendars/Inbox``). An IMAP
    session logged in as that account; never a source's."""

    def dav_mailbox(self, parts: Sequence[str]) -> str:
        """The name of the account's own mailbox ``parts`` (``("#calendars", "Inbox")``) as this
        session names it (its personal namespace's prefix and separator)."""
        ...

    def get_acl(self, mailbox: str) -> dict[str, str]:
        """identifier -> rights (GETACL)."""
        ...

    def set_acl(self, mailbox: str, identifier: str, rights: str) -> None:
        """SETACL, or DELETEACL when ``rights`` is empty."""
        ...

    def close(self) -> None: ...
