"""LDAP connector: a directory (Active Directory, or a generic LDAP server) read and written over ldap3.

Terminology: see :mod:`mailferry.model.directory` (person, user, contact, group, dialect).

Contract:

- ``people`` reads every user, contact and group under the configured bases in pages (AD serves
  at most 1,000 entries a page) and returns :class:`Person` values: binary objectSid/sIDHistory
  and objectGUID as text, ``disabled`` from userAccountControl (AD) or the lock marker (generic),
  generic addresses in AD proxy form (mail as ``SMTP:``, aliases as ``smtp:``), group
  memberships computed from the groups' ``member`` values (no memberOf overlay needed).
- Referrals are never chased (``auto_referrals=False``): an entry outside the server is reported,
  not fetched from some other host.
- Writes are single LDAP operations, each atomic on the server: ``add`` creates an entry whole or
  not at all; ``modify`` changes one entry. A refusal raises :class:`DirectoryRefused` naming the
  entry, the server's result and the operator's next step.
- A source directory is opened read-only: every write method refuses to run on it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE, Connection, Server, Tls
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from mailferry.errors import AuthError, ServerError, TemporaryFailure, TLSVerifyError
from mailferry.formats.addresses import generic_proxies
from mailferry.formats.ldap_schema import Schema, parse_schema
from mailferry.formats.ldif import dn_key, parent_dn
from mailferry.formats.sid import GuidError, SidError, guid_to_str, sid_to_str
from mailferry.model.directory import Person, PersonKind

Dialect = Literal["ad", "generic"]

UF_ACCOUNTDISABLE = 0x2

# Logical name -> attribute, per dialect. Overridable from the project file.
DEFAULT_ATTRIBUTES: dict[Dialect, dict[str, str]] = {
    "ad": {
        "guid": "objectGUID",
        "sid": "objectSid",
        "sid_history": "sIDHistory",
        "login": "sAMAccountName",
        "upn": "userPrincipalName",
        "mail": "mail",
        "proxy": "proxyAddresses",
        "alias": "proxyAddresses",
        "legacy_dn": "legacyExchangeDN",
        "uac": "userAccountControl",
        "member": "member",
    },
    "generic": {
        "guid": "entryUUID",
        "login": "uid",
        "mail": "mail",
        "alias": "mailAlternateAddress",
        "member": "member",
    },
}

# Other attributes carried over to created users and shown in plans (text, both dialects).
TEXT_ATTRIBUTES = (
    "cn", "sn", "givenName", "displayName", "initials", "telephoneNumber", "mobile", "facsimileTelephoneNumber",
    "title", "department", "company", "manager", "description", "physicalDeliveryOfficeName", "streetAddress",
    "l", "st", "postalCode", "c", "employeeID", "employeeNumber", "mailNickname", "targetAddress",
)  # fmt: skip


class DirectoryRefused(ServerError):
    """The directory refused one operation (rights, schema, constraint). Not temporary.
    ``code``: the LDAP result's description (``insufficientAccessRights``, ...)."""

    exit_code = ServerError.exit_code
    code: str = ""


