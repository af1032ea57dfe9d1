"""Modified UTF-7 (RFC 3501 §5.1.3): vectors, malformed input, round-trip properties."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.formats.mutf7 import MUTF7Error, decode, encode

# Unicode text an IMAP folder name can hold: anything but unpaired surrogates.
names = st.text(st.characters(exclude_categories=("Cs",)))

VECTORS = [
    ("", ""),
    ("INBOX", "INBOX"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
    ("☺!", "&Jjo-!"),
    ("&", "&-"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("&&", "&-&-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Éléments envoyés", "&AMk-l&AOk-ments envoy&AOk-s"),
    ("Gelöschte Elemente", "Gel&APY-schte Elemente"),
    ("😀", "&2D3eAA-"),  # outside the BMP: a UTF-16 surrogate pair
    ("a\tb", "a&AAk-b"),  # control characters are not printable: encoded
    ("\x7f", "&AH8-"),
    ("~/-,+", "~/-,+"),
    ("日本語&", "&ZeVnLIqe-&-"),
]


@pytest.mark.parametrize(("text", "wire"), VECTORS)
def test_encode_vectors(text: str, wire: str) -> None:
    assert encode(text) == wire


@pytest.mark.parametrize(("text", "wire"), VECTORS)
def test_decode_vectors(text: str, wire: str) -> None:
    assert decode(wire) == text
    assert decode(wire.encode("ascii")) == text


def test_adjacent_shifts_are_accepted() -> None:
    assert decode("&AOk-&AOk-") == "éé"


MALFORMED = [
    ("&", "unterminated"),
    ("abc&Jjo", "unterminated"),
    ("&A-", "impossible length"),
    ("&AAAAA-", "impossible length"),
    ("&Jj/-", "invalid modified base64"),
    ("&Jj=-", "invalid modified base64"),
    ("&Jj o-", "invalid modified base64"),
    ("&Jjp-", "padding bits"),
    ("&AA-", "odd number"),
    ("&2D0-", "surrogate"),  # a lone high surrogate
    ("&3gA-", "surrogate"),  # a lone low surrogate
    ("&AGE-", "printable ASCII"),  # 'a' must not be encoded
    ("&ACY-", "printable ASCII"),  # '&' must be spelled &-
    ("é", "not allowed unencoded"),
    ("a\tb", "not allowed unencoded"),
    ("\x7f", "not allowed unencoded"),
]


@pytest.mark.parametrize(("wire", "why"), MALFORMED)
def test_decode_rejects_malformed(wire: str, why: str) -> None:
    with pytest.raises(MUTF7Error, match=why):
        decode(wire)


def test_decode_rejects_8bit_bytes() -> None:
    with pytest.raises(MUTF7Error, match="8-bit"):
        decode("Entwürfe".encode())


def test_error_is_a_value_error() -> None:
    assert issubclass(MUTF7Error, ValueError)


def test_encode_rejects_unpaired_surrogate() -> None:
    with pytest.raises(MUTF7Error, match="surrogate"):
        encode("a\ud800b")


@given(names)
def test_round_trip(text: str) -> None:
    assert decode(encode(text)) == text
    assert decode(encode(text).encode("ascii")) == text


@given(names)
def test_encode_gives_printable_ascii(text: str) -> None:
    assert all(0x20 <= ord(ch) <= 0x7E for ch in encode(text))


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="&")))
def test_printable_ascii_stands_for_itself(text: str) -> None:
    assert encode(text) == text
    assert decode(text) == text


@given(names)
def test_encoding_is_canonical(text: str) -> None:
    wire = encode(text)
    assert encode(decode(wire)) == wire


@given(st.one_of(st.text(), st.binary()))
def test_decode_raises_only_mutf7error(wire: str | bytes) -> None:
    with contextlib.suppress(MUTF7Error):
        decode(wire)


@given(st.text(st.sampled_from("&-AZaz09+,/=Jjo é")))
def test_decode_of_shift_soup_raises_only_mutf7error(wire: str) -> None:
    try:
        text = decode(wire)
    except MUTF7Error:
        return
    assert decode(encode(text)) == text


@given(names)
def test_agrees_with_imapclient(text: str) -> None:
    imap_utf7 = pytest.importorskip("imapclient.imap_utf7")
    assert imap_utf7.encode(text) == encode(text).encode("ascii")
    assert imap_utf7.decode(encode(text).encode("ascii")) == text
