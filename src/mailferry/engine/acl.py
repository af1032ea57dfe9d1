"""Folder permissions (IMAP ACL, RFC 4314) of one account, carried after its mail.

Each pass reads the ACL of every own folder on the source (GETACL, as the account or the admin
for it), plans against the ledger's ``settings`` rows of kind ``acl`` (:mod:`mailferry.plan.acl`)
and only when something may have changed logs in to the target: capabilities, LISTRIGHTS once,
then SETACL/DELETEACL per action, each recorded after the server said OK (write, then record).
A pass with nothing new sends the target nothing. The folder mapping is the mail pass's (the
ledger's folder states): ACLs go onto folders the mail engine created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailferry.connectors.imap import AclRefused, ImapStore, ServerRefused
from mailferry.connectors.wrappers import RetryPolicy
from mailferry.engine.migrate import AccountJob, open_store
from mailferry.errors import MailferryError
from mailferry.formats.acl import RFC2086, TargetRights, dialect_of, target_rights
from mailferry.plan.acl import (
    ANYTHING,
    SEP,
    AclAction,
    AclContext,
    AclSkip,
    DeleteAcl,
    Recorded,
    SetAcl,
    needs_target,
    plan_acl,
)
from mailferry.state.ledger import Finding, Ledger, SettingRecord
from mailferry.verify.acl import AclDifference, compare_acl

KIND = "acl"
_NEXT = {
    "acl-unmapped": "add the account to the project's accounts CSV or the directory's identity map, or set the "
    "entry on the target by hand",
    "acl-rights-unsupported": "the target can't grant these rights; grant a near right on the target by hand if "
    "acceptable",
    "acl-negative-uncarried": "carry the negative entry first (map its user, or let the target grant those rights), "
    "or set the folder's entries on the target by hand",
    "acl-global": "give the target server the same global ACL (Dovecot: the file of its 'acl = vfile:...' "
    "setting; Cyrus: defaultacl) or set the entry on the target by hand",
    "acl-unsupported": "the target has no ACL support: share the folder by other means",
    "acl-unreadable": "give the login mailferry uses the 'a' (administer) right on the folder, or log in as the "
    "account's admin",
    "acl-refused": "see the server's words; fix the target and run migrate again",
    "acl-owner-unreachable": "give the account a target name without that character, or give the target's "
    "shared namespace another separator (Dovecot: namespace shared { separator = / }); the entries are set",
}


@dataclass(slots=True)
class AclStats:
    folders: int = 0
    set: int = 0
    deleted: int = 0
    refused: int = 0
    findings: int = 0
    target_contacted: bool = False
    note: str = ""
    actions: list[AclAction] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "folders": self.folders,
            "set": self.set,
            "deleted": self.deleted,
            "refused": self.refused,
            "findings": self.findings,
            "note": self.note,
        }


class AclEngine:
    def __init__(
        self,
        ledger: Ledger,
        *,
        principals: Callable[[str], str | None],
        groups: Callable[[str], str | None] = lambda g: g,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.ledger = ledger
        self.principals = principals
        self.groups = groups
        self.retry = retry or RetryPolicy()

    # -- reading --------------------------------------------------------------------------------

    def _source(self, job: AccountJob) -> ImapStore:
        return open_store(job.source, readonly=True, label=f"{job.source_user} (source)", retry=self.retry)

    def _target(self, job: AccountJob, *, readonly: bool) -> ImapStore:
        return open_store(job.target, readonly=readonly, label=f"{job.target_user} (target)", retry=self.retry)

    @staticmethod
    def read_acls(store: ImapStore, folders: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """(folder -> ACL, folder -> why it could not be read)."""
        acls: dict[str, dict[str, str]] = {}
        unreadable: dict[str, str] = {}
        for f in folders:
            try:
                acls[f] = store.get_acl(f)
            except AclRefused as e:
                unreadable[f] = e.message
        return acls, unreadable

    @staticmethod
    def _source_folders(src: ImapStore, job: AccountJob, fmap: Mapping[str, str | None]) -> list[str]:
        """An account's own folders; for a unit of shared folders (the public unit, a job with a
        scope), the folders it carried."""
        if job.scope is None:
            return [f.name for f in src.own_folders() if f.selectable]
        return sorted(f for f, t in fmap.items() if t is not None)

    @staticmethod
    def _without_login(
        job: AccountJob, acls: dict[str, dict[str, str]], *, role: str = "source"
    ) -> dict[str, dict[str, str]]:
        """A unit's ACLs without the entries of the login that reads them (a Cyrus admin gives
        itself rights on shared mailboxes to read them; Dovecot shows the login's rights from
        its global ACL file as ``#login``): that is the migration's access, not the
        organisation's. An account's own ACLs are left whole (its owner is its login)."""
        if job.scope is None:
            return acls
        login = (job.source if role == "source" else job.target).login
        me = {n.lower() for n in (login.user, login.admin or "") if n}
        return {
            f: {k: v for k, v in entries.items() if k.lower().removeprefix("#") not in me}
            for f, entries in acls.items()
        }

    def folder_map(self, account: str) -> dict[str, str | None]:
        """Source folder -> target folder, as the mail pass carried them."""
        return {s.source_folder: (s.target_folder or None) for s in self.ledger.folder_states(account)}

    def target_support(self, tgt: ImapStore) -> tuple[TargetRights | None, str]:
        """What the target can grant (None: no ACL), and its identifier dialect."""
        dialect = dialect_of(tgt.server_product)
        if not tgt.acl:
            return None, dialect
        try:
            words = tgt.list_rights("INBOX", "anyone")
        except ServerRefused:
            words = None
        support = target_rights(tgt.capabilities, words)
        return (support if support.known else RFC2086), dialect

    def _context(
        self, job: AccountJob, folders: Mapping[str, str | None], target: TargetRights | None, dialect: str
    ) -> AclContext:
        return AclContext(
            owner=job.source_user,
            target_owner=job.target_user,
            folders=folders,
            principals=self.principals,
            groups=self.groups,
            target=target,
            dialect=dialect,  # type: ignore[arg-type]
        )

    # -- a pass ---------------------------------------------------------------------------------

    def run(
        self, job: AccountJob, run_id: int, *, folders: Mapping[str, str | None] | None = None, dry_run: bool = False
    ) -> AclStats:
        """Carry (or with ``dry_run`` only plan) the account's folder permissions."""
        stats = AclStats()
        src = self._source(job)
        tgt: ImapStore | None = None
        try:
            if not src.acl:
                stats.note = "the source has no ACL (RFC 4314): nothing to carry"
                return stats
            fmap = dict(folders) if folders is not None else self.folder_map(job.source_user)
            own = self._source_folders(src, job, fmap)
            stats.folders = len(own)
            acls, unreadable = self.read_acls(src, own)
            acls = self._without_login(job, acls)
            for f, why in sorted(unreadable.items()):
                if fmap.get(f) is not None:
                    self._finding(
                        stats, job, run_id, f, "acl-unreadable", f"the ACL of {f!r} can't be read: {why}", {}, dry_run
                    )
            recorded = {
                k: Recorded(r.value, r.target, r.state) for k, r in self.ledger.settings(job.source_user, KIND).items()
            }
            bad = frozenset(unreadable)
            probe = self._context(job, fmap, ANYTHING, "dovecot")
            if not dry_run and not needs_target(acls, probe, recorded, unreadable=bad):
                # Nothing to write: the entries without a mapping (or from the server's global
                # ACL) are findings again (as refused messages are on every pass), without asking
                # the target.
                actions = plan_acl(acls, probe, recorded, unreadable=bad)
                self._report_skips(
                    stats,
                    job,
                    run_id,
                    [a for a in actions if isinstance(a, AclSkip) and a.finding in ("acl-unmapped", "acl-global")],
                    dry_run,
                )
                stats.actions = actions
                return stats
            tgt = self._target(job, readonly=dry_run)
            stats.target_contacted = True
            support, dialect = self.target_support(tgt)
            actions = plan_acl(acls, self._context(job, fmap, support, dialect), recorded, unreadable=bad)
            stats.actions = actions
            self._report_skips(stats, job, run_id, [a for a in actions if isinstance(a, AclSkip)], dry_run)
            self._owner_reachable(stats, job, run_id, tgt, actions, dry_run)
            if dry_run:
                return stats
            for a in actions:
                if isinstance(a, DeleteAcl):
                    self._delete(stats, job, run_id, tgt, a)
                elif isinstance(a, SetAcl):
                    self._set(stats, job, run_id, tgt, a)
            return stats
        finally:
            for s in (src, tgt):
                if s is not None:
                    with contextlib.suppress(Exception):
                        s.close()

    def _report_skips(self, stats: AclStats, job: AccountJob, run_id: int, skips: list[AclSkip], dry_run: bool) -> None:
        for a in skips:
            if a.finding is None:
                continue
            self._finding(
                stats,
                job,
                run_id,
                a.source_folder,
                a.finding,
                f"{a.source_folder!r}: ACL entry {a.source_identifier} {a.source_rights!r} not carried: {a.reason}",
                {"identifier": a.source_identifier, "rights": a.source_rights},
                dry_run,
            )

    def _owner_reachable(
        self, stats: AclStats, job: AccountJob, run_id: int, tgt: ImapStore, actions: list[AclAction], dry_run: bool
    ) -> None:
        """Entries for others on an account whose target name holds the separator of the
        target's "Other Users" namespace (RFC 2342): the people they name can't reach the
        folders there (Dovecot 2.3 with ``shared.`` and the user ``alice.t``: "Missing namespace
        prefix 'shared.alice/t.'"), so the access is not what the source gave. One finding."""
        if job.scope is not None:
            return
        owner = job.target_user.lower()
        grants = [a for a in actions if isinstance(a, SetAcl) and a.identifier.lower() not in (owner, "-" + owner)]
        if not grants:
            return
        try:
            other = tgt.namespaces().get("other", [])
        except MailferryError:
            return
        clash = [(prefix, sep) for prefix, sep in other if sep and sep in job.target_user]
        if not clash:
            return
        prefix, sep = clash[0]
        folders = sorted({a.target_folder for a in grants})
        self._finding(
            stats,
            job,
            run_id,
            grants[0].source_folder,
            "acl-owner-unreachable",
            f"the target name {job.target_user!r} holds {sep!r}, the separator of the target's shared namespace "
            f"{prefix!r}: the people given rights on {', '.join(repr(f) for f in folders)} can't open them there",
            {"target_user": job.target_user, "separator": sep, "folders": folders},
            dry_run,
        )

    def _set(self, stats: AclStats, job: AccountJob, run_id: int, tgt: ImapStore, a: SetAcl) -> None:
        try:
            tgt.set_acl(a.target_folder, a.identifier, a.rights)
        except ServerRefused as e:
            stats.refused += 1
            self.ledger.record_setting(
                SettingRecord(job.source_user, KIND, a.key, a.source_rights, a.target, "refused", run_id)
            )
            self._finding(
                stats,
                job,
                run_id,
                a.source_folder,
                "acl-refused",
                f"{a.source_folder!r}: SETACL {a.identifier} {a.rights!r} on {a.target_folder!r} refused: {e.message}",
                {"identifier": a.source_identifier, "target_identifier": a.identifier, "rights": a.source_rights},
                False,
            )
            return
        self.ledger.record_setting(
            SettingRecord(job.source_user, KIND, a.key, a.source_rights, a.target, "set", run_id)
        )
        stats.set += 1
        if a.left_out:
            self._finding(
                stats,
                job,
                run_id,
                a.source_folder,
                "acl-rights-unsupported",
                f"{a.source_folder!r}: ACL entry {a.source_identifier} {a.source_rights!r} carried as {a.identifier} "
                f"{a.rights!r}: the target can't grant {a.left_out!r}",
                {"identifier": a.source_identifier, "rights": a.source_rights, "left_out": a.left_out},
                False,
            )

    def _delete(self, stats: AclStats, job: AccountJob, run_id: int, tgt: ImapStore, a: DeleteAcl) -> None:
        try:
            tgt.set_acl(a.target_folder, a.identifier, "")
        except ServerRefused as e:
            folder = a.key.split(SEP, 1)[0]
            self._finding(
                stats,
                job,
                run_id,
                folder,
                "acl-refused",
                f"{folder!r}: DELETEACL {a.identifier} on {a.target_folder!r} refused: {e.message}",
                {"target_identifier": a.identifier},
                False,
            )
            return
        self.ledger.forget_setting(job.source_user, KIND, a.key)
        stats.deleted += 1

    def _finding(
        self,
        stats: AclStats,
        job: AccountJob,
        run_id: int,
        folder: str,
        kind: str,
        message: str,
        details: dict[str, Any],
        dry_run: bool,
    ) -> None:
        stats.findings += 1
        if dry_run:
            return
        text = f"{job.source_user}: {message} ({_NEXT.get(kind, 'see the README')})"
        self.ledger.add_finding(run_id, Finding(job.source_user, folder, None, kind, text, details))

    def plan(self, job: AccountJob, folders: Mapping[str, str | None]) -> AclStats:
        """The dry run: what a pass would do, with ``folders`` the mail plan's mapping."""
        return self.run(job, 0, folders=folders, dry_run=True)

    # -- verify ---------------------------------------------------------------------------------

    def verify(
        self, job: AccountJob, folders: Mapping[str, str | None] | None = None
    ) -> tuple[list[AclDifference], str]:
        """The differences between the source's and the target's ACLs (and a note when there
        is nothing to compare)."""
        src = self._source(job)
        tgt: ImapStore | None = None
        try:
            if not src.acl:
                return [], "the source has no ACL (RFC 4314)"
            fmap = dict(folders) if folders is not None else self.folder_map(job.source_user)
            acls, _ = self.read_acls(src, self._source_folders(src, job, fmap))
            acls = self._without_login(job, acls)
            tgt = self._target(job, readonly=True)
            support, dialect = self.target_support(tgt)
            if support is None:
                return [], "the target has no ACL (RFC 4314)"
            wanted = sorted({t for f in acls if (t := fmap.get(f)) is not None})
            have, _ = self.read_acls(tgt, wanted)
            have = self._without_login(job, have, role="target")
            return compare_acl(acls, have, self._context(job, fmap, support, dialect)), ""
        finally:
            for s in (src, tgt):
                if s is not None:
                    with contextlib.suppress(Exception):
                        s.close()


def acl_actions(actions: list[AclAction]) -> dict[str, list[dict[str, str]]]:
    """The actions as the plan and migrate reports show them, by IMAP command (and skips)."""
    out: dict[str, list[dict[str, str]]] = {"setacl": [], "deleteacl": [], "skip": []}
    for a in actions:
        if isinstance(a, SetAcl):
            out["setacl"].append(
                {
                    "source_folder": a.source_folder,
                    "target_folder": a.target_folder,
                    "source_identifier": a.source_identifier,
                    "source_rights": a.source_rights,
                    "identifier": a.identifier,
                    "rights": a.rights,
                    "left_out": a.left_out,
                    "reason": a.reason,
                }
            )
        elif isinstance(a, DeleteAcl):
            out["deleteacl"].append(
                {
                    "source_folder": a.key.split(SEP, 1)[0],
                    "target_folder": a.target_folder,
                    "identifier": a.identifier,
                    "reason": a.reason,
                }
            )
        else:
            out["skip"].append(
                {
                    "source_folder": a.source_folder,
                    "source_identifier": a.source_identifier,
                    "source_rights": a.source_rights,
                    "reason": a.reason,
                    "finding": a.finding or "",
                }
            )
    return out
