"""IMAP access control lists (RFC 4314, and RFC 2086 before it): rights and identifiers.

Pure: parsing, normalising and translating between the servers' dialects. No I/O.

Rights. A rights string is a set of letters. mailferry works in RFC 4314's letters:

====== =====================================================================================
letter right
====== =====================================================================================
l      lookup (LIST, SUBSCRIBE)
r      read (SELECT, FETCH, SEARCH, COPY from)
s      keep \\Seen across sessions
w      write flags other than \\Seen and \\Deleted
i      insert (APPEND, COPY into)
p      post (send mail to the folder's submission address)
k      create child folders (RFC 2086's ``c``)
x      delete the folder (RFC 2086's ``c``, see below)
t      set \\Deleted (RFC 2086's ``d``)
e      expunge (RFC 2086's ``d``)
a      administer (SETACL, DELETEACL, GETACL, LISTRIGHTS)
n      write shared annotations (Cyrus; RFC 5464 METADATA)
0-9    site-defined rights (Cyrus)
====== =====================================================================================

The obsolete RFC 2086 letters, read as RFC 4314 section 2.1.1 and both Cyrus 3.6 and Dovecot 2.3
do (measured: Cyrus stores ``SETACL f bob lrc`` as ``lrkxc``): ``c`` is ``k`` and ``x``; ``d``
is ``t`` and ``e``. A server that knows the new letters also shows ``c``/``d`` next to them as
echoes (``lrwstipekxacd``): where any of ``k x t e`` is present, ``c`` and ``d`` add nothing.
Towards a target that has only the RFC 2086 letters (no ``RIGHTS=`` capability), ``k``+``x``
become ``c`` and ``t``+``e`` become ``d``, but only both together: one alone can't be written
without granting the other too, so it is left out and reported (never widened).

Identifiers. ``anyone``, ``authenticated``, ``anonymous`` (the same on every server), a user
name, or a group: Dovecot names groups ``$name`` in IMAP (``group=name`` in its ACL files),
Cyrus ``group:name``. A leading ``-`` makes an entry negative (rights taken away, RFC 4314 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

#: RFC 4314's rights in the order servers print them; what an account's owner has by default.
STANDARD = "lrswipkxtea"
#: Every right letter mailferry knows, in the order it writes them.
ORDER = "lrswipkxtean0123456789"
OBSOLETE = {"c": "kx", "d": "te"}
_NEW = frozenset("kxte")

IdKind = Literal["user", "group", "anyone", "authenticated", "anonymous"]
Dialect = Literal["dovecot", "cyrus", "rfc"]
SPECIAL: tuple[IdKind, ...] = ("anyone", "authenticated", "anonymous")


def parse_rights(text: str) -> frozenset[str]:
    """The rights of a rights string in RFC 4314 letters (see the module's table). Letters
    mailferry doesn't know are kept, so that a translation can name them."""
    letters = set(text.strip())
    if letters & _NEW:
        letters -= set(OBSOLETE)  # echoes of the new letters
    else:
        for old, new in OBSOLETE.items():
            if old in letters:
                letters.discard(old)
                letters |= set(new)
    return frozenset(letters)


def rights_text(rights: Iterable[str]) -> str:
    """Rights as a string in a stable order (known letters first, then any others sorted)."""
    s = set(rights)
    return "".join(c for c in ORDER if c in s) + "".join(sorted(s - set(ORDER)))


@dataclass(frozen=True, slots=True)
class TargetRights:
    """What a server can grant. ``rfc4314``: it has the new letters (``RIGHTS=`` capability, or
    LISTRIGHTS shows them). ``known``: the letters it grants. ``tied``: groups of letters it
    grants only together (LISTRIGHTS shows them as one word, RFC 4314 3.7)."""

    rfc4314: bool
    known: frozenset[str]
    tied: tuple[frozenset[str], ...] = ()


#: A target that says nothing beyond ACL: RFC 2086's letters.
RFC2086 = TargetRights(False, frozenset("lrswipcda"))


def target_rights(capabilities: Iterable[str], listrights: Sequence[str] | None) -> TargetRights:
    """What a target can grant, from its capabilities and a LISTRIGHTS answer (its words after
    the mailbox and identifier: the rights always granted, then the optional groups)."""
    caps = {c.upper() for c in capabilities}
    rights_cap = any(c.startswith("RIGHTS=") for c in caps)
    if listrights:
        groups = [frozenset(w) for w in listrights if w]
        known = frozenset().union(*groups) if groups else frozenset()
        rfc4314 = rights_cap or bool(known & _NEW)
        tied = tuple(g - set(OBSOLETE) for g in groups[1:] if len(g - set(OBSOLETE)) > 1)
        if rfc4314:
            known = known - set(OBSOLETE)
        return TargetRights(rfc4314, known, tied)
    if rights_cap:
        extra = next(c for c in caps if c.startswith("RIGHTS=")).split("=", 1)[1].lower()
        return TargetRights(True, frozenset("lrswipa") | frozenset(extra))
    return RFC2086


def to_target(rights: frozenset[str], target: TargetRights) -> tuple[str, frozenset[str]]:
    """(the rights string to send the target, the rights left out). Never grants more than
    ``rights``: a right the target doesn't know, or one it ties to a right not asked for, is
    left out."""
    if target.rfc4314:
        grant = set(rights & target.known)
        for group in target.tied:
            if grant & group and not group <= set(rights):
                grant -= group
        return rights_text(grant), frozenset(rights - grant)
    out = set(rights & target.known) - _NEW  # an RFC 2086 server speaks of k x t e only as c and d
    for old, new in OBSOLETE.items():
        pair = set(new)
        if pair <= rights and old in target.known:
            out.add(old)
    granted = (out - set(OBSOLETE)) | {n for o in out if o in OBSOLETE for n in OBSOLETE[o]}
    text = "".join(c for c in "lrswipcda" if c in out) + "".join(sorted(out - set("lrswipcda")))
    return text, frozenset(rights - granted)


@dataclass(frozen=True, slots=True)
class Identifier:
    kind: IdKind
    name: str = ""  # the user or group name; empty for the special identifiers
    negative: bool = False

    def describe(self) -> str:
        body = self.name if self.kind == "user" else (f"group {self.name}" if self.kind == "group" else self.kind)
        return ("-" if self.negative else "") + body


def parse_identifier(text: str) -> Identifier:
    """Any server's identifier: ``-`` for negative, the special names, ``$g``, ``group:g``,
    ``group=g`` for groups, else a user name."""
    negative = text.startswith("-")
    body = text[1:] if negative else text
    low = body.lower()
    for special in SPECIAL:
        if low == special:
            return Identifier(special, "", negative)
    for prefix in ("$", "group:", "group="):
        if low.startswith(prefix) and len(body) > len(prefix):
            return Identifier("group", body[len(prefix) :], negative)
    return Identifier("user", body, negative)


def format_identifier(ident: Identifier, dialect: Dialect) -> str | None:
    """The identifier as ``dialect`` writes it; None for a group where the dialect has no
    known group syntax."""
    sign = "-" if ident.negative else ""
    if ident.kind in SPECIAL:
        return sign + ident.kind
    if ident.kind == "user":
        return sign + ident.name
    if dialect == "dovecot":
        return f"{sign}${ident.name}"
    if dialect == "cyrus":
        return f"{sign}group:{ident.name}"
    return None


def dialect_of(product: str) -> Dialect:
    """The identifier dialect of a server, by the product its greeting names."""
    if product == "Dovecot":
        return "dovecot"
    if product == "Cyrus IMAP":
        return "cyrus"
    return "rfc"


_WORD = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\s"]+)')


def words(raw: bytes) -> list[str]:
    """The words of an untagged ACL response's data (``Calendar bob "" l r``): atoms and quoted
    strings (backslash escapes undone), decoded as UTF-8 (names are modified UTF-7 or UTF-8)."""
    out: list[str] = []
    for m in _WORD.finditer(raw):
        if m.group(1) is not None:
            out.append(re.sub(rb"\\(.)", rb"\1", m.group(1)).decode("utf-8", "replace"))
        else:
            out.append(m.group(2).decode("utf-8", "replace"))
    return out


def parse_listrights(raw: bytes) -> tuple[str, str, list[str]]:
    """(mailbox, identifier, rights words) of a LISTRIGHTS response (RFC 4314 3.7):
    ``INBOX bob "" l r s`` -> ``("INBOX", "bob", ["", "l", "r", "s"])``; the first rights word
    is what is always granted."""
    w = words(raw)
    if len(w) < 3:
        raise ValueError(f"LISTRIGHTS response too short: {raw[:200]!r}")
    return w[0], w[1], w[2:]


def parse_myrights(raw: bytes) -> tuple[str, str]:
    """(mailbox, rights) of a MYRIGHTS response (RFC 4314 3.8): ``INBOX lrs``."""
    w = words(raw)
    if len(w) != 2:
        raise ValueError(f"MYRIGHTS response not a mailbox and rights: {raw[:200]!r}")
    return w[0], w[1]
