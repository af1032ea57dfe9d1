"""Target accounts come alive one at a time, and no two accounts of a project share one mailbox.

Why. Cyrus IMAP (3.6 measured, with ``autocreate_quota``) creates a user's INBOX and its
``autocreate_inbox_folders`` at the user's first login. Twelve never-used accounts logging in at
the same moment ended up, in 4 runs out of 4, with several accounts sharing one INBOX and one
Sent, Drafts, ... (the same RFC 8474 MAILBOXID): each saw the others' mail. Folders made with
CREATE, even in parallel, get ids of their own; only the auto-creation at first login collides.
mailferry logs in to many target accounts at once (migrate, plan, verify and check run accounts
in parallel), so without care it would pour several people's mail into one mailbox.

Before any parallel work on a target, :func:`bring_alive`, one account after another:

1. where the target admin can log in as itself and sees an "Other Users" namespace (RFC 2342,
   Cyrus' ``user/``), it looks the account up and creates a missing mailbox (``CREATE user/NAME``),
   all through its one connection: one server process, whose ids don't repeat;
2. every target account the ledger has not yet seen alive logs in **alone**, one after another
   (without such an admin this first login is what makes the server create the mailbox);
3. the id of each of its folders is read: RFC 8474 MAILBOXID where the server has OBJECTID,
   Dovecot's ``STATUS X-GUID``, else none (then nothing can be checked, and ``check`` says so).

Serial first logins are not enough on their own: the Debian build of Cyrus 3.6 makes mailbox ids
from ``rand()`` per server process, and ids repeated across processes even for first logins one
after another (seen in the test sandbox under load, and a CREATE in one connection once got the id
of another user's INBOX). Hence the guard below, for every folder mailferry writes into.

The guard, :class:`MailboxGuard`, which nothing argues with: a mailbox id held by two target
accounts of the project (among those brought alive now and those the ledger has seen before)
blocks every account holding it, with a :class:`~mailferry.errors.MailboxCollision` naming the
accounts and the id: exit code 78 (the target server must be repaired), nothing written to any
of them. Each account's own pass checks again on its first target connection (its INBOX) and for
every folder it writes into (the id comes with the STATUS the engine sends anyway).

Two source accounts migrated into one target account hold the same ids: that is one account,
not a collision — the guard compares target accounts.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailferry.connectors.imap import ImapStore, Login, server_greeting
from mailferry.connectors.wrappers import RetryPolicy
from mailferry.errors import MailboxCollision, MailferryError, TemporaryFailure

if TYPE_CHECKING:
    from mailferry.engine.migrate import Connection
    from mailferry.state.ledger import Ledger


class MailboxGuard:
    """Who holds which target mailbox (id -> target account, folder), shared by every account of
    a run; thread-safe. ``ledger``: where claims are recorded (None: a read-only command)."""

    def __init__(self, owners: Mapping[str, tuple[str, str]], ledger: Ledger | None = None, run_id: int = 0) -> None:
        self._owners: dict[str, tuple[str, str]] = dict(owners)
        self._known = {user for user, _f in self._owners.values()}
        self._blocked: dict[str, MailboxCollision] = {}
        self._ledger = ledger
        self._run_id = run_id
        self._lock = threading.Lock()
        self.collisions: list[MailboxCollision] = []

    @classmethod
    def of(cls, ledger: Ledger, run_id: int = 0, *, record: bool = True) -> MailboxGuard:
        return cls(ledger.mailbox_owners(), ledger if record else None, run_id)

    def known(self, target_user: str) -> bool:
        """True when the ledger (or this run) has seen this account alive with ids of its own."""
        with self._lock:
            return target_user in self._known

    def blocked(self, target_user: str) -> MailboxCollision | None:
        with self._lock:
            return self._blocked.get(target_user)

    def check(self, target_user: str, ids: Mapping[str, str | None]) -> None:
        """Claim ``ids`` (folder -> mailbox id) for ``target_user``; raise the collision when one
        of them, or an earlier claim of this account, is held by another account."""
        self.settle({target_user: ids})
        hit = self.blocked(target_user)
        if hit is not None:
            raise hit

    def settle(self, found: Mapping[str, Mapping[str, str | None]]) -> list[MailboxCollision]:
        """Claims of several accounts at once: every account of a shared id is blocked, those
        claimed now and the earlier holder alike. Returns the new collisions."""
        new: list[MailboxCollision] = []
        with self._lock:
            holders: dict[str, dict[str, str]] = {}  # id -> target user -> folder
            for user, ids in found.items():
                for folder, mid in ids.items():
                    if mid:
                        holders.setdefault(mid, {}).setdefault(user, folder)
            # An account's INBOX first: the collision named for it is the one that matters most.
            for mid, users in sorted(holders.items(), key=lambda kv: "INBOX" not in kv[1].values()):
                owner = self._owners.get(mid)
                if owner is not None:
                    users.setdefault(owner[0], owner[1])
                if len(users) < 2:
                    continue
                names = tuple(sorted(users))
                collision = MailboxCollision(mid, names, tuple(users[u] for u in names))
                new.append(collision)
                for u in names:
                    self._blocked.setdefault(u, collision)
            for user, ids in found.items():
                if user in self._blocked:
                    continue
                own = {folder: mid for folder, mid in ids.items() if mid}
                fresh = {f: m for f, m in own.items() if self._owners.get(m) != (user, f)}
                for folder, mid in own.items():
                    self._owners[mid] = (user, folder)
                if own:
                    self._known.add(user)
                if fresh and self._ledger is not None:
                    self._ledger.record_mailboxes(user, fresh, self._run_id)
            self.collisions.extend(new)
        return new


@dataclass(slots=True)
class AliveReport:
    """What :func:`bring_alive` did and saw."""

    logged_in: list[str] = field(default_factory=list)  # target accounts brought alive now, alone
    autocreated: list[str] = field(default_factory=list)  # their INBOX appeared at that first login
    created: list[str] = field(default_factory=list)  # their INBOX created by the admin
    failed: dict[str, MailferryError] = field(default_factory=dict)  # target account -> why
    collisions: list[MailboxCollision] = field(default_factory=list)
    no_ids: bool = False  # the server names no mailbox id: the guard could check nothing
    server: str = ""  # the target's software as its greeting names it

    def as_dict(self) -> dict[str, object]:
        return {
            "logged_in_alone": len(self.logged_in),
            "created_at_first_login": sorted(self.autocreated),
            "created_by_admin": sorted(self.created),
            "failed": {u: str(e) for u, e in sorted(self.failed.items())},
            "collisions": [
                {"mailbox_id": c.mailbox_id, "accounts": list(c.accounts), "folders": list(c.folders)}
                for c in self.collisions
            ],
            "mailbox_ids": not self.no_ids,
            "server": self.server,
        }


def admin_connection(target: Connection) -> Connection | None:
    """The target admin logged in as itself (not for another user), where the project has a
    SASL admin (Cyrus' ``admins:``): what looks accounts up and creates their INBOX."""
    from mailferry.engine.migrate import Connection

    lg = target.login
    if lg.admin is None or lg.method != "sasl-authzid":
        return None
    return Connection(target.endpoint, Login(user=lg.admin, password=lg.password))


def bring_alive(
    targets: Sequence[tuple[str, Connection]],
    guard: MailboxGuard,
    *,
    retry: RetryPolicy,
    admin: Connection | None = None,
    note: Callable[[str], None] | None = None,
    every: bool = False,
) -> AliveReport:
    """Log every target account the guard does not know yet in alone, one after another; create
    what is missing with the admin; read the ids of its folders; settle them with the guard.

    ``targets``: (target account, how to log in as it); an account listed twice is done once.
    ``every``: log in the accounts the guard knows too (the directory's mailbox confirmation)."""
    from mailferry.engine.migrate import open_store

    report = AliveReport()
    tell = note or (lambda _t: None)
    found: dict[str, dict[str, str | None]] = {}
    admin_store: ImapStore | None = None
    other: tuple[str, str] | None = None
    admin_tried = False
    seen: set[str] = set()
    unreachable: TemporaryFailure | None = None  # the server failed this many times in a row
    in_a_row = 0
    try:
        for user, conn in targets:
            if user in seen or (guard.known(user) and not every):
                continue
            seen.add(user)
            if unreachable is not None:
                # Each try waits out the retry policy: don't spend that once per account.
                report.failed[user] = TemporaryFailure(
                    f"{user} (target): not tried: {unreachable.message}", hint="run again when the target answers"
                )
                continue
            if not admin_tried:
                admin_tried = True
                admin_store, other = _open_admin(admin, retry, tell)
            home = f"{other[0]}{user}" if admin_store is not None and other is not None else None
            existed: bool | None = None
            if home is not None and admin_store is not None:
                try:
                    existed = admin_store.folder_exists(home)
                    if not existed:
                        # Created through the admin's one connection, not by a first login: Cyrus
                        # (Debian 3.6) gives ids that can repeat across its processes, so even
                        # serial first logins (each possibly a new process) have collided here.
                        admin_store.create_folder(home)
                        report.created.append(user)
                except MailferryError as e:
                    tell(f"{user}: the target admin could not create its mailbox ({e.message}); logging it in alone")
            try:
                store = open_store(conn, readonly=True, label=f"{user} (target)", retry=retry)
            except TemporaryFailure as e:
                report.failed[user] = e
                in_a_row += 1
                if in_a_row >= 3:
                    unreachable = e
                continue
            except MailferryError as e:
                report.failed[user] = e
                continue
            in_a_row = 0
            try:
                report.server = report.server or store.server_product
                report.logged_in.append(user)
                if existed is False and user not in report.created and store.folder_exists("INBOX"):
                    report.autocreated.append(user)
                ids: dict[str, str | None] = {}
                for f in store.list_folders():
                    if not f.selectable:
                        continue
                    mid = store.mailbox_id(f.name)
                    if mid is None:
                        report.no_ids = True
                        break
                    ids[f.name] = mid
                found[user] = ids
            except MailferryError as e:
                report.failed[user] = e
            finally:
                with contextlib.suppress(Exception):
                    store.close()
    finally:
        if admin_store is not None:
            with contextlib.suppress(Exception):
                admin_store.close()
    report.collisions = guard.settle(found)
    return report


def _open_admin(
    admin: Connection | None, retry: RetryPolicy, tell: Callable[[str], None]
) -> tuple[ImapStore | None, tuple[str, str] | None]:
    """The admin logged in as itself, and its "Other Users" namespace; (None, None) where there
    is no such admin. Tried only on Cyrus (``admins:`` log in as themselves and see every
    account): elsewhere, a Dovecot master user say, it would only be a failed login, which costs
    time (Dovecot delays every NO) and lands in the server's security log."""
    if admin is None or "cyrus" not in server_greeting(admin.endpoint).lower():
        return None, None
    from mailferry.engine.migrate import open_store

    try:
        store = open_store(admin, readonly=False, label="target admin", retry=retry)
    except MailferryError as e:
        tell(f"the target admin can't log in as itself ({e.message}): accounts are only logged in alone")
        return None, None
    try:
        other = store.other_users_prefix()
    except MailferryError:
        other = None
    if other is None:
        with contextlib.suppress(Exception):
            store.close()
        return None, None
    return store, other


def inbox_ids(store: ImapStore) -> dict[str, str | None]:
    """INBOX -> its id, for an account's own check on its first target connection."""
    return {"INBOX": store.mailbox_id("INBOX")}
