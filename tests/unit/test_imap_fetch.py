"""The FETCH parser on raw responses as imaplib hands them over (Dovecot and Cyrus shapes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from imapclient.datetime_util import datetime_to_INTERNALDATE

from mailferry.formats.imap_fetch import (
    Fetched,
    FetchParseError,
    _one,
    _shaped,
    format_internaldate,
    parse_fetch,
    parse_internaldate,
)

HDR = b"Message-ID: <a@b>\r\nSubject: hi\r\n\r\n"


def test_inventory_response_dovecot_order() -> None:
    data = [
        (
            b'1 (UID 7 RFC822.SIZE 120 INTERNALDATE "01-Jan-2024 09:00:00 +0100" FLAGS (\\Seen $X) '
            b"MODSEQ (12) BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM TO CC SUBJECT)] {35}",
            HDR,
        ),
        b")",
        (
            b'2 (UID 9 RFC822.SIZE 5 INTERNALDATE " 2-Feb-2024 00:00:01 -0730" FLAGS () '
            b"BODY[HEADER.FIELDS (MESSAGE-ID)] {2}",
            b"\r\n",
        ),
        b" MODSEQ (13))",
    ]
    got = parse_fetch(data)
    assert set(got) == {7, 9}
    a, b = got[7], got[9]
    assert (a.size, a.flags, a.modseq, a.literal) == (120, ("\\Seen", "$X"), 12, HDR)
    assert a.internaldate == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert b.flags == () and b.modseq == 13 and b.literal == b"\r\n"
    assert b.internaldate == datetime(2024, 2, 2, 0, 0, 1, tzinfo=timezone(-timedelta(hours=7, minutes=30)))


def test_items_after_the_literal_and_inline_empty_body() -> None:
    data = [
        (b"3 (UID 11 BODY[] {3}", b"abc"),
        b' FLAGS (\\Answered) RFC822.SIZE 3 INTERNALDATE "09-Sep-2020 10:11:12 +0000")',
        b'4 (UID 12 BODY[HEADER.FIELDS (SUBJECT)] "" RFC822.SIZE 0 FLAGS ())',
        b"5 (UID 13 BODY[HEADER.FIELDS (SUBJECT)] NIL)",
    ]
    got = parse_fetch(data)
    assert got[11].literal == b"abc" and got[11].flags == ("\\Answered",) and got[11].size == 3
    assert got[12].literal == b"" and got[13].literal == b""


def test_unsolicited_fetch_without_uid_is_ignored() -> None:
    assert parse_fetch([b"5 (FLAGS (\\Seen))", None]) == {}


def test_uid_inside_other_words_is_not_taken() -> None:
    got = parse_fetch([b"1 (X-GUID 99 UID 4 FLAGS ())"])
    assert list(got) == [4]


@pytest.mark.parametrize("raw", [b"32-Foo-2020 00:00:00 +0000", b"32-Jan-2020 00:00:00 +0000", b"garbage", b""])
def test_bad_internaldate(raw: bytes) -> None:
    with pytest.raises(FetchParseError):
        parse_internaldate(raw)


_AWARE = st.builds(
    lambda d, minutes: d.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)


@given(_AWARE)
@example(datetime(2024, 4, 2, 10, 0, 0, tzinfo=timezone(timedelta(hours=2))))
@example(datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=7, minutes=30))))
def test_format_internaldate_is_imapclients_and_reads_back(when: datetime) -> None:
    wire = format_internaldate(when)
    assert wire == datetime_to_INTERNALDATE(when).encode()
    assert parse_internaldate(wire) == when.replace(microsecond=0)


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 1, 1),  # naive: no offset to write
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=30))),  # an offset IMAP can't write
        datetime(999, 1, 1, tzinfo=UTC),  # not four digits
    ],
)
def test_format_internaldate_leaves_what_it_cannot_write(when: datetime) -> None:
    assert format_internaldate(when) is None


# -- the usual shapes, read the quick way, give what the general way gives ---------------------

_ATOMS = st.sampled_from([b"\\Seen", b"\\Answered", b"\\Flagged", b"$Label1", b"Junk", b"NonJunk", b"(", b")", b'"'])
_DATES = st.one_of(
    st.builds(
        lambda d, sign, off: (
            b"%2d-%s-%04d %02d:%02d:%02d %s%04d"
            % (d.day, d.strftime("%b").encode(), d.year, d.hour, d.minute, d.second, sign, off)
        ),
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
        st.sampled_from([b"+", b"-"]),
        st.sampled_from([0, 100, 130, 530, 1200, 2359, 9900]),
    ),
    st.binary(max_size=30),
)


@st.composite
def fetch_responses(draw: st.DrawFn) -> list[bytes | tuple[bytes, bytes]]:
    out: list[bytes | tuple[bytes, bytes]] = []
    for n in range(1, draw(st.integers(1, 4)) + 1):
        uid = draw(st.integers(1, 2**32 - 1))
        literal = draw(st.binary(max_size=40))
        if draw(st.booleans()):
            prefix = b"%d (UID %d BODY[] {%d}" % (n, uid, len(literal))
        else:
            flags = b" ".join(draw(st.lists(_ATOMS, max_size=3)))
            modseq = draw(st.one_of(st.none(), st.integers(1, 2**40)))
            section = draw(
                st.sampled_from(
                    [b"HEADER.FIELDS (MESSAGE-ID DATE FROM TO CC SUBJECT)", b"HEADER", b"", b"HEADER.FIELDS MODSEQ (7)"]
                )
            )
            prefix = (
                b'%d (UID %d RFC822.SIZE %d INTERNALDATE "%s" FLAGS (%s)' % (n, uid, len(literal), draw(_DATES), flags)
                + (b" MODSEQ (%d)" % modseq if modseq is not None else b"")
                + b" BODY[%s] {%d}" % (section, len(literal))
            )
        out += [(prefix, literal), draw(st.sampled_from([b")"] * 6 + [b" MODSEQ (3))", b" UID 9)"]))]
    return out


def _parsed(data: list[bytes | tuple[bytes, bytes]]) -> object:
    try:
        return parse_fetch(data)
    except FetchParseError:
        return FetchParseError


def _general(data: list[bytes | tuple[bytes, bytes]]) -> object:
    """What the general way (:func:`_one` on each response's whole text) reads of ``data``: each
    response is a (prefix, literal) pair and the rest of its line, as the generator makes them."""
    out: dict[int, Fetched] = {}
    try:
        for k in range(0, len(data), 2):
            (prefix, literal), rest = data[k], data[k + 1]
            assert isinstance(rest, bytes)
            got = _one(prefix + b" " + rest, literal)
            if got is not None:
                out[got.uid] = got
    except FetchParseError:
        return FetchParseError
    return out


@settings(max_examples=300)
@given(fetch_responses())
@example(
    [
        (
            b'1 (UID 7 RFC822.SIZE 3 INTERNALDATE "01-Jan-2024 09:00:00 +0100" FLAGS () '
            b"BODY[HEADER.FIELDS MODSEQ (7)] {3}",
            b"abc",
        ),
        b")",
    ]
)  # an odd section name holding "MODSEQ (n)", and no MODSEQ item: the general way reads 7
def test_usual_shapes_read_quickly_as_the_general_way_reads_them(data: list[bytes | tuple[bytes, bytes]]) -> None:
    assert _parsed(data) == _general(data)


def test_the_quick_way_takes_dovecots_responses() -> None:
    inventory = (
        b'1 (UID 7 RFC822.SIZE 35 INTERNALDATE "01-Jan-2024 09:00:00 +0100" FLAGS (\\Seen $X) MODSEQ (12) '
        b"BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM TO CC SUBJECT)] {35}"
    )
    body = b"2 (UID 9 BODY[] {35}"
    assert _shaped(inventory, HDR) == Fetched(
        7, 35, datetime(2024, 1, 1, 9, tzinfo=timezone(timedelta(hours=1))), ("\\Seen", "$X"), 12, HDR
    )
    assert _shaped(body, HDR) == Fetched(9, literal=HDR)
