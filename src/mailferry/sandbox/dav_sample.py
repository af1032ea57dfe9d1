"""A small sample of calendars and contacts for the demo: per account a calendar of events (one
recurring with a moved occurrence, one meeting with colleagues and an outside guest) and an
address book, written through mailferry's own DAV connector."""

from __future__ import annotations

from collections.abc import Sequence

from mailferry.connectors.dav import DavEndpoint, DavLogin, DavStore
from mailferry.model.dav import Collection

OLD_DOMAIN = "old.example"


def calendar(*lines: str) -> bytes:
    """A VCALENDAR around these content lines, CRLF-terminated (the demo's and the tests')."""
    body = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//mailferry sandbox//EN", *lines, "END:VCALENDAR"]
    return ("\r\n".join(body) + "\r\n").encode()


def event(uid: str, summary: str, start: str, *extra: str) -> bytes:
    """One hour-long VEVENT starting at ``start`` (UTC), with ``extra`` content lines."""
    return calendar(
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T090000Z",
        f"DTSTART:{start}",
        "DURATION:PT1H",
        f"SUMMARY:{summary}",
        *extra,
        "END:VEVENT",
    )


def _card(uid: str, name: str, email: str) -> bytes:
    first, last = name.split(" ", 1)
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid}",
        f"FN:{name}",
        f"N:{last};{first};;;",
        f"EMAIL;TYPE=INTERNET:{email}",
        "END:VCARD",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def sample_items(user: str, colleagues: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
    """(calendar objects, vCards) of one account."""
    events = [
        event(f"{user}-1@demo", "Dentist", "20270301T080000Z", "TRANSP:OPAQUE"),
        calendar(
            "BEGIN:VEVENT",
            f"UID:{user}-2@demo",
            "DTSTAMP:20260101T090000Z",
            "DTSTART:20270104T090000Z",
            "DURATION:PT30M",
            "RRULE:FREQ=WEEKLY;COUNT=8",
            "SUMMARY:Weekly review",
            "END:VEVENT",
            "BEGIN:VEVENT",
            f"UID:{user}-2@demo",
            "DTSTAMP:20260101T090000Z",
            "RECURRENCE-ID:20270111T090000Z",
            "DTSTART:20270111T140000Z",
            "DURATION:PT30M",
            "SUMMARY:Weekly review (moved)",
            "END:VEVENT",
        ),
        event(
            f"{user}-3@demo",
            f"Planning with {', '.join(colleagues)}",
            "20271104T100000Z",
            f"ORGANIZER:mailto:{user}@{OLD_DOMAIN}",
            *(f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{c}@{OLD_DOMAIN}" for c in colleagues),
            "ATTENDEE;PARTSTAT=TENTATIVE:mailto:guest@partner.example",
        ),
    ]
    cards = [
        _card(f"{user}-c{i}", name, f"{name.split()[0].lower()}@partner.example")
        for i, name in enumerate(("Ann Archer", "Ben Baker", "Cleo Cole"))
    ]
    return events, cards


def seed_dav_sample(url: str, user: str, password: str, colleagues: Sequence[str]) -> int:
    """Create ``Calendar`` and ``Contacts`` for ``user`` and fill them; the number of items."""
    store = DavStore(DavEndpoint(base_url=url), DavLogin(user=user, password=password), readonly=False, label=user)
    try:
        info = store.info()
        events, cards = sample_items(user, colleagues)
        n = 0
        for kind, name, home, items in (
            ("calendar", "Calendar", info.calendar_home, events),
            ("addressbook", "Contacts", info.addressbook_home, cards),
        ):
            assert home is not None
            coll = store.create_collection(Collection(href=f"{home}{name}/", kind=kind, name=name, displayname=name))  # type: ignore[arg-type]
            for i, data in enumerate(items):
                store.put(coll, f"{user}-{i}.{'ics' if kind == 'calendar' else 'vcf'}", data)
                n += 1
        return n
    finally:
        store.close()