@dataclass(frozen=True, slots=True)
class LdapEndpoint:
    host: str
    port: int
    security: Literal["tls", "starttls", "none"]
    verify_certificates: bool = True
    ca_file: str | None = None
    tls_server_name: str = ""
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Container:
    dn: str
    users: int = 0
    contacts: int = 0
    groups: int = 0


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the server says about a container: whether it exists, and the object classes the
    bound account may create in it (AD's constructed ``allowedChildClassesEffective``; None when
    the server does not say, as OpenLDAP)."""

    dn: str
    exists: bool
    child_classes: tuple[str, ...] | None = None


@dataclass
class _Counts:
    users: int = 0
    contacts: int = 0
    groups: int = 0


@dataclass(frozen=True, slots=True)
class DirectoryOptions:
    dialect: Dialect = "ad"
    bases: tuple[str, ...] = ()
    filter: str = ""
    page_size: int = 1000
    attributes: Mapping[str, str] = field(default_factory=dict)
    custom_attribute: str = ""
    lock: Mapping[str, str] = field(default_factory=dict)
    extra_attributes: tuple[str, ...] = ()  # also read into Person.attrs (e.g. the mail template's)


class LdapDirectory:
    """One bound connection to one directory. Not thread-safe."""

    def __init__(
        self,
        endpoint: LdapEndpoint,
        bind_dn: str,
        password: str,
        options: DirectoryOptions,
        *,
        readonly: bool,
        label: str,
    ) -> None:
        self.endpoint = endpoint
        self.options = options
        self.readonly = readonly
        self.label = label
        self.attr = {**DEFAULT_ATTRIBUTES[options.dialect], **dict(options.attributes)}
        where = f"{endpoint.host}:{endpoint.port}"
        tls = None
        if endpoint.security != "none":
            tls = Tls(
                validate=ssl.CERT_REQUIRED if endpoint.verify_certificates else ssl.CERT_NONE,
                ca_certs_file=endpoint.ca_file or None,
                valid_names=[endpoint.tls_server_name] if endpoint.tls_server_name else None,
            )
        server = Server(
            endpoint.host,
            port=endpoint.port,
            use_ssl=endpoint.security == "tls",
            tls=tls,
            get_info="DSA",
            connect_timeout=endpoint.timeout,
        )
        try:
            self._c = Connection(
                server,
                user=bind_dn,
                password=password,
                auto_bind="NONE",
                auto_referrals=False,
                raise_exceptions=False,
                receive_timeout=int(endpoint.timeout),
                read_only=readonly,
            )
            self._c.open()
            if self._c.closed:
                raise TemporaryFailure(f"{label}: cannot connect to {where}")
            if endpoint.security == "starttls" and not self._c.start_tls():
                raise TLSVerifyError(f"{label}: STARTTLS with {where} failed: {self._c.result.get('description')}")
            if not self._c.bind():
                desc = self._c.result.get("description", "")
                msg = str(self._c.result.get("message", ""))[:200]
                if desc in ("invalidCredentials", "inappropriateAuthentication", "unwillingToPerform"):
                    raise AuthError(f"{label}: bind as {bind_dn!r} refused by {where}: {desc} {msg}".strip())
                raise TemporaryFailure(f"{label}: bind to {where} failed: {desc} {msg}".strip())
        except (lx.LDAPCertificateError, ssl.SSLCertVerificationError) as e:
            raise TLSVerifyError(f"{label}: TLS certificate of {where} does not verify: {_safe(e, password)}") from None
        except lx.LDAPSocketOpenError as e:
            text = _safe(e, password)
            if "certificate" in text.lower() or "CERTIFICATE_VERIFY_FAILED" in text:
                raise TLSVerifyError(f"{label}: TLS certificate of {where} does not verify: {text}") from None
            raise TemporaryFailure(f"{label}: cannot connect to {where}: {text}") from None
        except lx.LDAPException as e:
            raise TemporaryFailure(f"{label}: {where}: {_safe(e, password)}") from None
        info = server.info
        self.naming_context = ""
        if info is not None and info.other:
            dnc = info.other.get("defaultNamingContext") or info.naming_contexts or []
            self.naming_context = str(dnc[0]) if dnc else ""

    def close(self) -> None:
        with contextlib.suppress(lx.LDAPException):
            self._c.unbind()

    # -- reading --------------------------------------------------------------------------------

    def _bases(self) -> tuple[str, ...]:
        if self.options.bases:
            return self.options.bases
        if not self.naming_context:
            raise DirectoryRefused(f"{self.label}: the server names no naming context", hint="set bases")
        return (self.naming_context,)

    def _kind_filter(self) -> str:
        if self.options.dialect == "ad":
            # Computers are users too; they are left out in _kind(), not with (!(objectClass=computer)):
            # a server whose schema lacks that class (slapd with an AD look-alike) finds nothing then.
            f = "(|(objectClass=user)(objectClass=contact)(objectClass=group))"
        else:
            f = "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
        return f"(&{f}{self.options.filter})" if self.options.filter else f

    def _search(self, base: str, flt: str, attributes: Sequence[str], scope: Any = SUBTREE) -> Iterator[dict[str, Any]]:
        try:
            entries = self._c.extend.standard.paged_search(
                base,
                flt,
                search_scope=scope,
                attributes=list(attributes),
                paged_size=self.options.page_size,
                generator=True,
            )
            for e in entries:
                if e.get("type") == "searchResEntry":
                    yield e
                elif e.get("type") == "searchResRef":
                    continue  # a referral: not followed (see the module contract)
        except lx.LDAPException as e:
            raise TemporaryFailure(f"{self.label}: search under {base!r} failed: {e}") from None
        res = self._c.result or {}
        if res.get("description") not in (None, "success", "referral"):
            raise DirectoryRefused(
                f"{self.label}: search under {base!r} failed: {res.get('description')} "
                f"{res.get('message', '')}".strip(),
                hint="check the base DN and the bind account's rights",
            )

    def _wanted(self) -> list[str]:
        a = self.attr
        names = {"objectClass", *TEXT_ATTRIBUTES, *(v for k, v in a.items())}
        if self.options.custom_attribute:
            names.add(self.options.custom_attribute)
        names.update(self.options.lock)
        names.update(self.options.extra_attributes)
        return sorted(names)

    def people(self) -> tuple[list[Person], list[str]]:
        """Every person under the bases, and problems met (malformed SIDs...) as text."""
        problems: list[str] = []
        raw: list[dict[str, Any]] = []
        seen: set[str] = set()
        for base in self._bases():
            for e in self._search(base, self._kind_filter(), self._wanted()):
                k = dn_key(e["dn"])
                if k not in seen:
                    seen.add(k)
                    raw.append(e)
        member_attr = self.attr["member"]
        member_of: dict[str, list[str]] = defaultdict(list)
        for e in raw:
            if self._kind(e) == "group":
                for m in _texts(e, member_attr) + _texts(e, "uniqueMember"):
                    member_of[dn_key(m)].append(e["dn"])
        out = [self._person(e, member_of.get(dn_key(e["dn"]), []), problems) for e in raw]
        return [p for p in out if p is not None], problems

    def _kind(self, e: Mapping[str, Any]) -> PersonKind | None:
        classes = {c.lower() for c in _texts(e, "objectClass")}
        if self.options.dialect == "ad":
            if "computer" in classes:
                return None
            if "contact" in classes:
                return "contact"
            if "group" in classes:
                return "group"
            return "user" if "user" in classes else None
        if classes & {"groupofnames", "groupofuniquenames"}:
            return "group"
        if "inetorgperson" in classes:
            return "user" if _texts(e, self.attr["login"]) else "contact"
        return None

    def _person(self, e: Mapping[str, Any], groups: list[str], problems: list[str]) -> Person | None:
        kind = self._kind(e)
        if kind is None:
            return None
        a, dn = self.attr, e["dn"]
        sid: str | None = None
        history: list[str] = []
        guid: str | None = None
        if "sid" in a:
            for i, value in enumerate(_raw(e, a["sid"]) + _raw(e, a.get("sid_history", ""))):
                try:
                    text = sid_to_str(value)
                except SidError as err:
                    problems.append(
                        f"{self.label}: {dn}: {a['sid'] if i == 0 else a['sid_history']} is malformed ({err}): ignored"
                    )
                    continue
                if i == 0 and _raw(e, a["sid"]):
                    sid = text
                else:
                    history.append(text)
        graw = _raw(e, a["guid"])
        if graw and self.options.dialect == "ad":
            try:
                guid = guid_to_str(graw[0])
            except GuidError:
                problems.append(f"{self.label}: {dn}: objectGUID is malformed: ignored")
        elif _texts(e, a["guid"]):
            guid = _texts(e, a["guid"])[0]
        mail = next(iter(_texts(e, a["mail"])), None)
        if self.options.dialect == "ad":
            proxies = tuple(_texts(e, a["proxy"]))
            uac = next(iter(_texts(e, a["uac"])), "0")
            disabled = bool(int(uac) & UF_ACCOUNTDISABLE) if uac.lstrip("-").isdigit() else False
        else:
            proxies = generic_proxies(mail, _texts(e, a["alias"]))
            disabled = bool(self.options.lock) and all(
                v.lower() in {x.lower() for x in _texts(e, k)} or (v == "*" and _texts(e, k))
                for k, v in self.options.lock.items()
            )
        attrs = {
            name: tuple(vals)
            for name in dict.fromkeys((*TEXT_ATTRIBUTES, *self.options.extra_attributes))
            if (vals := _texts(e, name))
        }
        custom: dict[str, tuple[str, ...]] = {}
        if self.options.custom_attribute:
            custom[self.options.custom_attribute] = tuple(_texts(e, self.options.custom_attribute))
        return Person(
            dn=dn,
            kind=kind,
            guid=guid,
            sid=sid,
            sid_history=tuple(history),
            login=next(iter(_texts(e, a["login"])), None),
            upn=next(iter(_texts(e, a.get("upn", ""))), None) if "upn" in a else None,
            mail=mail,
            proxy_addresses=proxies,
            legacy_dn=next(iter(_texts(e, a.get("legacy_dn", ""))), None) if "legacy_dn" in a else None,
            disabled=disabled,
            attrs=attrs,
            member_of=tuple(groups),
            custom=custom,
            object_classes=tuple(_texts(e, "objectClass")),
        )

    def containers(self) -> list[Container]:
        """Each container (OU, container, domain) under the bases with the people directly in it."""
        counts: dict[str, _Counts] = {}
        names: dict[str, str] = {}
        cflt = (
            "(|(objectClass=organizationalUnit)(objectClass=container)(objectClass=domain)(objectClass=organization))"
        )
        for base in self._bases():
            for e in self._search(base, cflt, ["objectClass"]):
                names.setdefault(dn_key(e["dn"]), e["dn"])
                counts.setdefault(dn_key(e["dn"]), _Counts())
            for e in self._search(base, self._kind_filter(), ["objectClass", self.attr["login"]]):
                pk = dn_key(parent_dn(e["dn"]))
                names.setdefault(pk, parent_dn(e["dn"]))
                c = counts.setdefault(pk, _Counts())
                kind = self._kind(e)
                if kind == "user":
                    c.users += 1
                elif kind == "contact":
                    c.contacts += 1
                elif kind == "group":
                    c.groups += 1
        return sorted(
            (Container(names[k], c.users, c.contacts, c.groups) for k, c in counts.items()),
            key=lambda c: dn_key(c.dn)[::-1],
        )

    def entry(self, dn: str) -> dict[str, list[bytes]] | None:
        """Every stored attribute of one entry, raw (for the LDIF kept before a delete)."""
        ok = self._c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["*"])
        if not ok or not self._c.response:
            return None
        for e in self._c.response:
            if e.get("type") == "searchResEntry":
                return {k: list(v) for k, v in e["raw_attributes"].items()}
        return None

    def entries(self, dns: Sequence[str]) -> dict[str, dict[str, list[bytes]]]:
        """Every stored attribute of each entry of ``dns`` that exists, keyed by ``dn_key``.

        A few paged searches under the bases, a hundred DNs to a filter on the entry's own DN
        (AD: distinguishedName; OpenLDAP: entryDN), not one request per entry; an entry such a
        search does not return (a server without that attribute) is read by itself."""
        wanted = {_dn_norm(d): d for d in dict.fromkeys(dns)}
        out: dict[str, dict[str, list[bytes]]] = {}
        by = "distinguishedName" if self.options.dialect == "ad" else "entryDN"
        keys = list(wanted.values())
        for i in range(0, len(keys), _DNS_PER_FILTER):
            flt = "(|" + "".join(f"({by}={escape_filter_chars(d)})" for d in keys[i : i + _DNS_PER_FILTER]) + ")"
            for base in self._bases():
                for e in self._search(base, flt, ["*"]):
                    asked = wanted.get(_dn_norm(e["dn"]))
                    if asked is not None:
                        out[dn_key(asked)] = {k: list(v) for k, v in e["raw_attributes"].items()}
        for dn in keys:
            if dn_key(dn) not in out:
                entry = self.entry(dn)
                if entry is not None:
                    out[dn_key(dn)] = entry
        return out

    def container(self, dn: str) -> ContainerInfo:
        """Whether ``dn`` exists and which classes the bound account may create under it."""
        ok = self._c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["allowedChildClassesEffective"])
        if not ok or not self._c.response:
            if (self._c.result or {}).get("description") == "noSuchObject":
                return ContainerInfo(dn, False)
            raise DirectoryRefused(
                f"{self.label}: cannot read {dn!r}: {(self._c.result or {}).get('description')}",
                hint="check the DN and the bind account's read rights",
            )
        for e in self._c.response:
            if e.get("type") == "searchResEntry":
                raw = {k.lower(): v for k, v in e["raw_attributes"].items()}
                values = raw.get("allowedchildclasseseffective")
                # AD computes it (no value: nothing may be created there); a server that does not
                # (OpenLDAP) ignores the name. The rootDSE's capabilities tell them apart.
                if not values and not self._has_effective_rights():
                    return ContainerInfo(dn, True, None)
                return ContainerInfo(dn, True, tuple(v.decode("utf-8", "replace") for v in values or ()))
        return ContainerInfo(dn, False)

    def _has_effective_rights(self) -> bool:
        """Whether the server computes allowedChildClassesEffective (Active Directory, Samba)."""
        info = self._c.server.info
        features = [str(f[0]) for f in (info.supported_features or [])] if info is not None else []
        return "1.2.840.113556.1.4.800" in features  # LDAP_CAP_ACTIVE_DIRECTORY_OID (supportedCapabilities)

    @property
    def is_active_directory(self) -> bool:
        """Whether the server is Active Directory (or Samba AD)."""
        return self._has_effective_rights()

    @property
    def is_openldap(self) -> bool:
        """Whether the server is OpenLDAP: its root DSE is an OpenLDAProotDSE."""
        info = self._c.server.info
        other = info.other if info is not None and info.other else {}
        classes = {str(c).lower() for c in other.get("objectClass", ()) or ()}
        return "openldaprootdse" in classes or bool(other.get("configContext"))

    @property
    def vendor(self) -> str:
        """What the root DSE says the server is: vendorName and vendorVersion (RFC 3045) when it
        publishes them, else "Active Directory" or "OpenLDAP" when recognised, else ""."""
        info = self._c.server.info
        other = info.other if info is not None and info.other else {}
        named = " ".join(str(v[0]) for key in ("vendorName", "vendorVersion") if (v := other.get(key)))
        if named:
            return named
        return "Active Directory" if self.is_active_directory else "OpenLDAP" if self.is_openldap else ""

    def schema(self) -> Schema | None:
        """The server's schema from its subschema subentry (RFC 4512 §4.2), None if unreadable."""
        ok = self._c.search("", "(objectClass=*)", search_scope=BASE, attributes=["subschemaSubentry"])
        entry = next((e for e in self._c.response or [] if e.get("type") == "searchResEntry"), None) if ok else None
        values = {k.lower(): v for k, v in (entry or {}).get("raw_attributes", {}).items()}.get("subschemasubentry")
        if not values:
            return None
        where = values[0].decode("utf-8", "replace")
        wanted = ["attributeTypes", "objectClasses", "dITContentRules"]
        ok = self._c.search(where, "(objectClass=subschema)", search_scope=BASE, attributes=wanted)
        entry = next((e for e in self._c.response or [] if e.get("type") == "searchResEntry"), None) if ok else None
        if entry is None:
            return None
        raw = {k.lower(): v for k, v in entry["raw_attributes"].items()}

        def texts(name: str) -> list[str]:
            return [v.decode("utf-8", "replace") for v in raw.get(name.lower(), [])]

        if not raw.get("attributetypes") or not raw.get("objectclasses"):
            return None
        return parse_schema(texts("attributeTypes"), texts("objectClasses"), texts("dITContentRules"))

    @property
    def dns_domain(self) -> str:
        """The DNS name of the naming context (``DC=new,DC=example`` -> ``new.example``): AD's
        default UPN suffix. Empty when the naming context is not made of DC= parts."""
        parts = [p.strip() for p in self.naming_context.split(",") if p.strip()]
        if not parts or not all(p.lower().startswith("dc=") for p in parts):
            return ""
        return ".".join(p[3:] for p in parts).lower()

    def exists(self, dn: str) -> bool:
        ok = self._c.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["1.1"])
        return bool(ok and self._c.response)

    def find(self, flt_attr: str, value: str) -> list[str]:
        """DNs whose ``flt_attr`` equals ``value`` (escaped), under the bases."""
        out: list[str] = []
        for base in self._bases():
            out += [e["dn"] for e in self._search(base, f"({flt_attr}={escape_filter_chars(value)})", ["1.1"])]
        return out

    # -- writing --------------------------------------------------------------------------------

    def _check(self, what: str, dn: str) -> None:
        res = self._c.result or {}
        if res.get("description") == "success":
            return
        desc = res.get("description", "")
        msg = str(res.get("message", "")).strip()[:300]
        hints = {
            "insufficientAccessRights": "give the bind account write rights on the target container",
            "undefinedAttributeType": "the target schema lacks an attribute: remove it from the templates or the map",
            "objectClassViolation": "an attribute does not fit the object class: check the templates",
            "entryAlreadyExists": "an entry with that name exists already: rename or merge it by hand",
            "noSuchObject": "the container does not exist: check target_container",
            "constraintViolation": "a value breaks a constraint (format, uniqueness): see the server's words",
        }
        err = DirectoryRefused(
            f"{self.label}: {what} {dn!r} refused: {desc} {msg}".strip(), hint=hints.get(desc, "see the server's words")
        )
        err.code = str(desc)
        raise err

    def _writable(self) -> None:
        if self.readonly:
            raise DirectoryRefused(f"{self.label}: refusing to write to the source directory")

    def add(self, dn: str, attrs: Mapping[str, Sequence[str | bytes]]) -> None:
        self._writable()
        classes = [v for k, vs in attrs.items() if k.lower() == "objectclass" for v in vs]
        rest = {k: list(v) for k, v in attrs.items() if k.lower() != "objectclass" and v}
        self._c.add(dn, classes, rest)
        self._check("creating", dn)

    def modify(self, dn: str, changes: Mapping[str, tuple[str, Sequence[str | bytes]]]) -> None:
        """``changes``: attribute -> ("add" | "replace" | "delete", values)."""
        self._writable()
        ops = {"add": MODIFY_ADD, "replace": MODIFY_REPLACE, "delete": MODIFY_DELETE}
        self._c.modify(dn, {k: [(ops[op], list(vals))] for k, (op, vals) in changes.items()})
        self._check("changing", dn)

    def modify_attribute(self, dn: str, attr: str, ops: Sequence[tuple[str, Sequence[str | bytes]]]) -> None:
        """Several changes of one attribute in one atomic request, e.g. add a member, delete another."""
        self._writable()
        codes = {"add": MODIFY_ADD, "replace": MODIFY_REPLACE, "delete": MODIFY_DELETE}
        self._c.modify(dn, {attr: [(codes[op], list(vals)) for op, vals in ops]})
        self._check("changing", dn)

    def delete(self, dn: str) -> None:
        self._writable()
        self._c.delete(dn)
        self._check("deleting", dn)


