"""LDIF content records (RFC 2849) for one entry, and RDN value escaping (RFC 4514).

Used to keep a deleted entry (a merged contact) in the ledger and report, in a form ``ldapadd``
and :func:`ldif_to_entry` can restore.

Writing (:func:`entry_to_ldif`):

================================================  ============================================
value                                             written as
================================================  ============================================
``bytes`` (objectSid, objectGUID, photos...)      ``attr:: <base64>`` always
text outside SAFE-CHAR (non-ASCII, NUL, CR, LF)   ``attr:: <base64 of its UTF-8>``
text starting with space, ``:`` or ``<``           ``attr:: <base64>`` (SAFE-INIT-CHAR, §2849)
text ending with a space                          ``attr:: <base64>`` (RFC 2849 note 8)
empty text                                        ``attr:``
anything else                                     ``attr: value``
================================================  ============================================

The DN follows the same rules. Lines longer than 76 characters are folded: a newline and one
space, so every physical line is at most 76 characters. Attributes are written ``objectClass``
first, then sorted by name without case, so the same entry always gives the same text; values
keep their order. Lines end with ``\\n``; the record with one empty line.

Reading (:func:`ldif_to_entry`): the first content record of the text; ``version:`` and comment
lines are skipped, folded lines unfolded, CRLF accepted. A ``::`` value comes back as ``bytes``
(LDIF can't say whether it was text: decode with the schema when needed), a ``:`` value as
``str``. Change records, ``:<`` URLs and malformed lines raise :class:`LdifError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence

__all__ = ["LdifError", "dn_key", "entry_to_ldif", "escape_rdn_value", "ldif_to_entry", "rdn"]

LINE_WIDTH = 76

_ATTR_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*$")


class LdifError(ValueError):
    """An entry can't be written as LDIF, or a text is not the LDIF of one entry."""


def _safe(value: str) -> bool:
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return all("\x01" <= c <= "\x7f" and c not in "\n\r" for c in value)


def _line(name: str, value: str | bytes) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{name}:: {base64.b64encode(bytes(value)).decode('ascii')}"
    if not value:
        return f"{name}:"
    if _safe(value):
        return f"{name}: {value}"
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:  # an unpaired surrogate: no directory can hold it
        raise LdifError(f"{name}: value {value!r} is not encodable as UTF-8") from exc
    return f"{name}:: {base64.b64encode(raw).decode('ascii')}"


def _fold(line: str) -> list[str]:
    if len(line) <= LINE_WIDTH:
        return [line]
    out = [line[:LINE_WIDTH]]
    rest = line[LINE_WIDTH:]
    step = LINE_WIDTH - 1
    out.extend(" " + rest[i : i + step] for i in range(0, len(rest), step))
    return out


def entry_to_ldif(dn: str, attrs: Mapping[str, Sequence[str | bytes]]) -> str:
    """The LDIF content record of one entry. Raises :class:`LdifError` for an invalid attribute
    name or text that is not encodable."""
    names = list(attrs)
    for n in names:
        if not _ATTR_RE.match(n) or n.lower() == "dn":
            raise LdifError(f"entry {dn!r}: {n!r} is not an attribute name")
    names.sort(key=lambda n: (n.lower() != "objectclass", n.lower(), n))
    lines = _fold(_line("dn", dn))
    for n in names:
        values = attrs[n]
        if isinstance(values, str | bytes):  # a bare value where a list belongs: one value
            values = [values]
        for v in values:
            lines.extend(_fold(_line(n, v)))
    return "\n".join(lines) + "\n\n"


def _logical_lines(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith(" ") and out and out[-1]:
            out[-1] += line[1:]
        elif line.startswith(" ") and not (out and out[-1]):
            raise LdifError(f"continuation line {line!r} follows nothing")
        else:
            out.append(line)
    return [ln for ln in out if not ln.startswith("#")]


def _value(line: str) -> tuple[str, str | bytes]:
    name, colon, rest = line.partition(":")
    if not colon or not name:
        raise LdifError(f"line {line!r} is not 'attribute: value'")
    if rest.startswith(":"):
        b64 = rest[1:].lstrip(" ")
        try:
            return name, base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LdifError(f"{name}: invalid base64 value {b64!r}") from exc
    if rest.startswith("<"):
        raise LdifError(f"{name}: values by URL (':<') are not supported")
    return name, rest.lstrip(" ")


def ldif_to_entry(text: str) -> tuple[str, dict[str, list[bytes | str]]]:
    """The DN and attributes of the first content record in ``text``. Raises :class:`LdifError`."""
    lines = _logical_lines(text)
    i = 0
    while i < len(lines) and (not lines[i] or lines[i].lower().startswith("version:")):
        i += 1
    if i == len(lines):
        raise LdifError("no entry in the LDIF text")
    name, dn_value = _value(lines[i])
    if name.lower() != "dn":
        raise LdifError(f"an entry must start with 'dn:', not {lines[i]!r}")
    if isinstance(dn_value, bytes):
        try:
            dn = dn_value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LdifError("the base64 DN is not UTF-8") from exc
    else:
        dn = dn_value
    attrs: dict[str, list[bytes | str]] = {}
    spelling: dict[str, str] = {}
    for line in lines[i + 1 :]:
        if not line:
            break
        name, value = _value(line)
        if not _ATTR_RE.match(name):
            raise LdifError(f"entry {dn!r}: {name!r} is not an attribute name")
        if name.lower() in ("changetype", "control"):
            raise LdifError(f"entry {dn!r}: a change record, not an entry")
        key = spelling.setdefault(name.lower(), name)
        attrs.setdefault(key, []).append(value)
    return dn, attrs


def escape_rdn_value(value: str) -> str:
    """Escape an attribute value for use in a DN (RFC 4514 §2.4).

    Backslash-escaped: ``" + , ; < > \\ =``, a leading space or ``#``, a trailing space; NUL is
    written ``\\00``. Everything else, non-ASCII included, is kept as it is (RFC 4514 lets UTF-8
    stand unescaped; AD and OpenLDAP both accept it).
    """
    out: list[str] = []
    last = len(value) - 1
    for i, c in enumerate(value):
        if c == "\x00":
            out.append("\\00")
        elif c in '"+,;<>\\=' or (i == 0 and c in " #") or (i == last and c == " "):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def rdn(attr: str, value: str) -> str:
    """``rdn("CN", "Smith, John")`` -> ``CN=Smith\\, John``."""
    return f"{attr}={escape_rdn_value(value)}"


def parent_dn(dn: str) -> str:
    """The parent DN, honouring escaped commas in the first RDN ("" for a DN of one RDN)."""
    i = 0
    while i < len(dn):
        if dn[i] == "\\":
            i += 2
            continue
        if dn[i] == ",":
            return dn[i + 1 :].strip()
        i += 1
    return ""


def dn_key(dn: str) -> str:
    """A comparison key for DNs as a directory returns them (same spelling, any case): stripped
    and lower-cased. Not a full RFC 4514 normalisation: the DNs compared come from one server."""
    return dn.strip().lower()
