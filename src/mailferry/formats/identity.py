"""The ItemKey of a message: what makes two copies on two servers the same message. Pure.

The key is a hash of chosen header fields (:data:`IDENTITY_FIELDS`, fetched by the IMAP connector
with ``BODY.PEEK[HEADER.FIELDS (...)]``) and the RFC822.SIZE. Servers serve those fields
differently, and the key must not see the difference:

================================  ============================================================
server difference                 how the key ignores it
================================  ============================================================
field order (Dovecot: message     fields sorted by lower-cased name; repeated fields of one
order; Cyrus: requested order)    name keep their relative order
CRLF or LF; trailing blank line   lines split on LF, a CR before it dropped; blank lines skipped
folded lines                      unfolded; every run of whitespace (SP, HT, CR, ...) is one
                                  space; value stripped
field-name case                   lower-cased
8-bit bytes                       kept: values hashed as latin-1, so no byte is lost
other fields (a maildir or mbox   ignored: only IDENTITY_FIELDS count, so a connector may pass
connector passes a whole header)  the whole header
lines without a colon (garbage)   ignored, with any continuation lines after them
================================  ============================================================

Changing a value in any non-whitespace way, or the size, changes the key. The serialisation starts
with a version tag, so a future change of these rules cannot be mistaken for the same key.
"""

from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass
from email.header import decode_header

__all__ = ["IDENTITY_FIELDS", "Identity", "identity"]

IDENTITY_FIELDS = ("MESSAGE-ID", "DATE", "FROM", "TO", "CC", "SUBJECT")

_WANTED = frozenset(f.lower().encode("ascii") for f in IDENTITY_FIELDS)
_VERSION = "mailferry-identity-v1\n"
_VERSION_BYTES = _VERSION.encode("ascii")
_NAME = operator.itemgetter(0)
_DISPLAY_MAX = 200
# Unicode category Cc (C0, DEL, C1) -> U+FFFD, for display.
_CONTROLS = {c: "\ufffd" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ANY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # translate() is slow: only when there is one
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext
_MSGID = re.compile(rb"<[^<>]*>")


@dataclass(frozen=True)
class Identity:
    """``key``: the ItemKey (32 hex digits). The rest is for matching hints and display only."""

    key: str
    message_id: str
    subject: str
    date: str


def _fields(header_fields: bytes) -> list[tuple[bytes, bytes]]:
    """Unfold and normalise: ``[(lower-cased name, whitespace-collapsed value), ...]`` in order."""
    fields: list[tuple[bytes, list[bytes]]] = []
    current: list[bytes] | None = None
    ftext = _FIELD_NAME.fullmatch
    for line in header_fields.split(b"\n"):
        first = line[:1]
        if first == b" " or first == b"\t":
            if current is not None:
                current.append(line)  # a blank one adds nothing: whitespace is collapsed below
            continue  # a continuation of nothing (or of garbage): ignored
        name, colon, value = line.partition(b":")
        if not colon:
            if line.strip():
                current = None  # garbage; a blank line (the trailing one, present or not) is skipped
            continue
        name = name.rstrip(b" \t")  # obsolete syntax "Subject :" (RFC 5322 §4.5)
        if not ftext(name):
            current = None
            continue
        current = [value]
        fields.append((name.lower(), current))
    return [(name, b" ".join(b" ".join(parts).split())) for name, parts in fields]


def _decode_words(text: str) -> str:
    """RFC 2047 encoded-words decoded; on a malformed one (bad base64...) the raw text."""
    try:
        pairs = decode_header(text)
    except Exception:  # display only: email.header raises HeaderParseError, binascii.Error, ...
        return text
    parts: list[str] = []
    for part, charset in pairs:
        if isinstance(part, str):
            parts.append(part)
        elif charset is None:
            # decode_header escapes the unencoded stretches between encoded words this way
            parts.append(part.decode("raw-unicode-escape", errors="replace"))
        else:
            try:
                parts.append(part.decode(charset, errors="replace"))
            except (LookupError, ValueError):  # unknown charset name, or one codecs can't look up ("\x00")
                parts.append(part.decode("utf-8", errors="replace"))
    return "".join(parts)


def _display(value: bytes) -> str:
    """Decode a field value for display only: never raises, at most 200 characters."""
    if value.isascii():
        text = value.decode("ascii")
        if text.isprintable() and "=?" not in text:
            return text[:_DISPLAY_MAX]  # already one space between words (:func:`_fields`)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")  # raw 8-bit headers are mostly Latin-1/cp1252
    if "=?" in text:  # decode_header is slow: only for values that hold encoded-words
        text = _decode_words(text)
    text = " ".join(text.split())
    if _ANY_CONTROL.search(text):
        text = text.translate(_CONTROLS)
    return text[:_DISPLAY_MAX]


def identity(header_fields: bytes, size: int) -> Identity:
    """The Identity of a message from the raw bytes of its IDENTITY_FIELDS and its size.

    Never raises on any bytes (see the module docstring for what the key ignores).
    """
    fields = [f for f in _fields(header_fields) if f[0] in _WANTED]
    fields.sort(key=_NAME)  # stable: repeated fields keep their order
    # The canonical text is "name:value\n" per field with values read as latin-1, hashed as
    # UTF-8: built as bytes, which are that text's UTF-8 already when all are ASCII.
    canon = b"".join([_VERSION_BYTES, *(b"%s:%s\n" % f for f in fields), b"size:%d\n" % size])
    if not canon.isascii():
        canon = canon.decode("latin-1").encode("utf-8")
    key = hashlib.sha256(canon).hexdigest()[:32]
    first: dict[bytes, bytes] = {}
    for name, value in fields:
        first.setdefault(name, value)
    message_id = ""
    raw_id = first.get(b"message-id")
    if raw_id is not None:
        m = _MSGID.search(raw_id)
        message_id = (m.group(0) if m else raw_id).decode("utf-8", errors="replace")
    subject, date = first.get(b"subject"), first.get(b"date")
    return Identity(
        key=key,
        message_id=message_id,
        subject=_display(subject) if subject is not None else "",
        date=_display(date) if date is not None else "",
    )
