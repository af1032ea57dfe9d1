"""The Celery application of a project, and the task its workers run.

Delivery: a task is acknowledged only when it has finished (``acks_late``); a worker that dies
with a task (``kill -9``, a machine lost) leaves it unacknowledged and the broker gives it to
another worker after ``visibility_timeout`` (Redis) or at once when the connection drops
(RabbitMQ). The task is idempotent by construction: it is a delta pass of one account, and the
ledger's intents resolve whatever the dead worker left half done. Two deliveries of one account
never run at once: the second waits on the account's lock in the ledger database.

A worker serves one project (``mailferry worker PROJECT``), on the project's own queue; its
tasks carry the project's name and a worker of another project refuses them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mailferry.config.model import Project
from mailferry.errors import LedgerUnavailable, MailferryError, TemporaryFailure

log = logging.getLogger(__name__)

TASK = "mailferry.account"


def queue_name(project: Project) -> str:
    return f"mailferry.{project.name}"


def _with_password(url: str, password: str | None) -> str:
    if not password:
        return url
    parts = urlsplit(url)
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_url(project: Project) -> str:
    d = _distributed(project)
    password = d.broker_password.resolve(project.base_dir) if d.broker_password else None
    return _with_password(d.broker, password)


def limits_url(project: Project) -> str:
    """The Redis of the cluster's limits and progress events: the broker's, or ``limits``."""
    d = _distributed(project)
    if d.limits:
        return str(d.limits)
    return broker_url(project)


def _distributed(project: Project) -> Any:
    if project.distributed is None:
        raise MailferryError(
            f"{project.path.name}: no [distributed] table",
            hint='add [distributed] broker = "redis://host:6379/0" (and a PostgreSQL ledger) to run on workers',
        )
    if project.ledger_url is None:
        raise MailferryError(
            f"{project.path.name}: a distributed run needs the ledger on PostgreSQL",
            hint='set [project] ledger = "postgresql://user@host:5432/db" and ledger_password; '
            "`mailferry ledger import` moves an existing SQLite ledger there",
        )
    return project.distributed


def redis_client(project: Project) -> Any:
    import redis

    return redis.Redis.from_url(limits_url(project), socket_timeout=30, socket_connect_timeout=10)


def make_app(project: Project) -> Any:
    """The Celery app of ``project``, its task registered."""
    from celery import Celery

    d = _distributed(project)
    app = Celery("mailferry", broker=broker_url(project), backend=_backend_url(project), set_as_current=False)
    app.conf.update(
        task_default_queue=queue_name(project),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        worker_prefetch_multiplier=1,
        worker_concurrency=d.accounts_per_worker,
        worker_pool="threads",
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": d.visibility_timeout,
            "unacked_restore_interval": max(1, min(10, d.visibility_timeout // 5)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"retry_policy": {"max_retries": 60, "interval_max": 2}},
        redis_backend_health_check_interval=5,
    )
    app.conf.mailferry_project = project
    app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(_account_task)
    return app


def _backend_url(project: Project) -> str:
    url = broker_url(project)
    return url if url.startswith("redis") else limits_url(project)


# -- the task ------------------------------------------------------------------------------------


def _account_task(self: Any, project_name: str, run_id: int, unit: str, types: list[str], full: bool) -> dict[str, Any]:
    """One account (or the public unit) of run ``run_id``: its rows as ``migrate --json`` shows them."""
    project: Project = self.app.conf.mailferry_project
    if project_name != project.name:
        raise MailferryError(f"this worker serves project {project.name!r}, not {project_name!r}")
    try:
        return run_unit(project, run_id, unit, types, full, hostname=str(self.request.hostname or ""))
    except TemporaryFailure as e:
        if isinstance(e, LedgerUnavailable):
            _pause_consuming(self.app, project, str(self.request.hostname or ""), e)
        raise self.retry(exc=e, countdown=5, max_retries=None) from None


def run_unit(
    project: Project, run_id: int, unit: str, types: list[str], full: bool, *, hostname: str = ""
) -> dict[str, Any]:
    from mailferry import api
    from mailferry.distributed.limits import ClusterLimits

    d = _distributed(project)
    client = redis_client(project)
    limits = ClusterLimits(client, project.name, lease_seconds=d.lease_seconds)
    events = ProgressEvents(client, project.name, run_id)
    ledger = api.open_ledger(project)
    try:
        with ledger.account_lock(unit), limits.slots(slots_of(project)):
            log.info("%s: account %s of run %d", hostname, unit, run_id)
            events.send("worker", unit, hostname)
            rows, alive = api.migrate_units(
                project,
                ledger,
                run_id,
                [unit],
                reporter=events,
                full=full,
                types=types,
                pacing=ClusterPacing(project, limits),
                sharing=d.accounts_per_worker,
            )
        return {"rows": rows, "alive": alive, "worker": hostname}
    finally:
        ledger.close()
        limits.close()


def server_key(host: str, port: int) -> str:
    return f"{host}:{port}"


def dav_key(url: str) -> str:
    parts = urlsplit(url)
    return f"dav:{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def slots_of(project: Project) -> list[tuple[str, int, int]]:
    """The connection slots one account's pass holds at most on each IMAP server: one to the
    source; to the target its writers and one more. A worker's accounts share the
    ``connections_per_account`` writers as a local run's do (at least one each, see
    :func:`mailferry.api.options`)."""
    from mailferry import api

    s, t = project.source, project.target
    per_target = api.options(project, accounts_at_once=_per_worker(project)).connections_per_account + 1
    return [
        (server_key(s.host, s.port), s.max_connections, 1),
        (server_key(t.host, t.port), t.max_connections, per_target),
    ]


def dav_slots_of(project: Project) -> list[tuple[str, int, int]]:
    """The connection slots one account's calendars and contacts hold on each DAV server: to the
    source two (its reader and the listing beside it), to the target its writers
    (:func:`mailferry.api.dav_writers` for a worker's ``accounts_per_worker``: each DAV store's
    connection pool holds at most that many)."""
    from mailferry import api

    s, t = project.source.dav, project.target.dav
    if s is None or t is None:
        return []
    return [
        (dav_key(s.url), s.max_connections, 2),
        (dav_key(t.url), t.max_connections, api.dav_writers(project, _per_worker(project))),
    ]


def _per_worker(project: Project) -> int:
    """Accounts a worker runs at once (who share its connections, as a local run's do)."""
    return project.distributed.accounts_per_worker if project.distributed else 1


class ClusterPacing:
    """:class:`mailferry.engine.pacing.Pacing` over the cluster's limits in Redis: the rates
    and pauses of each server, and the DAV servers' connection slots."""

    THROTTLE_PAUSE = 5.0  # seconds every worker holds its writes to an IMAP target that failed one

    def __init__(self, project: Project, limits: Any) -> None:
        d = _distributed(project)
        self.project, self.limits = project, limits
        self.rate_messages, self.rate_bytes = d.rate_messages, d.rate_bytes
        self.target = server_key(project.target.host, project.target.port)
        self.dav = {
            side: dav_key(server.dav.url)
            for side, server in (("source", project.source), ("target", project.target))
            if server.dav is not None
        }

    def _pace(self, server: str, items: int, nbytes: int) -> None:
        self.limits.pace(
            server, messages=items, nbytes=nbytes, rate_messages=self.rate_messages, rate_bytes=self.rate_bytes
        )

    def pace_mail(self, messages: int, nbytes: int) -> None:
        self._pace(self.target, messages, nbytes)

    def mail_throttled(self) -> None:
        self.limits.slow_down(self.target, self.THROTTLE_PAUSE)

    def pace_dav(self, side: str, items: int, nbytes: int) -> None:
        if side == "target":  # the cluster's rates are for writes
            self._pace(self.dav[side], items, nbytes)
        else:
            self.limits.wait_pause(self.dav[side])

    def dav_throttled(self, side: str, seconds: float) -> None:
        self.limits.slow_down(self.dav[side], seconds)

    def dav_connections(self) -> Any:
        return self.limits.slots(dav_slots_of(self.project))


def _pause_consuming(app: Any, project: Project, hostname: str, e: LedgerUnavailable) -> None:
    """The ledger database doesn't answer: this worker takes no more work until it does (its
    running tasks fail the same way and go back to the queue), and says why, then resumes."""
    queue = queue_name(project)
    log.error("%s; this worker takes no more work until it answers", e.message)
    try:
        app.control.cancel_consumer(queue, destination=[hostname], reply=False)
    except Exception as err:  # noqa: BLE001 - the broker may be away too
        log.error("could not stop consuming: %s", err)
        return

    def watch() -> None:
        from mailferry import api

        while True:
            time.sleep(5)
            try:
                api.open_ledger(project).close()
            except MailferryError:
                continue
            log.warning("the ledger database answers again; taking work")
            app.control.add_consumer(queue, destination=[hostname], reply=False)
            return

    threading.Thread(target=watch, name="ledger-watch", daemon=True).start()


# -- progress events (workers -> the admin's process) ---------------------------------------------


class ProgressEvents:
    """The engine's :class:`~mailferry.engine.migrate.Reporter` of a worker: each event goes to a
    Redis stream of the run, which ``migrate --distributed`` replays into its live display."""

    def __init__(self, client: Any, project: str, run_id: int) -> None:
        self.client = client
        self.key = f"mailferry:{project}:events:{run_id}"

    def send(self, kind: str, account: str, *values: Any) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)  # one round trip a batch, on the copy path
            pipe.xadd(self.key, {"e": json.dumps([kind, account, *values])}, maxlen=200_000, approximate=True)
            pipe.expire(self.key, 7 * 24 * 3600)
            pipe.execute()
        except Exception as e:  # noqa: BLE001 - progress is for show; the ledger holds the facts
            log.debug("progress event lost: %s", e)

    def account_started(self, account: str) -> None:
        self.send("started", account)

    def planned(self, account: str, messages: int, nbytes: int) -> None:
        self.send("planned", account, messages, nbytes)

    def copied(self, account: str, messages: int, nbytes: int) -> None:
        self.send("copied", account, messages, nbytes)

    def account_finished(self, account: str, stats: Any) -> None:
        self.send("finished", account)

    def note(self, account: str, text: str) -> None:
        self.send("note", account, text)
