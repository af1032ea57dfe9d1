"""Pure planning for calendars and contacts: (source members, ledger records, target members,
policy) -> the actions for one collection, each with its reason. No I/O, no clock.

Identity and location are kept apart (:mod:`mailferry.model.dav`): the ledger ties a source href
to the UID it held and the target href it went to. A source item whose ETag is the one recorded
is done; a new ETag is an update; an href the ledger doesn't know is a copy. Whether a copy is
in fact already on the target under its UID (put there by an earlier, interrupted run or by
another tool) the engine finds out after reading the item, through :func:`place`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Collection as Names
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from mailferry.model.dav import Collection
from mailferry.state.ledger import DavItemRecord


@dataclass(frozen=True, slots=True)
class DavPolicy:
    propagate_deletions: bool = False


@dataclass(frozen=True, slots=True)
class Copy:
    """Read the source item and create it on the target at ``target_href``. ``retry``: the target
    refused it before; ``resolve``: an earlier run intended it and was cut off (the target may hold
    it already: look before writing)."""

    source_href: str
    etag: str | None
    target_href: str
    reason: str
    retry: bool = False
    resolve: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """The source item changed since it was copied: replace the target's copy, only if that is
    still the version mailferry wrote (``If-Match: target_etag``)."""

    source_href: str
    etag: str | None
    target_href: str
    target_etag: str | None
    uid: str


@dataclass(frozen=True, slots=True)
class Remove:
    """The source item is gone and the admin asked for deletions to be carried."""

    source_href: str
    target_href: str
    target_etag: str | None


@dataclass(frozen=True, slots=True)
class Keep:
    """Nothing to do: copied and unchanged, or gone from the source with deletions not carried."""

    source_href: str
    reason: str


DavAction = Copy | Update | Remove | Keep


@dataclass(slots=True)
class CollectionPlan:
    source: Collection
    target_href: str
    create: bool
    actions: list[DavAction] = field(default_factory=list)

    @property
    def copies(self) -> list[Copy]:
        return [a for a in self.actions if isinstance(a, Copy)]

    @property
    def updates(self) -> list[Update]:
        return [a for a in self.actions if isinstance(a, Update)]

    @property
    def removals(self) -> list[Remove]:
        return [a for a in self.actions if isinstance(a, Remove)]

    @property
    def kept(self) -> int:
        return sum(1 for a in self.actions if isinstance(a, Keep))


def resource_name(href: str) -> str:
    """The last segment of an item href, unquoted (``/a/b/x%20y.ics`` -> ``x y.ics``)."""
    return unquote(href.rstrip("/").rsplit("/", 1)[-1])


def target_href_of(target_collection_href: str, source_href: str) -> str:
    """Where a source item goes: the same resource name in the target collection. A name the
    target might not take as it is (anything but letters, digits and ``-_.@``) is quoted."""
    name = resource_name(source_href)
    return target_collection_href + quote(name, safe="-_.@~")


def collection_target_href(home: str, name: str) -> str:
    return home.rstrip("/") + "/" + quote(name, safe="-_.@~") + "/"


def target_names(
    sources: Sequence[Collection], existing: Sequence[Collection], *, same_home: bool
) -> dict[tuple[str, str], str]:
    """(kind, source name) -> the collection's name on the target: the same name, except where
    the target keeps calendars and address books in one home (Radicale: ``/alice/``) and an
    address book's name is a calendar's too (Cyrus has a ``Default`` of each): then the address
    book becomes ``<name>-contacts`` (and ``-contacts-2``... should that be taken as well)."""
    out: dict[tuple[str, str], str] = {(c.kind, c.name): c.name for c in sources}
    if not same_home:
        return out
    calendars = {c.name for c in sources if c.kind == "calendar"} | {c.name for c in existing if c.kind == "calendar"}
    taken = calendars | {c.name for c in sources if c.kind == "addressbook"}
    for c in sources:
        if c.kind == "addressbook" and c.name in calendars:
            name, n = f"{c.name}-contacts", 2
            while name in taken:
                name, n = f"{c.name}-contacts-{n}", n + 1
            taken.add(name)
            out[(c.kind, c.name)] = name
    return out


def plan_collection(
    source: Collection,
    target_href: str,
    *,
    create: bool,
    members: Mapping[str, str | None],
    records: Mapping[str, DavItemRecord],
    target_members: Mapping[str, str | None],
    policy: DavPolicy,
) -> CollectionPlan:
    """The actions for one collection. ``members``: the source's href -> ETag now;
    ``records``: the ledger's, by source href; ``target_members``: the target's href -> ETag."""
    plan = CollectionPlan(source=source, target_href=target_href, create=create)
    for href in sorted(members):
        etag = members[href]
        r = records.get(href)
        if r is None:
            plan.actions.append(Copy(href, etag, target_href_of(target_href, href), "new"))
        elif r.state == "pending":
            plan.actions.append(Copy(href, etag, r.target_href, "interrupted before it was confirmed", resolve=True))
        elif r.state == "refused" and r.target_etag is not None and r.target_href in target_members:
            # an update the target refused: its older copy is still there, replaced in place
            plan.actions.append(Update(href, etag, r.target_href, r.target_etag, r.uid))
        elif r.state == "refused":
            plan.actions.append(Copy(href, etag, r.target_href, "refused before; tried again", retry=True))
        elif r.target_href not in target_members:
            plan.actions.append(Copy(href, etag, r.target_href, "copied before, but gone from the target"))
        elif etag is not None and etag != r.source_etag:
            # If-Match the version mailferry wrote (a target copy someone changed since is a conflict,
            # left alone); the target's current ETag where the PUT answered none.
            current = target_members.get(r.target_href)
            plan.actions.append(Update(href, etag, r.target_href, r.target_etag or current, r.uid))
        else:
            plan.actions.append(Keep(href, "copied, unchanged"))
    for href in sorted(set(records) - set(members)):
        r = records[href]
        if policy.propagate_deletions and r.state == "copied" and r.target_href in target_members:
            # only the version mailferry wrote: a copy someone changed on the target is not deleted
            plan.actions.append(Remove(href, r.target_href, r.target_etag or target_members.get(r.target_href)))
        else:
            plan.actions.append(Keep(href, "gone from the source; deletions are not carried"))
    return plan


def place(uid: str, wanted_href: str, target_uids: Mapping[str, str], taken: Names[str] = ()) -> tuple[str, bool]:
    """Where an item of this UID goes: (href, already_there). ``target_uids``: UID -> href of the
    items the target collection holds that the ledger doesn't account for. An item whose UID the
    target holds is not written again; a wanted href taken by another UID gets a new name."""
    found = target_uids.get(uid)
    if found is not None:
        return found, True
    if wanted_href not in taken:
        return wanted_href, False
    stem, dot, ext = wanted_href.rpartition(".")
    base, suffix = (stem, "." + ext) if dot and "/" not in ext else (wanted_href, "")
    n = 2
    while f"{base}-{n}{suffix}" in taken:
        n += 1
    return f"{base}-{n}{suffix}", False


def address_map(
    identity: Sequence[Mapping[str, object]], addresses: Mapping[str, str], domains: Mapping[str, str]
) -> Callable[[str], str | None]:
    """The rewriting of people's addresses: old address -> new address, or None (external: left
    alone). First the project's ``[calendars.addresses]``, then the identity map of ``directory
    apply`` (source mail -> target mail), then ``[calendars.domains]`` (old domain -> new domain,
    the local part kept). Comparison ignores case; the result keeps the new address's case."""
    exact: dict[str, str] = {}
    for row in identity:
        old, new = row.get("source_mail"), row.get("target_mail")
        if isinstance(old, str) and isinstance(new, str) and old and new and old.lower() != new.lower():
            exact.setdefault(old.lower(), new)
    exact.update({k.lower(): v for k, v in addresses.items()})
    by_domain = {k.lower(): v for k, v in domains.items()}

    def rewrite(address: str) -> str | None:
        a = address.strip().lower()
        if a in exact:
            return exact[a]
        local, at, domain = a.rpartition("@")
        if at and domain in by_domain:
            return f"{address.strip().rpartition('@')[0]}@{by_domain[domain]}"
        return None

    return rewrite


