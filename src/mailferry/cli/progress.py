"""Live progress of a migration: overall and per account (messages, bytes, rate, ETA).

On a terminal a rich live display; otherwise (logs, CI) nothing but the final table, plus
notes (retries, source changes) on standard error.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class RichReporter:
    def __init__(self, console: Console, live: bool) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not live,
            transient=False,
        )
        self._msgs: dict[str, TaskID] = {}
        self._overall = self._p.add_task("all accounts", total=0)

    def __enter__(self) -> RichReporter:
        self._p.__enter__()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._p.__exit__(t, e, tb)

    def _task(self, account: str) -> TaskID:
        with self._lock:
            if account not in self._msgs:
                self._msgs[account] = self._p.add_task(account, total=0)
            return self._msgs[account]

    def account_started(self, account: str) -> None:
        self._task(account)

    def planned(self, account: str, messages: int, nbytes: int) -> None:
        # Progress is shown in bytes (rate, ETA); messages appear in the M/N column via 'completed' counts.
        tid = self._task(account)
        with self._lock:
            task = self._p.tasks[tid]
            self._p.update(tid, total=(task.total or 0) + nbytes)
            over = self._p.tasks[self._overall]
            self._p.update(self._overall, total=(over.total or 0) + nbytes)

    def copied(self, account: str, messages: int, nbytes: int) -> None:
        self._p.advance(self._task(account), nbytes)
        self._p.advance(self._overall, nbytes)

    def account_finished(self, account: str, stats: Any) -> None:
        tid = self._task(account)
        self._p.update(tid, description=f"{account} ({stats.status}, {stats.copied} msgs)")

    def note(self, account: str, text: str) -> None:
        self._console.print(f"{account}: {text}", highlight=False)


def make_reporter(*, quiet: bool) -> RichReporter:
    err = Console(stderr=True, highlight=False)
    return RichReporter(err, live=err.is_terminal and not quiet)


class DirectoryProgress:
    """Progress of ``directory apply``: a bar of actions on a terminal; refusals as they happen."""

    def __init__(self, console: Console, live: bool) -> None:
        self._console = console
        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} actions"),
            TimeRemainingColumn(),
            console=console,
            disable=not live,
            transient=False,
        )
        self._task = self._p.add_task("directory apply", total=0)

    def __enter__(self) -> DirectoryProgress:
        self._p.__enter__()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._p.__exit__(t, e, tb)

    def started(self, actions: int) -> None:
        self._p.update(self._task, total=actions)

    def action(self, kind: str, dn: str, outcome: str) -> None:
        self._p.advance(self._task)
        if outcome in ("refused", "not attempted"):
            self._console.print(f"{kind} {dn}: {outcome}", highlight=False, markup=False)


def make_directory_reporter() -> DirectoryProgress:
    err = Console(stderr=True, highlight=False)
    return DirectoryProgress(err, live=err.is_terminal)
