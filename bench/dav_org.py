"""A deterministic organization of calendars and contacts for the DAV benchmark (``bench/dav.py``).

Terminology: the *organization* is 50 accounts (``user01``..``user50``), their *collections*
(calendars and address books, each owned by one account) and the *items* in them (one iCalendar
or vCard resource each, one UID per resource). It is defined by a seed and a ``scale`` (1.0 = the
issue's size; item counts scale, accounts and collections don't):

- 60 calendars: every account's ``Default`` plus 10 more owned by ``user01``..``user10``
  (``Team-…``, ``Room-…``, ``Projects``, ``Holidays``, ``On-call``). Those 10 are the *shared*
  ones: each records 2-4 sharees with ``read`` or ``read-write`` access (:attr:`Collection.shares`).
- 40,000 events, spread unevenly (log-uniform weights, rooms and teams busier). By position in
  its calendar, one event in four is recurring (weekly or daily ``RRULE``, sometimes an
  ``EXDATE``) with 1-3 ``RECURRENCE-ID`` overrides in the same resource, and one in ten is a
  meeting (``ORGANIZER`` the owner and 2-6 ``ATTENDEE``s, all ``userNN@old.example``). About a
  third use ``TZID=Europe/Berlin`` with a VTIMEZONE as Thunderbird and Apple write it (yearly
  ``RRULE`` rules), a tenth are all-day, some have a ``VALARM``, text is partly non-ASCII.
- 55 address books: every account's ``Default`` plus ``Clients`` for ``user01``..``user05``;
  10,000 vCards 3.0 (FN, N, 1-2 EMAIL, TEL, ORG, sometimes TITLE, ADR, BDAY, NOTE).

Everything is pure and streams: :func:`organization` is small (accounts and collections only) and
:func:`iter_items` generates one collection's items lazily from a seed derived from the
collection, so any collection can be generated alone and in any order. :func:`write_tree` caches
the organization on disk in Radicale's ``multifilesystem`` layout (``USER/COLL/.Radicale.props``
and one file per item), which the benchmark hard-links into a Radicale or PUTs to Cyrus.

Usage: python bench/dav_org.py [--scale X | --quick] [--out DIR]   (writes the cache, prints stats)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import vobject
from icalendar import Alarm, Calendar, Event, Timezone, vCalAddress, vText

ORG_VERSION = 1
ACCOUNTS = 50
EVENTS = 40_000
CONTACTS = 10_000
QUICK_SCALE = 0.05
OLD_DOMAIN = "old.example"
BERLIN = ZoneInfo("Europe/Berlin")

# (name, owner index 1-based, weight factor). The 10 non-default calendars are the shared ones.
EXTRA_CALENDARS: tuple[tuple[str, int, float], ...] = (
    ("Team-Sales", 1, 3.0),
    ("Team-Dev", 2, 3.0),
    ("Team-Ops", 3, 2.5),
    ("Room-Berlin-1", 4, 4.0),
    ("Room-Berlin-2", 5, 4.0),
    ("Room-Paris", 6, 3.0),
    ("Room-London", 7, 3.0),
    ("Projects", 8, 2.0),
    ("Holidays", 9, 0.5),
    ("On-call", 10, 1.5),
)
EXTRA_ADDRESSBOOKS: tuple[tuple[str, int, float], ...] = tuple(("Clients", k, 3.0) for k in range(1, 6))

# As Thunderbird and Apple Calendar write it: two yearly rules, not a table of transitions.
BERLIN_VTIMEZONE = b"""BEGIN:VTIMEZONE\r
TZID:Europe/Berlin\r
X-LIC-LOCATION:Europe/Berlin\r
BEGIN:DAYLIGHT\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
TZNAME:CEST\r
DTSTART:19700329T020000\r
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r
END:DAYLIGHT\r
BEGIN:STANDARD\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
TZNAME:CET\r
DTSTART:19701025T030000\r
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r
END:STANDARD\r
END:VTIMEZONE\r
"""

WORDS = (  # noqa: SIM905 - one prose string reads better than 100 quoted words
    "review planning sync weekly standup budget quarter roadmap customer workshop interview demo retro "
    "offsite training onboarding release launch kickoff lunch dinner call visit audit board strategy "
    "design architecture migration server network security hiring feedback one-on-one all-hands "
    "Grüße café Zürich Kraków Øresund façade résumé naïve São Paulo Ærø"
).split()
PLACES = ("Berlin HQ, Raum 3.14", "Paris office", "London, 2nd floor", "Zoom", "Teams", "Café Müller",
          "Kraków site", "München, Konferenzraum Zugspitze", "")
FIRST = ("Anna", "Bernd", "Chloé", "David", "Eva", "François", "Greta", "Hans", "Ingrid", "Jürgen", "Katarzyna",
         "Lars", "Marta", "Nils", "Olga", "Pierre", "Quentin", "Rosa", "Søren", "Tomás", "Ulla", "Viktor",
         "Wiebke", "Xavier", "Yasmin", "Zoë")
LAST = ("Müller", "Schmidt", "Dupont", "Nowak", "Okafor", "Li", "Sørensen", "García", "Rossi", "O'Brien",
        "Kowalski", "Janssen", "Björk", "Papadopoulos", "Nguyen", "Fischer", "Weber", "Łukasiewicz")
COMPANIES = ("Acme GmbH", "Globex S.A.", "Initech Ltd", "Umbrella AG", "Hooli Inc.", "Société Générale d'Exemple",
             "Zürcher Beispiel AG", "Stark Industries")


@dataclass(frozen=True)
class OrgSpec:
    scale: float = 1.0
    seed: int = 20250301

    @property
    def events(self) -> int:
        return round(EVENTS * self.scale)

    @property
    def contacts(self) -> int:
        return round(CONTACTS * self.scale)

    @property
    def key(self) -> str:
        text = json.dumps({"v": ORG_VERSION, "scale": self.scale, "seed": self.seed}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Collection:
    """One calendar or address book. ``name`` is its last path segment on Cyrus (and on Radicale
    but for the default address book: :attr:`radicale_name`)."""

    owner: str
    name: str
    kind: str  # "calendar" | "addressbook"
    displayname: str
    count: int
    index: int  # position in the organization: the seed of its items
    shares: tuple[tuple[str, str], ...] = ()  # (sharee account, "read" | "read-write")

    @property
    def radicale_name(self) -> str:
        """Radicale keeps calendars and address books side by side in one home, Cyrus in two:
        the default address book is ``Default`` on Cyrus (its own) and ``Contacts`` on Radicale."""
        return "Contacts" if self.kind == "addressbook" and self.name == "Default" else self.name

    @property
    def suffix(self) -> str:
        return ".ics" if self.kind == "calendar" else ".vcf"


@dataclass(frozen=True)
class Organization:
    spec: OrgSpec
    accounts: tuple[str, ...]
    collections: tuple[Collection, ...] = field(default_factory=tuple)

    @property
    def calendars(self) -> tuple[Collection, ...]:
        return tuple(c for c in self.collections if c.kind == "calendar")

    @property
    def addressbooks(self) -> tuple[Collection, ...]:
        return tuple(c for c in self.collections if c.kind == "addressbook")

    @property
    def items(self) -> int:
        return sum(c.count for c in self.collections)


def account(k: int) -> str:
    return f"user{k:02d}"


def address(user: str) -> str:
    return f"{user}@{OLD_DOMAIN}"


def _allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` by ``weights`` exactly (largest remainder)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def organization(spec: OrgSpec) -> Organization:
    """Accounts and collections (with their item counts and shares); no items."""
    rng = random.Random(f"{spec.seed}:org")
    users = tuple(account(k) for k in range(1, ACCOUNTS + 1))
    cal_defs = [(u, "Default", f"{u} calendar", math.exp(rng.uniform(0, math.log(4)))) for u in users]
    cal_defs += [(account(o), name, name.replace("-", " "), w) for name, o, w in EXTRA_CALENDARS]
    book_defs = [(u, "Default", f"{u} contacts", math.exp(rng.uniform(0, math.log(4)))) for u in users]
    book_defs += [(account(o), name, f"{name} of {account(o)}", w) for name, o, w in EXTRA_ADDRESSBOOKS]
    cal_counts = _allocate(spec.events, [d[3] for d in cal_defs])
    book_counts = _allocate(spec.contacts, [d[3] for d in book_defs])
    cols: list[Collection] = []
    for (owner, name, disp, _), n in zip(cal_defs, cal_counts, strict=True):
        shares: tuple[tuple[str, str], ...] = ()
        if name != "Default":
            others = [u for u in users if u != owner]
            sharees = rng.sample(others, rng.randint(2, 4))
            shares = tuple(sorted((u, rng.choice(("read", "read-write"))) for u in sharees))
        cols.append(Collection(owner, name, "calendar", disp, n, len(cols), shares))
    for (owner, name, disp, _), n in zip(book_defs, book_counts, strict=True):
        cols.append(Collection(owner, name, "addressbook", disp, n, len(cols)))
    return Organization(spec, users, tuple(cols))


# --------------------------------------------------------------------------- items


_STAMP = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_BERLIN_TZ = Timezone.from_ical(BERLIN_VTIMEZONE)


def _uid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}@bench.mailferry.test"


def _phrase(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi))).capitalize()


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST)


def _event(rng: random.Random, i: int, col: Collection, users: tuple[str, ...]) -> tuple[str, bytes]:
    uid = _uid(rng)
    recurring = i % 4 == 0
    meeting = i % 10 == 1
    allday = not recurring and rng.random() < 0.1
    berlin = not allday and rng.random() < 0.35
    day = date(2022, 1, 3) + timedelta(days=rng.randrange(5 * 365))
    minutes = rng.choice((30, 30, 60, 60, 60, 90, 120))
    start: date | datetime
    if allday:
        start, end = day, day + timedelta(days=rng.choice((1, 1, 1, 2, 3)))
    else:
        t = datetime(day.year, day.month, day.day, rng.randint(7, 18), rng.choice((0, 15, 30, 45)))
        start = t.replace(tzinfo=BERLIN) if berlin else t.replace(tzinfo=UTC)
        end = start + timedelta(minutes=minutes)
    cal = Calendar()
    cal.add("prodid", "-//mailferry//bench dav_org//EN")
    cal.add("version", "2.0")
    if berlin:
        cal.add_component(_BERLIN_TZ)
    master = Event()
    master.add("uid", uid)
    master.add("dtstamp", _STAMP)
    created = _STAMP - timedelta(days=rng.randrange(1, 900), seconds=rng.randrange(86400))
    master.add("created", created)
    master.add("last-modified", created + timedelta(hours=rng.randrange(1, 200)))
    master.add("sequence", 0)
    master.add("dtstart", start)
    master.add("dtend", end)
    master.add("summary", _phrase(rng, 2, 5))
    if rng.random() < 0.5:
        master.add("description", "\n".join(_phrase(rng, 5, 14) for _ in range(rng.randint(1, 4))))
    place = rng.choice(PLACES)
    if place:
        master.add("location", place)
    if rng.random() < 0.3:
        master.add("categories", rng.sample(("Work", "Travel", "Customer", "Internal", "Privat"), 2))
    master.add("transp", "TRANSPARENT" if allday else "OPAQUE")
    if rng.random() < 0.1:
        master.add("class", "PRIVATE")
    if rng.random() < 0.2 and not allday:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", "Reminder")
        alarm.add("trigger", timedelta(minutes=-rng.choice((5, 10, 15, 30))))
        master.add_component(alarm)
    people: list[str] = []
    if meeting:
        others = [u for u in users if u != col.owner]
        people = rng.sample(others, min(len(others), rng.randint(2, 6)))  # a small organization has fewer
        org = vCalAddress(f"mailto:{address(col.owner)}")
        org.params["CN"] = vText(col.owner.replace("user", "User "))
        master.add("organizer", org)
        for u in [col.owner, *people]:
            att = vCalAddress(f"mailto:{address(u)}")
            att.params["CN"] = vText(u.replace("user", "User "))
            att.params["CUTYPE"] = vText("INDIVIDUAL")
            role = "CHAIR" if u == col.owner else rng.choice(("REQ-PARTICIPANT", "OPT-PARTICIPANT"))
            att.params["ROLE"] = vText(role)
            att.params["PARTSTAT"] = vText("ACCEPTED" if u == col.owner else rng.choice(
                ("ACCEPTED", "ACCEPTED", "TENTATIVE", "DECLINED", "NEEDS-ACTION")))
            if u != col.owner:
                att.params["RSVP"] = vText("TRUE")
            master.add("attendee", att, encode=0)
    overrides: list[Event] = []
    if recurring:
        weekly = rng.random() < 0.75
        n = rng.randint(6, 40)
        step = timedelta(weeks=1) if weekly else timedelta(days=1)
        rule: dict[str, object] = {"freq": "weekly" if weekly else "daily"}
        if rng.random() < 0.5:
            rule["count"] = n
        else:
            last = start + step * (n - 1)
            rule["until"] = (last.astimezone(UTC) if isinstance(last, datetime) else last)
        master.add("rrule", rule)
        picks = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(1, 4))))
        if len(picks) > 1 and rng.random() < 0.4:
            master.add("exdate", start + step * picks.pop())
        for k in picks[:3]:
            rid = start + step * k
            ov = Event()
            ov.add("uid", uid)
            ov.add("dtstamp", _STAMP)
            ov.add("recurrence-id", rid)
            moved = rid + timedelta(hours=rng.choice((-2, -1, 1, 2, 24))) if isinstance(rid, datetime) else rid
            ov.add("dtstart", moved)
            ov.add("dtend", moved + (end - start))
            ov.add("summary", master["summary"] + " (moved)")
            ov.add("sequence", 1)
            if meeting:
                ov["organizer"] = master["organizer"]
                ov["attendee"] = master["attendee"]
            overrides.append(ov)
    cal.add_component(master)
    for ov in overrides:
        cal.add_component(ov)
    return uid, cal.to_ical()


def _vcard(rng: random.Random, i: int, col: Collection) -> tuple[str, bytes]:
    uid = _uid(rng)
    first, last = _person(rng)
    card = vobject.vCard()
    card.add("uid").value = uid
    card.add("n").value = vobject.vcard.Name(family=last, given=first)
    card.add("fn").value = f"{first} {last}"
    company = rng.choice(COMPANIES)
    card.add("org").value = [company]
    slug = (first + "." + last).lower().encode("ascii", "ignore").decode().replace("'", "")
    domain = company.split()[0].lower().encode("ascii", "ignore").decode() + ".example"
    for k in range(rng.randint(1, 2)):
        e = card.add("email")
        e.value = f"{slug}{k or ''}@{domain}" if k == 0 else f"{slug}@private.example"
        e.type_param = "INTERNET" if k else "WORK"
    tel = card.add("tel")
    tel.value = f"+49 30 {rng.randrange(1000000, 9999999)}"
    tel.type_param = rng.choice(("WORK", "CELL", "HOME"))
    if rng.random() < 0.5:
        card.add("title").value = _phrase(rng, 1, 3)
    if rng.random() < 0.3:
        adr = card.add("adr")
        adr.value = vobject.vcard.Address(street=f"{rng.choice(LAST)}straße {rng.randint(1, 200)}",
                                          city=rng.choice(("Berlin", "München", "Zürich", "Paris", "Kraków")),
                                          code=f"{rng.randint(10000, 99999)}", country="Germany")
        adr.type_param = "WORK"
    if rng.random() < 0.2:
        card.add("bday").value = f"{rng.randint(1950, 2000)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if rng.random() < 0.2:
        card.add("note").value = _phrase(rng, 4, 20)
    card.add("rev").value = "2025-03-01T12:00:00Z"
    return uid, card.serialize().encode()


def iter_items(org: Organization, col: Collection) -> Iterator[tuple[str, bytes]]:
    """Yield ``(href, body)`` for each item of ``col``; deterministic and independent of the
    other collections. ``href`` is the resource's file name: the UID's random part + suffix."""
    rng = random.Random(f"{org.spec.seed}:{col.index}:{col.kind}")
    for i in range(col.count):
        uid, body = _event(rng, i, col, org.accounts) if col.kind == "calendar" else _vcard(rng, i, col)
        yield uid.split("@", 1)[0] + col.suffix, body


def radicale_props(col: Collection) -> dict[str, str]:
    """``.Radicale.props`` of a collection, as Radicale writes them after MKCALENDAR/MKCOL."""
    if col.kind == "calendar":
        return {"C:supported-calendar-component-set": "VEVENT", "D:displayname": col.displayname,
                "tag": "VCALENDAR"}
    return {"D:displayname": col.displayname, "tag": "VADDRESSBOOK"}


# --------------------------------------------------------------------------- on-disk cache


def write_tree(spec: OrgSpec, out: Path, log: Callable[[str], None] = print) -> Path:
    """The organization in Radicale's layout under ``out/dav-org-<key>/tree`` (generated once,
    then reused), with ``manifest.json`` beside it. Returns the cache directory."""
    root = out / f"dav-org-{spec.key}"
    if (root / "manifest.json").exists():
        return root
    tmp = out / f"dav-org-{spec.key}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    org = organization(spec)
    log(f"generating DAV organization: scale {spec.scale}, {spec.events} events, {spec.contacts} contacts -> {root}")
    t0 = time.perf_counter()
    stats = {"events": 0, "contacts": 0, "bytes": 0, "recurring": 0, "overrides": 0, "meetings": 0,
             "berlin_tz": 0, "largest": 0}
    for col in org.collections:
        d = tmp / "tree" / col.owner / col.radicale_name
        d.mkdir(parents=True)
        (d / ".Radicale.props").write_text(json.dumps(radicale_props(col), sort_keys=True))
        for href, body in iter_items(org, col):
            (d / href).write_bytes(body)
            stats["bytes"] += len(body)
            stats["largest"] = max(stats["largest"], len(body))
            if col.kind == "calendar":
                stats["events"] += 1
                stats["recurring"] += b"RRULE:FREQ=WEEKLY" in body or b"RRULE:FREQ=DAILY" in body
                stats["overrides"] += body.count(b"RECURRENCE-ID")
                stats["meetings"] += b"ORGANIZER" in body
                stats["berlin_tz"] += b"BEGIN:VTIMEZONE" in body
            else:
                stats["contacts"] += 1
    manifest = {
        "spec": asdict(spec) | {"version": ORG_VERSION, "key": spec.key},
        "accounts": list(org.accounts),
        "calendars": len(org.calendars),
        "addressbooks": len(org.addressbooks),
        "shared_calendars": [{"owner": c.owner, "name": c.name, "shares": [list(s) for s in c.shares]}
                             for c in org.collections if c.shares],
        "collections": [{"owner": c.owner, "name": c.name, "kind": c.kind, "count": c.count}
                        for c in org.collections],
        "stats": stats,
        "generate_s": round(time.perf_counter() - t0, 1),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def install_radicale(cache: Path, collection_root: Path) -> int:
    """Hard-link the cached tree into a Radicale ``collection-root`` (Radicale replaces files by
    rename, never rewrites one in place, so the cache stays intact). Returns the item count."""
    n = 0
    src = cache / "tree"
    for dirpath, _dirnames, filenames in os.walk(src):
        target = collection_root / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for fn in filenames:
            if fn == ".Radicale.props":
                shutil.copyfile(Path(dirpath) / fn, target / fn)
            else:
                os.link(Path(dirpath) / fn, target / fn)
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help=f"scale {QUICK_SCALE}")
    ap.add_argument("--seed", type=int, default=OrgSpec.seed)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args(argv)
    spec = OrgSpec(QUICK_SCALE if args.quick else args.scale, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    root = write_tree(spec, args.out)
    m = json.loads((root / "manifest.json").read_text())
    print(json.dumps({k: m[k] for k in ("spec", "calendars", "addressbooks", "stats", "generate_s")}, indent=1))
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
