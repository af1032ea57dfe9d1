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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailferry.connectors.imap import ImapStore, Login, ServerRefused, server_greeting
from mailferry.connectors.wrappers import RetryPolicy
from mailferry.errors import MailboxCollision, MailferryError, TemporaryFailure

if TYPE_CHECKING:
    from mailferry.engine.migrate import Connection
    from mailferry.state.ledger import Ledger


class MailboxGuard:
    """Who holds which target mailbox, shared by every account of a run; thread-safe.

    Holders are (mailbox id, target account, folder). Two accounts on one id is a collision:
    both are blocked, and it stays recorded (ledger) until both accounts are read again and no
    longer share it, so a later run of only one of them is blocked too. One account's two folders
    on one id, seen in one full read or right after mailferry created one of them, is a collision
    of that account with itself. ``accounts``: the project's target accounts; rows of accounts no
    longer in the project are stale and ignored. ``ledger``: where claims are recorded (None: a
    read-only command). ``lookup``: for a guard that was given only some accounts' rows (those of
    the ids they hold, see :meth:`of`), reads the holders of an id it has not seen before it
    judges a claim on it (another account, in another process, may hold it).
    """

    def __init__(
        self,
        holders: Iterable[tuple[str, str, str]] = (),
        ledger: Ledger | None = None,
        run_id: int = 0,
        accounts: Collection[str] | None = None,
        lookup: Callable[[Collection[str]], Iterable[tuple[str, str, str]]] | None = None,
    ) -> None:
        self._by_user: dict[str, dict[str, str]] = {}  # account -> folder -> id
        self._by_id: dict[str, dict[str, set[str]]] = {}  # id -> account -> folders
        self._accounts = accounts
        self._lookup = lookup
        self._looked: set[str] = set()
        for mid, user, folder in holders:
            if accounts is None or user in accounts:
                self._put(user, folder, mid)
        self._blocked: dict[str, MailboxCollision] = {}
        self._ledger = ledger
        self._run_id = run_id
        self._lock = threading.Lock()
        self.collisions: list[MailboxCollision] = []

    @classmethod
    def of(
        cls,
        ledger: Ledger,
        run_id: int = 0,
        *,
        record: bool = True,
        accounts: Collection[str] | None = None,
        only: Collection[str] | None = None,
    ) -> MailboxGuard:
        """The guard as the ledger knows it. ``only``: the accounts this run touches (a
        distributed task's one): the rows of the ids they hold are read, and the holders of any
        other id when a claim meets it, rather than every row of the organization."""
        if only is None:
            return cls(ledger.mailbox_holders(), ledger if record else None, run_id, accounts)
        return cls(
            ledger.mailbox_holders(only), ledger if record else None, run_id, accounts, lookup=ledger.mailbox_holders_of
        )

    def _learn(self, ids: Iterable[str]) -> None:
        """(Lock held.) The ledger's holders of ids this guard has not seen: their claims count."""
        if self._lookup is None:
            return
        unknown = {m for m in ids if m and m not in self._by_id and m not in self._looked}
        if not unknown:
            return
        self._looked |= unknown
        for mid, user, folder in self._lookup(unknown):
            if (self._accounts is None or user in self._accounts) and folder not in self._by_user.get(user, {}):
                self._put(user, folder, mid)

    def _put(self, user: str, folder: str, mid: str) -> None:
        self._drop(user, folder)
        self._by_user.setdefault(user, {})[folder] = mid
        self._by_id.setdefault(mid, {}).setdefault(user, set()).add(folder)

    def _drop(self, user: str, folder: str) -> None:
        old = self._by_user.get(user, {}).pop(folder, None)
        if old is not None:
            folders = self._by_id[old][user]
            folders.discard(folder)
            if not folders:
                del self._by_id[old][user]
                if not self._by_id[old]:
                    del self._by_id[old]

    def _holders(self, mid: str) -> dict[str, list[str]]:
        return {u: sorted(fs) for u, fs in self._by_id.get(mid, {}).items()}

    def known(self, target_user: str) -> bool:
        """True when this account was seen alive with ids of its own that no other account holds."""
        with self._lock:
            ids = self._by_user.get(target_user)
            if not ids or target_user in self._blocked:
                return False
            return all(len(self._by_id[m]) == 1 for m in set(ids.values()))

    def blocked(self, target_user: str) -> MailboxCollision | None:
        with self._lock:
            return self._blocked.get(target_user)

    def _collide(self, mid: str, holders: Mapping[str, Sequence[str]]) -> MailboxCollision:
        pairs = sorted((u, f) for u, fs in holders.items() for f in sorted(fs))
        collision = MailboxCollision(mid, tuple(u for u, _ in pairs), tuple(f for _, f in pairs))
        self.collisions.append(collision)
        for u in holders:
            self._blocked.setdefault(u, collision)
        return collision

    def settle(self, found: Mapping[str, Mapping[str, str | None]]) -> list[MailboxCollision]:
        """Full reads of some accounts (account -> every folder -> id): they replace what was
        known of them; then every id on two accounts, or on two folders of one account just read,
        is a collision. Returns the new collisions, an account's INBOX first."""
        new: list[MailboxCollision] = []
        with self._lock:
            self._learn(mid for ids in found.values() for mid in ids.values() if mid)
            for user, ids in found.items():
                own = {folder: mid for folder, mid in ids.items() if mid}
                for folder in list(self._by_user.get(user, {})):
                    self._drop(user, folder)
                for folder, mid in own.items():
                    self._put(user, folder, mid)
                if self._ledger is not None:
                    self._ledger.record_mailboxes(user, own, self._run_id, replace=True)
            inboxes = {ids.get("INBOX") for ids in found.values()}
            touched = sorted(
                {m for ids in found.values() for m in ids.values() if m}, key=lambda m: (m not in inboxes, m)
            )
            for mid in touched:
                holders = self._holders(mid)
                if len(holders) > 1 or any(len(fs) > 1 and u in found for u, fs in holders.items()):
                    new.append(self._collide(mid, holders))
        return new

    def check(self, target_user: str, folder: str, mailbox_id: str, *, created: bool = False) -> None:
        """Claim one folder's id for ``target_user``; raise the collision when another account
        holds it (or, for a folder mailferry has just created, another folder of the same account:
        Cyrus has handed out such repeats), or when the account is blocked already."""
        with self._lock:
            hit = self._blocked.get(target_user)
            if hit is None:
                self._learn([mailbox_id])
                holders = self._holders(mid := mailbox_id)
                others = {u: fs for u, fs in holders.items() if u != target_user}
                mine = [f for f in holders.get(target_user, []) if f != folder]
                if others or (created and mine):
                    hit = self._collide(mid, {**others, target_user: [folder, *(mine if created else [])]})
                else:
                    # Another folder of the same account on this id and not just created: renamed
                    # on the target (RFC 8474 keeps the id across RENAME), not a collision.
                    for f in mine:
                        self._drop(target_user, f)
                    if self._by_user.get(target_user, {}).get(folder) != mid:
                        self._put(target_user, folder, mid)
                        if self._ledger is not None:
                            self._ledger.record_mailboxes(target_user, {folder: mid}, self._run_id)
        if hit is not None:
            raise hit


