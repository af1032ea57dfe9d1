"""A fast parser for the two FETCH responses mailferry asks for, from imaplib's raw data.

Why not IMAPClient's parser: the benchmark (10,000 messages) showed its general tokenizer
(``response_lexer``) costing about 1 ms of CPU per message for the inventory FETCH, more than
the target server's APPEND; mailferry's requests have a fixed shape, so regexes over the
non-literal text do. Pure: bytes in, values out; tested on raw server responses.

imaplib hands a FETCH response over as a list whose elements are either ``bytes`` (a response
line without a literal, or the rest of a line after a literal) or ``(prefix, literal)`` tuples.
An element starting with a digit opens the next message (``N (``); anything else continues the
current one (``)``, `` MODSEQ (5))``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

_UID = re.compile(rb"(?<![\w.\-\[])UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_DATE = re.compile(rb'INTERNALDATE "([^"]*)"')
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
_INLINE_BODY = re.compile(rb'BODY\[[^\]]*\](?:<\d+>)? (?:"((?:[^"\\]|\\.)*)"|NIL)', re.I)
_MONTHS = {m: i + 1 for i, m in enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
_IDATE = re.compile(rb"\s*(\d{1,2})-(\w{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")


class FetchParseError(ValueError):
    """The server's FETCH response is not what was asked for (the peer did wrong)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    size: int | None = None
    internaldate: datetime | None = None
    flags: tuple[str, ...] | None = None
    modseq: int | None = None
    literal: bytes | None = None  # the BODY[...] asked for (headers or the whole message)


_ZONES: dict[bytes, timezone] = {}  # "+0200" -> its timezone: few, and made once each


def parse_internaldate(raw: bytes) -> datetime:
    """``17-Jul-1996 02:44:25 -0700`` (RFC 3501 date-time) -> aware datetime."""
    m = _IDATE.match(raw)
    if m is None or m.group(2).capitalize() not in _MONTHS:
        raise FetchParseError(f"bad INTERNALDATE {raw[:40]!r}")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    try:
        tz = _ZONES.get(sign + zh + zm)
        if tz is None:  # an offset of 24 hours or more: ValueError
            offset = timedelta(hours=int(zh), minutes=int(zm))
            tz = _ZONES.setdefault(sign + zh + zm, timezone(-offset if sign == b"-" else offset))
        return datetime(int(year), _MONTHS[mon.capitalize()], int(day), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError:
        raise FetchParseError(f"bad INTERNALDATE {raw[:40]!r}") from None


_MONTH_NAMES = (b"", *b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_MINUTE = timedelta(minutes=1)


def format_internaldate(when: datetime) -> bytes | None:
    """An aware datetime as an RFC 3501 date-time (``02-Apr-2024 10:00:00 +0200``), what APPEND
    sends; None where it has no such form (naive, an offset with seconds, a year not of four
    digits): the caller formats it another way. The same text as IMAPClient's
    ``datetime_to_INTERNALDATE`` (its strftime cost ~3 µs a message; this, a third of it)."""
    offset = when.utcoffset()
    if offset is None or offset % _MINUTE or not 1000 <= when.year <= 9999:
        return None
    minutes = offset // _MINUTE
    sign = b"+" if minutes >= 0 else b"-"
    hours, minutes = divmod(abs(minutes), 60)
    return b"%02d-%s-%d %02d:%02d:%02d %s%02d%02d" % (
        when.day, _MONTH_NAMES[when.month], when.year, when.hour, when.minute, when.second, sign, hours, minutes,
    )  # fmt: skip


def _unquote(raw: bytes) -> bytes:
    return re.sub(rb"\\(.)", rb"\1", raw)


def _one(text: bytes, literal: bytes | None) -> Fetched | None:
    m = _UID.search(text)
    if m is None:
        return None  # an unsolicited FETCH (e.g. a flag change by another session): not ours
    size = _SIZE.search(text)
    date = _DATE.search(text)
    flags = _FLAGS.search(text)
    modseq = _MODSEQ.search(text)
    if literal is None:
        inline = _INLINE_BODY.search(text)
        if inline is not None:
            literal = _unquote(inline.group(1)) if inline.group(1) is not None else b""
    return Fetched(
        uid=int(m.group(1)),
        size=int(size.group(1)) if size else None,
        internaldate=parse_internaldate(date.group(1)) if date else None,
        flags=tuple(f.decode("utf-8", "replace") for f in flags.group(1).split()) if flags else None,
        modseq=int(modseq.group(1)) if modseq else None,
        literal=literal,
    )


# The two responses as Dovecot sends them (items in the order asked, MODSEQ where CONDSTORE is
# on), whole, with nothing but ")" after the literal: read with one match instead of the five
# searches below (~0.1 s of CPU for the benchmark's 10,000 messages, read twice). Anything else,
# or anything odd inside (parentheses or quotes where none belong), takes the general way; a
# property test says both give the same.
_INVENTORY_SHAPE = re.compile(
    rb'\d+ \(UID (\d+) RFC822\.SIZE (\d+) INTERNALDATE "([^"()\\]*)" FLAGS \(([^()"]*)\)'
    rb"(?: MODSEQ \((\d+)\))? BODY\[[^\]\[()]*(?:\([^()]*\))?\] \{\d+\}"
)
_BODY_SHAPE = re.compile(rb"\d+ \(UID (\d+) BODY\[\] \{\d+\}")


def _shaped(prefix: bytes, literal: bytes) -> Fetched | None:
    """A response in one of the two usual shapes, else None (then :func:`_one` reads it)."""
    m = _BODY_SHAPE.fullmatch(prefix)
    if m is not None:
        return Fetched(uid=int(m.group(1)), literal=literal)
    m = _INVENTORY_SHAPE.fullmatch(prefix)
    if m is None:
        return None
    uid, size, date, flags, modseq = m.groups()
    if modseq is None and b"MODSEQ" in prefix:
        return None  # an odd section name with "MODSEQ (n)" in it: the general way finds that n
    return Fetched(
        uid=int(uid),
        size=int(size),
        internaldate=parse_internaldate(date),
        flags=tuple(f.decode("utf-8", "replace") for f in flags.split()),
        modseq=int(modseq) if modseq is not None else None,
        literal=literal,
    )


def parse_fetch(data: Sequence[bytes | tuple[bytes, bytes] | None]) -> dict[int, Fetched]:
    """UID -> what the server sent for it. Several literals in one message are not expected (we
    ask for one BODY item) and the last one wins. The usual responses are read the quick way
    (:func:`_shaped`), the others by :func:`_one`."""
    out: dict[int, Fetched] = {}
    text: list[bytes] = []
    literal: bytes | None = None

    def close() -> None:
        if len(text) == 2 and literal is not None and text[1] == b")":
            got = _shaped(text[0], literal)
            if got is not None:
                out[got.uid] = got
                return
        if text:
            got = _one(b" ".join(text), literal)
            if got is not None:
                out[got.uid] = got

    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            prefix, lit = item[0], item[1]
            if prefix[:1].isdigit():
                close()
                text, literal = [], None
            text.append(prefix)
            literal = lit
        else:
            if item[:1].isdigit():
                close()
                text, literal = [], None
            text.append(item)
    close()
    return out
