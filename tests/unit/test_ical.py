"""iCalendar resources: inspect, split, rewrite, normalize, differences (formats/ical)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.formats import ical
from mailferry.formats.ical import BadItem


def cal(*body: str, eol: str = "\r\n", head: tuple[str, ...] = ("VERSION:2.0", "PRODID:-//test//EN")) -> bytes:
    return eol.join(("BEGIN:VCALENDAR", *head, *body, "END:VCALENDAR", "")).encode()


def event(*props: str, uid: str = "u1") -> tuple[str, ...]:
    return ("BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20240101T000000Z", "DTSTART:20240102T090000Z", *props, "END:VEVENT")


TZ = (
    "BEGIN:VTIMEZONE", "TZID:Custom/Zone", "BEGIN:STANDARD", "DTSTART:19700101T000000",
    "TZOFFSETFROM:+0100", "TZOFFSETTO:+0100", "END:STANDARD", "END:VTIMEZONE",
)  # fmt: skip

MEETING = cal(
    *event(
        "SUMMARY:Plan\\, review",
        "ORGANIZER;CN=Alice:mailto:Alice@Old.Example",
        "ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR:MAILTO:alice@old.example",
        'ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;DELEGATED-FROM="mailto:carol@old.example":mailto:bob@old.example',
        'ATTENDEE;PARTSTAT=DELEGATED;DELEGATED-TO="mailto:bob@old.example";SENT-BY="mailto:dan@old.example":'
        "mailto:carol@old.example",
        "ATTENDEE;PARTSTAT=TENTATIVE:mailto:ext@elsewhere.example",
        "RRULE:FREQ=WEEKLY;COUNT=3",
        "X-CUSTOM;X-P=1:keep me",
        "ATTACH;ENCODING=BASE64;VALUE=BINARY;FMTTYPE=text/plain:aGVsbG8=",
        "ATTACH:https://files.example/a.pdf",
        "BEGIN:VALARM", "ACTION:EMAIL", "TRIGGER:-PT5M", "SUMMARY:r", "DESCRIPTION:d",
        "ATTENDEE:mailto:alice@old.example", "END:VALARM",
    ),
    "BEGIN:VEVENT", "UID:u1", "RECURRENCE-ID:20240109T090000Z", "DTSTAMP:20240101T000000Z",
    "DTSTART:20240109T100000Z", "ORGANIZER:mailto:alice@old.example",
    "ATTENDEE;PARTSTAT=DECLINED:mailto:bob@old.example", "END:VEVENT",
)  # fmt: skip

MAP = {"alice@old.example": "alice@new.example", "bob@old.example": "bob@new.example",
       "carol@old.example": "carol@new.example", "dan@old.example": "dan@new.example"}  # fmt: skip


# ----------------------------------------------------------------------------- inspect


def test_inspect_reads_the_master() -> None:
    obj = ical.inspect(MEETING)
    assert obj.uid == "u1"
    assert obj.components == ("VEVENT",)
    assert obj.summary == "Plan, review"
    assert obj.start == "20240102T090000Z"
    assert obj.has_attendees
    assert obj.organizer == "mailto:Alice@Old.Example"
    assert obj.recurrence_ids == ("20240109T090000Z",)
    assert obj.problems == ()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (cal(*event())[:-15], "no END:VCALENDAR"),
        (b"BEGIN:VEVENT\r\nUID:1\r\nEND:VEVENT\r\n", "no BEGIN:VCALENDAR"),
        (cal(*event()) + cal(*event()), "two VCALENDARs in one resource"),
        (cal(*event()) + b"X-JUNK:1\r\n", "X-JUNK after END:VCALENDAR"),
        (cal("BEGIN:VEVENT", "UID:1", "END:VTODO"), "END:VTODO at line 6 closes BEGIN:VEVENT"),
        (cal("BEGIN:VEVENT", "UID:1"), "END:VCALENDAR at line 6 closes BEGIN:VEVENT"),
        (cal("BEGIN:VEVENT", "UID:1")[:-15], "no END:VEVENT"),
        (cal(*event()).replace(b"UID:u1\r\n", b""), "no UID"),
        (cal(*event(uid="A"), *event(uid="B")), "two UIDs in one resource (A, B)"),
        (cal(*event(uid="A"), *event(uid="B"), *event(uid="C")), "3 UIDs in one resource (A, B, C)"),
        (cal(*event(), "BEGIN:VTODO", "UID:u1", "END:VTODO"),
         "components of two kinds in one resource (VEVENT, VTODO)"),
        (cal(*event(), *event()), "2 components without RECURRENCE-ID for one UID"),
        (cal(*event("RECURRENCE-ID:20240109T090000Z"), *event("RECURRENCE-ID:20240109T090000Z")),
         "two overrides with RECURRENCE-ID 20240109T090000Z"),
        (cal(*event("RECURRENCE-ID:20240109T090000Z", "RRULE:FREQ=DAILY")),
         "RRULE on a component that has RECURRENCE-ID"),
        (cal(*event("SUMMARY:a", "continued without a space")), "bad line folding at line 9"),
        (b" folded\r\n" + cal(*event()), "bad line folding at line 1"),
        (cal(*event("SUMMARY:caf\xe9")).replace("é".encode(), b"\xe9"), "not UTF-8 (byte 0xE9 at offset 135)"),
        (cal(*event("SUMMARY:a\rb")), "lone CR in line 8"),
        (cal(*event(), head=("VERSION:1.0",)), "VERSION 1.0 is not iCalendar 2.0"),
        (cal(), "no VEVENT, VTODO or VJOURNAL"),
        (cal(*TZ), "only VTIMEZONE, no component"),
        (cal("BEGIN:X-THING", "UID:1", "END:X-THING"), "no VEVENT, VTODO or VJOURNAL (only X-THING)"),
    ],
)  # fmt: skip
def test_malformed_is_a_bad_item(data: bytes, reason: str) -> None:
    with pytest.raises(BadItem) as err:
        ical.inspect(data)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (cal(*event("DTEND;TZID=Foo/Bar:20240102T100000")), "unknown TZID Foo/Bar"),
        (cal(*event("DTEND;TZID=Europe/Paris:20240102T100000")), "TZID Europe/Paris has no VTIMEZONE (an IANA name)"),
        (cal(*event(), head=()), "no VERSION"),
        (cal(*event(), head=("VERSION:2.0",)), "no PRODID"),
        (b"\xef\xbb\xbf" + cal(*event()), "starts with a byte order mark"),
        (cal(*event()).replace(b"UID:u1\r\n", b"UID:u1\r\n\r\n"), "empty line 6"),
        (cal(*event("DTEND:2024BAD")), "VEVENT DTEND: Expected time, got: 2024BAD"),
        (cal(*event(), "BEGIN:X-THING", "END:X-THING"), "unknown component X-THING"),
    ],
)
def test_unusual_is_a_problem_not_a_refusal(data: bytes, problem: str) -> None:
    assert problem in ical.inspect(data).problems


def test_a_tzid_with_its_vtimezone_is_fine() -> None:
    assert ical.inspect(cal(*TZ, *event("DTEND;TZID=Custom/Zone:20240102T100000"))).problems == ()


def test_folded_lf_only_and_tab_folds_are_read() -> None:
    data = cal(*event("SUMMARY:a long", "\tsummary", " folded"), eol="\n")
    assert ical.inspect(data).summary == "a longsummaryfolded"


# ----------------------------------------------------------------------------- split


def test_split_gives_one_resource_per_uid_with_the_zones_it_uses() -> None:
    data = cal(*TZ, *event("DTEND;TZID=Custom/Zone:20240102T100000", uid="A"), *event(uid="B"),
               "BEGIN:VEVENT", "UID:A", "RECURRENCE-ID:20240109T090000Z", "END:VEVENT")  # fmt: skip
    parts = ical.split(data)
    assert [ical.inspect(p).uid for p in parts] == ["A", "B"]
    assert b"VTIMEZONE" in parts[0] and b"VTIMEZONE" not in parts[1]
    assert ical.inspect(parts[0]).recurrence_ids == ("20240109T090000Z",)
    assert all(p.startswith(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n") for p in parts)


def test_split_of_one_uid_is_the_input() -> None:
    assert ical.split(MEETING) == [MEETING]


# ----------------------------------------------------------------------------- rewrite


def test_rewrite_maps_values_and_address_parameters() -> None:
    out, made = ical.rewrite(MEETING, MAP.get, client_scheduling=False)
    text = ical.normalize(out)
    assert "MAILTO:alice@new.example" in out.decode()  # the mailto: prefix keeps its case
    assert "ORGANIZER;CN=Alice:mailto:alice@new.example" in text
    assert 'DELEGATED-FROM="mailto:carol@new.example"' in text
    assert 'DELEGATED-TO="mailto:bob@new.example"' in text
    assert 'SENT-BY="mailto:dan@new.example"' in text
    assert "mailto:ext@elsewhere.example" in text
    assert "old.example" not in text
    assert {(r.property, r.old, r.new) for r in made} >= {
        ("ORGANIZER", "mailto:Alice@Old.Example", "mailto:alice@new.example"),
        ("ATTENDEE;SENT-BY", "mailto:dan@old.example", "mailto:dan@new.example"),
    }
    assert all(r.component_uid == "u1" for r in made)
    assert any(r.recurrence_id == "20240109T090000Z" for r in made)
    # everything else is carried byte for byte
    untouched = [line for line in MEETING.split(b"\r\n") if b"old.example" not in line.lower()]
    assert all(line in out.split(b"\r\n") for line in untouched)


def test_rewrite_that_maps_nothing_returns_the_input_object() -> None:
    out, made = ical.rewrite(MEETING, lambda a: None, client_scheduling=False)
    assert out is MEETING and made == []
    out, made = ical.rewrite(MEETING, lambda a: a.upper(), client_scheduling=False)  # same address
    assert out is MEETING and made == []


def test_client_scheduling_marks_attendees_and_organizer_and_keeps_partstat() -> None:
    out, made = ical.rewrite(MEETING, lambda a: None, client_scheduling=True)
    lines = [line for line in ical.normalize(out).splitlines() if line.startswith(("ATTENDEE", "ORGANIZER"))]
    assert len(lines) == 8  # 5 + 2 in the override + the VALARM recipient
    alarm = "ATTENDEE:mailto:alice@old.example"
    assert all("SCHEDULE-AGENT=CLIENT" in line for line in lines if line != alarm)
    assert alarm in lines  # a VALARM recipient is not scheduled
    for partstat in ("ACCEPTED", "NEEDS-ACTION", "DELEGATED", "TENTATIVE", "DECLINED"):
        assert f"PARTSTAT={partstat}" in out.decode()
    assert {r.property for r in made} == {"ATTENDEE;SCHEDULE-AGENT", "ORGANIZER;SCHEDULE-AGENT"}


def test_client_scheduling_leaves_events_without_attendees_and_existing_client_marks() -> None:
    data = cal(*event("ORGANIZER:mailto:a@x.example"))
    assert ical.rewrite(data, lambda a: None, client_scheduling=True) == (data, [])
    marked = cal(*event("ORGANIZER;SCHEDULE-AGENT=CLIENT:mailto:a@x", "ATTENDEE;SCHEDULE-AGENT=client:mailto:b@x"))
    assert ical.rewrite(marked, lambda a: None, client_scheduling=True) == (marked, [])
    server = cal(*event("ATTENDEE;SCHEDULE-AGENT=SERVER:mailto:b@x"))
    out, made = ical.rewrite(server, lambda a: None, client_scheduling=True)
    assert b"SCHEDULE-AGENT=CLIENT" in out and made[0].old == "SERVER"


def test_rewrite_refolds_long_lines_with_the_file_line_ending() -> None:
    long = "ATTENDEE;CN=" + "x" * 90 + ":mailto:alice@old.example"
    for eol in ("\r\n", "\n"):
        out, _ = ical.rewrite(cal(*event(long), eol=eol), MAP.get, client_scheduling=False)
        assert all(len(line.encode()) <= 75 for line in out.decode().split(eol))
        assert ("\r" in out.decode()) == (eol == "\r\n")
        assert "alice@new.example" in ical.normalize(out)


def test_rewrite_leaves_non_mailto_addresses() -> None:
    data = cal(*event("ATTENDEE:urn:uuid:alice@old.example", "ORGANIZER:https://old.example/alice"))
    assert ical.rewrite(data, MAP.get, client_scheduling=False) == (data, [])


def test_rewrite_then_differences_with_the_rewrites_is_empty() -> None:
    out, made = ical.rewrite(MEETING, MAP.get, client_scheduling=True)
    assert ical.differences(MEETING, out, expected=made) == []
    assert ical.differences(MEETING, out) != []
    # the target must really hold the new addresses
    assert ical.differences(MEETING, MEETING, expected=made) != []


# ----------------------------------------------------------------------------- normalize / differences


def test_normalize_ignores_form_but_not_meaning() -> None:
    a = cal(*event("SUMMARY:Lunch, with Bob", "CATEGORIES:Work,Food", "RRULE:FREQ=WEEKLY;BYDAY=MO,WE",
                   "ATTENDEE;ROLE=CHAIR;PARTSTAT=ACCEPTED:mailto:Bob@Example.org", "STATUS:confirmed",
                   "DTEND;VALUE=DATE-TIME:20240102T100000Z"))  # fmt: skip
    b = cal(
        "BEGIN:VEVENT", "dtend:20240102T100000Z", "status:CONFIRMED", "CATEGORIES:Food", "categories:Work",
        "RRULE:BYDAY=MO,WE;FREQ=WEEKLY", "attendee;partstat=accepted;role=CHAIR:MAILTO:bob@example.org",
        "SUMMARY:Lunch\\, with", "  Bob", "DTSTART:20240102T090000Z", "DTSTAMP:20240101T000000Z", "UID:u1",
        "END:VEVENT", eol="\n", head=("PRODID:-//test//EN", "VERSION:2.0"),
    )  # fmt: skip
    assert ical.normalize(a) == ical.normalize(b)
    assert ical.differences(a, b) == []
    c = a.replace(b"DTSTAMP:20240101T000000Z", b"DTSTAMP:20240101T000001Z")
    assert ical.differences(a, c) == [
        "VEVENT u1: DTSTAMP differs: source DTSTAMP:20240101T000000Z, target DTSTAMP:20240101T000001Z"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("SEQUENCE:0", "SEQUENCE:1"), "VEVENT u1: SEQUENCE differs: source SEQUENCE:0, target SEQUENCE:1"),
        (("PARTSTAT=ACCEPTED", "PARTSTAT=DECLINED"), "VEVENT u1: ATTENDEE differs"),
        (("X-CUSTOM:1\r\n", ""), "VEVENT u1: X-CUSTOM differs: source X-CUSTOM:1, target nothing"),
        (("TRIGGER:-PT5M", "TRIGGER:-PT10M"), "VEVENT u1: VALARM missing in target"),
        (("END:VEVENT\r\nEND:VCALENDAR", "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:u1\r\n"
          "RECURRENCE-ID:20240109T090000Z\r\nEND:VEVENT\r\nEND:VCALENDAR"),
         "VEVENT u1 RECURRENCE-ID 20240109T090000Z: only in target"),
    ],
)  # fmt: skip
def test_differences_name_component_property_and_sides(change: tuple[str, str], expected: str) -> None:
    source = cal(*event("SEQUENCE:0", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:b@x", "X-CUSTOM:1",
                        "BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-PT5M", "DESCRIPTION:x", "END:VALARM"))  # fmt: skip
    target = source.replace(change[0].encode(), change[1].encode())
    assert target != source
    found = ical.differences(source, target)
    assert found and found[0].startswith(expected), found


def test_differences_ignore_what_servers_change_on_store() -> None:
    source = cal(*event("ATTENDEE;PARTSTAT=ACCEPTED:mailto:b@x"), head=("VERSION:2.0", "PRODID:-//a//EN",
                 "METHOD:PUBLISH"))  # fmt: skip
    target = cal(
        *event("ATTENDEE;PARTSTAT=ACCEPTED;SCHEDULE-STATUS=1.2;X-JMAP-ROLE=attendee:mailto:b@x",
               "X-JMAP-SENT-BY:b@x", "X-LIC-ERROR:whatever"),
        head=("VERSION:2.0", "PRODID:-//CyrusIMAP.org/Cyrus 3.8//EN"),
    )  # fmt: skip
    assert ical.differences(source, target) == []
    assert ical.normalize(source) != ical.normalize(target)  # normalize itself drops nothing


def test_iana_vtimezone_content_is_not_compared_custom_is() -> None:
    paris = tuple(line.replace("Custom/Zone", "Europe/Paris") for line in TZ)
    a = cal(*paris, *event("DTEND;TZID=Europe/Paris:20240102T100000"))
    b = a.replace(b"TZOFFSETTO:+0100", b"TZOFFSETTO:+0200")
    assert ical.differences(a, b) == []
    c = cal(*TZ, *event("DTEND;TZID=Custom/Zone:20240102T100000"))
    assert ical.differences(c, c.replace(b"TZOFFSETTO:+0100", b"TZOFFSETTO:+0200")) != []


def test_client_scheduling_is_tolerated_only_when_told() -> None:
    source = cal(*event("ORGANIZER:mailto:a@x", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:b@x"))
    target, _ = ical.rewrite(source, lambda a: None, client_scheduling=True)
    assert ical.differences(source, target, client_scheduling=True) == []
    assert len(ical.differences(source, target)) == 2


# ----------------------------------------------------------------------------- properties

_names = st.sampled_from(["SUMMARY", "LOCATION", "X-THING", "CATEGORIES", "COMMENT", "DESCRIPTION"])
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
_addresses = st.lists(st.sampled_from(sorted(MAP) + ["ext@else.example"]), min_size=1, max_size=4)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")


@st.composite
def _events(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    props = [f"{draw(_names)}:{_escape(draw(_values))}" for _ in range(draw(st.integers(0, 6)))]
    people = [f"ATTENDEE;PARTSTAT={draw(st.sampled_from(['ACCEPTED', 'DECLINED', 'NEEDS-ACTION']))}:mailto:{a}"
              for a in draw(_addresses)]  # fmt: skip
    return props, people


def _fold(line: str, width: int) -> list[str]:
    out = [line[:width]]
    out.extend(" " + line[i : i + width] for i in range(width, len(line), width))
    return out


@settings(max_examples=60, deadline=None)
@given(_events(), st.randoms(use_true_random=False), st.integers(10, 80), st.sampled_from(["\r\n", "\n"]))
def test_normalize_is_idempotent_and_blind_to_order_and_folding(
    drawn: tuple[list[str], list[str]], rnd: object, width: int, eol: str
) -> None:
    props, people = drawn
    a = cal(*event(*props, *people))
    shuffled = props + people
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    b = cal(*event(*[part for line in shuffled for part in _fold(line, width)]), eol=eol)
    assert ical.normalize(a) == ical.normalize(b)
    assert ical.normalize(ical.normalize(a).encode()) == ical.normalize(a)
    assert ical.differences(a, b) == []


@settings(max_examples=60, deadline=None)
@given(_events(), st.booleans(), st.dictionaries(st.sampled_from(sorted(MAP)), st.just("x@new.example")))
def test_rewrite_then_differences_is_empty_and_partstat_survives(
    drawn: tuple[list[str], list[str]], mark: bool, mapping: dict[str, str]
) -> None:
    props, people = drawn
    data = cal(*event("ORGANIZER:mailto:alice@old.example", *props, *people))
    assert ical.rewrite(data, lambda a: None, client_scheduling=False) == (data, [])
    out, made = ical.rewrite(data, mapping.get, client_scheduling=mark)
    assert ical.differences(data, out, expected=made) == []
    partstats = sorted(p.split(";")[1].split(":")[0].removeprefix("PARTSTAT=") for p in people)
    assert sorted(line.split("PARTSTAT=")[1][:20].split(";")[0].split(":")[0]
                  for line in ical.normalize(out).splitlines() if "PARTSTAT=" in line) == partstats  # fmt: skip
