"""Mail addresses of directory entries: AD ``proxyAddresses``, X.500 addresses, comparison keys.

A proxyAddresses value is ``<type>:<address>`` (Exchange's "address type" prefix):

===============  =============================================================================
value            meaning
===============  =============================================================================
``SMTP:a@x``     the primary SMTP address (prefix in upper case); ``mail`` normally equals it
``smtp:b@x``     a secondary SMTP address (any prefix not all upper case)
``X500:/o=..``   an X.500 address: an old legacyExchangeDN kept so that cached recipients and
                 replies to old mail still resolve (otherwise: the IMCEAEX NDR after migrations)
``X400:``, ``SIP:``, ...  other types, kept as they are; ``kind`` is the prefix upper-cased
``junk``         no colon: ``kind`` ``''``; tolerated, never raises
===============  =============================================================================

"Primary" is the Exchange convention: the prefix is written in capitals (and has letters).

Comparison keys. :func:`normalize_email` strips blanks and lower-cases the *whole* address. RFC 5321
§2.4 lets a server treat local parts case-sensitively, but no directory or mail server this tool
targets does (AD, Exchange, Dovecot, Postfix lookups are case-insensitive), and comparing local
parts with case would make ``John@x`` and ``john@x`` two people and create a duplicate user.
:func:`x500_key` compares legacyExchangeDN / X500 values without case (Exchange does so too), with
an ``X500:`` prefix removed if present. The original spelling is always kept for writing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ProxyAddress",
    "as_primary_smtp",
    "as_secondary_smtp",
    "as_x500",
    "generic_proxies",
    "normalize_email",
    "parse_proxy",
    "primary_smtp",
    "smtp_addresses",
    "x500_addresses",
    "x500_key",
]


@dataclass(frozen=True, slots=True)
class ProxyAddress:
    kind: str  # 'SMTP', 'X500', 'X400', 'SIP', ... upper-cased; '' when the value has no colon
    address: str
    primary: bool  # the prefix is written in upper case (``SMTP:``)


def parse_proxy(value: str) -> ProxyAddress:
    """``"SMTP:a@x"`` -> ``ProxyAddress("SMTP", "a@x", True)``. Never raises."""
    prefix, colon, rest = value.partition(":")
    if not colon:
        return ProxyAddress("", value.strip(), False)
    prefix = prefix.strip()
    primary = prefix.upper() == prefix and prefix.lower() != prefix
    return ProxyAddress(prefix.upper(), rest.strip(), primary)


def normalize_email(s: str) -> str:
    """The comparison key of a mail address: stripped, angle brackets removed, lower-cased."""
    t = s.strip()
    if t.startswith("<") and t.endswith(">"):
        t = t[1:-1].strip()
    return t.lower()


def x500_key(s: str) -> str:
    """The comparison key of a legacyExchangeDN or X500 address (``X500:`` prefix optional)."""
    t = s.strip()
    if t[:5].lower() == "x500:":
        t = t[5:].strip()
    return t.lower()


def primary_smtp(values: Iterable[str]) -> str | None:
    """The first ``SMTP:`` (upper case) address, or None."""
    for v in values:
        p = parse_proxy(v)
        if p.kind == "SMTP" and p.primary and p.address:
            return p.address
    return None


def smtp_addresses(values: Iterable[str]) -> list[str]:
    """Every SMTP address, the primary first, then in the given order; duplicates (compared with
    :func:`normalize_email`) dropped, the first spelling kept."""
    vals = list(values)
    first = primary_smtp(vals)
    out: list[str] = []
    seen: set[str] = set()
    candidates = ([first] if first else []) + [p.address for p in map(parse_proxy, vals) if p.kind == "SMTP"]
    for a in candidates:
        k = normalize_email(a)
        if k and k not in seen:
            seen.add(k)
            out.append(a)
    return out


def x500_addresses(values: Iterable[str]) -> list[str]:
    """Every X500 address (without the prefix), duplicates (by :func:`x500_key`) dropped."""
    out: list[str] = []
    seen: set[str] = set()
    for p in map(parse_proxy, values):
        k = x500_key(p.address)
        if p.kind == "X500" and k and k not in seen:
            seen.add(k)
            out.append(p.address)
    return out


def as_x500(legacy_dn: str) -> str:
    return "X500:" + legacy_dn


def as_secondary_smtp(addr: str) -> str:
    return "smtp:" + addr


def as_primary_smtp(addr: str) -> str:
    return "SMTP:" + addr


def generic_proxies(mail: str | None, aliases: Iterable[str]) -> tuple[str, ...]:
    """AD-style proxy values for a generic LDAP entry: ``mail`` as ``SMTP:``, each alias
    (mailAlternateAddress or the configured attribute) as ``smtp:``, duplicates dropped."""
    out: list[str] = []
    seen: set[str] = set()
    if mail and mail.strip():
        out.append(as_primary_smtp(mail.strip()))
        seen.add(normalize_email(mail))
    for a in aliases:
        k = normalize_email(a)
        if k and k not in seen:
            seen.add(k)
            out.append(as_secondary_smtp(a.strip()))
    return tuple(out)
