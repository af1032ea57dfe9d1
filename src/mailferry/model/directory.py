"""Pure value types for directories: people and the rules that match them across organizations.

Terminology (used the same way everywhere in mailferry):

person        one directory entry that stands for someone or something mail goes to: a user, a
              contact or a group (:class:`Person`, whatever the dialect).
source        the directory people move *from*; it is only ever read.
target        the directory people move *to*; users are created and changed there, never deleted.
user          an entry that can own a mailbox and log in (AD ``user``, LDAP ``inetOrgPerson``).
contact       an entry that only stands for an address (AD ``contact``): the target often already
              has one for each source person (a GAL sync); it is *merged* into the user.
group         a distribution or security group.
rule          one way of saying "this source person is that target person" (:data:`MatchRule`).
outcome       what matching decided for one source person (see ``plan.directory``).
identity map  source person -> target person, for every matched and created person: the accounts
              list for ``migrate``, later the rewriting of permissions and attendees.

Identity and location are kept apart, as for mail: ``dn`` is where an entry lives now (it changes
on rename or move); ``guid`` (objectGUID / entryUUID) and ``sid`` are what it *is*.

All text is ``str``; binary attributes are converted by the connector (objectSid through
``formats.sid``). A generic LDAP entry's addresses are given AD-style in ``proxy_addresses``
(``formats.addresses.generic_proxies``: mail as ``SMTP:``, each alias as ``smtp:``), so matching
and planning see one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from mailferry.formats.addresses import normalize_email, x500_addresses, x500_key
from mailferry.formats.addresses import primary_smtp as _primary_smtp
from mailferry.formats.addresses import smtp_addresses as _smtp_addresses

__all__ = ["MATCH_RULES", "MatchRule", "Person", "PersonKind"]

PersonKind = Literal["user", "contact", "group"]

MatchRule = Literal["sid", "x500", "smtp", "login", "custom"]
"""How a source person is recognised in the target; rules are tried in the configured order.

=======  ====================================================================================
rule     the source person is the target person when
=======  ====================================================================================
sid      one of the source's SIDs -- its objectSid *and* its own sIDHistory values -- is the
         target's objectSid or is in the target's sIDHistory. ADMT (and ``ldbmodify`` in the
         tests) puts the SOURCE objectSid into the TARGET's sIDHistory; equal objectSids mean a
         re-run against the same domain. Source sIDHistory values are looked up too: they name
         the same account in an older domain (a person migrated twice), which is as strong an
         identity as the objectSid itself.
x500     the source legacyExchangeDN or any source ``X500:`` proxy equals the target's
         legacyExchangeDN or one of its ``X500:`` proxies, without case. After ``apply`` the
         target carries the source legacyExchangeDN as X500: re-runs find it again this way.
smtp     any source SMTP address (primary, secondary, ``mail``) equals any target SMTP address
         or ``mail``, compared by ``normalize_email`` (whole address without case).
login    sAMAccountName / uid equal without case.
custom   a value of a configured attribute equal without case (``Person.custom``: the connector
         files source and target values under the same key, e.g. ``employeeID``).
=======  ====================================================================================
"""

MATCH_RULES: Final[tuple[MatchRule, ...]] = ("sid", "x500", "smtp", "login", "custom")


@dataclass(frozen=True, slots=True)
class Person:
    """One directory entry as mailferry sees it, whatever the dialect.

    ``attrs`` holds the other mapped attributes as text (givenName, sn, cn, displayName,
    telephoneNumber, mobile, title, department, company, manager (a DN), ...); attribute names are
    the target dialect's, as the connector's attribute map gives them. ``custom`` holds the values
    of the custom match attribute(s). Both are left out of the hash (they are mappings).
    """

    dn: str
    kind: PersonKind
    guid: str | None = None  # objectGUID / entryUUID as text: the stable identity
    sid: str | None = None  # objectSid, S-1-5-21-...
    sid_history: tuple[str, ...] = ()
    login: str | None = None  # sAMAccountName / uid
    upn: str | None = None
    mail: str | None = None
    proxy_addresses: tuple[str, ...] = ()  # raw AD-style values: SMTP:, smtp:, X500:, ...
    legacy_dn: str | None = None  # legacyExchangeDN
    disabled: bool = False
    attrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    member_of: tuple[str, ...] = ()  # group DNs
    custom: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    object_classes: tuple[str, ...] = ()  # as the server lists them (what the entry may hold)
    # Derived once (the matcher asks for them many times); not part of equality or the repr.
    _smtp: tuple[str, ...] = field(init=False, repr=False, compare=False, hash=False)
    _x500: tuple[str, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_smtp", self._all_smtp())
        object.__setattr__(self, "_x500", self._all_x500())

    @property
    def primary_smtp(self) -> str | None:
        """The ``SMTP:`` proxy address, else ``mail``."""
        return _primary_smtp(self.proxy_addresses) or (self.mail.strip() if self.mail and self.mail.strip() else None)

    @property
    def smtp(self) -> tuple[str, ...]:
        """Every SMTP address (proxies and ``mail``), primary first, no duplicates."""
        return self._smtp

    def _all_smtp(self) -> tuple[str, ...]:
        values = list(self.proxy_addresses)
        if self.mail and self.mail.strip():
            values.append("smtp:" + self.mail.strip())
        first = self.primary_smtp
        out = _smtp_addresses(values)
        if first is not None and out and normalize_email(out[0]) != normalize_email(first):
            out = [first] + [a for a in out if normalize_email(a) != normalize_email(first)]
        return tuple(out)

    @property
    def smtp_keys(self) -> frozenset[str]:
        return frozenset(normalize_email(a) for a in self.smtp)

    @property
    def x500(self) -> tuple[str, ...]:
        """legacyExchangeDN first, then the ``X500:`` proxies, no duplicates (without case)."""
        return self._x500

    def _all_x500(self) -> tuple[str, ...]:
        out: list[str] = []
        seen: set[str] = set()
        for v in ([self.legacy_dn] if self.legacy_dn else []) + x500_addresses(self.proxy_addresses):
            k = x500_key(v)
            if k and k not in seen:
                seen.add(k)
                out.append(v.strip())
        return tuple(out)

    @property
    def x500_keys(self) -> frozenset[str]:
        return frozenset(x500_key(v) for v in self.x500)

    @property
    def sids(self) -> tuple[str, ...]:
        """objectSid first, then sIDHistory."""
        return ((self.sid,) if self.sid else ()) + self.sid_history

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp)

    def first(self, attr: str) -> str | None:
        """The first non-blank value of a mapped attribute (name compared without case)."""
        values = self.attrs.get(attr)
        if values is None:
            low = attr.lower()
            values = next((v for k, v in self.attrs.items() if k.lower() == low), ())
        return next((v for v in values if v.strip()), None)
