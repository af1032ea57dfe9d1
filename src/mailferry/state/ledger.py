"""The ledger: what mailferry has done, so every run is a delta pass and nothing is copied twice.

One SQLite file per project (WAL, file mode 0600, versioned schema migrations). The engine is
the only writer. The :class:`Ledger` protocol is what the engine needs; a server database can
implement it later when migrations are spread over several machines.

Records (never a secret, never message content):

runs        one row per command run: when, what, how it ended, a JSON summary.
folders     per account and source folder: the source state after the last complete pass
            (UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ) and the target folder it maps to.
            Equal state on the next run means nothing to do (dsync's tiny per-folder state).
messages    per source message (account, folder, UIDVALIDITY, UID): its ItemKey, size, state
            and where it went on the target (folder, UIDVALIDITY, UID), its last flags.
            state ``pending``: the intent to append was recorded but the append not confirmed —
            a crash left it; resolved on the next run by looking at the target.
            state ``copied``: on the target (appended by us or found there already: ``how``).
            state ``refused``: the target refused it (the reason is a finding); ``run_id`` is the
            run that last tried it. Outstanding: every pass tries it again, until it lands.
findings    everything a run reports: refused items, skips, names changed, keywords lost.
target_mailboxes
            the server's own id (RFC 8474 MAILBOXID, Dovecot X-GUID) of every target folder
            mailferry has seen alive, and the target account it belongs to: the guard that
            refuses to write into a mailbox another account of the project also holds
            (:mod:`mailferry.engine.alive`).
settings    what mailferry set on the target that is not an item, one row per source setting:
            a folder's ACL entry (kind ``acl``), a Sieve script (``sieve``), a folder METADATA
            entry (``metadata``), ... keyed by the account (or a unit such as ``#public``), the
            kind and a key of the kind's own (e.g. folder NUL identifier). ``value`` is what the
            source held as last carried (rights, a script's digest, an entry's value), ``target``
            what it became on the target (the mapped folder and identifier, ...); state ``set``
            or ``refused`` (the reason is a finding; every pass tries it again). A pass compares
            the source with these rows and writes only what changed.
approvals   a batch (a named set of accounts, the project file's ``[batches]``) approved for
            cut-over by an admin: who, when, the verdict it was approved on (verify clean, the
            findings still open and acknowledged). Written by the console; never a secret.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from mailferry.errors import LockedError

SCHEMA_VERSION = 6

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        exit_code INTEGER,
        summary TEXT
    );
    CREATE TABLE folders (
        account TEXT NOT NULL,
        source_folder TEXT NOT NULL,
        target_folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        highestmodseq INTEGER,
        target_uidvalidity INTEGER,
        PRIMARY KEY (account, source_folder)
    );
    CREATE TABLE messages (
        account TEXT NOT NULL,
        source_folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        key TEXT NOT NULL,
        size INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'copied', 'refused')),
        how TEXT NOT NULL DEFAULT '',
        target_folder TEXT NOT NULL,
        target_uidvalidity INTEGER,
        target_uid INTEGER,
        target_after_uid INTEGER NOT NULL DEFAULT 0,
        flags TEXT NOT NULL DEFAULT '',
        run_id INTEGER,
        PRIMARY KEY (account, source_folder, uidvalidity, uid)
    );
    CREATE INDEX messages_state ON messages (account, source_folder, state);
    CREATE INDEX messages_target ON messages (account, target_folder, target_uid);
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL,
        account TEXT NOT NULL,
        folder TEXT NOT NULL DEFAULT '',
        uid INTEGER,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX findings_run ON findings (run_id);
    CREATE TABLE account_runs (
        run_id INTEGER NOT NULL,
        account TEXT NOT NULL,
        target_user TEXT NOT NULL,
        status TEXT NOT NULL,
        copied INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        matched INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0,
        flag_updates INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        seconds REAL NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, account)
    );
    """,
    2: """
    CREATE TABLE directory_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        dn TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE directory_merges (
        contact_dn TEXT PRIMARY KEY,
        user_dn TEXT NOT NULL,
        contact_ldif TEXT NOT NULL,
        groups TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
        run_id INTEGER NOT NULL
    );
    CREATE TABLE identity_map (
        source_dn TEXT PRIMARY KEY,
        source_login TEXT,
        source_mail TEXT,
        target_dn TEXT NOT NULL,
        target_login TEXT,
        target_mail TEXT,
        how TEXT NOT NULL,
        kind TEXT NOT NULL,
        run_id INTEGER NOT NULL
    );
    """,
    3: """
    CREATE TABLE target_mailboxes (
        mailbox_id TEXT NOT NULL,
        target_user TEXT NOT NULL,
        folder TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, target_user, folder)
    );
    CREATE INDEX target_mailboxes_user ON target_mailboxes (target_user);
    """,
    4: """
    CREATE TABLE dav_collections (
        account TEXT NOT NULL,
        source_href TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        target_href TEXT NOT NULL,
        sync_token TEXT,
        ctag TEXT,
        complete INTEGER NOT NULL DEFAULT 0,
        run_id INTEGER NOT NULL,
        PRIMARY KEY (account, source_href)
    );
    CREATE TABLE dav_items (
        account TEXT NOT NULL,
        source_collection TEXT NOT NULL,
        source_href TEXT NOT NULL,
        source_etag TEXT,
        uid TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL CHECK (state IN ('pending', 'copied', 'refused')),
        how TEXT NOT NULL DEFAULT '',
        target_href TEXT NOT NULL,
        target_etag TEXT,
        rewrites INTEGER NOT NULL DEFAULT 0,
        run_id INTEGER,
        PRIMARY KEY (account, source_collection, source_href)
    );
    CREATE INDEX dav_items_state ON dav_items (account, state);
    CREATE TABLE dav_servers (
        account TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('source', 'target')),
        info TEXT NOT NULL,
        PRIMARY KEY (account, role)
    );
    CREATE TABLE dav_shares (
        account TEXT NOT NULL,
        source_collection TEXT NOT NULL,
        principal TEXT NOT NULL,
        access TEXT NOT NULL,
        target_principal TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('set', 'refused')),
        run_id INTEGER NOT NULL,
        PRIMARY KEY (account, source_collection, principal)
    );
    """,
    5: """
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch TEXT NOT NULL,
        accounts TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        approved_at TEXT NOT NULL,
        verdict TEXT NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        last_run INTEGER
    );
    CREATE INDEX approvals_batch ON approvals (batch);
    """,
    6: """
    CREATE TABLE settings (
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('set', 'refused')),
        run_id INTEGER NOT NULL,
        PRIMARY KEY (account, kind, key)
    );
    """,
}