@dataclass(slots=True)
class AliveReport:
    """What :func:`bring_alive` did and saw."""

    logged_in: list[str] = field(default_factory=list)  # target accounts brought alive now, alone
    autocreated: list[str] = field(default_factory=list)  # their INBOX appeared at that first login
    created: list[str] = field(default_factory=list)  # their INBOX created by the admin
    failed: dict[str, MailferryError] = field(default_factory=dict)  # target account -> why
    missing: list[str] = field(default_factory=list)  # no mailbox yet, left alone (create=False)
    collisions: list[MailboxCollision] = field(default_factory=list)
    no_ids: bool = False  # the server names no mailbox id: the guard could check nothing
    server: str = ""  # the target's software as its greeting names it

    def as_dict(self) -> dict[str, object]:
        return {
            "logged_in_alone": len(self.logged_in),
            "created_at_first_login": sorted(self.autocreated),
            "created_by_admin": sorted(self.created),
            "failed": {u: str(e) for u, e in sorted(self.failed.items())},
            "without_mailbox": sorted(self.missing),
            "collisions": [c.as_dict() for c in self.collisions],
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
    create: bool = True,
) -> AliveReport:
    """Log every target account the guard does not know yet in alone, one after another; create
    what is missing with the admin; read the ids of its folders; settle them with the guard.

    ``targets``: (target account, how to log in as it); an account listed twice is done once.
    ``every``: log in the accounts the guard knows too (the directory's mailbox confirmation).
    ``create``: False for commands that write nothing (check, plan, verify): an account the admin
    sees without a mailbox is left alone (``report.missing``), not created and not logged in."""
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
                    if not existed and not create:
                        report.missing.append(user)
                        continue
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
                for f in store.own_folders():  # not public folders nor other people's shared ones
                    if not f.selectable:
                        continue
                    try:
                        mid = store.mailbox_id(f.name)
                    except ServerRefused:
                        continue  # may be listed but not looked at: nothing of it to hold
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


def check_folder(
    guard: MailboxGuard,
    target_user: str,
    folder: str,
    read_id: Callable[[str], str | None],
    *,
    created: bool = False,
) -> None:
    """Read ``folder``'s id with ``read_id`` (a store's ``mailbox_id``, retried or not) and claim
    it (see :meth:`MailboxGuard.check`); a folder that can't be looked at (no such folder, no
    right) holds nothing."""
    hit = guard.blocked(target_user)
    if hit is not None:
        raise hit
    try:
        mid = read_id(folder)
    except ServerRefused:
        return
    if mid is not None:
        guard.check(target_user, folder, mid, created=created)
