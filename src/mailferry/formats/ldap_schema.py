"""An LDAP server's schema as it publishes it (RFC 4512 §4.1: the subschema subentry), and what
it allows an entry to hold.

Pure: the connector reads the ``attributeTypes``, ``objectClasses`` and ``dITContentRules``
values of the subschema subentry; :func:`parse_schema` turns them into a :class:`Schema`.

What an entry of some object classes may hold (:meth:`Schema.allowed`), per RFC 4512 §2.4 and
§4.1.6, and as Active Directory publishes it:

- the MUST and MAY attributes of each of its classes and of all their superclasses (``SUP``);
- for each structural class with a DIT content rule (AD publishes one per class that has
  auxiliary classes: ``user`` has ``AUX ( securityPrincipal $ mailRecipient ... )``), the rule's
  MUST and MAY and those of the auxiliary classes it names (with their superclasses);
- ``objectClass`` itself.

Which attributes a client may write (:meth:`Schema.user_attribute`): an attribute the schema
defines, of ``USAGE userApplications`` (the default), not ``NO-USER-MODIFICATION`` (AD marks its
system-only attributes so: objectSid, whenCreated, memberOf, ...).

Names compare without case; an OID stands for the same thing as its names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["AttributeType", "ContentRule", "ObjectClass", "Schema", "SchemaError", "parse_schema"]


class SchemaError(ValueError):
    """A schema description that can't be parsed."""


@dataclass(frozen=True, slots=True)
class AttributeType:
    oid: str
    names: tuple[str, ...]
    sup: str | None = None
    single_value: bool = False
    no_user_modification: bool = False
    usage: str = "userApplications"

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.oid


@dataclass(frozen=True, slots=True)
class ObjectClass:
    oid: str
    names: tuple[str, ...]
    sup: tuple[str, ...] = ()
    kind: str = "STRUCTURAL"  # STRUCTURAL, AUXILIARY or ABSTRACT
    must: tuple[str, ...] = ()
    may: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.oid


@dataclass(frozen=True, slots=True)
class ContentRule:
    oid: str  # the structural class it is for
    names: tuple[str, ...]
    aux: tuple[str, ...] = ()
    must: tuple[str, ...] = ()
    may: tuple[str, ...] = ()


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()$":
            out.append(c)
            i += 1
        elif c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise SchemaError(f"unterminated quote in {text!r}")
            out.append("'" + text[i + 1 : j])
            i = j + 1
        elif c == "{":  # a length bound after a syntax OID (OpenLDAP: ...1.15{256})
            j = text.find("}", i)
            i = n if j < 0 else j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "()$'{":
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _description(text: str) -> tuple[str, dict[str, list[str]]]:
    """(OID, keyword -> values) of one RFC 4512 description ``( oid NAME 'x' SUP y ... )``.
    A keyword without values (SINGLE-VALUE, AUXILIARY) maps to an empty list."""
    tokens = _tokens(text)
    if len(tokens) < 3 or tokens[0] != "(" or tokens[-1] != ")":
        raise SchemaError(f"not a schema description: {text[:80]!r}")
    body = tokens[1:-1]
    oid = body[0].lstrip("'")
    fields: dict[str, list[str]] = {}
    i = 1
    while i < len(body):
        key = body[i].upper()
        i += 1
        values: list[str] = []
        if (key in _VALUED or key.startswith("X-")) and i < len(body):
            if body[i] == "(":
                i += 1
                while i < len(body) and body[i] != ")":
                    if body[i] != "$":
                        values.append(body[i].lstrip("'"))
                    i += 1
                i += 1
            else:
                values.append(body[i].lstrip("'"))
                i += 1
        fields.setdefault(key, []).extend(values)
    return oid, fields


# Keywords followed by one value (or a parenthesised list); the others stand alone.
_VALUED = frozenset(
    {"NAME", "DESC", "SUP", "EQUALITY", "ORDERING", "SUBSTR", "SYNTAX", "USAGE", "MUST", "MAY", "AUX", "NOT"}
)


