"""objectSid / sIDHistory / objectGUID: vectors, malformed input, round-trip properties."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.formats.sid import GuidError, SidError, guid_from_str, guid_to_str, sid_from_str, sid_to_str

ADMINS = bytes.fromhex("01020000000000052000000020020000")  # BUILTIN\Administrators


def binary_sid(authority: int, *subs: int) -> bytes:
    return bytes([1, len(subs)]) + authority.to_bytes(6, "big") + b"".join(struct.pack("<I", s) for s in subs)


VECTORS = [
    (ADMINS, "S-1-5-32-544"),
    (binary_sid(5, 21, 3623811015, 3361044348, 30300820, 1013), "S-1-5-21-3623811015-3361044348-30300820-1013"),
    (binary_sid(1, 0), "S-1-1-0"),  # Everyone
    (binary_sid(5), "S-1-5"),  # no sub-authority: legal in the binary layout
    (binary_sid(5, *range(15)), "S-1-5-" + "-".join(map(str, range(15)))),
    (binary_sid(5, 0xFFFFFFFF), "S-1-5-4294967295"),
    (binary_sid(2**32, 7), "S-1-0x000100000000-7"),  # MS-DTYP: hex from 2**32 on
    (binary_sid(2**48 - 1, 7), "S-1-0xFFFFFFFFFFFF-7"),
]


@pytest.mark.parametrize(("raw", "text"), VECTORS)
def test_sid_vectors(raw: bytes, text: str) -> None:
    assert sid_to_str(raw) == text
    assert sid_from_str(text) == raw


def test_sid_text_variants_accepted() -> None:
    assert sid_from_str("s-1-5-32-544") == ADMINS
    assert sid_from_str("S-1-0x000000000005-32-544") == ADMINS
    assert sid_from_str("S-1-0xffffffffffff-7") == binary_sid(2**48 - 1, 7)
    assert sid_to_str(bytearray(ADMINS)) == "S-1-5-32-544"


BAD_BYTES = [
    (b"", "empty"),
    (b"\x01\x01\x00", "shorter than its 8-byte header"),
    (ADMINS[:-1], "but 2 sub-authorities need 16"),
    (ADMINS + b"\x00", "but 2 sub-authorities need 16"),
    (b"\x02" + ADMINS[1:], "revision is 2"),
    (b"\x01\x10" + b"\x00" * 70, "16 sub-authorities, at most 15"),
]


@pytest.mark.parametrize(("raw", "why"), BAD_BYTES)
def test_sid_to_str_rejects(raw: bytes, why: str) -> None:
    with pytest.raises(SidError, match=why):
        sid_to_str(raw)


BAD_TEXT = [
    ("", "empty"),
    ("S-1", "does not look like"),
    ("X-1-5-21", "does not look like"),
    ("S-2-5-21", "revision is 2"),
    ("S-1-5-21-abc", "sub-authority 'abc' is not a decimal"),
    ("S-1-5-21-", "sub-authority '' is not a decimal"),
    ("S-1-5--21", "sub-authority '' is not a decimal"),
    ("S-1-5-+21", "not a decimal"),
    ("S-1-5- 21", "not a decimal"),
    ("S-1-5-2_1", "not a decimal"),
    ("S-1-5-٣", "not a decimal"),  # an Arabic-Indic digit: int() would take it
    ("S-1-x-21", "authority 'x' is not a decimal"),
    ("S-1-0x-21", "not a hexadecimal"),
    ("S-1-0xg1-21", "not a hexadecimal"),
    ("S-1-281474976710656-1", "does not fit in 48 bits"),
    ("S-1-5-4294967296", "does not fit in 32 bits"),
    ("S-1-5-" + "-".join(["1"] * 16), "16 sub-authorities"),
]


@pytest.mark.parametrize(("text", "why"), BAD_TEXT)
def test_sid_from_str_rejects(text: str, why: str) -> None:
    with pytest.raises(SidError, match=why):
        sid_from_str(text)


def test_sid_wrong_types() -> None:
    with pytest.raises(SidError, match="must be bytes"):
        sid_to_str("S-1-5")  # type: ignore[arg-type]
    with pytest.raises(SidError, match="must be text"):
        sid_from_str(ADMINS)  # type: ignore[arg-type]
    assert issubclass(SidError, ValueError)


sids = st.tuples(st.integers(0, 2**48 - 1), st.lists(st.integers(0, 2**32 - 1), max_size=15)).map(
    lambda t: binary_sid(t[0], *t[1])
)


@given(sids)
def test_sid_round_trip(raw: bytes) -> None:
    text = sid_to_str(raw)
    assert sid_from_str(text) == raw
    assert sid_to_str(sid_from_str(text)) == text


@given(st.binary(max_size=80))
def test_sid_to_str_only_raises_sid_error(raw: bytes) -> None:
    with contextlib.suppress(SidError):
        assert sid_from_str(sid_to_str(raw)) == raw


@given(st.text(alphabet=st.sampled_from("S1-05x2fF ٣+_sX"), max_size=40) | st.text(max_size=40))
def test_sid_from_str_only_raises_sid_error(text: str) -> None:
    try:
        raw = sid_from_str(text)
    except SidError:
        return
    assert sid_from_str(sid_to_str(raw)) == raw


GUID = "00112233-4455-6677-8899-aabbccddeeff"
GUID_LE = bytes.fromhex("33221100554477668899aabbccddeeff")


def test_guid_vector() -> None:
    assert guid_to_str(GUID_LE) == GUID
    assert guid_from_str(GUID) == GUID_LE
    assert guid_from_str("{" + GUID.upper() + "}") == GUID_LE


@pytest.mark.parametrize("text", ["", "0011", GUID + "0", GUID.replace("-", ""), GUID.replace("0", "g"), "{" + GUID])
def test_guid_from_str_rejects(text: str) -> None:
    with pytest.raises(GuidError):
        guid_from_str(text)


@pytest.mark.parametrize("raw", [b"", GUID_LE[:15], GUID_LE + b"\x00"])
def test_guid_to_str_rejects(raw: bytes) -> None:
    with pytest.raises(GuidError, match="must be 16"):
        guid_to_str(raw)


@given(st.binary(min_size=16, max_size=16))
def test_guid_round_trip(raw: bytes) -> None:
    assert guid_from_str(guid_to_str(raw)) == raw


@given(st.text(max_size=40))
def test_guid_from_str_only_raises_guid_error(text: str) -> None:
    with contextlib.suppress(GuidError):
        guid_from_str(text)
