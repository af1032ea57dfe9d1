"""Blockers from the source: what one account holds that the target can't take, and what
migrate will do with each (``mailferry check``, area ``blockers``). Pure: plain data in, checks out.

Terminology: a *blocker* is a source feature the target cannot take as it is. Status, per the
readiness report (:mod:`mailferry.model.readiness`):

- ``warning``: mailferry carries the item in a lesser form (a keyword dropped, a folder renamed,
  an ACL entry with fewer rights) or leaves it out with a finding, and the account still moves;
- ``blocked``: the account can't move meaningfully as configured: the target refuses to create
  one of its folders (migrate then fails the whole account), no message of it fits the target,
  or its active Sieve script needs an extension the target lacks (its mail would no longer be
  filtered after the cut-over).

Decision table (first column: what the facts show; ``fix``: the admin's next step):

==============================================  ========  =======================================
source feature                                  status    what happens in migrate
==============================================  ========  =======================================
messages over the target's APPENDLIMIT          warning   each stays on the source, a finding
                                                          (``refused``), retried by every pass
every message over it                           blocked   nothing of the account's mail lands
messages over [messages] max_size               warning   left on the source by the project's rule
keywords the target folder can't store          warning   messages go without them
(PERMANENTFLAGS without ``\\*``)                          (``keyword-dropped``)
keywords over 50 bytes, target Dovecot or       warning   Dovecot refuses them by default
unknown                                                   (``mail_max_keyword_length``): dropped
a folder with over 128 keywords, target Cyrus   warning   a Cyrus folder holds at most 128
a folder name the target refuses (length,       blocked   CREATE fails: the account fails
characters; see :func:`name_limits`)
a name Dovecot refuses only if Maildir++        warning   the same, if so
a component holding the target's separator;     warning   carried under another name (a note)
a hierarchy on a flat target
ACL entry: identifier without mapping, rights   warning   the entry is not carried or carried
the target can't grant, a negative entry                  narrower, a finding each (``acl-*``)
that can't be carried, global entries, no ACL
Sieve script needing an extension the target    warning   refused by the target's CHECKSCRIPT,
lacks                                                     stays on the source, a finding
... and it is the active script                 blocked   the account's mail is no longer filtered
==============================================  ========  =======================================

An account with none of these gets one ``ok`` check with what was looked at.

Folder name limits (measured against the Dovecot 2.3.19 and Cyrus 3.6.1 of the test sandbox):

- Dovecot 2.3: a hierarchy level of more than 255 bytes (its on-disk name, modified UTF-7) is
  refused (``[CANNOT] Mailbox name too long``), as is a name of more than 4000 bytes or with
  control characters. With Maildir++ (Dovecot's default Maildir layout; its listing separator
  is usually ``.``) the whole name below the personal prefix is one directory name: at most 254
  bytes (``NO Not found``). The layout can't be seen over IMAP: with a ``.`` separator it is taken
  as Maildir++, else such a name is only a warning.
- Cyrus IMAP 3.6: a mailbox's internal name (``user.<account>.<path>``, modified UTF-7) is at
  most 490 bytes (``MAX_MAILBOX_NAME``), whatever the depth; ``! " % ; < > \\ ^ ` { | }`` and
  control characters are refused (``Invalid mailbox name``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from mailferry.formats import mutf7
from mailferry.model.readiness import Check

AREA = "blockers"
KEYWORD_LIMIT = 50  # bytes: Dovecot's default mail_max_keyword_length
CYRUS_KEYWORDS = 128  # user flags a Cyrus mailbox holds (MAX_USER_FLAGS)
DOVECOT_LEVEL = 255
DOVECOT_MAILDIRPP = 254
DOVECOT_TOTAL = 4000
CYRUS_NAME = 490
CYRUS_REFUSED = frozenset('!"%;<>\\^`{|}')
_SHOWN = 5  # items named in a check's text; all of them are in its facts


@dataclass(frozen=True, slots=True)
class FolderName:
    """One source folder and where the folder mapping puts it (None: not carried), with the
    mapping's notes."""

    source: str
    target: str | None
    notes: tuple[str, ...] = ()
    rule: str = ""  # what decided (the folder mapping's words)


@dataclass(frozen=True, slots=True)
class TargetNames:
    """What decides the target's folder name limits: its product (``Dovecot``, ``Cyrus IMAP``,
    "" unknown), personal prefix and separator, and the account's name there."""

    product: str
    prefix: str
    delimiter: str
    user: str