@dataclass(frozen=True, slots=True)
class SettingRecord:
    """One setting carried to the target (see ``settings`` above)."""

    account: str
    kind: str
    key: str
    value: str
    target: str
    state: str
    run_id: int


@dataclass(frozen=True, slots=True)
class FolderState:
    account: str
    source_folder: str
    target_folder: str
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None
    target_uidvalidity: int | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    uidvalidity: int
    uid: int
    key: str
    size: int
    state: str
    how: str
    target_folder: str
    target_uidvalidity: int | None
    target_uid: int | None
    target_after_uid: int
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DavCollectionState:
    """A source collection and the target collection it maps to; ``sync_token``/``ctag``: the
    source's after the last complete pass (``complete``), so an unchanged collection is skipped."""

    account: str
    source_href: str
    kind: str
    name: str
    target_href: str
    sync_token: str | None
    ctag: str | None
    complete: bool


@dataclass(frozen=True, slots=True)
class DavItemRecord:
    """One source item (its href and ETag when copied), its identity (UID) and where it went.
    States as for messages: ``pending`` (a PUT intended, not confirmed), ``copied``, ``refused``."""

    source_href: str
    source_etag: str | None
    uid: str
    state: str
    how: str
    target_href: str
    target_etag: str | None
    rewrites: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    account: str
    folder: str
    uid: int | None
    kind: str
    message: str
    details: dict[str, Any]
    run: int = 0  # the run that recorded it (filled in when read back)


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def decode_flags(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


class Ledger(Protocol):
    """What the engine and the use cases need of a ledger. :class:`SqliteLedger` is the one
    implementation today; a server database can take over when runs spread over several machines.

    Contract: every method is atomic (all of it is recorded or nothing); methods may be called
    from several threads; nothing passed in ever holds a secret or message content.
    """

    def acquire(self, what: str) -> None:
        """Hold the project's run lock until close(); raise LockedError if another run holds it."""
        ...

    def start_run(self, command: str, now: str) -> int: ...
    def finish_run(self, run_id: int, now: str, exit_code: int, summary: dict[str, Any]) -> None: ...
    def runs(self) -> list[dict[str, Any]]: ...
    def record_account_run(self, run_id: int, account: str, target_user: str, stats: dict[str, Any]) -> None: ...
    def account_runs(self, run_id: int | None = None) -> list[dict[str, Any]]: ...
    def folder_state(self, account: str, source_folder: str) -> FolderState | None: ...
    def folder_states(self, account: str) -> list[FolderState]: ...
    def save_folder_state(self, state: FolderState) -> None: ...
    def messages(self, account: str, source_folder: str) -> list[MessageRecord]: ...
    def has_pending(self, account: str) -> set[str]:
        """Source folders of ``account`` with unresolved append intents."""
        ...

    def refused_folders(self, account: str) -> set[str]:
        """Source folders of ``account`` with messages the target refused (outstanding)."""
        ...

    def outstanding_count(self, account: str) -> int:
        """How many messages of ``account`` the target refused and still lacks."""
        ...

    def settings(self, account: str, kind: str) -> dict[str, SettingRecord]: ...
    def record_setting(self, r: SettingRecord) -> None: ...
    def forget_setting(self, account: str, kind: str, key: str) -> None: ...

    def outstanding(self, account: str | None = None) -> list[dict[str, Any]]:
        """Each refused message once: account, folder, uidvalidity, uid, size, target_folder, the
        run that last tried it (``run``) and that run's finding about it (kind, message, details)."""
        ...

    def record_pending(self, account: str, source_folder: str, rows: Sequence[MessageRecord], run_id: int) -> None:
        """The intent, recorded before the append is sent."""
        ...

    def record_copied(self, account: str, source_folder: str, rows: Sequence[MessageRecord], run_id: int) -> None:
        """The fact, recorded after the server confirmed (or the copy was found on the target)."""
        ...

    def update_flags(
        self, account: str, source_folder: str, changes: Sequence[tuple[int, int, tuple[str, ...]]]
    ) -> None: ...
    def forget(self, account: str, source_folder: str, keys: Sequence[tuple[int, int]]) -> None: ...
    def rebase(self, account: str, source_folder: str, moves: Sequence[tuple[int, int, int, int]]) -> None: ...
    def add_finding(self, run_id: int, f: Finding) -> None: ...
    def mailbox_holders(self, accounts: Collection[str] | None = None) -> list[tuple[str, str, str]]:
        """(mailbox id, target account, folder) of every target folder seen: two accounts on one
        id is a collision that stays recorded until both are read again. ``accounts``: only the
        rows of the ids these accounts hold (theirs and any other account's on the same ids)."""
        ...

    def mailbox_holders_of(self, ids: Collection[str]) -> list[tuple[str, str, str]]:
        """The rows of these mailbox ids, whoever holds them."""
        ...

    def record_mailboxes(self, target_user: str, ids: dict[str, str], run_id: int, *, replace: bool = False) -> None:
        """These folders (folder -> mailbox id) of ``target_user`` were seen; ``replace``: they are
        all of its folders (a full read), so its older rows go."""
        ...

    def findings(self, run_id: int | None = None, account: str | None = None) -> list[Finding]: ...
    def counts(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class _Rows:
    """A statement's result read at once (see :class:`_Serialized`)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.description = cursor.description
        self.lastrowid = cursor.lastrowid
        self.rows = cursor.fetchall()

    def fetchall(self) -> list[Any]:
        return self.rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class _Serialized:
    """The ledger's one connection, a statement at a time under the ledger's lock, its rows read
    at once: a thread never reads while another is halfway through a transaction on the same
    connection (it would see writes that may yet be rolled back)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self.conn = conn
        self.lock = lock

    def execute(self, sql: str, args: Any = ()) -> _Rows:
        with self.lock:
            return _Rows(self.conn.execute(sql, args))

    def executemany(self, sql: str, rows: Any) -> None:
        with self.lock:
            self.conn.executemany(sql, rows)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class SqliteLedger:
    """The SQLite ledger. Safe to share between threads (one connection behind a lock, reads
    included)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """``readonly``: for commands that must write nothing (plan, verify, report): an absent
        ledger is an empty one in memory, an existing one is opened for reading only."""
        self.path = path
        self._lock = threading.RLock()
        self._lockfile: IO[str] | None = None
        if readonly:
            if path.exists():
                self._db = _Serialized(
                    sqlite3.connect(
                        f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None, timeout=30
                    ),
                    self._lock,
                )
                return
            memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db = _Serialized(memory, self._lock)
            self._migrate()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(path, 0o600)
        self._db = _Serialized(
            sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30), self._lock
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        for extra in ("-wal", "-shm"):
            p = Path(str(path) + extra)
            if p.exists():
                os.chmod(p, 0o600)

    # -- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LockedError(
                    f"the ledger {self.path} was written by a newer mailferry (schema {version})",
                    hint="upgrade mailferry",
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split(_MIGRATIONS[v]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={v}")

    def _has_table(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
        return row is not None

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _tx(self) -> Iterator[_Serialized]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- exclusive use ------------------------------------------------------------------------

    def acquire(self, what: str) -> None:
        """Hold the project's run lock (a flock on ``LEDGER.lock``) until close()."""
        import fcntl

        f = open(run_lock_path(self.path), "a+")  # noqa: SIM115 - held open for the run's lifetime
        for attempt in range(_LOCK_TRIES):
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # run_lock_holder's look holds the lock for an instant: a few short tries tell
                # it from a run holding it
                if attempt + 1 < _LOCK_TRIES:
                    time.sleep(0.02)
                    continue
                f.seek(0)
                holder = f.read().strip()
                f.close()
                raise locked_error(holder) from None
        f.seek(0)
        f.truncate()
        f.write(f"{what}, pid {os.getpid()}\n")
        f.flush()
        self._lockfile = f

    @contextmanager
    def account_lock(self, account: str) -> Iterator[None]:
        """Held while one account is moved; on one machine the run lock already keeps a second
        run away (see :meth:`PostgresLedger.account_lock` for runs over several machines)."""
        yield

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, command: str, now: str) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, now))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, now: str, exit_code: int, summary: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, exit_code=?, summary=? WHERE id=?",
                (now, exit_code, json.dumps(summary, sort_keys=True), run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, command, started_at, finished_at, exit_code, summary FROM runs ORDER BY id"
        ).fetchall()
        return [
            {
                "id": r[0],
                "command": r[1],
                "started_at": r[2],
                "finished_at": r[3],
                "exit_code": r[4],
                "summary": json.loads(r[5]) if r[5] else None,
            }
            for r in rows
        ]

    def record_account_run(self, run_id: int, account: str, target_user: str, stats: dict[str, Any]) -> None:
        cols = (
            "status",
            "copied",
            "bytes",
            "matched",
            "skipped",
            "refused",
            "flag_updates",
            "deleted",
            "seconds",
            "error",
        )
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO account_runs (run_id, account, target_user, {', '.join(cols)}) "
                f"VALUES (?, ?, ?, {', '.join('?' for _ in cols)})",
                (
                    run_id,
                    account,
                    target_user,
                    *(stats.get(c, 0 if c not in ("status", "error") else "") for c in cols),
                ),
            )

    def account_runs(self, run_id: int | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT * FROM account_runs"
            + (" WHERE run_id=?" if run_id is not None else "")
            + " ORDER BY run_id, account"
        )
        cur = self._db.execute(q, (run_id,) if run_id is not None else ())
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- folders ------------------------------------------------------------------------------

    def folder_state(self, account: str, source_folder: str) -> FolderState | None:
        r = self._db.execute(
            "SELECT account, source_folder, target_folder, uidvalidity, uidnext, messages, highestmodseq, "
            "target_uidvalidity FROM folders WHERE account=? AND source_folder=?",
            (account, source_folder),
        ).fetchone()
        return FolderState(*r) if r else None

    def folder_states(self, account: str) -> list[FolderState]:
        rows = self._db.execute(
            "SELECT account, source_folder, target_folder, uidvalidity, uidnext, messages, highestmodseq, "
            "target_uidvalidity FROM folders WHERE account=? ORDER BY source_folder",
            (account,),
        ).fetchall()
        return [FolderState(*r) for r in rows]

    def save_folder_state(self, s: FolderState) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO folders (account, source_folder, target_folder, uidvalidity, uidnext, "
                "messages, highestmodseq, target_uidvalidity) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    s.account,
                    s.source_folder,
                    s.target_folder,
                    s.uidvalidity,
                    s.uidnext,
                    s.messages,
                    s.highestmodseq,
                    s.target_uidvalidity,
                ),
            )

    def invalidate_folder_state(self, account: str, source_folder: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM folders WHERE account=? AND source_folder=?", (account, source_folder))

    # -- messages -----------------------------------------------------------------------------

    def messages(self, account: str, source_folder: str) -> list[MessageRecord]:
        rows = self._db.execute(
            "SELECT uidvalidity, uid, key, size, state, how, target_folder, target_uidvalidity, target_uid, "
            "target_after_uid, flags FROM messages WHERE account=? AND source_folder=? ORDER BY uidvalidity, uid",
            (account, source_folder),
        ).fetchall()
        return [
            MessageRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], decode_flags(r[10])) for r in rows
        ]

    def has_pending(self, account: str) -> set[str]:
        rows = self._db.execute(
            "SELECT DISTINCT source_folder FROM messages WHERE account=? AND state='pending'", (account,)
        ).fetchall()
        return {r[0] for r in rows}

    def refused_folders(self, account: str) -> set[str]:
        rows = self._db.execute(
            "SELECT DISTINCT source_folder FROM messages WHERE account=? AND state='refused'", (account,)
        ).fetchall()
        return {r[0] for r in rows}

    def outstanding_count(self, account: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM messages WHERE account=? AND state='refused'", (account,)
        ).fetchone()
        return int(row[0])

    def outstanding(self, account: str | None = None) -> list[dict[str, Any]]:
        last = (
            "SELECT {} FROM findings f WHERE f.run_id=m.run_id AND f.account=m.account "
            "AND f.folder=m.source_folder AND f.uid=m.uid AND f.kind IN ('refused', 'skipped') "
            "ORDER BY f.id DESC LIMIT 1"
        )
        q = (
            "SELECT m.account, m.source_folder, m.uidvalidity, m.uid, m.size, m.target_folder, m.run_id, "
            f"({last.format('f.kind')}), ({last.format('f.message')}), ({last.format('f.details')}) "
            "FROM messages m WHERE m.state='refused'"
        )
        args: tuple[Any, ...] = ()
        if account is not None:
            q += " AND m.account=?"
            args = (account,)
        rows = self._db.execute(q + " ORDER BY m.account, m.source_folder, m.uidvalidity, m.uid", args).fetchall()
        names = ("account", "folder", "uidvalidity", "uid", "size", "target_folder", "run", "kind", "message")
        return [dict(zip(names, r[:9], strict=True), details=json.loads(r[9]) if r[9] else {}) for r in rows]

    def _upsert(self, db: _Serialized, account: str, folder: str, rows: Sequence[MessageRecord], run_id: int) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO messages (account, source_folder, uidvalidity, uid, key, size, state, how, "
            "target_folder, target_uidvalidity, target_uid, target_after_uid, flags, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    account,
                    folder,
                    r.uidvalidity,
                    r.uid,
                    r.key,
                    r.size,
                    r.state,
                    r.how,
                    r.target_folder,
                    r.target_uidvalidity,
                    r.target_uid,
                    r.target_after_uid,
                    encode_flags(r.flags),
                    run_id,
                )
                for r in rows
            ],
        )

    def record_pending(self, account: str, source_folder: str, rows: Sequence[MessageRecord], run_id: int) -> None:
        with self._tx() as db:
            self._upsert(db, account, source_folder, rows, run_id)

    def record_copied(self, account: str, source_folder: str, rows: Sequence[MessageRecord], run_id: int) -> None:
        with self._tx() as db:
            self._upsert(db, account, source_folder, rows, run_id)

    def update_flags(
        self, account: str, source_folder: str, changes: Sequence[tuple[int, int, tuple[str, ...]]]
    ) -> None:
        """(uidvalidity, uid, flags) after flags were carried to the target."""
        with self._tx() as db:
            db.executemany(
                "UPDATE messages SET flags=? WHERE account=? AND source_folder=? AND uidvalidity=? AND uid=?",
                [(encode_flags(f), account, source_folder, v, u) for v, u, f in changes],
            )

    def forget(self, account: str, source_folder: str, keys: Sequence[tuple[int, int]]) -> None:
        """Drop message rows (uidvalidity, uid): unresolved intents, deletions carried out."""
        with self._tx() as db:
            db.executemany(
                "DELETE FROM messages WHERE account=? AND source_folder=? AND uidvalidity=? AND uid=?",
                [(account, source_folder, v, u) for v, u in keys],
            )

    def rebase(self, account: str, source_folder: str, moves: Sequence[tuple[int, int, int, int]]) -> None:
        """After a source UIDVALIDITY change: (old_validity, old_uid, new_validity, new_uid)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE messages SET uidvalidity=?, uid=? "
                "WHERE account=? AND source_folder=? AND uidvalidity=? AND uid=?",
                [(nv, nu, account, source_folder, ov, ou) for ov, ou, nv, nu in moves],
            )

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- calendars and contacts ---------------------------------------------------------------

    def _dav_ready(self) -> bool:
        """False for a read-only ledger written before schema 4 (it holds no DAV state yet)."""
        return self.schema_version >= 4

    def dav_collections(self, account: str) -> dict[str, DavCollectionState]:
        if not self._dav_ready():
            return {}
        rows = self._db.execute(
            "SELECT account, source_href, kind, name, target_href, sync_token, ctag, complete "
            "FROM dav_collections WHERE account=?",
            (account,),
        ).fetchall()
        return {r[1]: DavCollectionState(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows}

    def save_dav_collection(self, s: DavCollectionState, run_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO dav_collections (account, source_href, kind, name, target_href, sync_token, "
                "ctag, complete, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    s.account,
                    s.source_href,
                    s.kind,
                    s.name,
                    s.target_href,
                    s.sync_token,
                    s.ctag,
                    int(s.complete),
                    run_id,
                ),
            )

    def dav_items(self, account: str, source_collection: str) -> dict[str, DavItemRecord]:
        if not self._dav_ready():
            return {}
        rows = self._db.execute(
            "SELECT source_href, source_etag, uid, state, how, target_href, target_etag, rewrites FROM dav_items "
            "WHERE account=? AND source_collection=?",
            (account, source_collection),
        ).fetchall()
        return {r[0]: DavItemRecord(*r) for r in rows}

    def record_dav_items(
        self, account: str, source_collection: str, rows: Sequence[DavItemRecord], run_id: int
    ) -> None:
        """Insert or replace item records (an intent before a PUT; the fact after it)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO dav_items (account, source_collection, source_href, source_etag, uid, state, "
                "how, target_href, target_etag, rewrites, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        account,
                        source_collection,
                        r.source_href,
                        r.source_etag,
                        r.uid,
                        r.state,
                        r.how,
                        r.target_href,
                        r.target_etag,
                        r.rewrites,
                        run_id,
                    )
                    for r in rows
                ],
            )

    def forget_dav_items(self, account: str, source_collection: str, hrefs: Sequence[str]) -> None:
        with self._tx() as db:
            db.executemany(
                "DELETE FROM dav_items WHERE account=? AND source_collection=? AND source_href=?",
                [(account, source_collection, h) for h in hrefs],
            )

    def dav_server(self, account: str, role: str) -> dict[str, Any] | None:
        """What discovery found for the account on one side (RFC 6764), as saved."""
        if not self._dav_ready():
            return None
        row = self._db.execute("SELECT info FROM dav_servers WHERE account=? AND role=?", (account, role)).fetchone()
        return json.loads(row[0]) if row else None

    def save_dav_server(self, account: str, role: str, info: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO dav_servers (account, role, info) VALUES (?, ?, ?)",
                (account, role, json.dumps(info, sort_keys=True)),
            )

    def dav_gone(self, account: str) -> set[str]:
        """Source collections of the account with items copied that the source no longer has
        (recorded ``how='gone'`` while deletions were not carried)."""
        if not self._dav_ready():
            return set()
        rows = self._db.execute(
            "SELECT DISTINCT source_collection FROM dav_items WHERE account=? AND how='gone'", (account,)
        ).fetchall()
        return {r[0] for r in rows}

    def dav_unsettled(self, account: str) -> set[str]:
        """Source collections of the account with items pending or refused."""
        if not self._dav_ready():
            return set()
        rows = self._db.execute(
            "SELECT DISTINCT source_collection FROM dav_items WHERE account=? AND state!='copied'", (account,)
        ).fetchall()
        return {r[0] for r in rows}

    def dav_outstanding(self, account: str | None = None) -> list[dict[str, Any]]:
        """Items the target refused and still lacks, with the run that last tried them."""
        if not self._dav_ready():
            return []
        q = (
            "SELECT account, source_collection, source_href, uid, target_href, run_id FROM dav_items "
            "WHERE state='refused'"
        )
        args: tuple[Any, ...] = ()
        if account is not None:
            q += " AND account=?"
            args = (account,)
        rows = self._db.execute(q + " ORDER BY account, source_collection, source_href", args).fetchall()
        names = ("account", "collection", "source_href", "item_uid", "target_href", "run")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def dav_shares(self, account: str) -> list[dict[str, Any]]:
        if not self._dav_ready():
            return []
        rows = self._db.execute(
            "SELECT source_collection, principal, access, target_principal, state FROM dav_shares WHERE account=? "
            "ORDER BY source_collection, principal",
            (account,),
        ).fetchall()
        names = ("collection", "principal", "access", "target_principal", "state")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def dav_offered(self, run_id: int) -> set[str]:
        """Target accounts a share was offered to in run ``run_id`` (each accepts it on its side)."""
        if not self._dav_ready():
            return set()
        rows = self._db.execute(
            "SELECT DISTINCT target_principal FROM dav_shares WHERE run_id=? AND state='set'", (run_id,)
        ).fetchall()
        return {r[0] for r in rows}

    def record_dav_share(
        self, account: str, collection: str, principal: str, access: str, target_principal: str, state: str, run_id: int
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO dav_shares (account, source_collection, principal, access, target_principal, "
                "state, run_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account, collection, principal, access, target_principal, state, run_id),
            )

    def dav_counts(self) -> dict[str, int]:
        if not self._dav_ready():
            return {}
        rows = self._db.execute("SELECT state, COUNT(*) FROM dav_items GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- settings (ACL entries, Sieve scripts, folder metadata) --------------------------------

    def settings(self, account: str, kind: str) -> dict[str, SettingRecord]:
        """Every setting of ``kind`` recorded for ``account``, by key."""
        if self.schema_version < 6:  # a read-only ledger written before schema 6 holds none
            return {}
        rows = self._db.execute(
            "SELECT account, kind, key, value, target, state, run_id FROM settings WHERE account=? AND kind=?",
            (account, kind),
        ).fetchall()
        return {r[2]: SettingRecord(*r) for r in rows}

    def record_setting(self, r: SettingRecord) -> None:
        """Record one setting as set (or refused) on the target; replaces the earlier row."""
        if r.state not in ("set", "refused"):
            raise ValueError(f"unknown setting state {r.state!r}")
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO settings (account, kind, key, value, target, state, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (r.account, r.kind, r.key, r.value, r.target, r.state, r.run_id),
            )

    def forget_setting(self, account: str, kind: str, key: str) -> None:
        """The source no longer holds this setting (the target keeps what was set: deleting on
        the target is the admin's explicit choice, never ours)."""
        with self._tx() as db:
            db.execute("DELETE FROM settings WHERE account=? AND kind=? AND key=?", (account, kind, key))

    # -- findings -----------------------------------------------------------------------------

    def add_finding(self, run_id: int, f: Finding) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO findings (run_id, account, folder, uid, kind, message, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    f.account,
                    f.folder,
                    f.uid,
                    f.kind,
                    f.message,
                    json.dumps(f.details, sort_keys=True, default=str),
                ),
            )

    def findings(self, run_id: int | None = None, account: str | None = None) -> list[Finding]:
        q = "SELECT account, folder, uid, kind, message, details, run_id FROM findings WHERE 1=1"
        args: list[Any] = []
        if run_id is not None:
            q += " AND run_id=?"
            args.append(run_id)
        if account is not None:
            q += " AND account=?"
            args.append(account)
        rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [Finding(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    # -- target mailboxes ---------------------------------------------------------------------

    def mailbox_holders(self, accounts: Collection[str] | None = None) -> list[tuple[str, str, str]]:
        if accounts is None:
            return self._holders_where("", ())
        return self._holders_in(
            "WHERE mailbox_id IN (SELECT mailbox_id FROM target_mailboxes WHERE target_user IN ({}))", accounts
        )

    def mailbox_holders_of(self, ids: Collection[str]) -> list[tuple[str, str, str]]:
        return self._holders_in("WHERE mailbox_id IN ({})", ids)

    def _holders_in(self, where: str, values: Collection[str]) -> list[tuple[str, str, str]]:
        """``where`` with its ``{}`` holding up to 500 placeholders a statement, whatever the
        number of values; the rows of all statements together."""
        rows: set[tuple[str, str, str]] = set()
        names = sorted(values)
        for i in range(0, len(names), 500):
            part = names[i : i + 500]
            rows.update(self._holders_where(where.format(",".join("?" * len(part))), part))
        return sorted(rows)

    def _holders_where(self, where: str, args: Sequence[str]) -> list[tuple[str, str, str]]:
        rows = self._db.execute(
            f"SELECT mailbox_id, target_user, folder FROM target_mailboxes {where} "  # noqa: S608 - placeholders only
            "ORDER BY mailbox_id, target_user, folder",
            tuple(args),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def record_mailboxes(self, target_user: str, ids: dict[str, str], run_id: int, *, replace: bool = False) -> None:
        with self._tx() as db:
            if replace:
                db.execute("DELETE FROM target_mailboxes WHERE target_user=?", (target_user,))
            else:  # a folder's id is the one last seen (a folder recreated on the target gets a new one)
                db.executemany(
                    "DELETE FROM target_mailboxes WHERE target_user=? AND folder=?",
                    [(target_user, folder) for folder in ids],
                )
            db.executemany(
                "INSERT OR REPLACE INTO target_mailboxes (mailbox_id, target_user, folder, run_id) VALUES (?, ?, ?, ?)",
                [(mid, target_user, folder, run_id) for folder, mid in ids.items()],
            )

    # -- directory ----------------------------------------------------------------------------

    def record_directory_change(self, run_id: int, kind: str, dn: str, detail: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO directory_changes (run_id, kind, dn, detail) VALUES (?, ?, ?, ?)",
                (run_id, kind, dn, json.dumps(detail, sort_keys=True, default=str)),
            )

    def directory_changes(self, run_id: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT run_id, kind, dn, detail FROM directory_changes" + (" WHERE run_id=?" if run_id is not None else "")
        rows = self._db.execute(q + " ORDER BY id", (run_id,) if run_id is not None else ()).fetchall()
        return [{"run": r[0], "kind": r[1], "dn": r[2], "detail": json.loads(r[3])} for r in rows]

    def begin_merge(self, run_id: int, contact_dn: str, user_dn: str, contact_ldif: str, groups: Sequence[str]) -> None:
        """The intent to fold a contact into a user, with the contact's LDIF, before any change.

        A merge begun before and not finished keeps its first LDIF and groups: they are the
        contact as it was before any change (a resumed merge sees it after some)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO directory_merges VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT (contact_dn) DO UPDATE SET "
                "contact_ldif = CASE WHEN directory_merges.state = 'pending' THEN directory_merges.contact_ldif "
                "ELSE excluded.contact_ldif END, "
                "groups = CASE WHEN directory_merges.state = 'pending' THEN directory_merges.groups "
                "ELSE excluded.groups END, "
                "user_dn = excluded.user_dn, state = 'pending', run_id = excluded.run_id",
                (contact_dn, user_dn, contact_ldif, json.dumps(list(groups)), run_id),
            )

    def end_merge(self, contact_dn: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE directory_merges SET state='done' WHERE contact_dn=?", (contact_dn,))

    def merges(self, state: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT contact_dn, user_dn, contact_ldif, groups, state, run_id FROM directory_merges"
        rows = self._db.execute(q + (" WHERE state=?" if state else ""), (state,) if state else ()).fetchall()
        return [
            {
                "contact_dn": r[0],
                "user_dn": r[1],
                "contact_ldif": r[2],
                "groups": json.loads(r[3]),
                "state": r[4],
                "run": r[5],
            }
            for r in rows
        ]

    def save_identity(self, run_id: int, rows: Sequence[dict[str, Any]]) -> None:
        """Replace the identity map (source person -> target person) with ``rows``."""
        cols = ("source_dn", "source_login", "source_mail", "target_dn", "target_login", "target_mail", "how", "kind")
        with self._tx() as db:
            db.execute("DELETE FROM identity_map")
            db.executemany(
                f"INSERT INTO identity_map ({', '.join(cols)}, run_id) VALUES ({', '.join('?' for _ in cols)}, ?)",
                [(*(r.get(c) for c in cols), run_id) for r in rows],
            )

    def identity(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM identity_map ORDER BY source_dn")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- approvals (the console) ---------------------------------------------------------------

    def record_approval(
        self,
        batch: str,
        accounts: Sequence[str],
        approved_by: str,
        approved_at: str,
        verdict: dict[str, Any],
        *,
        acknowledged: int = 0,
        last_run: int | None = None,
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO approvals (batch, accounts, approved_by, approved_at, verdict, acknowledged, last_run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    batch,
                    json.dumps(list(accounts)),
                    approved_by,
                    approved_at,
                    json.dumps(verdict, sort_keys=True),
                    acknowledged,
                    last_run,
                ),
            )
            return int(cur.lastrowid or 0)

    def approvals(self, batch: str | None = None) -> list[dict[str, Any]]:
        """Every approval (of ``batch``), oldest first. None in a ledger that predates them (a
        read-only ledger is not migrated)."""
        if not self._has_table("approvals"):
            return []
        where, args = ("WHERE batch = ?", (batch,)) if batch is not None else ("", ())
        rows = self._db.execute(
            "SELECT id, batch, accounts, approved_by, approved_at, verdict, acknowledged, last_run "
            f"FROM approvals {where} ORDER BY id",
            args,
        ).fetchall()
        return [
            {
                "id": r[0],
                "batch": r[1],
                "accounts": json.loads(r[2]),
                "approved_by": r[3],
                "approved_at": r[4],
                "verdict": json.loads(r[5]),
                "acknowledged": r[6],
                "last_run": r[7],
            }
            for r in rows
        ]

    # -- moving a ledger (``mailferry ledger export/import``) ------------------------------------

    def dump(self) -> Iterator[tuple[str, list[str], list[Any]]]:
        """Every table's rows: (table, column names, rows)."""
        for table in TABLES:
            if not self._has_table(table):
                continue
            cur = self._db.execute(f"SELECT * FROM {table}")
            yield table, [d[0] for d in cur.description], cur.fetchall()

    def load(self, tables: Iterable[tuple[str, list[str], list[Any]]]) -> dict[str, int]:
        """Copy ``tables`` (as :meth:`dump` gives them) into this ledger, which must hold no
        record yet: all of it in one transaction, or nothing. Returns rows per table."""
        counts: dict[str, int] = {}
        with self._tx() as db:
            for table in TABLES:
                if db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:
                    raise LockedError(
                        f"the ledger {self.path} already holds records ({table})",
                        hint="import into a new, empty ledger",
                    )
            for table, cols, rows in tables:
                db.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", rows)
                counts[table] = len(rows)
        self._after_load()
        return counts

    def _after_load(self) -> None:
        """What a database needs after rows with their own ids were copied in (nothing, here)."""

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None


# Every table of the ledger, in an order that loads (no foreign keys today).
TABLES = (
    "runs",
    "account_runs",
    "folders",
    "messages",
    "findings",
    "target_mailboxes",
    "dav_collections",
    "dav_items",
    "dav_servers",
    "dav_shares",
    "settings",
    "directory_changes",
    "directory_merges",
    "identity_map",
    "approvals",
)

_LOCK_TRIES = 10  # acquire's tries before it refuses (20 ms apart)


def run_lock_path(ledger_path: Path) -> Path:
    return Path(str(ledger_path) + ".lock")


def locked_error(holder: str) -> LockedError:
    """What a second run on a project is told (the CLI's second ``migrate``, the console's second start)."""
    return LockedError(
        f"another mailferry run is using this project ({holder or 'unknown process'})",
        hint="wait for it to finish, or stop it; two runs on one project at once are refused",
    )


def run_lock_holder(ledger_path: Path) -> str | None:
    """Who holds the project's run lock (its ``"migrate, pid N"`` line), or None when it is free.
    Looks without keeping it: a shared lock tried and let go at once."""
    import fcntl

    path = run_lock_path(ledger_path)
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


@contextmanager
def alive_lock(ledger_path: Path) -> Iterator[None]:
    """Held while a command brings the project's target accounts alive one at a time (see
    :mod:`mailferry.engine.alive`): a ``check`` started during a ``migrate`` waits instead of
    logging accounts in beside it. Waits (it is short), unlike the run lock. The lock file lives
    in the temp folder, keyed by the ledger's path: commands that write nothing leave nothing in
    the project."""
    import fcntl
    import hashlib
    import tempfile

    key = hashlib.sha256(str(ledger_path.resolve()).encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / f"mailferry-alive-{key}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
