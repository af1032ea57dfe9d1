"""Verify folder permissions: the target's ACL entries against the source's, translated. Pure.

For each carried folder, every source entry is translated as the plan would
(:func:`mailferry.plan.acl.entry`) and the target's entry for that mapped principal is compared
with it: missing, other rights, rights the target can't grant. Entries the target has that no
source entry explains are named too (``extra``), except the target owner's (the target gives
its owner every right by default; checked to hold every standard right when the source owner
has them all). Entries without a mapping are findings of migrate, not differences here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailferry.formats.acl import STANDARD, format_identifier, parse_identifier, parse_rights, rights_text
from mailferry.plan.acl import AclContext, AclSkip, entry, owner_default, translate


@dataclass(frozen=True, slots=True)
class AclDifference:
    source_folder: str
    target_folder: str
    identifier: str  # on the target
    kind: str  # missing | rights | extra | rights-unsupported | owner
    source_rights: str
    target_rights: str

    def as_dict(self) -> dict[str, str]:
        return {
            "source_folder": self.source_folder,
            "target_folder": self.target_folder,
            "identifier": self.identifier,
            "kind": self.kind,
            "source_rights": self.source_rights,
            "target_rights": self.target_rights,
        }


def compare_acl(
    source: Mapping[str, Mapping[str, str]], target: Mapping[str, Mapping[str, str]], ctx: AclContext
) -> list[AclDifference]:
    """``source``: source folder -> its ACL; ``target``: target folder -> its ACL."""
    out: list[AclDifference] = []
    owner = format_identifier(translate(parse_identifier(ctx.owner), ctx) or parse_identifier(ctx.owner), ctx.dialect)
    for folder in sorted(source):
        tf = ctx.folders.get(folder)
        if tf is None:
            continue
        have = {k: parse_rights(v) for k, v in target.get(tf, {}).items()}
        explained: set[str] = set()
        for sid, srights in sorted(source[folder].items()):
            e = entry(folder, sid, srights, ctx)
            if e is None or owner_default(parse_identifier(sid), parse_rights(srights), ctx.owner):
                if owner is not None:
                    explained.add(owner)
                    got = have.get(owner, frozenset())
                    if not set(STANDARD) <= got:
                        out.append(AclDifference(folder, tf, owner, "owner", STANDARD, rights_text(got)))
                continue
            if isinstance(e, AclSkip):
                continue
            explained.add(e.identifier)
            want = parse_rights(e.rights)
            got_r = have.get(e.identifier)
            if got_r is None:
                out.append(AclDifference(folder, tf, e.identifier, "missing", e.source_rights, ""))
            elif got_r != want:
                out.append(AclDifference(folder, tf, e.identifier, "rights", e.source_rights, rights_text(got_r)))
            if e.left_out:
                out.append(AclDifference(folder, tf, e.identifier, "rights-unsupported", e.source_rights, e.rights))
        for ident, rights in sorted(have.items()):
            if ident in explained or ident == owner:
                continue
            out.append(AclDifference(folder, tf, ident, "extra", "", rights_text(rights)))
    return out
