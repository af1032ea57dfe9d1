"""IMAP modified UTF-7 (RFC 3501 §5.1.3): how IMAP4rev1 spells non-ASCII folder names.

Decision table (RFC 3501 §5.1.3):

=============================  ==============================================================
input                          encoding
=============================  ==============================================================
printable ASCII except ``&``   itself (0x20..0x7e)
``&``                          ``&-``
any other run of characters    ``&`` + base64 of its UTF-16BE, ``,`` for ``/``, no ``=``
                               padding + ``-``
=============================  ==============================================================

``decode`` is strict: the peer did wrong when a name breaks the RFC, and the caller reports the odd
folder name instead of guessing. It raises :class:`MUTF7Error` (a ``ValueError``) for a non-ASCII or
control character outside a shift, an unterminated ``&``, a character outside the modified base64
alphabet, a bad base64 length, non-zero padding bits, an odd number of UTF-16 bytes, an unpaired
surrogate, and a shifted run that spells printable ASCII (the RFC says such characters MUST NOT be
encoded). Two shifted runs next to each other (``&AOk-&AOk-``) are accepted: the RFC does not forbid
them, and decoding them is unambiguous.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["MUTF7Error", "decode", "encode"]


class MUTF7Error(ValueError):
    """A folder name is not valid modified UTF-7 (or, for :func:`encode`, not encodable)."""


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _printable(ch: str) -> bool:
    return "\x20" <= ch <= "\x7e"


def _encode_run(run: str) -> str:
    try:
        raw = run.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        # Only an unpaired surrogate gets here: no server can store it, so refuse loudly.
        raise MUTF7Error(f"cannot encode unpaired surrogate in folder name: {run!r}") from exc
    b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
    return f"&{b64}-"


def encode(name: str) -> str:
    """Encode a Unicode folder name to modified UTF-7. The result is printable ASCII.

    Raises :class:`MUTF7Error` only for a name holding an unpaired surrogate.
    """
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if _printable(ch):
            if run:
                out.append(_encode_run("".join(run)))
                run.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


def _decode_run(b64: str, name: str) -> str:
    bad = sorted({ch for ch in b64 if ch not in _B64_ALPHABET})
    if bad:
        raise MUTF7Error(f"invalid modified base64 character(s) {''.join(bad)!r} in {name!r}")
    if len(b64) % 4 == 1:
        raise MUTF7Error(f"modified base64 run of impossible length {len(b64)} in {name!r}")
    std = b64.replace(",", "/")
    padded = std + "=" * (-len(std) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the checks above make this unreachable
        raise MUTF7Error(f"invalid modified base64 {b64!r} in {name!r}") from exc
    # Non-zero leftover bits mean the run was not produced by an encoder: reject, do not guess.
    if base64.b64encode(raw).decode("ascii").rstrip("=") != std:
        raise MUTF7Error(f"non-zero padding bits in modified base64 {b64!r} in {name!r}")
    if len(raw) % 2:
        raise MUTF7Error(f"odd number of UTF-16 bytes in {b64!r} in {name!r}")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MUTF7Error(f"unpaired UTF-16 surrogate in {b64!r} in {name!r}") from exc
    if any(_printable(ch) for ch in text):
        raise MUTF7Error(f"printable ASCII encoded in base64 {b64!r} in {name!r} (RFC 3501 §5.1.3)")
    return text


def decode(name: str | bytes) -> str:
    """Decode a modified UTF-7 folder name (as str or as the raw bytes of the wire) to Unicode.

    Raises :class:`MUTF7Error` for anything the RFC does not allow (see the module docstring).
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MUTF7Error(f"8-bit byte in modified UTF-7 folder name {name!r}") from exc
    out: list[str] = []
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        if ch == "&":
            end = name.find("-", i + 1)
            if end < 0:
                raise MUTF7Error(f"unterminated '&' shift in folder name {name!r}")
            out.append("&" if end == i + 1 else _decode_run(name[i + 1 : end], name))
            i = end + 1
        elif _printable(ch):
            out.append(ch)
            i += 1
        else:
            raise MUTF7Error(f"character {ch!r} is not allowed unencoded in folder name {name!r}")
    return "".join(out)
