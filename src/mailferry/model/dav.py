"""Pure value types for calendars and contacts (CalDAV, RFC 4791; CardDAV, RFC 6352).

Terminology (the mail words of :mod:`mailferry.model.mail` carry over):

collection  one calendar or address book of an account, at an href on one server. Its identity
            across servers is (account, kind, name): ``name`` is the last path segment, which
            mailferry keeps on the target (``/dav/calendars/user/alice/Work/`` -> ``Work``).
item        one calendar object resource (a VCALENDAR holding one UID: the master and its
            RECURRENCE-ID overrides) or one vCard.
DavRef      where an item lives on one server: (href, ETag). Changes on copy and on every write.
DavKey      what makes two copies the same item: its UID within its collection (iCalendar and
            vCard UID). Never used as a location.
share       one principal's access to a collection: ``read``, ``read-write``, ``freebusy``
            (free/busy only) or ``admin``; the principal is an account name on that server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailferry.model.items import ITEM_TYPES as ITEM_TYPES
from mailferry.model.items import ItemType as ItemType

CollectionKind = Literal["calendar", "addressbook"]
Access = Literal["freebusy", "read", "read-write", "admin"]
ACCESS_ORDER: tuple[Access, ...] = ("freebusy", "read", "read-write", "admin")



@dataclass(frozen=True, slots=True)
class Share:
    principal: str  # an account name on the server that holds the collection
    access: Access


@dataclass(frozen=True, slots=True)
class Collection:
    """One collection as PROPFIND shows it. ``href`` is the absolute path on its server ending
    in ``/``; ``name`` its last segment (unquoted). Properties the server did not give are None.

    ``components``: the supported calendar component set (``VEVENT``, ``VTODO``, ``VJOURNAL``),
    empty for address books and for servers that don't say. ``transparent``: the calendar's
    ``schedule-calendar-transp`` (RFC 6638) is ``transparent``: its events never count as busy.
    ``sync_token`` (RFC 6578) and ``ctag`` (CalendarServer getctag) change with every change of
    the collection's members; either lets a re-run skip an unchanged collection (a listing gives
    the CTag only where the server gives no sync token: each costs the server a pass over the members).
    """

    href: str
    kind: CollectionKind
    name: str
    displayname: str | None = None
    description: str | None = None
    color: str | None = None
    order: str | None = None
    timezone: str | None = None  # the VTIMEZONE text of calendar-timezone
    components: tuple[str, ...] = ()
    transparent: bool | None = None
    sync_token: str | None = None
    ctag: str | None = None
    owner: str | None = None  # the owner's account name when the server says
    shares: tuple[Share, ...] | None = None  # when the listing gave them (Cyrus' D:invite); else ask


@dataclass(frozen=True, slots=True)
class FreeBusyAccess:
    """Who may ask a server for an account's free/busy (RFC 6638 ``schedule-query-freebusy`` on
    its scheduling inbox; Cyrus' right ``9``): ``everyone`` (DAV:all or DAV:authenticated), and
    the account names granted one by one. The owner is not listed: it always may."""

    everyone: bool
    principals: frozenset[str] = frozenset()

    def describe(self) -> str:
        names = ", ".join(sorted(self.principals))
        if self.everyone:
            return "everyone" + (f" (and by name: {names})" if names else "")
        return f"only {names}" if names else "nobody but the owner"


@dataclass(frozen=True, slots=True)
class DavRef:
    href: str
    etag: str | None


@dataclass(frozen=True, slots=True)
class DavItem:
    """An item's exact bytes as the server gave them, with where it lives."""

    href: str
    etag: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a collection since a sync token (RFC 6578): members added or changed
    (href -> ETag) and members gone. ``token`` is the new token to keep."""

    token: str
    changed: dict[str, str | None] = field(default_factory=dict)
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BusyPeriod:
    """One FREEBUSY period in UTC, as ``YYYYMMDDTHHMMSSZ`` text, with its FBTYPE."""

    start: str
    end: str
    fbtype: str = "BUSY"


@dataclass(frozen=True, slots=True)
class DavServerInfo:
    """What a DAV server says of itself to one account.

    ``dav``: the tokens of the OPTIONS ``DAV`` header, lower-cased (``calendar-access``,
    ``addressbook``, ``calendar-auto-schedule``, ``resource-sharing``...). ``product``: the
    ``Server`` header. ``principal``, ``calendar_home``, ``addressbook_home``, ``outbox``, ``inbox``: hrefs
    (absolute paths), None where the server has none. ``addresses``: calendar-user-address-set.
    """

    dav: frozenset[str]
    product: str
    principal: str
    calendar_home: str | None
    addressbook_home: str | None
    outbox: str | None = None
    addresses: tuple[str, ...] = ()
    inbox: str | None = None  # the scheduling inbox (RFC 6638), whose ACL says who sees free/busy

    @property
    def schedules(self) -> bool:
        """True when the server does implicit scheduling (RFC 6638): a PUT of a meeting may send
        invitations unless the attendees carry ``SCHEDULE-AGENT=CLIENT``."""
        return "calendar-auto-schedule" in self.dav


def info_to_dict(i: DavServerInfo) -> dict[str, object]:
    return {
        "dav": sorted(i.dav),
        "product": i.product,
        "principal": i.principal,
        "calendar_home": i.calendar_home,
        "addressbook_home": i.addressbook_home,
        "outbox": i.outbox,
        "addresses": list(i.addresses),
        "inbox": i.inbox,
    }


def info_from_dict(d: dict[str, object]) -> DavServerInfo | None:
    """The saved form back; None when it is not one (an older or damaged record)."""
    try:
        return DavServerInfo(
            dav=frozenset(str(x) for x in d["dav"]),  # type: ignore[attr-defined]
            product=str(d["product"]),
            principal=str(d["principal"]),
            calendar_home=None if d["calendar_home"] is None else str(d["calendar_home"]),
            addressbook_home=None if d["addressbook_home"] is None else str(d["addressbook_home"]),
            outbox=None if d["outbox"] is None else str(d["outbox"]),
            addresses=tuple(str(x) for x in d["addresses"]),  # type: ignore[attr-defined]
            inbox=None if d.get("inbox") is None else str(d["inbox"]),
        )
    except (KeyError, TypeError):
        return None
