"""iCalendar calendar object resources (RFC 5545, RFC 4791 §4.1): inspect, split, rewrite
addresses, normalise and compare. Pure: bytes in, values out.

Terminology:

resource    the bytes of one calendar object resource: one VCALENDAR holding the components of
            one UID (a master and its RECURRENCE-ID overrides) and the VTIMEZONEs they use.
component   a VEVENT, VTODO, VJOURNAL, VFREEBUSY or VAVAILABILITY directly in the VCALENDAR.
line        one logical content line, unfolded; it keeps the exact physical text it came from,
            so anything not rewritten is carried byte for byte.

Content lines are cut into name, parameters and value by icalendar's own content-line parser
(:class:`icalendar.parser.Contentline`) and rewritten ones are put back together and folded by it;
this module only tracks which physical lines make one logical line and which BEGIN/END they sit
in. Whole-object re-serialisation (``Calendar.to_ical``) is never used for an item that is
migrated: it would re-escape, re-fold and re-type every value of an item we only meant to touch
in one place. ``Calendar.from_ical`` is used for what it is good at: finding values that don't
parse (reported as problems, not refused).

What is malformed (:class:`BadItem`) and what is only unusual (``CalendarObject.problems``):

=============================================================  ==========================
input                                                          verdict
=============================================================  ==========================
not UTF-8 (RFC 5545 §3.1.4); a lone CR                         BadItem
a continuation line before any line; a line with no ``:``       BadItem "bad line folding"
no BEGIN:VCALENDAR / no END:VCALENDAR / END not matching BEGIN  BadItem
two VCALENDARs, content after END:VCALENDAR                     BadItem
VERSION other than 2.0 (vCalendar 1.0)                          BadItem
no component, or components of two kinds (RFC 4791 §4.1)        BadItem
a component without UID; UIDs that differ (use :func:`split`)   BadItem
two masters, or two overrides with one RECURRENCE-ID            BadItem
RRULE on a component that has RECURRENCE-ID                     BadItem
a TZID with no VTIMEZONE                                        problem: servers resolve
                                                                IANA names (RFC 7809) and
                                                                refuse or float the rest
a value icalendar can't parse (``DTSTART:2013BAD``)             problem: the server decides
byte order mark, empty lines, no VERSION or PRODID              problem
=============================================================  ==========================

Comparison (:func:`differences`) after normalisation (:func:`normalize`):

* normalised away: folding, line endings, order of properties, parameters and subcomponents,
  case of names and of enumerated values (PARTSTAT, STATUS...), the ``mailto:`` scheme and the
  case of addresses, TEXT escaping (``\\,`` or ``,``), a VALUE parameter that names the default
  type, RRULE part order, and list values: ``CATEGORIES:a,b`` is the same as two CATEGORIES
  lines (Cyrus splits them), likewise RESOURCES, EXDATE, RDATE, FREEBUSY.
* ignored because servers legitimately change them on store: METHOD (RFC 4791 §4.1 forbids it in
  a resource), PRODID, the SCHEDULE-STATUS and SCHEDULE-FORCE-SEND parameters (RFC 6638 §3.2.9,
  §3.2.10), X-LIC-ERROR (libical's parse notes; Cyrus strips them), the X-JMAP-* properties and
  the X-JMAP-*, X-DTSTAMP, X-SEQUENCE parameters Cyrus adds (``imap/ical_support.h``), and the
  content of a VTIMEZONE whose TZID is an IANA name (Cyrus strips and re-adds them from its own
  database, ``strip_vtimezones``); the TZID parameters that refer to them are still compared.
* kept: everything else, DTSTAMP and SEQUENCE included.
"""

from __future__ import annotations

import re
import warnings
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from icalendar import Calendar
from icalendar.parser import Contentline, Parameters, split_on_unescaped_comma, unescape_backslash

__all__ = [
    "BadItem",
    "CalendarObject",
    "Rewrite",
    "differences",
    "inspect",
    "normalize",
    "rewrite",
    "split",
]