@dataclass(frozen=True, slots=True)
class AclItem:
    """An ACL entry the plan can't carry whole: ``kind`` the finding it becomes (``acl-unmapped``,
    ``acl-rights-unsupported``, ...); ``left_out`` the rights the target can't grant."""

    kind: str
    folder: str
    identifier: str
    rights: str
    reason: str = ""
    left_out: str = ""


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    requires: frozenset[str]
    active: bool = False


@dataclass(slots=True)
class AccountFacts:
    """What was seen of one account. A part left None was not looked at (not among the
    project's items, or its servers could not be reached: ``check`` reports that itself)."""

    account: str
    target_account: str = ""
    # The sizes of the account's messages that matter (check names those over the target's
    # limit or max_size, not every one); ``messages``: how many messages in all (None: len(sizes)).
    sizes: Sequence[int] | None = None
    messages: int | None = None
    appendlimit: int | None = None
    max_size: int | None = None
    keywords: Collection[str] | None = None
    folder_keywords: Mapping[str, int] | None = None  # source folder -> distinct keywords in it
    permanent_flags: Sequence[str] | None = None  # the target INBOX's (None: not known)
    target_product: str = ""
    folders: Sequence[FolderName] | None = None
    names: TargetNames | None = None
    acl: Sequence[AclItem] | None = None
    scripts: Sequence[Script] | None = None
    sieve_extensions: frozenset[str] | None = None
    looked_at: dict[str, int] = field(default_factory=dict)


def human(n: int) -> str:
    """Bytes for people: ``10 MB``, ``512 KB``, ``900 bytes`` (decimal units)."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v >= 10 or v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(repr(x) for x in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- message sizes ----------------------------------------------------------------------------


def size_threshold(appendlimit: int | None, max_size: int | None) -> int | None:
    """The size over which :func:`sizes` needs a message's own size: the smaller of the target's
    APPENDLIMIT and the project's ``[messages] max_size`` (None: neither is set, no message
    matters). Given the sizes over it and how many messages there are in all
    (``AccountFacts.messages``), :func:`sizes` judges as it would with every message's size."""
    limits = [x for x in (appendlimit, max_size) if x]
    return min(limits) if limits else None


def sizes(f: AccountFacts) -> list[Check]:
    if f.sizes is None:
        return []
    out: list[Check] = []
    limit = f.appendlimit
    over = sorted((s for s in f.sizes if limit is not None and s > limit), reverse=True)
    total = f.messages if f.messages is not None else len(f.sizes)
    if over and limit is not None:
        every = len(over) == total
        what = (
            f"{_plural(len(over), 'message')} over the target's limit of {human(limit)} (APPENDLIMIT; the largest "
            f"{human(over[0])}) stay on the source: migrate names each in its report (finding 'refused') and tries "
            "them again on every pass"
        )
        if every:
            what = f"every message of the account is over the target's limit: {what}"
        out.append(
            Check(
                AREA,
                "message sizes",
                "blocked" if every else "warning",
                what,
                f"raise the target's message size limit to at least {human(over[0])} (Cyrus: maxmessagesize; "
                "Dovecot: quota_max_mail_size), or leave such messages out on purpose with [messages] max_size",
                f.account,
                {"over_limit": len(over), "limit": limit, "largest": over[0], "messages": total},
            )
        )
    if f.max_size is not None:
        policy = sorted(
            (s for s in f.sizes if s > f.max_size and (limit is None or s <= limit)),
            reverse=True,
        )
        if policy:
            out.append(
                Check(
                    AREA,
                    "message sizes",
                    "warning",
                    f"{_plural(len(policy), 'message')} over [messages] max_size ({human(f.max_size)}; the largest "
                    f"{human(policy[0])}) stay on the source by the project's own rule: plan lists them, no finding",
                    "raise or remove [messages] max_size in the project file to carry them",
                    f.account,
                    {"over_max_size": len(policy), "max_size": f.max_size, "largest": policy[0]},
                )
            )
    return out


# -- keywords ---------------------------------------------------------------------------------


