"""Folder permissions (IMAP ACL, RFC 4314): what to set on the target, per account. Pure.

Terminology. An *entry* is one (identifier, rights) pair of a folder's ACL. The *owner* is the
account whose folders these are. A *record* is what the ledger's ``settings`` table (kind
``acl``) holds of an entry mailferry carried earlier: key ``<source folder> NUL <source
identifier>``, value the source's rights (normalised, :func:`mailferry.formats.acl.rights_text`),
target ``<target folder> NUL <target identifier> NUL <rights sent>``.

Decision table, per source entry (first match wins):

=============================================  ===============================================
source entry                                   action
=============================================  ===============================================
folder not carried (excluded, or not on the    skip, no finding (its ACL goes with the folder)
target yet)
the owner, positive, with every standard       skip: the target's owner has every right on
right (``lrswipkxtea``)                        its own folders by default; nothing to write
an entry of the server's global configuration  skip, finding ``acl-global``: no SETACL can
(Dovecot shows them as ``#id``)                make it; the admin gives the target the same
target has no ACL                              skip, finding ``acl-unsupported``
user with no mapping (no account of the        skip, finding ``acl-unmapped``: never guessed
project, not in the directory identity map)
group the target can't name (no known group    skip, finding ``acl-unmapped``
syntax)
rights the target can't grant (or only tied    set what it can grant, finding
to rights not asked for)                       ``acl-rights-unsupported``; skip when nothing
                                               is left. Never wider than the source.
a grant on a folder whose negative entry      skip, finding ``acl-negative-uncarried``:
can't be carried whole (unmapped, rights the   the grant alone would be wider than the
target can't name)                             source's effective rights
recorded, same source rights, state ``set``    nothing: carried already (no SETACL)
otherwise                                      set (SETACL)
=============================================  ===============================================

And per record whose source entry is gone (the source no longer has it, its folder is still
carried and its ACL could be read): delete (DELETEACL) the target entry mailferry set. Only
entries mailferry set are ever deleted: an entry an admin made on the target is not in the
ledger, so it is never touched. A record whose target identifier changed (the identity map
changed) is deleted before the new one is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from mailferry.formats.acl import (
    ORDER,
    STANDARD,
    Dialect,
    Identifier,
    TargetRights,
    format_identifier,
    parse_identifier,
    parse_rights,
    rights_text,
    to_target,
)

SEP = "\0"


def acl_key(folder: str, identifier: str) -> str:
    return f"{folder}{SEP}{identifier}"


@dataclass(frozen=True, slots=True)
class Recorded:
    """A ledger record of kind ``acl`` (see the module's terminology)."""

    value: str
    target: str
    state: str

    @property
    def target_parts(self) -> tuple[str, str, str]:
        parts = self.target.split(SEP)
        return (parts + ["", "", ""])[0], (parts + ["", ""])[1], (parts + ["", "", ""])[2]


@dataclass(frozen=True, slots=True)
class SetAcl:
    source_folder: str
    source_identifier: str
    source_rights: str  # normalised
    target_folder: str
    identifier: str  # as the target writes it
    rights: str  # as sent to the target
    left_out: str = ""  # rights the target can't grant (a finding)
    reason: str = ""

    @property
    def key(self) -> str:
        return acl_key(self.source_folder, self.source_identifier)

    @property
    def target(self) -> str:
        return SEP.join((self.target_folder, self.identifier, self.rights))


@dataclass(frozen=True, slots=True)
class DeleteAcl:
    key: str
    target_folder: str
    identifier: str
    reason: str


@dataclass(frozen=True, slots=True)
class AclSkip:
    source_folder: str
    source_identifier: str
    source_rights: str
    reason: str
    finding: str | None = None  # the finding's kind, when it is one


AclAction = SetAcl | DeleteAcl | AclSkip


@dataclass(frozen=True, slots=True)
class AclContext:
    """Everything the plan of one account depends on besides the ACLs and the records."""

    owner: str  # the account's name on the source
    target_owner: str
    folders: Mapping[str, str | None]  # source folder -> target folder (None: not carried)
    principals: Callable[[str], str | None]  # source user -> target user
    groups: Callable[[str], str | None]  # source group -> target group
    target: TargetRights | None  # None: the target has no ACL
    dialect: Dialect  # the target's identifier dialect


def translate(ident: Identifier, ctx: AclContext) -> Identifier | None:
    """The identifier on the target; None when it has no mapping."""
    if ident.kind == "user":
        if ident.name.lower() == ctx.owner.lower():
            return Identifier("user", ctx.target_owner, ident.negative)
        mapped = ctx.principals(ident.name)
        return None if mapped is None else Identifier("user", mapped, ident.negative)
    if ident.kind == "group":
        g = ctx.groups(ident.name)
        return None if g is None else Identifier("group", g, ident.negative)
    return ident


def owner_default(ident: Identifier, rights: frozenset[str], owner: str) -> bool:
    """The owner's own positive entry with every standard right: what every server gives the
    owner anyway."""
    return (
        ident.kind == "user" and not ident.negative and ident.name.lower() == owner.lower() and set(STANDARD) <= rights
    )


def entry(folder: str, source_id: str, source_rights: str, ctx: AclContext) -> SetAcl | AclSkip | None:
    """One source entry, translated; None for the owner's default entry (nothing to carry)."""
    target_folder = ctx.folders.get(folder)
    ident = parse_identifier(source_id)
    rights = parse_rights(source_rights)
    norm = rights_text(rights)
    if target_folder is None:
        return AclSkip(folder, source_id, norm, "the folder is not carried to the target")
    if owner_default(ident, rights, ctx.owner):
        return None
    if source_id.startswith("#"):
        return AclSkip(
            folder,
            source_id,
            norm,
            "the entry comes from the source server's global ACL configuration, not from the folder",
            "acl-global",
        )
    if ctx.target is None:
        return AclSkip(
            folder,
            source_id,
            norm,
            "the target has no ACL support (RFC 4314): the entry can't be set",
            "acl-unsupported",
        )
    mapped = translate(ident, ctx)
    if mapped is None:
        what = "group" if ident.kind == "group" else "user"
        return AclSkip(
            folder,
            source_id,
            norm,
            f"no {what} {ident.name!r} among the project's accounts or the identity map",
            "acl-unmapped",
        )
    written = format_identifier(mapped, ctx.dialect)
    if written is None:
        return AclSkip(folder, source_id, norm, "the target has no known way to name groups", "acl-unmapped")
    text, left = to_target(rights, ctx.target)
    if not text:
        return AclSkip(
            folder,
            source_id,
            norm,
            f"the target can grant none of the rights {rights_text(left)!r}",
            "acl-rights-unsupported",
        )
    return SetAcl(folder, source_id, norm, target_folder, written, text, rights_text(left))


def plan_acl(
    acls: Mapping[str, Mapping[str, str]],
    ctx: AclContext,
    recorded: Mapping[str, Recorded],
    *,
    unreadable: frozenset[str] = frozenset(),
) -> list[AclAction]:
    """The actions for one account (see the module's table). ``acls``: source folder ->
    identifier -> rights, for every folder whose ACL was read; ``unreadable``: folders whose ACL
    could not be read (their records stay as they are)."""
    out: list[AclAction] = []
    seen: set[str] = set()
    for folder in sorted(acls):
        # Negative entries first: a pass cut short between two writes never leaves a grant
        # without the denial that narrows it.
        items = sorted(acls[folder].items(), key=lambda kv: (not kv[0].startswith("-"), kv[0]))
        entries = {source_id: entry(folder, source_id, rights, ctx) for source_id, rights in items}
        denial_lost = sorted(
            source_id
            for source_id, e in entries.items()
            if source_id.startswith("-")
            and ((isinstance(e, AclSkip) and e.finding is not None) or (isinstance(e, SetAcl) and e.left_out))
        )
        for source_id, _rights in items:
            key = acl_key(folder, source_id)
            seen.add(key)
            e = entries[source_id]
            if denial_lost and isinstance(e, SetAcl) and not source_id.startswith("-"):
                # A denial the target can't carry whole would leave this grant wider than the
                # source's effective rights: none of the folder's grants is set until it can.
                e = AclSkip(
                    folder,
                    source_id,
                    e.source_rights,
                    f"the folder's negative entry {', '.join(denial_lost)} can't be carried whole, and this grant "
                    "without it would give more than the source does",
                    "acl-negative-uncarried",
                )
            if e is None or isinstance(e, AclSkip):
                if e is not None:
                    out.append(e)
                rec = recorded.get(key)
                if e is None and rec is not None and rec.state == "set":
                    # The owner's entry is back to every right: what mailferry set is withdrawn.
                    tf, tid, _ = rec.target_parts
                    out.append(DeleteAcl(key, tf, tid, "the owner has every right again on the source"))
                continue
            rec = recorded.get(key)
            if (
                rec is not None
                and rec.state == "set"
                and rec.value == e.source_rights
                and rec.target_parts[:2]
                == (
                    e.target_folder,
                    e.identifier,
                )
            ):
                continue
            if rec is not None and rec.state == "set" and rec.target_parts[:2] != (e.target_folder, e.identifier):
                tf, tid, _ = rec.target_parts
                out.append(DeleteAcl(key, tf, tid, "carried before under another name; set anew"))
            reason = (
                "new on the source"
                if rec is None
                else ("changed on the source" if rec.state == "set" else "refused before")
            )
            out.append(
                SetAcl(
                    e.source_folder,
                    e.source_identifier,
                    e.source_rights,
                    e.target_folder,
                    e.identifier,
                    e.rights,
                    e.left_out,
                    reason,
                )
            )
    for key, rec in sorted(recorded.items()):
        folder = key.split(SEP, 1)[0]
        if key in seen or rec.state != "set" or folder in unreadable:
            continue
        if folder in acls or ctx.folders.get(folder) is not None:
            tf, tid, _ = rec.target_parts
            out.append(DeleteAcl(key, tf, tid, "removed on the source since mailferry set it"))
    return out


#: A target that could grant every right: planning against it tells what needs no target.
ANYTHING = TargetRights(True, frozenset(ORDER) | frozenset(STANDARD))


def needs_target(
    acls: Mapping[str, Mapping[str, str]],
    ctx: AclContext,
    recorded: Mapping[str, Recorded],
    *,
    unreadable: frozenset[str] = frozenset(),
) -> bool:
    """Whether a pass may have anything to write, judged without the target (so that a pass with
    nothing new leaves the target alone, connections included): the plan against a target that
    could grant anything, in each group dialect (the records hold the target's: the other one
    would see every group entry renamed). Entries that would only be findings need no target."""
    anything = ANYTHING
    return all(
        any(
            isinstance(a, SetAcl | DeleteAcl)
            for a in plan_acl(acls, replace(ctx, target=anything, dialect=d), recorded, unreadable=unreadable)
        )
        for d in ("dovecot", "cyrus")
    )