_DNS_PER_FILTER = 100


def _dn_norm(dn: str) -> str:
    """A DN compared without case and whatever its escaping (RFC 4514 2.4): servers answer
    ``cn=Smith\\, John`` as ``cn=Smith\\2C John`` (OpenLDAP), ``Zoë`` as ``Zo\\C3\\AB``. Escaped
    characters come out as themselves, those that separate (``,+;="<>\\``) with a backslash."""
    out: list[str] = []
    i = 0
    while i < len(dn):
        if dn[i] != "\\":
            out.append(dn[i])
            i += 1
            continue
        raw = bytearray()
        while dn[i : i + 1] == "\\" and _is_hex(dn[i + 1 : i + 3]):
            raw += bytes.fromhex(dn[i + 1 : i + 3])
            i += 3
        chars = raw.decode("utf-8", "replace") if raw else dn[i + 1 : i + 2]
        i += 0 if raw else 2
        out += ["\\" + c if c in ',+;="<>\\' else c for c in chars]
    return "".join(out).strip().lower()


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def _raw(e: Mapping[str, Any], name: str) -> list[bytes]:
    """Values of attribute ``name`` (any case). The lower-cased index is built once per entry: the
    directory benchmark showed the per-lookup scan costing more than ldap3's own decoding."""
    if not name:
        return []
    index = e.get("_lower")
    if index is None:
        index = {k.lower(): v for k, v in e.get("raw_attributes", {}).items()}
        if isinstance(e, dict):
            e["_lower"] = index
    return list(index.get(name.lower(), ()))


def _texts(e: Mapping[str, Any], name: str) -> list[str]:
    return [v.decode("utf-8", "replace") for v in _raw(e, name)]


def _safe(e: BaseException, *secrets: str) -> str:
    text = str(e)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text[:300]