def keywords(f: AccountFacts) -> list[Check]:
    if f.keywords is None:
        return []
    kws = sorted(set(f.keywords))
    out: list[Check] = []
    perm = {p.lower() for p in f.permanent_flags or ()}
    if perm and "\\*" not in perm:
        lost = [k for k in kws if k.lower() not in perm]
        if lost:
            out.append(
                Check(
                    AREA,
                    "keywords",
                    "warning",
                    f"the target stores only the keywords it lists (PERMANENTFLAGS without \\*): {_names(lost)}; "
                    "migrate carries the messages without them and names each message in its report "
                    "(finding 'keyword-dropped')",
                    "let the target's folders take new keywords (PERMANENTFLAGS \\*), or accept the loss",
                    f.account,
                    {"keywords": lost},
                )
            )
        return out
    product = f.target_product
    if product in ("Dovecot", ""):
        long = [k for k in kws if len(k.encode()) > KEYWORD_LIMIT]
        if long:
            longest = max(len(k.encode()) for k in long)
            who = "the target (Dovecot) refuses" if product else "the target may refuse (Dovecot does by default)"
            out.append(
                Check(
                    AREA,
                    "keywords",
                    "warning",
                    f"{_plural(len(long), 'keyword')} longer than {KEYWORD_LIMIT} bytes, which {who}: {_names(long)}; "
                    "migrate carries the messages without them and names each (finding 'keyword-dropped')",
                    f"raise the target's keyword length limit to at least {longest} bytes (Dovecot: "
                    f"mail_max_keyword_length = {longest})",
                    f.account,
                    {"keywords": long, "limit": KEYWORD_LIMIT, "longest": longest},
                )
            )
    crowded = sorted(n for n, k in (f.folder_keywords or {}).items() if k > CYRUS_KEYWORDS)
    if product == "Cyrus IMAP" and crowded:
        most = max((f.folder_keywords or {}).values())
        out.append(
            Check(
                AREA,
                "keywords",
                "warning",
                f"{_plural(len(crowded), 'folder')} use more than {CYRUS_KEYWORDS} different keywords (up to {most}), "
                f"the most a Cyrus folder holds: {_names(crowded)}; the keywords over that are dropped from their "
                "messages (finding 'keyword-dropped')",
                "remove keywords no longer used on the source before the migration",
                f.account,
                {"folders": crowded, "most": most, "limit": CYRUS_KEYWORDS},
            )
        )
    return out


# -- folder names -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameProblem:
    status: str  # "blocked" | "warning"
    why: str


def _encoded(text: str) -> int:
    return len(mutf7.encode(text).encode("ascii", "replace"))


def name_problem(target: str, names: TargetNames) -> NameProblem | None:
    """Why the target refuses (``blocked``) or may refuse (``warning``) to create ``target``;
    None when it takes it, as far as is known (see the module docstring for the limits)."""
    if target.upper() == "INBOX":
        return None
    if any(unicodedata.category(ch) == "Cc" for ch in target):
        return NameProblem("blocked", "it holds control characters, which the target refuses")
    rest = target[len(names.prefix) :] if names.prefix and target.startswith(names.prefix) else target
    levels = rest.split(names.delimiter) if names.delimiter else [rest]
    total = _encoded(rest)
    if names.product == "Cyrus IMAP":
        bad = sorted({ch for ch in target if ch in CYRUS_REFUSED})
        if bad:
            return NameProblem("blocked", f"Cyrus refuses the characters {' '.join(bad)} in folder names")
        internal = len("user.") + len(names.user) + 1 + total
        if internal > CYRUS_NAME:
            return NameProblem(
                "blocked",
                f"its internal name on Cyrus (user.{names.user}.…) would be {internal} bytes, over Cyrus' "
                f"limit of {CYRUS_NAME} ({len(levels)} levels)",
            )
    elif names.product == "Dovecot":
        longest = max(levels, key=_encoded)
        if _encoded(longest) > DOVECOT_LEVEL:
            return NameProblem(
                "blocked",
                f"its level {longest[:40]!r}… is {_encoded(longest)} bytes, over Dovecot's limit of {DOVECOT_LEVEL}",
            )
        if total > DOVECOT_TOTAL:
            return NameProblem("blocked", f"it is {total} bytes long, over Dovecot's limit of about {DOVECOT_TOTAL}")
        if total > DOVECOT_MAILDIRPP:
            if names.delimiter == ".":
                return NameProblem(
                    "blocked",
                    f"it is {total} bytes long ({len(levels)} levels); Dovecot's Maildir++ layout keeps a whole "
                    f"folder name in one directory name of at most {DOVECOT_MAILDIRPP} bytes",
                )
            return NameProblem(
                "warning",
                f"it is {total} bytes long ({len(levels)} levels): if the target stores mail as Maildir++ "
                f"(Dovecot's default Maildir layout) it refuses names over {DOVECOT_MAILDIRPP} bytes",
            )
    return None


SHARED_CLASH = "lands in the target's shared namespace"  # the mail engine's rule text for such a folder
_NOTES = ("the target separator", "the target has no hierarchy", "empty hierarchy level")


