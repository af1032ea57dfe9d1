"""vCard address object resources (vCard 2.1, RFC 2426 3.0, RFC 6350 4.0; CardDAV RFC 6352 §5.1):
inspect, normalise and compare by meaning, convert 2.1 to 3.0. Pure: bytes in, values out.

Terminology:

card        the bytes of one address object resource: exactly one VCARD.
meaning     what a card says, whatever its version: the canonical lines of :func:`normalize`.

Parsing is vobject's (``readComponents(..., allowQP=True)``: 2.1 QUOTED-PRINTABLE soft breaks,
CHARSET, bare TYPE parameters); this module never edits vCard text itself.

Malformed (:class:`BadItem`): not UTF-8, a line vobject can't parse, not exactly one VCARD, no
VERSION or one other than 2.1/3.0/4.0, no UID (RFC 6352 §5.1 requires it). Unusual
(``Card.problems``): no FN (required by 3.0 and 4.0: the server decides), a byte order mark.

Comparison is by meaning, because servers convert: Cyrus serves a 4.0 card as 3.0. Normalised:

* names upper-case, groups (``item1.``) dropped, parameters other than TYPE and PREF dropped;
  TYPE values lower-case as a set, from ``TYPE=a,b``, ``TYPE=a;TYPE=b`` and 2.1 bare ``HOME``;
  ``pref`` (3.0) and ``PREF=n`` (4.0) both become ``PREF``; the defaults ``internet`` (EMAIL) and
  ``voice`` (TEL) and media types of PHOTO/LOGO/SOUND dropped;
* X-ADDRESSBOOKSERVER-KIND is KIND, X-ADDRESSBOOKSERVER-MEMBER is MEMBER (Apple's 3.0 names);
* N and ADR compared component by component, ORG without trailing empty units; CATEGORIES and
  NICKNAME one value a line (``a,b`` is two lines, as Cyrus splits them);
* PHOTO/LOGO/SOUND/KEY data (3.0 ``ENCODING=b``, 4.0 ``data:...;base64,``) compared by the
  SHA-256 of the decoded bytes; TEL without ``tel:``; EMAIL and KIND lower-case; BDAY,
  ANNIVERSARY and REV without ``-`` and ``:``;
* not compared: VERSION and PRODID (a server converting versions rewrites both).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import vobject
import vobject.base
from icalendar.parser import Contentlines

from mailferry.formats.ical import BadItem

__all__ = ["BadItem", "Card", "differences", "inspect", "is_v21", "normalize", "to_v30"]

VERSIONS = ("2.1", "3.0", "4.0")


@dataclass(frozen=True, slots=True)
class Card:
    uid: str
    version: str
    fn: str | None = None
    kind: str | None = None  # KIND or X-ADDRESSBOOKSERVER-KIND, lower-case; None: individual
    problems: tuple[str, ...] = ()


_ALIASES = {"X-ADDRESSBOOKSERVER-KIND": "KIND", "X-ADDRESSBOOKSERVER-MEMBER": "MEMBER"}
_BINARY = frozenset({"PHOTO", "LOGO", "SOUND", "KEY"})
_LISTS = frozenset({"CATEGORIES", "NICKNAME"})
_DATES = frozenset({"BDAY", "ANNIVERSARY", "REV"})
_DEFAULT_TYPES = {"EMAIL": {"internet"}, "TEL": {"voice"}}
_NOT_COMPARED = frozenset({"VERSION", "PRODID"})


def _read(data: bytes) -> tuple[Any, list[str], str]:
    problems: list[str] = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        problems.append("starts with a byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadItem(f"not UTF-8 (byte 0x{data[exc.start]:02X} at offset {exc.start})") from exc
    if "BEGIN:VCARD" not in text.upper():
        raise BadItem("no BEGIN:VCARD")
    try:
        cards = list(vobject.readComponents(text, allowQP=True))
    except vobject.base.ParseError as exc:
        number = getattr(exc, "lineNumber", None)
        raise BadItem(f"bad content line {number}" if number else f"unreadable: {str(exc)[:100]}") from exc
    except Exception as exc:  # vobject raises assorted types on odd input; the peer's fault
        raise BadItem(f"unreadable: {type(exc).__name__}: {str(exc)[:100]}") from exc
    if not cards:
        raise BadItem("no BEGIN:VCARD")
    if len(cards) > 1:
        raise BadItem(f"{'two' if len(cards) == 2 else len(cards)} vCards in one resource")
    card = cards[0]
    if card.name.upper() != "VCARD":
        raise BadItem(f"{card.name}, not VCARD")
    return card, problems, text


def _first(card: Any, name: str) -> str | None:
    for line in card.lines():
        if line.name.upper() == name:
            return str(line.value)
    return None


def _version(card: Any) -> str:
    version = _first(card, "VERSION")
    if version is None:
        raise BadItem("no VERSION")
    version = version.strip()
    if version not in VERSIONS:
        raise BadItem(f"VERSION {version} is not 2.1, 3.0 or 4.0")
    return version


def inspect(data: bytes) -> Card:
    """Read one card; raise :class:`BadItem` when it is malformed."""
    card, problems, _ = _read(data)
    version = _version(card)
    uid = _first(card, "UID")
    if not uid:
        raise BadItem("no UID")
    fn = _first(card, "FN")
    if fn is None and version != "2.1":
        problems.append("no FN")
    kind = _first(card, "KIND") or _first(card, "X-ADDRESSBOOKSERVER-KIND")
    return Card(uid, version, fn, kind.strip().lower() if kind else None, tuple(problems))


def is_v21(data: bytes) -> bool:
    """True for a vCard 2.1 (which many CardDAV servers refuse: see :func:`to_v30`)."""
    card, _, _ = _read(data)
    return _version(card) == "2.1"


# --------------------------------------------------------------------------- meaning


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\r", "").replace("\n", "\\n")


def _piece(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_esc(str(v)) for v in value)
    return _esc(str(value))


def _structured(parts: list[Any]) -> str:
    out = [_piece(p) for p in parts]
    while out and not out[-1]:
        out.pop()
    return ";".join(out)


def _binary(value: Any) -> str:
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    # vobject reads a 4.0 ``data:`` URI as a comma-separated list: put it back together.
    text = (",".join(map(str, value)) if isinstance(value, list) else str(value)).strip()
    if text[:5].lower() == "data:" and ";base64," in text[:100].lower():
        payload = text[text.lower().index(";base64,") + 8 :]
        try:
            return "sha256:" + hashlib.sha256(base64.b64decode(payload, validate=False)).hexdigest()
        except (binascii.Error, ValueError):
            return _esc(text)
    return _esc(text)


def _types(line: Any, name: str) -> tuple[list[str], bool]:
    found: set[str] = set()
    for key, values in line.params.items():
        if key.upper() == "TYPE":
            for value in values:
                found.update(v.strip().lower() for v in str(value).split(",") if v.strip())
    found.update(str(v).strip().lower() for v in line.singletonparams if str(v).strip())
    pref = "pref" in found or any(k.upper() == "PREF" for k in line.params)
    found.discard("pref")
    found -= _DEFAULT_TYPES.get(name, set())
    if name in _BINARY:
        found = {t for t in found if t not in {"jpeg", "jpg", "png", "gif", "bmp", "tiff", "x509", "pgp", "wave"}}
    # 2.1 bare parameters that are not types (QUOTED-PRINTABLE, BASE64, charsets) are encodings.
    found -= {"quoted-printable", "base64", "b", "8bit", "7bit", "utf-8"}
    return sorted(found), pref


def _value(name: str, value: Any) -> list[str]:
    if name == "N":
        return [_structured([value.family, value.given, value.additional, value.prefix, value.suffix])]
    if name == "ADR":
        return [
            _structured([value.box, value.extended, value.street, value.city, value.region, value.code, value.country])
        ]
    if name in _LISTS:
        items = value if isinstance(value, list) else str(value).split(",")
        return [_esc(str(v).strip()) for v in items if str(v).strip()] or [""]
    if name == "ORG":
        return [_structured(list(value) if isinstance(value, list) else [value])]
    if name in _BINARY:
        return [_binary(value)]
    text = str(value)
    if name == "TEL" and text[:4].lower() == "tel:":
        text = text[4:]
    if name in ("EMAIL", "KIND"):
        text = text.strip().lower()
    if name in _DATES:
        text = text.strip().replace("-", "").replace(":", "")
    return [_esc(text)]


def _raw_binary(text: str) -> dict[str, list[str]]:
    """The raw values of PHOTO, LOGO, SOUND and KEY, by icalendar's generic content-line parser:
    vobject 0.9.9 cuts a 4.0 ``data:image/png;base64,...`` URI at its comma."""
    out: dict[str, list[str]] = {}
    for content in Contentlines.from_ical(text):  # type: ignore[no-untyped-call]
        if not content:
            continue
        try:
            name, _, value = content.raw_parts()
        except ValueError:
            continue
        bare = name.upper().rsplit(".", 1)[-1]
        if bare in _BINARY:
            out.setdefault(bare, []).append(value)
    return out


def _meaning(card: Any, text: str) -> list[str]:
    out: list[str] = []
    raw: dict[str, list[str]] | None = None
    seen: Counter[str] = Counter()
    for line in card.lines():
        name = _ALIASES.get(line.name.upper(), line.name.upper())
        if name in _NOT_COMPARED:
            continue
        value = line.value
        if name in _BINARY and not isinstance(value, bytes):
            raw = _raw_binary(text) if raw is None else raw
            found = raw.get(name, [])
            value = found[seen[name]] if seen[name] < len(found) else value
            seen[name] += 1
        types, pref = _types(line, name)
        head = name + (f";TYPE={','.join(types)}" if types else "") + (";PREF" if pref else "")
        out.extend(f"{head}:{v}" for v in _value(name, value))
    return sorted(out)


def normalize(data: bytes) -> str:
    """The meaning of a card as text: ``BEGIN:VCARD``, its VERSION, the canonical lines sorted,
    ``END:VCARD``, ``\\n`` line ends (module docstring). Idempotent. Raises :class:`BadItem`."""
    card, _, text = _read(data)
    version = _version(card)
    lines = "".join(f"{line}\n" for line in _meaning(card, text))
    return f"BEGIN:VCARD\nVERSION:{version}\n{lines}END:VCARD\n"


def _prop_name(line: str) -> str:
    return line.split(";", 1)[0].split(":", 1)[0]


def _short(lines: list[str]) -> str:
    text = "; ".join(lines) if lines else "nothing"
    return text if len(text) <= 200 else text[:197] + "..."


def differences(source: bytes, target: bytes) -> list[str]:
    """What the two copies of one card say differently, as short texts naming the card (UID),
    the property and both sides; [] when they mean the same, whatever their versions."""
    src_card, _, src_text = _read(source)
    tgt_card, _, tgt_text = _read(target)
    src, tgt = Counter(_meaning(src_card, src_text)), Counter(_meaning(tgt_card, tgt_text))
    if src == tgt:
        return []
    where = _first(src_card, "UID") or "VCARD"
    by_name: dict[str, tuple[list[str], list[str]]] = {}
    for line in (src - tgt).elements():
        by_name.setdefault(_prop_name(line), ([], []))[0].append(line)
    for line in (tgt - src).elements():
        by_name.setdefault(_prop_name(line), ([], []))[1].append(line)
    return [
        f"{where}: {name} differs: source {_short(gone)}, target {_short(added)}"
        for name, (gone, added) in sorted(by_name.items())
    ]


# --------------------------------------------------------------------------- 2.1 -> 3.0


def to_v30(data: bytes) -> bytes:
    """A vCard 2.1 as 3.0, for a target that refuses 2.1: QUOTED-PRINTABLE decoded, CHARSET
    dropped (the result is UTF-8), bare parameters (``TEL;CELL``) made ``TYPE=``, ``BASE64``
    made ``ENCODING=b``, VERSION 3.0. Serialised by vobject. Meant to be used only for such a
    target, and reported; a card that is not 2.1 comes back unchanged."""
    card, _, _ = _read(data)
    if _version(card) != "2.1":
        return data
    for line in card.lines():
        if line.name.upper() == "VERSION":
            line.value = "3.0"
            continue
        bare = [str(v) for v in line.singletonparams]
        line.singletonparams = []
        types: list[str] = []
        for value in bare:
            if value.upper() in ("BASE64", "B"):
                line.params["ENCODING"] = ["b"]
            elif value.upper() not in ("QUOTED-PRINTABLE", "8BIT", "7BIT"):
                types.append(value)
        for key in list(line.params):
            if key.upper() == "CHARSET":
                del line.params[key]
            elif key.upper() == "ENCODING" and str(line.params[key][0]).upper() == "BASE64":
                line.params[key] = ["b"]
            elif key.upper() == "TYPE":
                types.extend(str(v) for v in line.params.pop(key))
        if types:
            line.params["TYPE"] = list(dict.fromkeys(types))
    text: str = card.serialize()
    return text.encode("utf-8")
