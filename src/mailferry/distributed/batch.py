"""``migrate --distributed`` in the admin's process: submit the run's accounts as tasks, follow
them, and hand back the same rows a local run makes.

The admin's process holds the project's run lock (a second submission of the batch is refused)
and brings the target accounts alive one at a time before any task is sent (what a local run
does before its parallel work). Then one task per account on the project's queue; the public
folders' unit after them (it carries every account's ``\\Seen`` on public folders). While the
workers work, their progress events are replayed into this process's live display. The broker
may go away and come back meanwhile: following waits for it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from mailferry.config.model import AccountConfig, Project
from mailferry.distributed.app import TASK, broker_url, make_app, queue_name, redis_client
from mailferry.engine.migrate import NullReporter, Reporter
from mailferry.engine.public import PUBLIC_UNIT
from mailferry.errors import ExitCode
from mailferry.state.ledger import SqliteLedger

log = logging.getLogger(__name__)

_IDLE_NOTE = 30.0  # seconds without any worker event before the admin is told to start workers
_LOOK_DELAY = 5.0  # seconds after a broker restart (and between the two looks) for lost tasks
_TASK_ID = re.compile(rb'"id": ?"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"')


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def run_batch(
    project: Project,
    ledger: SqliteLedger,
    run_id: int,
    accounts: Sequence[AccountConfig],
    with_public: bool,
    *,
    types: Sequence[str],
    full: bool,
    reporter: Reporter | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from mailferry import api

    rep: Reporter = reporter or NullReporter()
    names = [a.source_user for a in accounts]
    alive = api.bring_targets_alive(project, ledger, run_id, [*names, *([PUBLIC_UNIT] if with_public else [])])
    app = make_app(project)
    results: dict[str, Any] = {}

    def send(name: str) -> Any:
        return _send(app, project, run_id, name, types, full)

    follower = _Follower(project, run_id, rep, resend=send)
    try:
        for name in names:
            results[name] = send(name)
        follower.follow(results)
        if with_public and "public" in types:
            public = {PUBLIC_UNIT: send(PUBLIC_UNIT)}
            follower.follow(public)
            results.update(public)
        rows: list[dict[str, Any]] = []
        for name, res in results.items():
            rows.extend(_rows_of(name, res, rep))
        # Shares offered by one worker's account to another's: each sharee accepts here, once
        # every account's task has shared what it had to (a local run's last DAV step).
        accepted = api.accept_offered_shares(project, ledger, run_id, accounts, types)
        for row in rows:
            n = accepted.get(row["account"])
            if n is not None and isinstance(row.get("calendars"), dict):
                if n < 0:
                    row["calendars"]["findings"] = int(row["calendars"].get("findings", 0)) + 1
                    row["exit_code"] = api.worst([row["exit_code"], int(ExitCode.FINDINGS)])
                else:
                    row["calendars"]["shares_accepted"] = n
    finally:
        app.close()
    return rows, alive


def _send(app: Any, project: Project, run_id: int, name: str, types: Sequence[str], full: bool) -> Any:
    return _patiently(
        lambda: app.send_task(TASK, args=(project.name, run_id, name, list(types), full), queue=queue_name(project)),
        "send a task to the broker",
    )


def _patiently(fn: Any, what: str, *, tries: int = 600) -> Any:
    """``fn()``, waiting (up to ~10 min) while the broker is away (restarted, say)."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    for attempt in range(tries):
        try:
            return fn()
        except (OperationalError, RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as e:
            if attempt == 0:
                log.warning("could not %s (%s); waiting for it", what, e)
            time.sleep(1.0)
    return fn()


def _rows_of(name: str, res: Any, rep: Reporter) -> list[dict[str, Any]]:
    value = _patiently(lambda: res.get(propagate=False, timeout=60), "read a task's result")
    if isinstance(value, dict) and "rows" in value:
        rows: list[dict[str, Any]] = value["rows"]
        for r in rows:
            rep.account_finished(r["account"], _finished(r.get("status", ""), r.get("copied", 0)))
        return rows
    error = f"the worker's task failed: {value}" if value is not None else "the worker's task failed"
    rep.account_finished(name, _finished("failed", 0))
    return [{"account": name, "status": "failed", "error": error, "exit_code": int(ExitCode.TEMPFAIL)}]


def _finished(status: str, copied: int) -> Any:
    """What a reporter's ``account_finished`` reads of an account's stats."""
    return SimpleNamespace(status=status, copied=copied)


class _Follower:
    """Replays the workers' progress events of the run into ``reporter`` until tasks are done,
    and sends again a task the broker lost.

    A Redis broker killed at the wrong moment can lose a message: a worker's ``BRPOP`` took it
    off the queue, and Redis died before the worker's next command recorded it as unacknowledged
    (seen in the tests: one account of eight never reached any worker). So when the broker has
    restarted (its ``run_id`` changed), every task still waiting is looked for in the queue and
    among the unacknowledged messages; one found in neither, twice a few seconds apart, is sent
    again (a task is a delta pass under the account's lock: a second delivery of one that was
    not lost after all finds nothing to do)."""

    def __init__(self, project: Project, run_id: int, reporter: Reporter, *, resend: Any = None) -> None:
        self.client = redis_client(project)
        self.key = f"mailferry:{project.name}:events:{run_id}"
        self.queue = queue_name(project)
        url = broker_url(project)
        self.redis_broker = url.startswith(("redis://", "rediss://"))
        self.broker: Any = None
        if self.redis_broker:
            import redis

            self.broker = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
        self.last = "0-0"
        self.reporter = reporter
        self.resend = resend
        self.quiet_since = time.monotonic()
        self.told = False
        self.broker_run = self._broker_run()
        self.missing: set[str] = set()  # task ids not found in the broker at the last look
        self.look_after = 0.0  # when the next look for lost tasks is due (0: none due)

    def follow(self, results: dict[str, Any]) -> None:
        """Until every task of ``results`` (name -> AsyncResult, replaced when sent again) is done."""
        pending = set(results)
        next_check = 0.0
        while pending:
            self._events(block_ms=500)
            if time.monotonic() >= next_check:
                pending = {
                    n for n in pending if not _patiently(results[n].ready, "ask the broker how tasks are doing")
                }
                next_check = time.monotonic() + 1.0
                self._look_for_lost(results, pending)
            if not self.told and time.monotonic() - self.quiet_since > _IDLE_NOTE:
                self.reporter.note(
                    "(run)", "no worker has taken a task yet: start `mailferry worker PROJECT` on the worker machines"
                )
                self.told = True
        self._events(block_ms=0)

    def _broker_run(self) -> str | None:
        """The broker's Redis ``run_id`` (new at each restart); None when not Redis or away."""
        if not self.redis_broker:
            return None
        from redis.exceptions import RedisError

        try:
            return str(self.broker.info("server").get("run_id") or "") or None
        except (RedisError, OSError):
            return None

    def _look_for_lost(self, results: dict[str, Any], pending: set[str]) -> None:
        if self.resend is None or not self.redis_broker or not pending:
            return
        now = time.monotonic()
        run = self._broker_run()
        if run is not None and self.broker_run is not None and run != self.broker_run:
            log.warning("the broker restarted; looking for tasks it may have lost")
            self.look_after = now + _LOOK_DELAY  # once workers have put back what they held
            self.missing = set()
        if run is not None:
            self.broker_run = run
        if not self.look_after or now < self.look_after:
            return
        from redis.exceptions import RedisError

        try:
            held = self._task_ids_in_broker()
        except (RedisError, OSError):
            return
        waiting = {n for n in pending if results[n].id not in held and results[n].state == "PENDING"}
        lost = {n for n in waiting if results[n].id in self.missing}
        self.missing = {results[n].id for n in waiting - lost}
        for name in sorted(lost):
            log.warning("the broker lost the task of %s; sending it again", name)
            self.reporter.note(name, "the broker lost this account's task when it restarted; sent again")
            results[name] = self.resend(name)
        # looked twice, some seconds apart: done until the next restart
        self.look_after = now + _LOOK_DELAY if self.missing else 0.0

    def _task_ids_in_broker(self) -> set[str]:
        """Ids of the tasks in the project's queue (every priority) and unacknowledged ones."""
        raw: list[bytes] = []
        for key in self.broker.scan_iter(match=_glob_escape(self.queue) + "*", count=1000):
            if self.broker.type(key) == b"list":
                raw += self.broker.lrange(key, 0, -1)
        raw += self.broker.hvals("unacked")
        ids: set[str] = set()
        for item in raw:
            ids.update(m.decode() for m in _TASK_ID.findall(item))
        return ids

    def _events(self, block_ms: int) -> None:
        from redis.exceptions import RedisError

        try:
            got = self.client.xread({self.key: self.last}, count=1000, block=block_ms or None)
        except (RedisError, OSError):
            time.sleep(block_ms / 1000)
            return
        for _, entries in got or ():
            for entry_id, fields in entries:
                self.last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                self.quiet_since = time.monotonic()
                self.told = True
                self._replay(json.loads(fields[b"e"]))

    def _replay(self, event: list[Any]) -> None:
        kind, account, *values = event
        r = self.reporter
        if kind == "started":
            r.account_started(account)
        elif kind == "planned":
            r.planned(account, int(values[0]), int(values[1]))
        elif kind == "copied":
            r.copied(account, int(values[0]), int(values[1]))
        elif kind == "note":
            r.note(account, str(values[0]))
