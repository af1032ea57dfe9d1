"""The ledger on PostgreSQL, for runs spread over several machines (``migrate --distributed``).

The same records, methods and contract as :class:`~mailferry.state.ledger.SqliteLedger` (it is
one: every method is inherited), the same schema versions: what differs is the connection. The
SQL the SQLite ledger speaks is translated once per statement text (cached):

- ``?`` placeholders become ``%s``; ``INSERT OR REPLACE`` becomes ``INSERT ... ON CONFLICT (the
  table's key) DO UPDATE``; an ``INSERT`` into a table with a generated id returns it;
- in the schema, ``INTEGER`` is ``BIGINT`` (UIDVALIDITY and MODSEQ don't fit 32 bits), ids are
  ``BIGSERIAL`` and text compares byte by byte (``COLLATE "C"``, as SQLite does), so listings come
  in the same order from both;
- PostgreSQL text can't hold NUL, which some keys use as a separator: text is stored with NUL
  and U+0001 escaped (``\\x01\\x02`` and ``\\x01\\x01``), and unescaped when read.

Exclusive use: the project's run lock is a session-level advisory lock (let go by the server when
the connection ends, a machine that dies included), and :meth:`PostgresLedger.account_lock` keeps
two workers off one account. The schema version lives in ``mailferry_schema``; migrations take a
transaction-level advisory lock so that workers starting together migrate once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailferry.errors import LedgerUnavailable, LockedError
from mailferry.state.ledger import _MIGRATIONS, SCHEMA_VERSION, SqliteLedger, _Rows, _split, locked_error

# Each table's key (what INSERT OR REPLACE replaces on); tables with a generated ``id``.
_KEYS: dict[str, tuple[str, ...]] = {
    "folders": ("account", "source_folder"),
    "messages": ("account", "source_folder", "uidvalidity", "uid"),
    "account_runs": ("run_id", "account"),
    "dav_collections": ("account", "source_href"),
    "dav_items": ("account", "source_collection", "source_href"),
    "dav_servers": ("account", "role"),
    "dav_shares": ("account", "source_collection", "principal"),
    "settings": ("account", "kind", "key"),
    "target_mailboxes": ("mailbox_id", "target_user", "folder"),
    "directory_merges": ("contact_dn",),
    "identity_map": ("source_dn",),
}
_WITH_ID = ("runs", "findings", "directory_changes", "approvals")

_REPLACE = re.compile(r"^\s*INSERT OR REPLACE INTO (\w+) \(([^)]*)\)(.*)$", re.S)
_INSERT = re.compile(r"^\s*INSERT INTO (\w+) ", re.S)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """One SQLite statement of the ledger's, as PostgreSQL says it."""
    if sql.lstrip().upper().startswith("CREATE"):
        return _ddl(sql)
    out = sql.replace("%", "%%").replace("?", "%s")
    m = _REPLACE.match(out)
    if m:
        table, cols, rest = m.group(1), [c.strip() for c in m.group(2).split(",")], m.group(3)
        key = _KEYS[table]
        others = [c for c in cols if c not in key]
        action = (
            "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in others) if others else "DO NOTHING"
        )
        return f"INSERT INTO {table} ({', '.join(cols)}){rest} ON CONFLICT ({', '.join(key)}) {action}"
    m = _INSERT.match(out)
    if m and m.group(1) in _WITH_ID and "RETURNING" not in out.upper():
        return out + " RETURNING id"
    return out


def _ddl(sql: str) -> str:
    out = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    out = re.sub(r"\bINTEGER\b", "BIGINT", out)
    out = re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)
    return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', out)


def _escape(value: Any) -> Any:
    if isinstance(value, str) and ("\x00" in value or "\x01" in value):
        return value.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02")
    return value


def _unescape(value: Any) -> Any:
    if isinstance(value, str) and "\x01" in value:
        return re.sub("\x01([\x01\x02])", lambda m: "\x01" if m.group(1) == "\x01" else "\x00", value)
    return value


def _args(args: Any) -> Any:
    if isinstance(args, dict):
        return {k: _escape(v) for k, v in args.items()}
    return tuple(_escape(v) for v in args)


class _PgRows(_Rows):
    """A psycopg result read at once, text unescaped, the id of an ``INSERT ... RETURNING id``
    as ``lastrowid``."""

    def __init__(self, cursor: Any, returning: bool) -> None:
        self.description = cursor.description
        rows = cursor.fetchall() if cursor.description is not None else []
        self.rows = [tuple(_unescape(v) for v in r) for r in rows]
        self.lastrowid = self.rows[0][0] if returning and self.rows else None