def folders(f: AccountFacts) -> list[Check]:
    if f.folders is None:
        return []
    out: list[Check] = []
    refused: dict[str, list[str]] = {"blocked": [], "warning": []}
    reasons: dict[str, list[str]] = {"blocked": [], "warning": []}
    renamed: list[str] = []
    renamed_notes: list[str] = []
    shared: list[str] = []
    for fo in f.folders:
        if fo.target is None and SHARED_CLASH in fo.rule:
            shared.append(f"{fo.source!r} {fo.rule}")
        if fo.target is None:
            continue
        if f.names is not None:
            p = name_problem(fo.target, f.names)
            if p is not None:
                refused[p.status].append(fo.source)
                reasons[p.status].append(f"{fo.source!r} → {fo.target[:80]!r}: {p.why}")
        notes = [n for n in fo.notes if any(k in n for k in _NOTES)]
        if notes:
            renamed.append(fo.source)
            renamed_notes.append(f"{fo.source!r} → {fo.target!r} ({'; '.join(notes)})")
    fix = (
        "rename the folder on the source, or give it a shorter target name with a [[folders.rename]] rule "
        "(or leave it out with [folders] exclude)"
    )
    if refused["blocked"]:
        n = len(refused["blocked"])
        out.append(
            Check(
                AREA,
                "folder names",
                "blocked",
                f"the target refuses to create {_plural(n, 'folder')} of the account, and migrate fails the whole "
                f"account when a folder can't be created: {'; '.join(reasons['blocked'][:_SHOWN])}"
                + (f"; and {n - _SHOWN} more" if n > _SHOWN else ""),
                fix,
                f.account,
                {"folders": refused["blocked"]},
            )
        )
    if refused["warning"]:
        n = len(refused["warning"])
        out.append(
            Check(
                AREA,
                "folder names",
                "warning",
                f"{_plural(n, 'folder')} may be refused by the target: {'; '.join(reasons['warning'][:_SHOWN])}"
                + (f"; and {n - _SHOWN} more" if n > _SHOWN else ""),
                fix,
                f.account,
                {"folders": refused["warning"]},
            )
        )
    if shared:
        out.append(
            Check(
                AREA,
                "folder names",
                "warning",
                f"{_plural(len(shared), 'folder')} would land in the target's shared namespace (another user's or a "
                f"public folder): {'; '.join(shared[:_SHOWN])}; migrate leaves each on the source and names it in its "
                "report (finding 'folder-in-shared-namespace')",
                "give the folder another name on the target with a [[folders.rename]] rule",
                f.account,
                {"folders": [x.source for x in f.folders if x.target is None and SHARED_CLASH in x.rule]},
            )
        )
    if renamed:
        n = len(renamed)
        out.append(
            Check(
                AREA,
                "folder names",
                "warning",
                f"{_plural(n, 'folder')} arrive under another name on the target: {'; '.join(renamed_notes[:_SHOWN])}"
                + (f"; and {n - _SHOWN} more" if n > _SHOWN else "")
                + " (migrate notes each in its report)",
                "choose the names yourself with [[folders.rename]] rules or [folders] separator_substitute, or "
                "accept them",
                f.account,
                {"folders": renamed},
            )
        )
    return out


# -- folder permissions -----------------------------------------------------------------------

_ACL: dict[str, tuple[str, str]] = {
    "acl-unmapped": (
        "ACL entries name users or groups with no account on the target: not carried",
        "add them to the accounts CSV (or the directory's identity map), map groups with [permissions.groups], "
        "or set the entries on the target by hand",
    ),
    "acl-rights-unsupported": (
        "ACL entries hold rights the target can't grant: carried without them (never wider)",
        "grant a near right on the target by hand where acceptable, or accept the narrower access",
    ),
    "acl-negative-uncarried": (
        "negative ACL entries can't be carried whole: the folder's grants are held back (never wider)",
        "map the negative entry's user (accounts CSV or identity map), or set the folder's entries on the target "
        "by hand",
    ),
    "acl-global": (
        "ACL entries come from the source server's global ACL configuration: no SETACL can make them",
        "give the target the same global ACL (Dovecot: its 'acl = vfile:...' file; Cyrus: defaultacl)",
    ),
    "acl-unsupported": (
        "the target has no ACL (RFC 4314): the account's shared folders lose their sharing",
        "enable ACLs on the target (Dovecot: mail_plugins = acl imap_acl), or share the folders by other means",
    ),
}