@dataclass(slots=True)
class Schema:
    """Attribute types, object classes and content rules, looked up by any name or OID."""

    attributes: dict[str, AttributeType] = field(default_factory=dict)
    classes: dict[str, ObjectClass] = field(default_factory=dict)
    rules: dict[str, ContentRule] = field(default_factory=dict)

    def attribute(self, name: str) -> AttributeType | None:
        return self.attributes.get(name.lower())

    def object_class(self, name: str) -> ObjectClass | None:
        return self.classes.get(name.lower())

    def user_attribute(self, name: str) -> bool:
        """Whether a client may write ``name``: defined, a user attribute, not system-only."""
        a = self.attribute(name)
        return a is not None and a.usage == "userApplications" and not a.no_user_modification

    def chain(self, names: Iterable[str]) -> list[ObjectClass]:
        """The known classes ``names`` and all their superclasses, each once."""
        out: list[ObjectClass] = []
        seen: set[str] = set()
        todo = list(names)
        while todo:
            c = self.object_class(todo.pop())
            if c is None or c.oid in seen:
                continue
            seen.add(c.oid)
            out.append(c)
            todo.extend(c.sup)
        return out

    def allowed(self, classes: Iterable[str]) -> frozenset[str]:
        """Every name (lower case) and OID of the attributes an entry of ``classes`` may hold."""
        chain = self.chain(classes)
        extra: list[str] = []
        for c in chain:
            if c.kind == "STRUCTURAL":
                rule = self.rules.get(c.oid.lower()) or next(
                    (r for n in c.names if (r := self.rules.get(n.lower())) is not None), None
                )
                if rule is not None:
                    extra += rule.aux
        names: set[str] = {"objectclass"}
        rule_attrs: list[str] = []
        for c in chain:
            rule = self.rules.get(c.oid.lower())
            if rule is not None:
                rule_attrs += [*rule.must, *rule.may]
        for c in [*chain, *self.chain(extra)]:
            for a in (*c.must, *c.may):
                names.add(a.lower())
        names.update(a.lower() for a in rule_attrs)
        # Every alias and the OID of each attribute named.
        for n in list(names):
            at = self.attribute(n)
            if at is not None:
                names.update(x.lower() for x in at.names)
                names.add(at.oid.lower())
        return frozenset(names)


def parse_schema(
    attribute_types: Iterable[str], object_classes: Iterable[str], content_rules: Iterable[str] = ()
) -> Schema:
    """A :class:`Schema` from the subschema's values. Descriptions that don't parse are skipped
    (a server's private extension must not make the whole schema unreadable)."""
    s = Schema()
    for text in attribute_types:
        try:
            oid, f = _description(text)
        except SchemaError:
            continue
        a = AttributeType(
            oid=oid,
            names=tuple(f.get("NAME", ())),
            sup=next(iter(f.get("SUP", ())), None),
            single_value="SINGLE-VALUE" in f,
            no_user_modification="NO-USER-MODIFICATION" in f,
            usage=(f.get("USAGE") or ["userApplications"])[0],
        )
        for key in (oid, *a.names):
            s.attributes[key.lower()] = a
    # An attribute type inherits its usage from its supertype when it names none (RFC 4512 §2.5.1).
    for key, a in list(s.attributes.items()):
        if a.sup and a.usage == "userApplications":
            sup = s.attributes.get(a.sup.lower())
            if sup is not None and sup.usage != "userApplications":
                s.attributes[key] = AttributeType(
                    a.oid, a.names, a.sup, a.single_value, a.no_user_modification, sup.usage
                )
    for text in object_classes:
        try:
            oid, f = _description(text)
        except SchemaError:
            continue
        kind = next((k for k in ("STRUCTURAL", "AUXILIARY", "ABSTRACT") if k in f), "STRUCTURAL")
        c = ObjectClass(
            oid=oid,
            names=tuple(f.get("NAME", ())),
            sup=tuple(f.get("SUP", ())),
            kind=kind,
            must=tuple(f.get("MUST", ())),
            may=tuple(f.get("MAY", ())),
        )
        for key in (oid, *c.names):
            s.classes[key.lower()] = c
    for text in content_rules:
        try:
            oid, f = _description(text)
        except SchemaError:
            continue
        r = ContentRule(
            oid=oid,
            names=tuple(f.get("NAME", ())),
            aux=tuple(f.get("AUX", ())),
            must=tuple(f.get("MUST", ())),
            may=tuple(f.get("MAY", ())),
        )
        for key in (oid, *r.names):
            s.rules[key.lower()] = r
    return s