class BadItem(ValueError):
    """The bytes are not one well-formed item; the message is a short human reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CalendarObject:
    """What :func:`inspect` learns of one resource.

    ``components``: the component names in order of first appearance (one, as RFC 4791 allows).
    ``summary``: the master's SUMMARY, unescaped. ``start``: the master's DTSTART value as written
    (``20240101T090000``, ``20240101``); its TZID is not included. ``organizer``: the ORGANIZER
    value as written (``mailto:...``). ``problems``: what is unusual but not malformed.
    """

    uid: str
    components: tuple[str, ...]
    summary: str | None = None
    start: str | None = None
    has_attendees: bool = False
    organizer: str | None = None
    recurrence_ids: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One value :func:`rewrite` changed. ``property`` is ``ATTENDEE`` or ``ORGANIZER`` for the
    value itself, ``ATTENDEE;SENT-BY`` (etc.) for a parameter. ``old``/``new`` are whole values
    as written (``mailto:a@old.example``); for SCHEDULE-AGENT ``old`` is "" when there was none."""

    component_uid: str
    property: str
    old: str
    new: str
    recurrence_id: str | None = None


# --------------------------------------------------------------------------- parsing

_COMPONENTS = ("VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY", "VAVAILABILITY")
_ADDRESS_PROPS = frozenset({"ORGANIZER", "ATTENDEE"})
_ADDRESS_PARAMS = ("SENT-BY", "DELEGATED-TO", "DELEGATED-FROM", "MEMBER")
_SCHEDULED = frozenset({"VEVENT", "VTODO", "VJOURNAL"})


@dataclass(slots=True)
class _Line:
    number: int  # physical line (1-based) where it starts
    raw: str  # the physical text, folds and line ending included
    name: str  # upper-cased
    params: Parameters
    value: str  # as written: escapes kept
    tail: str = ""  # empty lines after it, kept for byte-exact output


@dataclass(slots=True)
class _Comp:
    name: str
    first: int  # index of its BEGIN line in _Parsed.lines
    last: int = -1  # index of its END line
    props: list[_Line] = field(default_factory=list)
    children: list[_Comp] = field(default_factory=list)

    def get(self, name: str) -> list[_Line]:
        return [p for p in self.props if p.name == name]

    def first_value(self, name: str) -> str | None:
        found = self.get(name)
        return found[0].value if found else None


@dataclass(slots=True)
class _Parsed:
    root: _Comp
    lines: list[_Line]  # every logical line, BEGIN/END included, in file order
    bom: bool
    problems: list[str]


def _decode(data: bytes) -> tuple[str, bool]:
    bom = data.startswith(b"\xef\xbb\xbf")
    if bom:
        data = data[3:]
    try:
        return data.decode("utf-8"), bom
    except UnicodeDecodeError as exc:
        raise BadItem(f"not UTF-8 (byte 0x{data[exc.start]:02X} at offset {exc.start})") from exc


