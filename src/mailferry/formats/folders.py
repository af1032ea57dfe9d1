r"""Folder-name translation between the namespaces of two servers. Pure: no I/O, no logging.

Terminology
-----------
name            a folder name as one server spells it (decoded Unicode), e.g. ``INBOX.Projects.2024``.
Side            what we know of one server's personal namespace: prefix, delimiter, the folders that
                already carry a special use, and the prefixes of its other namespaces.
components      a name split into hierarchy levels with the personal prefix removed:
                ``["Projects", "2024"]``. ``INBOX`` (any case) is always ``["INBOX"]``.
OUTSIDE         the leading marker component (``"\x00"``) of a name outside the personal namespace
                (other users, shared folders): ``user.bob.Sent`` on Cyrus is
                ``[OUTSIDE, "user", "bob", "Sent"]``. NUL cannot occur in an IMAP folder name, so the
                marker never collides with a real component.
canonical path  the components joined with ``/``, e.g. ``Projects/2024``; a name outside the personal
                namespace starts with ``/`` (``/user/bob/Sent``). Include, exclude and rename rules
                see this path, whatever the servers' delimiters are.

map_folder decision table (first row that applies decides; its text is ``FolderMapping.rule``)
------------------------------------------------------------------------------------------------
1. split the source name (:func:`split_path`);
2. a component holding the target delimiter gets ``Rules.separator_substitute`` in its place
   (a note; it is never split into a hierarchy);
3. include/exclude regexes (``re.search``) on the canonical path -> skipped, ``target=None``;
4. special use, declared by the server (case-insensitive, see :func:`canonical_use`) or, when none is
   declared, guessed from the name of a top-level folder or a direct child of INBOX
   (:func:`guess_special_use`) -> the target's folder with that use, else the target's default name
   (``Sent``, ``Drafts``, ``Trash``, ``Junk``, ``Archive``) at the top of the personal namespace.
   ``\All`` and ``\Flagged`` are usually virtual views (Gmail's All Mail, Dovecot virtual folders):
   they are never redirected onto the target's virtual folder (appending there fails); they get a
   note and go on to row 5;
5. rename rules: the first whose pattern ``re.fullmatch``-es the canonical path; its replacement
   (``match.expand``) is again a canonical path;
6. namespace translation: the components joined on the target side (:func:`join_path`).

:func:`map_all` then makes targets distinct: see its docstring.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "DEFAULT_NAMES",
    "OUTSIDE",
    "SPECIAL_USES",
    "FolderMapping",
    "Rules",
    "RulesError",
    "Side",
    "canonical_path",
    "canonical_use",
    "guess_special_use",
    "in_namespace",
    "join_path",
    "map_all",
    "map_folder",
    "parse_canonical_path",
    "split_path",
]

OUTSIDE = "\x00"
"""Leading component marking a name outside the personal namespace (see the module docstring)."""

SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
"""RFC 6154 special uses, in canonical case."""

DEFAULT_NAMES: Mapping[str, str] = MappingProxyType(
    {"\\Sent": "Sent", "\\Drafts": "Drafts", "\\Trash": "Trash", "\\Junk": "Junk", "\\Archive": "Archive"}
)
"""The target's folder name for a special use it has no folder for yet (Dovecot's defaults)."""

_CANONICAL_USE: Mapping[str, str] = MappingProxyType({u.casefold(): u for u in SPECIAL_USES})

# Virtual views: never redirected onto the target's folder of the same use (see row 4).
_VIRTUAL_USES = frozenset({"\\All", "\\Flagged"})

_WELL_KNOWN: Mapping[str, str] = MappingProxyType(
    {
        unicodedata.normalize("NFC", name).casefold(): use
        for use, names in (
            (
                "\\Sent",
                (
                    # en, de, fr, es/pt, it, nl, pt
                    "Sent", "Sent Items", "Sent Messages", "Sent Mail",
                    "Gesendet", "Gesendete Elemente", "Gesendete Objekte",
                    "Envoyés", "Éléments envoyés", "Messages envoyés",
                    "Enviados", "Elementos enviados",
                    "Posta inviata", "Inviata", "Inviati",
                    "Verzonden items", "Verzonden",
                    "Itens enviados",
                ),
            ),
            (
                "\\Drafts",
                ("Drafts", "Entwürfe", "Brouillons", "Borradores", "Bozze", "Concepten", "Rascunhos"),
            ),
            (
                "\\Trash",
                (
                    "Trash", "Deleted Items", "Deleted Messages",
                    "Papierkorb", "Gelöschte Elemente", "Gelöschte Objekte",
                    "Corbeille", "Éléments supprimés",
                    "Papelera", "Elementos eliminados",
                    "Cestino", "Posta eliminata",
                    "Prullenbak", "Verwijderde items",
                    "Lixeira", "Lixo", "Itens excluídos",
                ),
            ),
            (
                "\\Junk",
                (
                    "Junk", "Junk E-mail", "Junk Email", "Spam", "Bulk Mail",
                    "Junk-E-Mail",
                    "Courrier indésirable", "Pourriel",
                    "Correo no deseado",
                    "Posta indesiderata",
                    "Ongewenste e-mail",
                    "Lixo eletrônico",
                ),
            ),
            ("\\Archive", ("Archive", "Archives", "Archiv")),
        )
        for name in names
    }
)  # fmt: skip


class RulesError(ValueError):
    """The include/exclude/rename rules are wrong. ``problems`` lists every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Side:
    r"""One server's personal namespace, as its NAMESPACE and LIST answers show it.

    ``special`` maps a special use (any case; stored canonical, ``\Sent``) to the full name of the
    folder already carrying it. ``outside`` (an addition to the brief) lists the prefixes of the
    server's other namespaces (other users, shared): needed where the personal prefix is empty,
    e.g. Dovecot's ``Shared/``. A delimiter of ``""`` (LIST said NIL) means a flat namespace.

    ``case_sensitive`` says whether the server holds two folders whose names differ only in case
    (``Archive`` and ``archive``) apart: True, False, or None when not known. Only the target's
    matters (see :func:`map_all`); the engine finds it out from the server, this module only uses it.
    """

    prefix: str
    delimiter: str
    special: Mapping[str, str] = field(default_factory=dict, hash=False)
    outside: tuple[str, ...] = ()
    case_sensitive: bool | None = None

    def __post_init__(self) -> None:
        normalised: dict[str, str] = {}
        for use, name in self.special.items():
            normalised[canonical_use(use) or use] = name
        # A read-only copy: the caller's dict may change later, a frozen Side must not.
        object.__setattr__(self, "special", MappingProxyType(normalised))