def acls(f: AccountFacts) -> list[Check]:
    if not f.acl:
        return []
    out: list[Check] = []
    for kind, (what, fix) in _ACL.items():
        items = [a for a in f.acl if a.kind == kind]
        if not items:
            continue
        shown = "; ".join(
            f"{a.folder!r}: {a.identifier} {a.rights!r}"
            + (f" (the target can't grant {a.left_out!r})" if a.left_out else "")
            for a in items[:_SHOWN]
        )
        more = f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
        ids = sorted({a.identifier.lstrip("-") for a in items})
        concrete = f" ({', '.join(ids[:_SHOWN])})" if kind == "acl-unmapped" else ""
        out.append(
            Check(
                AREA,
                "folder permissions",
                "warning",
                f"{what}: {shown}{more}; migrate names each in its report (finding {kind!r})",
                fix.replace("add them", f"add them{concrete}", 1),
                f.account,
                {
                    "kind": kind,
                    "entries": [
                        {"folder": a.folder, "identifier": a.identifier, "rights": a.rights, "left_out": a.left_out}
                        for a in items
                    ],
                },
            )
        )
    return out


# -- Sieve ------------------------------------------------------------------------------------


def sieve(f: AccountFacts) -> list[Check]:
    if f.scripts is None or f.sieve_extensions is None:
        return []
    have = {e.lower() for e in f.sieve_extensions}
    out: list[Check] = []
    for s in sorted(f.scripts, key=lambda s: (not s.active, s.name)):
        missing = sorted(r.lower() for r in s.requires if r.lower() not in have)
        if not missing:
            continue
        ext = ", ".join(missing)
        what = (
            f"script {s.name!r} requires the Sieve extension{'s' if len(missing) > 1 else ''} {ext}, which the target "
            "lacks: the target refuses it, migrate leaves it on the source and names it in its report"
        )
        if s.active:
            what = (
                f"{what}; it is the account's active script, so the account's mail is no longer filtered (vacation, "
                "fileinto, redirect) once it is delivered to the target"
            )
        out.append(
            Check(
                AREA,
                f"Sieve script {s.name}",
                "blocked" if s.active else "warning",
                what,
                f"enable {ext} on the target's Sieve (Dovecot: sieve_extensions = +{' +'.join(missing)}; Cyrus: "
                "sieve_extensions in imapd.conf), or rewrite the script without it",
                f.account,
                {"script": s.name, "missing": missing, "active": s.active},
            )
        )
    return out


def judge(f: AccountFacts) -> list[Check]:
    """Every blocker of one account (see the module's table); one ``ok`` check when there is none."""
    out = sizes(f) + keywords(f) + folders(f) + acls(f) + sieve(f)
    if out:
        return out
    seen = {k: v for k, v in f.looked_at.items() if v is not None}
    parts = ", ".join(f"{v} {k}" for k, v in seen.items()) or "nothing to look at"
    return [
        Check(
            AREA,
            "source features",
            "ok",
            f"nothing the target can't take ({parts})",
            account=f.account,
            facts=seen,
        )
    ]


_COMPONENT_WORDS = {
    "VEVENT": ("event", "events"),
    "VTODO": ("task", "tasks"),
    "VJOURNAL": ("journal entry", "journal entries"),
}


def calendar_components(
    account: str, collection: str, target_components: Sequence[str], counts: Mapping[str, int]
) -> list[Check]:
    """A source calendar whose items are of components the same-named calendar already on the
    target does not declare (its supported-calendar-component-set): a strict server refuses
    them, a lenient one stores them where clients that trust the set don't show them."""
    allowed = {c.upper() for c in target_components}
    if not allowed:
        return []  # the target declares no set: it takes every component
    outside = {c: n for c, n in sorted(counts.items()) if n and c not in allowed}
    if not outside:
        return []
    what = ", ".join(f"{n} {_COMPONENT_WORDS.get(c, (c, c))[n != 1]}" for c, n in outside.items())
    return [
        Check(
            AREA,
            f"calendar {collection}",
            "warning",
            f"{what} would go into the target's calendar '{collection}', which takes only "
            f"{', '.join(sorted(allowed))}: a strict server refuses them (named in the report), and clients "
            "that trust the calendar's component set don't show them",
            f"let the target's '{collection}' take {', '.join(sorted(outside))} too (or remove it, so that migrate "
            "creates it with the source's set), or move those items to a calendar of their own on the source",
            account=account,
            facts={"collection": collection, "target_components": sorted(allowed), "outside": outside},
        )
    ]