def _physical(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _parse(data: bytes) -> _Parsed:
    text, bom = _decode(data)
    problems = ["starts with a byte order mark"] if bom else []
    groups: list[tuple[int, list[str]]] = []  # (first physical line, physical lines)
    blank_after: dict[int, list[str]] = {}
    leading: list[str] = []
    for number, phys in enumerate(_physical(text), start=1):
        body = phys.rstrip("\r\n")
        if "\r" in body:
            raise BadItem(f"lone CR in line {number}")
        if not body.strip():
            # RFC 5545 has no empty lines; most parsers skip them, so do we (keeping the bytes).
            problems.append(f"empty line {number}")
            if groups:
                blank_after.setdefault(len(groups) - 1, []).append(phys)
            else:
                leading.append(phys)
            continue
        if body[0] in " \t":
            if not groups:
                raise BadItem(f"bad line folding at line {number}")
            groups[-1][1].append(phys)
            continue
        groups.append((number, [phys]))
    if not groups:
        raise BadItem("empty")
    if leading:
        groups[0][1][:0] = leading

    lines: list[_Line] = []
    for index, (number, physs) in enumerate(groups):
        raw = "".join(physs)
        extra = blank_after.get(index)
        content: Contentline = Contentline.from_ical(  # type: ignore[no-untyped-call]
            "".join(p for p in physs if p.strip()).rstrip("\r\n")
        )
        if content.value_separator_index() < 0:
            raise BadItem(f"bad line folding at line {number}")
        try:
            name, params, value = content.raw_parts()
        except ValueError as exc:
            raise BadItem(f"bad content line {number}") from exc
        lines.append(_Line(number, raw, name.upper(), params, value, "".join(extra or ())))

    stack: list[_Comp] = []
    root: _Comp | None = None
    for index, line in enumerate(lines):
        if line.name == "BEGIN":
            kind = line.value.strip().upper()
            if root is not None and not stack:
                raise BadItem(
                    "two VCALENDARs in one resource" if kind == "VCALENDAR" else f"BEGIN:{kind} after END:VCALENDAR"
                )
            if not stack and kind != "VCALENDAR":
                raise BadItem("no BEGIN:VCALENDAR")
            comp = _Comp(kind, index)
            if stack:
                stack[-1].children.append(comp)
            else:
                root = comp
            stack.append(comp)
        elif line.name == "END":
            kind = line.value.strip().upper()
            if not stack:
                raise BadItem(f"END:{kind} at line {line.number} without BEGIN")
            if stack[-1].name != kind:
                raise BadItem(f"END:{kind} at line {line.number} closes BEGIN:{stack[-1].name}")
            stack.pop().last = index
        elif not stack:
            raise BadItem("no BEGIN:VCALENDAR" if root is None else f"{line.name} after END:VCALENDAR")
        else:
            stack[-1].props.append(line)
    if stack:
        raise BadItem(f"no END:{stack[-1].name}")
    assert root is not None
    return _Parsed(root, lines, bom, problems)


def _parse_items(data: bytes) -> tuple[_Parsed, list[_Comp]]:
    parsed = _parse(data)
    return parsed, [c for c in parsed.root.children if c.name != "VTIMEZONE"]


# --------------------------------------------------------------------------- inspect


@cache
def _iana() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _tzids(comp: _Comp) -> Iterator[str]:
    for prop in comp.props:
        tzid = prop.params.get("TZID")
        if isinstance(tzid, str) and tzid:
            yield tzid
    for child in comp.children:
        yield from _tzids(child)


def _value_problems(data: bytes) -> list[str]:
    """What icalendar's typed parser could not read: a problem each, never a refusal."""
    try:
        with warnings.catch_warnings():  # e.g. GloballyUniqueTZIDGuessed: not ours to print
            warnings.simplefilter("ignore")
            calendars: Any = Calendar.from_ical(data, multiple=True)
    except Exception as exc:  # icalendar raises many types on odd values; the server decides
        return [f"icalendar can't read it: {str(exc)[:120]}"]
    out: list[str] = []
    for cal in calendars:
        for comp in cal.walk():
            out.extend(f"{comp.name} {prop}: {msg}"[:160] for prop, msg in getattr(comp, "errors", ()))
    return out


def _uid_of(items: list[_Comp]) -> str:
    uids: list[str] = []
    for comp in items:
        found = comp.get("UID")
        if not found:
            raise BadItem("no UID" if len(items) == 1 else f"no UID in a {comp.name}")
        if len({u.value for u in found}) > 1:
            raise BadItem(f"two UIDs in one {comp.name} ({', '.join(u.value for u in found)})")
        if found[0].value not in uids:
            uids.append(found[0].value)
    if len(uids) > 1:
        count = "two" if len(uids) == 2 else str(len(uids))
        shown = ", ".join(uids[:3]) + (", ..." if len(uids) > 3 else "")
        raise BadItem(f"{count} UIDs in one resource ({shown})")
    return uids[0]


def inspect(data: bytes, *, values: bool = True) -> CalendarObject:
    """Read one calendar object resource; raise :class:`BadItem` when it is malformed.

    ``values=False`` leaves out the check of every property value against its type (a full
    parse by the icalendar library, two thirds of the time): the migration's hot path, where the
    target judges values and its refusal names them; ``verify`` and the tests keep it."""
    parsed, items = _parse_items(data)
    root = parsed.root
    problems = list(parsed.problems)
    version = root.first_value("VERSION")
    if version is None:
        problems.append("no VERSION")
    elif version.strip() != "2.0":
        raise BadItem(f"VERSION {version.strip()} is not iCalendar 2.0")
    if root.first_value("PRODID") is None:
        problems.append("no PRODID")
    if not items:
        raise BadItem("no VEVENT, VTODO or VJOURNAL" if not root.children else "only VTIMEZONE, no component")
    odd = [c.name for c in items if c.name not in _COMPONENTS]
    if len(odd) == len(items):
        raise BadItem(f"no VEVENT, VTODO or VJOURNAL (only {', '.join(dict.fromkeys(odd))})")
    problems.extend(f"unknown component {name}" for name in dict.fromkeys(odd))
    items = [c for c in items if c.name in _COMPONENTS]
    kinds = tuple(dict.fromkeys(c.name for c in items))
    if len(kinds) > 1:
        raise BadItem(f"components of two kinds in one resource ({', '.join(kinds)})")
    uid = _uid_of(items)

    masters = [c for c in items if not c.get("RECURRENCE-ID")]
    rids = [_canon_value("RECURRENCE-ID", c.get("RECURRENCE-ID")[0].value) for c in items if c.get("RECURRENCE-ID")]
    if len(masters) > 1:
        raise BadItem(f"{len(masters)} components without RECURRENCE-ID for one UID")
    if len(set(rids)) < len(rids):
        dup = next(r for r, n in Counter(rids).items() if n > 1)
        raise BadItem(f"two overrides with RECURRENCE-ID {dup}")
    for comp in items:
        if comp.get("RECURRENCE-ID") and comp.get("RRULE"):
            raise BadItem("RRULE on a component that has RECURRENCE-ID")

    defined = {c.first_value("TZID") for c in root.children if c.name == "VTIMEZONE"}
    for tzid in dict.fromkeys(t for c in items for t in _tzids(c)):
        if tzid in defined:
            continue
        if tzid in _iana():
            problems.append(f"TZID {tzid} has no VTIMEZONE (an IANA name)")
        else:
            problems.append(f"unknown TZID {tzid}")
    if values:
        problems.extend(_value_problems(data))

    master = masters[0] if masters else items[0]
    summary = master.first_value("SUMMARY")
    return CalendarObject(
        uid=uid,
        components=kinds,
        summary=unescape_backslash(summary) if summary is not None else None,
        start=master.first_value("DTSTART"),
        has_attendees=any(c.get("ATTENDEE") for c in items),
        organizer=master.first_value("ORGANIZER"),
        recurrence_ids=tuple(rids),
        problems=tuple(problems),
    )


# --------------------------------------------------------------------------- split


def split(data: bytes) -> list[bytes]:
    """One resource per UID, in order of first appearance, each with the VCALENDAR's own
    properties and the VTIMEZONEs its components refer to; lines are carried byte for byte.
    A VCALENDAR with one UID (or none) comes back as ``[data]`` unchanged. Components without
    a UID go together into one resource, which :func:`inspect` then refuses."""
    parsed, items = _parse_items(data)
    groups: dict[str | None, list[_Comp]] = {}
    for comp in items:
        groups.setdefault(comp.first_value("UID"), []).append(comp)
    if len(groups) <= 1:
        return [data]
    lines, root = parsed.lines, parsed.root
    zones = {c.first_value("TZID"): c for c in root.children if c.name == "VTIMEZONE"}
    head = lines[root.first].raw + "".join(p.raw + p.tail for p in root.props)
    out: list[bytes] = []
    for comps in groups.values():
        used = dict.fromkeys(t for c in comps for t in _tzids(c))
        parts = [head]
        parts.extend(_span(lines, zones[t]) for t in used if t in zones)
        parts.extend(_span(lines, c) for c in comps)
        parts.append(lines[root.last].raw)
        out.append((b"\xef\xbb\xbf" if parsed.bom else b"") + "".join(parts).encode("utf-8"))
    return out


def _span(lines: list[_Line], comp: _Comp) -> str:
    return "".join(line.raw + line.tail for line in lines[comp.first : comp.last + 1])


# --------------------------------------------------------------------------- rewrite


def _eol(raw: str) -> str:
    return "\r\n" if raw.endswith("\r\n") else "\n"


class _Raw(str):
    """A value icalendar writes as it is (a CAL-ADDRESS is not TEXT: no escaping)."""

    def to_ical(self) -> bytes:
        return self.encode("utf-8")


def _map_address(value: str, addresses: Callable[[str], str | None]) -> str | None:
    """The new value for one CAL-ADDRESS, or None when it stays. Keeps ``mailto:`` as written."""
    if value[:7].lower() != "mailto:":
        return None
    old = value[7:]
    new = addresses(old.strip().lower())
    if new is None or new.lower() == old.strip().lower():
        return None
    return value[:7] + new


def _rewrite_line(
    line: _Line, addresses: Callable[[str], str | None], mark: bool, uid: str, rid: str | None
) -> tuple[str | None, list[Rewrite]]:
    made: list[Rewrite] = []
    value = line.value
    new_value = _map_address(value, addresses)
    if new_value is not None:
        made.append(Rewrite(uid, line.name, value, new_value, rid))
        value = new_value
    params = Parameters(line.params)
    for key in _ADDRESS_PARAMS:
        old = params.get(key)
        if old is None:
            continue
        olds = [old] if isinstance(old, str) else list(old)
        news = []
        for item in olds:
            mapped = _map_address(item, addresses)
            if mapped is not None:
                made.append(Rewrite(uid, f"{line.name};{key}", item, mapped, rid))
            news.append(item if mapped is None else mapped)
        if news != olds:
            params[key] = news[0] if isinstance(old, str) else news
    if mark:
        agent = params.get("SCHEDULE-AGENT")
        if not (isinstance(agent, str) and agent.upper() == "CLIENT"):
            was = agent if isinstance(agent, str) else ""
            made.append(Rewrite(uid, f"{line.name};SCHEDULE-AGENT", was, "CLIENT", rid))
            params["SCHEDULE-AGENT"] = "CLIENT"
    if not made:
        return None, []
    eol = _eol(line.raw)
    folded = Contentline.from_parts(line.name, params, _Raw(value), sorted=False).to_ical().decode("utf-8")
    # icalendar folds with CRLF; a file written with bare LF keeps bare LF.
    return (folded if eol == "\r\n" else folded.replace("\r\n", "\n")) + eol, made


def _rewrite(
    parsed: _Parsed, items: list[_Comp], addresses: Callable[[str], str | None], client_scheduling: bool
) -> tuple[dict[int, str], list[Rewrite]]:
    """The new text of each changed line (by identity of its _Line) and the rewrites made."""
    changed: dict[int, str] = {}
    made: list[Rewrite] = []

    def walk(comp: _Comp, uid: str, rid: str | None, mark: bool) -> None:
        for line in comp.props:
            if line.name in _ADDRESS_PROPS:
                text, done = _rewrite_line(line, addresses, mark, uid, rid)
                if text is not None:
                    changed[id(line)] = text
                    made.extend(done)
        for child in comp.children:
            walk(child, uid, rid, False)  # VALARM attendees are mail recipients, not scheduled

    for comp in items:
        uid = comp.first_value("UID") or ""
        rid = comp.first_value("RECURRENCE-ID")
        walk(comp, uid, rid, client_scheduling and comp.name in _SCHEDULED and bool(comp.get("ATTENDEE")))
    return changed, made


def rewrite(
    data: bytes, addresses: Callable[[str], str | None], *, client_scheduling: bool
) -> tuple[bytes, list[Rewrite]]:
    """Map the addresses of ORGANIZER and ATTENDEE (value and SENT-BY, DELEGATED-TO,
    DELEGATED-FROM, MEMBER parameters) through ``addresses``: it gets the address without
    ``mailto:``, lower-cased, and returns the new one or None to leave it. Non-``mailto:`` values
    stay. With ``client_scheduling``, every ATTENDEE and ORGANIZER of a VEVENT/VTODO/VJOURNAL
    that has attendees gets ``SCHEDULE-AGENT=CLIENT`` (RFC 6638 §7.1: the target server then
    sends no invitation). Only changed lines are rewritten; every other byte stays. Nothing to
    change: the input bytes themselves come back. Raises :class:`BadItem` like :func:`inspect`.
    """
    parsed, items = _parse_items(data)
    changed, made = _rewrite(parsed, items, addresses, client_scheduling)
    if not made:
        return data, []
    text = "".join(changed.get(id(line), line.raw) + line.tail for line in parsed.lines)
    return (b"\xef\xbb\xbf" if parsed.bom else b"") + text.encode("utf-8"), made


# --------------------------------------------------------------------------- normalise

_LISTS = frozenset({"CATEGORIES", "RESOURCES", "EXDATE", "RDATE", "FREEBUSY"})
_TEXT = frozenset(
    {"SUMMARY", "DESCRIPTION", "LOCATION", "COMMENT", "CONTACT", "CATEGORIES", "RESOURCES", "TZNAME", "UID"}
)
_ENUM_VALUES = frozenset({"STATUS", "CLASS", "TRANSP", "ACTION", "METHOD", "CALSCALE", "BUSYTYPE"})
_RULES = frozenset({"RRULE", "EXRULE"})
_DATES = frozenset(
    {"DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "EXDATE", "RDATE", "DTSTAMP", "CREATED", "LAST-MODIFIED",
     "COMPLETED", "DURATION", "TRIGGER", "FREEBUSY", "TZOFFSETFROM", "TZOFFSETTO", "ACKNOWLEDGED"}
)  # fmt: skip
_ENUM_PARAMS = frozenset(
    {"CUTYPE", "ENCODING", "FBTYPE", "PARTSTAT", "RANGE", "RELATED", "RELTYPE", "ROLE", "RSVP", "VALUE",
     "SCHEDULE-AGENT", "SCHEDULE-FORCE-SEND", "DISPLAY", "FEATURE", "ORDER"}
)  # fmt: skip
_LIST_PARAMS = frozenset({"DELEGATED-TO", "DELEGATED-FROM", "MEMBER", "DISPLAY", "FEATURE"})
_DEFAULT_TYPE = {
    **dict.fromkeys(
        ("DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "EXDATE", "RDATE", "DTSTAMP", "CREATED", "LAST-MODIFIED",
         "COMPLETED"), "DATE-TIME"),
    "ATTACH": "URI", "URL": "URI", "TZURL": "URI", "IMAGE": "URI", "CONFERENCE": "URI",
    "DURATION": "DURATION", "TRIGGER": "DURATION", "ORGANIZER": "CAL-ADDRESS", "ATTENDEE": "CAL-ADDRESS",
    "FREEBUSY": "PERIOD", "SUMMARY": "TEXT", "DESCRIPTION": "TEXT", "LOCATION": "TEXT",
}  # fmt: skip

# Changed by servers on store (see the module docstring): not compared.
_IGNORED_PROPS = {"VCALENDAR": frozenset({"METHOD", "PRODID"})}
_IGNORED_EVERYWHERE = frozenset({"X-LIC-ERROR"})
# Required by RFC 5545 in every component; a server adds one to an item that lacks it (Radicale
# does DTSTAMP). Only its addition is tolerated: a changed value is a difference.
_REQUIRED_STAMPS = frozenset({"DTSTAMP"})
_IGNORED_PARAMS = frozenset({"SCHEDULE-STATUS", "SCHEDULE-FORCE-SEND", "X-DTSTAMP", "X-SEQUENCE"})
_SERVER_PREFIXES = ("X-JMAP-",)


def _canon_address(value: str) -> str:
    if value[:7].lower() == "mailto:":
        return "mailto:" + value[7:].strip().lower()
    return value


def _canon_value(name: str, value: str) -> str:
    if name in _ADDRESS_PROPS:
        return _canon_address(value)
    if name in _TEXT:
        return _Text(unescape_backslash(value)).to_ical().decode("utf-8")
    if name in _RULES:
        return ";".join(sorted(part.strip().upper() for part in value.split(";") if part.strip()))
    if name in _ENUM_VALUES or name in _DATES:
        return value.strip().upper()
    return value


class _Text(str):
    def to_ical(self) -> bytes:
        out = self.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")
        return out.replace("\r", "").encode("utf-8")


def _canon_params(name: str, params: Parameters, ignore: bool) -> Parameters:
    out = Parameters()
    for key in sorted(params, key=str.upper):
        up = key.upper()
        if ignore and (up in _IGNORED_PARAMS or up.startswith(_SERVER_PREFIXES)):
            continue
        raw = params[key]
        values = [raw] if isinstance(raw, str) else [str(v) for v in raw]
        if up == "VALUE" and len(values) == 1 and values[0].upper() == _DEFAULT_TYPE.get(name):
            continue
        if up in _ENUM_PARAMS:
            values = [v.upper() for v in values]
        if up in _ADDRESS_PARAMS:
            values = [_canon_address(v) for v in values]
        if up in _LIST_PARAMS:
            values = sorted(values)
        out[up] = values[0] if len(values) == 1 else values
    return out


def _canon_lines(comp: _Comp, ignore: bool) -> list[str]:
    out: list[str] = []
    for line in comp.props:
        name = line.name
        if ignore and (
            name in _IGNORED_PROPS.get(comp.name, ())
            or name in _IGNORED_EVERYWHERE
            or name.startswith(_SERVER_PREFIXES)
        ):
            continue
        params = _canon_params(name, line.params, ignore)
        values = split_on_unescaped_comma(line.value) if name in _LISTS else [line.value]
        for value in values:
            if name in _LISTS and name in _TEXT:
                value = _Text(value).to_ical().decode("utf-8")  # split_on_unescaped_comma unescaped it
            canon = _canon_value(name, value.strip() if name in _LISTS else value)
            out.append(str(Contentline.from_parts(name, params, _Raw(canon), sorted=True)))
    return sorted(out)


def _canon(comp: _Comp, ignore: bool) -> str:
    body = _canon_lines(comp, ignore)
    children = []
    for child in comp.children:
        if ignore and child.name == "VTIMEZONE" and child.first_value("TZID") in _iana():
            children.append(f"BEGIN:VTIMEZONE\nTZID:{child.first_value('TZID')}\nEND:VTIMEZONE\n")
        else:
            children.append(_canon(child, ignore))
    return "".join([f"BEGIN:{comp.name}\n", *(f"{line}\n" for line in body), *sorted(children), f"END:{comp.name}\n"])


def normalize(data: bytes) -> str:
    """The canonical text of a resource: unfolded, ``\\n`` line ends, properties and components
    sorted, names upper-case, values in one canonical form each (module docstring). Nothing is
    dropped here; what servers change is left out only by :func:`differences`. Idempotent:
    ``normalize(normalize(x).encode()) == normalize(x)``. Raises :class:`BadItem` when the
    structure is malformed."""
    return _canon(_parse(data).root, ignore=False)


def _where(comp: _Comp) -> str:
    uid = comp.first_value("UID")
    rid = comp.first_value("RECURRENCE-ID")
    out = comp.name + (f" {uid}" if uid else "")
    return out + (f" RECURRENCE-ID {rid}" if rid else "")


def _key(comp: _Comp) -> tuple[str, str, str]:
    if comp.name == "VTIMEZONE":
        return comp.name, comp.first_value("TZID") or "", ""
    rid = comp.get("RECURRENCE-ID")
    return comp.name, comp.first_value("UID") or "", _canon_value("RECURRENCE-ID", rid[0].value) if rid else ""


def _short(lines: Sequence[str]) -> str:
    text = "; ".join(lines) if lines else "nothing"
    return text if len(text) <= 200 else text[:197] + "..."


def _compare(source: _Comp, target: _Comp, where: str, out: list[str]) -> None:
    src = Counter(_canon_lines(source, True))
    tgt = Counter(_canon_lines(target, True))
    if src != tgt:
        by_name: dict[str, tuple[list[str], list[str]]] = {}
        for line in (src - tgt).elements():
            by_name.setdefault(_prop_name(line), ([], []))[0].append(line)
        for line in (tgt - src).elements():
            by_name.setdefault(_prop_name(line), ([], []))[1].append(line)
        for name in sorted(by_name):
            gone, added = by_name[name]
            if name in _REQUIRED_STAMPS and not gone and len(added) == 1:
                continue  # a required property the source lacked, which the server filled in on store
            out.append(f"{where}: {name} differs: source {_short(gone)}, target {_short(added)}")
    _compare_children(source.children, target.children, where, out)


def _prop_name(line: str) -> str:
    return re.split(r"[;:]", line, maxsplit=1)[0]


def _compare_children(source: list[_Comp], target: list[_Comp], where: str, out: list[str]) -> None:
    keyed = all(c.name in (*_COMPONENTS, "VTIMEZONE") for c in (*source, *target))
    if keyed:
        src = {_key(c): c for c in source}
        tgt = {_key(c): c for c in target}
        for key, comp in src.items():
            if key not in tgt:
                out.append(f"{_where(comp)}: missing in target")
            elif comp.name == "VTIMEZONE" and (comp.first_value("TZID") or "") in _iana():
                continue  # the server's own definition of an IANA zone (module docstring)
            else:
                _compare(comp, tgt[key], _where(comp), out)
        out.extend(f"{_where(comp)}: only in target" for key, comp in tgt.items() if key not in src)
        return
    # VALARM and other subcomponents have no identity: compared as a multiset of their texts.
    src_texts = Counter(_canon(c, True) for c in source)
    tgt_texts = Counter(_canon(c, True) for c in target)
    for text in (src_texts - tgt_texts).elements():
        out.append(f"{where}: {text.split(chr(10), 1)[0][6:]} missing in target: {_short(text.splitlines()[1:-1])}")
    for text in (tgt_texts - src_texts).elements():
        out.append(f"{where}: {text.split(chr(10), 1)[0][6:]} only in target: {_short(text.splitlines()[1:-1])}")


def differences(
    source: bytes, target: bytes, *, expected: Sequence[Rewrite] = (), client_scheduling: bool = False
) -> list[str]:
    """What differs between two copies of one resource, as short texts naming the component
    (UID, RECURRENCE-ID), the property and both sides; [] when they mean the same.

    ``expected``: the rewrites :func:`rewrite` made on the way; they are applied to ``source``
    before comparing, so the target must hold the new addresses. ``client_scheduling`` (or a
    SCHEDULE-AGENT rewrite among ``expected``) tolerates the added ``SCHEDULE-AGENT=CLIENT``.
    Raises :class:`BadItem` when either side is malformed.
    """
    mapping = {_canon_address(r.old)[7:]: r.new[7:] for r in expected if not r.property.endswith(";SCHEDULE-AGENT")}
    mapping = {k: v for k, v in mapping.items() if k}
    agent = client_scheduling or any(r.property.endswith(";SCHEDULE-AGENT") for r in expected)
    if mapping or agent:
        source, _ = rewrite(source, mapping.get, client_scheduling=agent)
    out: list[str] = []
    src, tgt = _parse(source).root, _parse(target).root
    _compare(src, tgt, "VCALENDAR", out)
    return out