def _check_template(index: int, pattern: re.Pattern[str], template: str) -> str | None:
    for m in re.finditer(r"\\(?:(\d+)|g<([^>]*)>)", template):
        ref = m.group(1) if m.group(1) is not None else m.group(2)
        if ref.isdigit():
            if int(ref) > pattern.groups:
                return f"rename rule {index}: replacement refers to group {ref}, pattern has {pattern.groups}"
        elif ref not in pattern.groupindex:
            return f"rename rule {index}: replacement refers to unknown group {ref!r}"
    return None


@dataclass(frozen=True)
class Rules:
    """Operator rules on canonical paths. Every regex is checked at construction: a bad one raises
    :class:`RulesError` listing every problem, so configuration fails before a server is touched.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    separator_substitute: str = "_"
    _include: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False, hash=False)
    _exclude: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False, hash=False)
    _rename: tuple[tuple[re.Pattern[str], str], ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems: list[str] = []

        def compile_(kind: str, index: int, pattern: str) -> re.Pattern[str]:
            try:
                return re.compile(pattern)
            except re.error as exc:
                problems.append(f"{kind} rule {index} {pattern!r}: {exc}")
                return re.compile(r"(?!)")

        inc = tuple(compile_("include", i, p) for i, p in enumerate(self.include, 1))
        exc = tuple(compile_("exclude", i, p) for i, p in enumerate(self.exclude, 1))
        ren: list[tuple[re.Pattern[str], str]] = []
        for i, (pattern, replacement) in enumerate(self.rename, 1):
            compiled = compile_("rename", i, pattern)
            problem = _check_template(i, compiled, replacement)
            if problem:
                problems.append(problem)
            ren.append((compiled, replacement))
        if problems:
            raise RulesError(problems)
        object.__setattr__(self, "_include", inc)
        object.__setattr__(self, "_exclude", exc)
        object.__setattr__(self, "_rename", tuple(ren))


@dataclass(frozen=True)
class FolderMapping:
    """Where one source folder goes. ``target`` None: skipped. ``rule``: what decided, for humans.
    ``notes``: warnings for the report."""

    source: str
    target: str | None
    rule: str
    notes: tuple[str, ...]
    special_use: str | None = None  # the use it lands as (declared or guessed): create the target with it


# --------------------------------------------------------------------------------------------
# special use


def canonical_use(attr: str) -> str | None:
    r"""``\sent``, ``\SENT`` (Cyrus answers lower case) -> ``\Sent``; None if not a special use."""
    return _CANONICAL_USE.get(attr.strip().casefold())


def guess_special_use(name_component: str) -> str | None:
    r"""The special use a well-known folder name suggests (``Gesendete Objekte`` -> ``\Sent``).

    Compared after NFC normalisation (macOS clients send NFD), casefolding and stripping spaces.
    """
    return _WELL_KNOWN.get(unicodedata.normalize("NFC", name_component).strip().casefold())


# --------------------------------------------------------------------------------------------
# namespaces


def in_namespace(
    name: str, prefix: str, namespaces: Sequence[str], hidden: Sequence[str] = (), personal: Sequence[str] = ()
) -> bool:
    """Whether folder ``name`` belongs to the namespace with ``prefix`` (RFC 2342), among all the
    server's namespace prefixes ``namespaces`` (personal, other users', shared); ``personal``:
    the personal ones among them.

    Not INBOX; not the namespace's root (Dovecot lists ``Public`` of ``Public/`` as \\Noselect);
    not a folder of another namespace whose prefix is longer (Cyrus' shared namespace has the empty
    prefix and holds ``INBOX/`` and ``user/``), nor under one of the ``hidden`` prefixes (Cyrus'
    ``DELETED/``). The empty prefix shared with the personal namespace holds no shared folder.
    """
    if name.upper() == "INBOX" or not name.startswith(prefix) or name == prefix:
        return False
    longer = [p for p in namespaces if p != prefix and len(p) > len(prefix)]
    if prefix == "" and "" in personal:
        return False  # the empty prefix is the personal namespace's: none of it is shared
    return not any(name.startswith(p) for p in (*longer, *hidden))


# --------------------------------------------------------------------------------------------
# names <-> components


def _is_inbox(component: str) -> bool:
    return component.upper() == "INBOX"


def _inbox_prefix(side: Side) -> bool:
    """True if the personal prefix is ``INBOX`` + delimiter (Cyrus, Courier): INBOX children are
    then the top level of the personal namespace, and the prefix is case-insensitive."""
    return bool(side.delimiter) and side.prefix.upper() == ("INBOX" + side.delimiter).upper()


def _has_prefix(name: str, prefix: str, side: Side) -> bool:
    if _inbox_prefix(side) and prefix == side.prefix:
        return name[: len(prefix)].upper() == prefix.upper()
    return name.startswith(prefix)


def _split(rest: str, delimiter: str) -> list[str]:
    return rest.split(delimiter) if delimiter else [rest]


def split_path(name: str, side: Side) -> list[str]:
    """Split a folder name of ``side`` into components, personal prefix removed.

    ``INBOX`` in any case is ``["INBOX"]``. A name outside the personal namespace (it does not start
    with the personal prefix, or starts with a longer prefix from ``side.outside``) is
    ``[OUTSIDE, *name.split(delimiter)]``: whole, nothing removed.
    """
    if _is_inbox(name):
        return ["INBOX"]
    personal = _has_prefix(name, side.prefix, side)
    if any(len(p) > len(side.prefix) and name.startswith(p) for p in side.outside):
        personal = False
    if not personal:
        return [OUTSIDE, *_split(name, side.delimiter)]
    return _split(name[len(side.prefix) :], side.delimiter)


def join_path(components: Sequence[str], side: Side) -> str:
    """Inverse of :func:`split_path`: ``["INBOX"]`` -> ``INBOX``; ``[OUTSIDE, ...]`` -> the rest
    joined by the delimiter, no prefix; anything else -> prefix + delimiter-joined components.

    Collision by design: where the prefix is ``INBOX.``, ``["INBOX", "x"]`` (a child of INBOX on a
    prefix-less source) becomes ``INBOX.x``, the same as ``["x"]``; :func:`map_folder` notes it and
    :func:`map_all` gives one of the two a distinct name. Consequently ``INBOX.INBOX.x`` does not
    survive a round trip on such a side.

    Raises ``ValueError`` for no components, or several on a flat (delimiter ``""``) side.
    """
    comps = list(components)
    if not comps:
        raise ValueError("no components to join")
    if comps[0] == OUTSIDE:
        rest = comps[1:]
        if not side.delimiter and len(rest) > 1:
            raise ValueError(f"cannot join {len(rest)} components on a flat namespace")
        return side.delimiter.join(rest)
    if len(comps) == 1 and _is_inbox(comps[0]):
        return "INBOX"
    if len(comps) > 1 and _is_inbox(comps[0]) and _inbox_prefix(side):
        comps = comps[1:]
    if not side.delimiter and len(comps) > 1:
        raise ValueError(f"cannot join {len(comps)} components on a flat namespace")
    return side.prefix + side.delimiter.join(comps)


def canonical_path(components: Sequence[str]) -> str:
    """Components joined with ``/``; the OUTSIDE marker becomes a leading ``/``."""
    comps = list(components)
    if comps and comps[0] == OUTSIDE:
        return "/" + "/".join(comps[1:])
    return "/".join(comps)


def parse_canonical_path(path: str) -> list[str]:
    """Inverse of :func:`canonical_path` (for components without ``/``)."""
    if path.startswith("/"):
        return [OUTSIDE, *path[1:].split("/")]
    return path.split("/")


# --------------------------------------------------------------------------------------------
# mapping


@dataclass(frozen=True)
class _Mapped:
    mapping: FolderMapping
    components: tuple[str, ...] | None  # the target's components (None when skipped)
    declared: bool  # the source server declared a special use
    leaf_kept: bool  # the last component is unchanged: preferred in a collision


def _substitute(dst: Side, rules: Rules) -> str:
    for candidate in (rules.separator_substitute, "_", "-", "~"):
        if not dst.delimiter or dst.delimiter not in candidate:
            return candidate
    return ""  # pragma: no cover - a delimiter cannot be in all of "_", "-" and "~"


def _fix_components(comps: list[str], dst: Side, rules: Rules, notes: list[str], what: str = "component") -> list[str]:
    """Row 2: replace the target delimiter inside components (never split them)."""
    if not dst.delimiter:
        return comps
    sub = _substitute(dst, rules)
    out: list[str] = []
    for comp in comps:
        if comp != OUTSIDE and dst.delimiter in comp:
            fixed = comp.replace(dst.delimiter, sub)
            notes.append(f"{what} {comp!r} contains the target separator {dst.delimiter!r}: mapped to {fixed!r}")
            comp = fixed
        out.append(comp)
    return out


def _flatten(comps: list[str], dst: Side, rules: Rules, notes: list[str]) -> list[str]:
    """A flat target (no delimiter) holds one level only: join the levels with the substitute."""
    body = comps[1:] if comps[0] == OUTSIDE else comps
    if dst.delimiter or len(body) <= 1:
        return comps
    flat = _substitute(dst, rules).join(body)
    notes.append(f"the target has no hierarchy: {canonical_path(comps)!r} flattened to {flat!r}")
    return [OUTSIDE, flat] if comps[0] == OUTSIDE else [flat]


def _translation_rule(src: Side, dst: Side) -> str:
    return (
        f"namespace translation {src.prefix or '(none)'} → {dst.prefix or '(none)'}, "
        f"{src.delimiter or '(flat)'!r} → {dst.delimiter or '(flat)'!r}"
    )


def _map(
    source_name: str, source_special_use: str | None, src: Side, dst: Side, rules: Rules, *, roles: bool = True
) -> _Mapped:
    notes: list[str] = []
    # 1. split
    comps = split_path(source_name, src)
    if source_name == "" or any(c == "" for c in comps):
        notes.append(f"source name {source_name!r} has an empty hierarchy level")
    if any(unicodedata.category(ch) == "Cc" for ch in source_name):
        notes.append(f"source name {source_name!r} contains control characters")
    outside = comps[0] == OUTSIDE
    if outside:
        notes.append(
            f"{source_name!r} is outside the source's personal namespace "
            f"({src.prefix or '(none)'}): kept outside the target's personal namespace"
        )
    # 2. the target delimiter inside a component
    comps = _fix_components(comps, dst, rules, notes)
    path = canonical_path(comps)
    # 3. include / exclude
    if rules.include and not any(p.search(path) for p in rules._include):
        return _Mapped(FolderMapping(source_name, None, "not matched by any include rule", tuple(notes)),
                       None, False, False)  # fmt: skip
    for pattern in rules._exclude:
        if pattern.search(path):
            rule = f"excluded by rule: {pattern.pattern}"
            return _Mapped(FolderMapping(source_name, None, rule, tuple(notes)), None, False, False)
    # 4. special use
    declared_use = None
    if source_special_use is not None:
        declared_use = canonical_use(source_special_use)
        if declared_use is None:
            notes.append(f"unknown special use {source_special_use!r} ignored")
    use, how = declared_use, "declared"
    if use is None and not outside:
        candidate = None
        if len(comps) == 1:
            candidate = comps[0]
        elif len(comps) == 2 and comps[0] == "INBOX":
            candidate = comps[1]
        if candidate is not None:
            use, how = guess_special_use(candidate), f"guessed from the name {candidate!r}"
    if use is not None and outside:
        notes.append(f"special use {use} ignored outside the personal namespace")
        use = None
    if not roles:
        use = None
    if use in _VIRTUAL_USES:
        notes.append(
            f"special use {use} ({how}) is usually a virtual view of other folders: "
            "copied as a plain folder, consider excluding it"
        )
        use = None
    if use is not None:
        declared = declared_use is not None
        label = "special-use" if declared else f"special-use {use} {how}"
        if use in dst.special:
            name = dst.special[use]
            target_comps = tuple(split_path(name, dst))
            rule = f"{label} {use} → target's {name}" if declared else f"{label} → target's {name}"
        else:
            default = DEFAULT_NAMES[use]
            target_comps = (default,)
            name = join_path(target_comps, dst)
            rule = f"{label} {use} → target default {name}" if declared else f"{label} → target default {name}"
        leaf_kept = comps[-1] == target_comps[-1]
        mapping = FolderMapping(source_name, name, rule, tuple(notes), use)
        return _Mapped(mapping, target_comps, declared, leaf_kept)
    # 5. rename rules
    rule = _translation_rule(src, dst)
    for index, (pattern, replacement) in enumerate(rules._rename, 1):
        m = pattern.fullmatch(path)
        if m is None:
            continue
        try:
            renamed = m.expand(replacement)
        except (re.error, IndexError) as exc:  # checked in Rules; kept for totality
            notes.append(f"rename rule {index} failed ({exc}): ignored")
            continue
        new = parse_canonical_path(renamed)
        body = new[1:] if new[0] == OUTSIDE else new
        if not body or any(c == "" for c in body):
            notes.append(f"rename rule {index} gave an empty hierarchy level ({renamed!r}): ignored")
            continue
        if new[0] == OUTSIDE and not outside:
            notes.append(f"rename rule {index} moved the folder outside the personal namespace")
        comps = _fix_components(new, dst, rules, notes, what=f"renamed component (rule {index})")
        rule = f"rename rule {index}: {pattern.pattern}"
        break
    # 6. join on the target side
    if comps == ["INBOX"] and rule == _translation_rule(src, dst):
        rule = "INBOX is INBOX on every server"
    if len(comps) > 1 and comps[0] == "INBOX" and _inbox_prefix(dst):
        notes.append(
            f"{source_name!r} is a child of INBOX; on the target {dst.prefix!r} is the personal prefix, "
            f"so it lands at the top level (a top-level {comps[-1]!r} would collide)"
        )
    comps = _flatten(comps, dst, rules, notes)
    target = join_path(comps, dst)
    leaf_kept = split_path(source_name, src)[-1] == comps[-1]
    return _Mapped(FolderMapping(source_name, target, rule, tuple(notes)), tuple(comps), False, leaf_kept)


def map_folder(
    source_name: str,
    source_special_use: str | None,
    src: Side,
    dst: Side,
    rules: Rules = Rules(),
    *,
    roles: bool = True,
) -> FolderMapping:
    """Map one source folder name to the target (decision table in the module docstring).

    Total: any str gives a mapping; odd input gets a note. ``source_special_use`` is the special use
    the source server declared (any case), or None to guess it from the name. ``roles=False`` maps
    it as a plain folder under its own name (row 4 left out): what a folder that lost a
    special-use role to another becomes (see :func:`map_all`).
    """
    return _map(source_name, source_special_use, src, dst, rules, roles=roles).mapping


def _collision_key(target: str, dst: Side) -> str:
    # Names equal up to case collide unless the target is known to hold them apart: a server that
    # isn't (Exchange, Dovecot on a case-insensitive file system) would merge "Sent" and "sent".
    return target if dst.case_sensitive else target.casefold()


def _suffixed(comps: tuple[str, ...], n: int, dst: Side) -> tuple[str, ...]:
    """The n-th distinct name: `` (n)`` on the last component (``_n``, ``-n`` if that holds the
    delimiter; a delimiter such as ``2`` that is in all three only adds a level)."""
    for suffix in (f" ({n})", f"_{n}", f"-{n}"):
        if not dst.delimiter or dst.delimiter not in suffix:
            break
    return (*comps[:-1], comps[-1] + suffix)


def map_all(
    folders: Sequence[tuple[str, str | None]],
    src: Side,
    dst: Side,
    rules: Rules = Rules(),
    *,
    roles: bool = True,
) -> list[FolderMapping]:
    """Map many folders ``(source name, declared special use or None)``; targets come out distinct.

    A folder keeps its own name unless the plan has a reason (a special-use role, a rename rule,
    the target's separator or hierarchy) and is renamed with a counter only where the target
    really can't hold it next to another. The input is sorted by name first (a repeated name is
    mapped once, preferring a known special use, then a non-virtual one), so the result is the same
    for any input order, sorted by source name. Then:

    1. **One folder per special-use role.** When several folders would take the same role (the
       target's folder of that use, or its default name), the one whose own name is the role's name
       exactly takes it (``Archive`` beats ``archive`` and ``Archives``: then no folder changes
       name), else the one whose use the source server declared, then the one whose last component
       is unchanged, then the one without notes, then by source name. Every other one is mapped
       as a plain folder under its own name (:func:`map_folder` with ``roles=False``), with a note.
       ``roles=False`` maps every folder so (a public tree: its folders have no special-use role).
    2. **Distinct names.** Targets that are equal, or equal up to case where the target is not
       known to hold such names apart (``dst.case_sensitive`` not True), collide. The first by
       (INBOX first, holds a special-use role, its own name is the target exactly, special use
       declared, last component unchanged, no notes, source name) keeps the name; each other one gets
       `` (2)``, `` (3)``, ... on the last component of *its own* name (a role holder that loses
       falls back to its own name first), the first such name not taken, and a note that says
       why. So a counter never lands on a special folder's name taken from another folder.
    """
    by_name: dict[str, str | None] = {}

    def preference(f: tuple[str, str | None]) -> tuple[str, bool, bool, bool, str]:
        use = canonical_use(f[1]) if f[1] is not None else None
        return (f[0], use is None, use in _VIRTUAL_USES, f[1] is None, f[1] or "")

    for name, use in sorted(folders, key=preference):
        if name not in by_name:
            by_name[name] = use
    names = sorted(by_name.items())
    mapped = [_map(name, use, src, dst, rules, roles=roles) for name, use in names]
    plain: dict[int, _Mapped] = {}

    def own(i: int) -> _Mapped:
        """Folder i mapped as a plain folder under its own name."""
        if i not in plain:
            plain[i] = _map(*names[i], src, dst, rules, roles=False)
        return plain[i]

    def exact(i: int) -> bool:
        return own(i).mapping.target == mapped[i].mapping.target

    def with_note(m: _Mapped, target: str, comps: tuple[str, ...], note: str) -> _Mapped:
        old = m.mapping
        return _Mapped(FolderMapping(old.source, target, old.rule, (*old.notes, note), None), comps, False, m.leaf_kept)

    # 1. one folder per special-use role
    holders: dict[str, list[int]] = {}
    for i, m in enumerate(mapped):
        if m.mapping.special_use is not None and m.mapping.target is not None:
            holders.setdefault(m.mapping.target.casefold(), []).append(i)
    for key in sorted(holders):
        members = holders[key]
        if len(members) < 2:
            continue
        members.sort(
            key=lambda i: (
                not exact(i),
                not mapped[i].declared,
                not mapped[i].leaf_kept,
                bool(mapped[i].mapping.notes),
                mapped[i].mapping.source,
            )
        )
        winner = mapped[members[0]].mapping
        why = "its name matches exactly" if exact(members[0]) else "chosen first"
        for i in members[1:]:
            o = own(i)
            assert o.mapping.target is not None and o.components is not None
            note = (
                f"special use {mapped[i].mapping.special_use} went to {winner.source!r} ({why}): "
                f"kept as a plain folder under its own name {o.mapping.target!r}"
            )
            mapped[i] = with_note(o, o.mapping.target, o.components, note)

    # 2. distinct names
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(mapped):
        if m.mapping.target is not None:
            groups.setdefault(_collision_key(m.mapping.target, dst), []).append(i)
    taken = set(groups)
    for key in sorted(groups):
        members = groups[key]
        if len(members) < 2:
            continue
        members.sort(
            key=lambda i: (
                mapped[i].mapping.target != "INBOX" or not _is_inbox(mapped[i].mapping.source),
                mapped[i].mapping.special_use is None,
                not exact(i),
                not mapped[i].declared,
                not mapped[i].leaf_kept,
                bool(mapped[i].mapping.notes),
                mapped[i].mapping.source,
            )
        )
        winner = mapped[members[0]].mapping
        for i in members[1:]:
            m = mapped[i]
            assert m.mapping.target is not None
            base = own(i) if m.mapping.special_use is not None else m
            assert base.components is not None and base.mapping.target is not None
            target, comps = base.mapping.target, base.components
            n = 1
            while _collision_key(target, dst) in taken:
                n += 1
                comps = _suffixed(base.components, n, dst)
                target = join_path(comps, dst)
            taken.add(_collision_key(target, dst))
            if m.mapping.target == winner.target:
                why = f"target {m.mapping.target!r} is already taken by {winner.source!r}"
            elif dst.case_sensitive is None:
                why = (
                    f"target {m.mapping.target!r} differs from {winner.target!r} (taken by {winner.source!r}) "
                    "only in case, and whether the target can hold both is not known"
                )
            else:
                why = (
                    f"the target does not hold {m.mapping.target!r} apart from {winner.target!r} "
                    f"(taken by {winner.source!r}): it ignores case in folder names"
                )
            mapped[i] = with_note(base, target, comps, f"{why}: mapped to {target!r} instead")
    return [m.mapping for m in mapped]
