"""Windows security identifiers (objectSid, sIDHistory) and AD objectGUID, binary <-> text.

Binary SID layout (MS-DTYP §2.4.2.2)::

    byte 0      revision, always 1
    byte 1      sub-authority count N, 0..15
    bytes 2-7   identifier authority, 48-bit big-endian
    then N x 4  sub-authorities, 32-bit little-endian each

Text form (MS-DTYP §2.4.2.1): ``S-1-<authority>-<sub>-<sub>...``, the authority in decimal below
2**32 and as ``0x`` + 12 upper-case hex digits from there on. :func:`sid_to_str` writes that
canonical form; :func:`sid_from_str` also takes a lower-case ``s`` and a hex authority of any case.

objectGUID is 16 bytes in the Microsoft GUID layout: the first three fields little-endian, the
last eight bytes as they are (``uuid.UUID(bytes_le=...)``).

Both directions are strict: the directory did wrong when a value breaks the layout, and the caller
reports the entry by name. Malformed input raises :class:`SidError` / :class:`GuidError` (both
``ValueError``) and nothing else.
"""

from __future__ import annotations

import uuid

__all__ = ["GuidError", "SidError", "guid_from_str", "guid_to_str", "sid_from_str", "sid_to_str"]

MAX_SUB_AUTHORITIES = 15
_MAX_AUTHORITY = 2**48
_MAX_SUB = 2**32


class SidError(ValueError):
    """A security identifier is malformed (binary or text)."""


class GuidError(ValueError):
    """An objectGUID is malformed (binary or text)."""


def sid_to_str(b: bytes) -> str:
    """Binary SID -> ``S-1-5-21-...``. Raises :class:`SidError`."""
    if not isinstance(b, bytes | bytearray | memoryview):
        raise SidError(f"SID must be bytes, not {type(b).__name__}")
    b = bytes(b)
    if not b:
        raise SidError("SID is empty")
    if len(b) < 8:
        raise SidError(f"SID is {len(b)} bytes, shorter than its 8-byte header")
    if b[0] != 1:
        raise SidError(f"SID revision is {b[0]}, only revision 1 exists")
    count = b[1]
    if count > MAX_SUB_AUTHORITIES:
        raise SidError(f"SID claims {count} sub-authorities, at most {MAX_SUB_AUTHORITIES} are allowed")
    if len(b) != 8 + 4 * count:
        raise SidError(f"SID is {len(b)} bytes, but {count} sub-authorities need {8 + 4 * count}")
    authority = int.from_bytes(b[2:8], "big")
    subs = [int.from_bytes(b[8 + 4 * i : 12 + 4 * i], "little") for i in range(count)]
    auth_text = str(authority) if authority < 2**32 else f"0x{authority:012X}"
    return "-".join(["S-1", auth_text, *map(str, subs)])


def _number(part: str, what: str, text: str) -> int:
    # int() would accept "+5", " 5", "5_0" and non-ASCII digits: a SID has none of those.
    if not part or not (part.isascii() and part.isdigit()):
        raise SidError(f"SID {text!r}: {what} {part!r} is not a decimal number")
    return int(part)


def sid_from_str(s: str) -> bytes:
    """``S-1-5-21-...`` -> binary SID. Raises :class:`SidError`."""
    if not isinstance(s, str):
        raise SidError(f"SID must be text, not {type(s).__name__}")
    if not s:
        raise SidError("SID is empty")
    parts = s.split("-")
    if parts[0] not in ("S", "s") or len(parts) < 3:
        raise SidError(f"SID {s!r} does not look like S-1-<authority>-<sub-authority>...")
    revision = _number(parts[1], "revision", s)
    if revision != 1:
        raise SidError(f"SID {s!r}: revision is {revision}, only revision 1 exists")
    auth = parts[2]
    if auth[:2] in ("0x", "0X"):
        digits = auth[2:]
        if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise SidError(f"SID {s!r}: authority {auth!r} is not a hexadecimal number")
        authority = int(digits, 16)
    else:
        authority = _number(auth, "authority", s)
    if authority >= _MAX_AUTHORITY:
        raise SidError(f"SID {s!r}: authority {authority} does not fit in 48 bits")
    subs = [_number(p, "sub-authority", s) for p in parts[3:]]
    if len(subs) > MAX_SUB_AUTHORITIES:
        raise SidError(f"SID {s!r} has {len(subs)} sub-authorities, at most {MAX_SUB_AUTHORITIES} are allowed")
    for sub in subs:
        if sub >= _MAX_SUB:
            raise SidError(f"SID {s!r}: sub-authority {sub} does not fit in 32 bits")
    return bytes([1, len(subs)]) + authority.to_bytes(6, "big") + b"".join(x.to_bytes(4, "little") for x in subs)


def guid_to_str(b: bytes) -> str:
    """Binary objectGUID (16 bytes, Microsoft layout) -> ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""
    if not isinstance(b, bytes | bytearray | memoryview):
        raise GuidError(f"objectGUID must be bytes, not {type(b).__name__}")
    if len(b) != 16:
        raise GuidError(f"objectGUID is {len(b)} bytes, it must be 16")
    return str(uuid.UUID(bytes_le=bytes(b)))


def guid_from_str(s: str) -> bytes:
    """Canonical GUID text (braces and case tolerated) -> the 16 bytes AD stores."""
    if not isinstance(s, str):
        raise GuidError(f"GUID must be text, not {type(s).__name__}")
    t = s.strip()
    if t.startswith("{") and t.endswith("}"):
        t = t[1:-1]
    if len(t) != 36 or [len(g) for g in t.split("-")] != [8, 4, 4, 4, 12]:
        raise GuidError(f"GUID {s!r} is not in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    if not all(c in "0123456789abcdefABCDEF" for c in t.replace("-", "")):
        raise GuidError(f"GUID {s!r} holds a character that is not hexadecimal")
    return uuid.UUID(t).bytes_le