class _PgSerialized:
    """One psycopg connection (autocommit; the ledger says BEGIN/COMMIT itself), a statement at
    a time under the ledger's lock, as :class:`~mailferry.state.ledger._Serialized`."""

    def __init__(self, conn: Any, lock: threading.RLock) -> None:
        self.conn = conn
        self.lock = lock

    def execute(self, sql: str, args: Any = ()) -> _PgRows:
        import psycopg

        if sql.startswith("BEGIN"):
            sql = "BEGIN"
        text = translate(sql)
        with self.lock:
            try:
                cur = self.conn.execute(text, _args(args))
                return _PgRows(cur, text.endswith("RETURNING id"))
            except psycopg.OperationalError as e:
                raise _unreachable(e) from None

    def executemany(self, sql: str, rows: Any) -> None:
        import psycopg

        rows = [_args(r) for r in rows]
        if not rows:
            return
        with self.lock:
            try:
                with self.conn.cursor() as cur:
                    cur.executemany(translate(sql), rows)
            except psycopg.OperationalError as e:
                raise _unreachable(e) from None

    def close(self) -> None:
        with self.lock, contextlib.suppress(Exception):
            self.conn.close()


def _unreachable(e: Exception) -> LedgerUnavailable:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return LedgerUnavailable(
        f"the ledger database is unreachable: {first}",
        hint="check that PostgreSQL is running and reachable from this machine; work stops until it is",
    )


def _lock_key(name: str) -> int:
    """A stable 63-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


class PostgresLedger(SqliteLedger):
    """The ledger in a PostgreSQL database (``url`` without the password; ``password`` apart, so
    it never appears in a URL that could be printed)."""

    def __init__(self, url: str, password: str | None = None, *, readonly: bool = False, label: str = "") -> None:
        import psycopg

        self.path = Path(label or "postgresql")
        self.url = url
        self._lock = threading.RLock()
        self._lockfile = None
        self._held: set[int] = set()
        try:
            conn = psycopg.connect(
                url, password=password, autocommit=True, connect_timeout=10, application_name="mailferry"
            )
        except psycopg.OperationalError as e:
            raise _unreachable(e) from None
        self._db = _PgSerialized(conn, self._lock)  # type: ignore[assignment]
        self._migrate()  # read-only commands too: an empty database gets its (empty) tables

    def _migrate(self) -> None:
        # Every task of every worker opens the ledger: one plain read when the schema is current.
        if self._has_table("mailferry_schema") and self.schema_version == SCHEMA_VERSION:
            return
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key("mailferry-schema"),))
            db.execute("CREATE TABLE IF NOT EXISTS mailferry_schema (version BIGINT NOT NULL)")
            row = db.execute("SELECT version FROM mailferry_schema").fetchone()
            version = int(row[0]) if row else 0
            if row is None:
                db.execute("INSERT INTO mailferry_schema (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise LockedError(
                    f"the ledger database was written by a newer mailferry (schema {version})",
                    hint="upgrade mailferry on every machine of the run",
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split(_MIGRATIONS[v]):
                    db.execute(statement)
                db.execute("UPDATE mailferry_schema SET version=?", (v,))

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT version FROM mailferry_schema").fetchone()
        return int(row[0]) if row else 0

    def _has_table(self, name: str) -> bool:
        row = self._db.execute("SELECT to_regclass(?)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def acquire(self, what: str) -> None:
        """The project's run lock: a session-level advisory lock. Tried for about a second: the
        server lets go of a finished run's lock when its backend has seen the connection close,
        a moment after the client closed it."""
        key = _lock_key("mailferry-run")
        for _ in range(10):
            got = self._db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]
            if got:
                break
            time.sleep(0.1)
        if not got:
            holder = self._db.execute(
                "SELECT a.application_name || ' ' || coalesce(host(a.client_addr), 'local') || ', pid ' || l.pid "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = ?",
                (key,),
            ).fetchone()
            raise locked_error(f"{holder[0]}" if holder else "")
        self._held.add(key)

    @contextlib.contextmanager
    def account_lock(self, account: str) -> Iterator[None]:
        """Held while one worker moves ``account``: a second delivery of the same account's task
        (a redelivered task whose first worker still runs) waits here, then finds nothing to do."""
        key = _lock_key(f"mailferry-account:{account}")
        self._db.execute("SELECT pg_advisory_lock(?)", (key,))
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                self._db.execute("SELECT pg_advisory_unlock(?)", (key,))

    def _after_load(self) -> None:
        for table in _WITH_ID:
            self._db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            )

    def close(self) -> None:
        self._db.close()
