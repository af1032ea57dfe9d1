"""The console's migrate worker: ``python -m mailferry.console.worker PROJECT EVENTS ACCOUNT...``.

It runs :func:`mailferry.api.migrate` for the accounts of one batch exactly as ``mailferry
migrate PROJECT --account A --account B`` does (same run lock, ledger rows and report), and
writes its progress as JSON lines to EVENTS, which the console streams to the page. A process of
its own: the run goes on when the browser (or the console) goes away, and cancelling it is
ending the process, which the ledger is made for (``kill -9`` then a re-run equals one run).

Its arguments are names and paths only; secrets are resolved from references in the worker.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from mailferry.errors import ExitCode, MailferryError


class EventWriter:
    """Reporter (``engine.migrate.Reporter``) writing one JSON object per line, appended."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def emit(self, kind: str, **data: Any) -> None:
        line = json.dumps({"t": kind, "ts": round(time.time(), 3), **data}, default=str, sort_keys=True) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())

    def account_started(self, account: str) -> None:
        self.emit("account_started", account=account)

    def planned(self, account: str, messages: int, nbytes: int) -> None:
        self.emit("planned", account=account, messages=messages, bytes=nbytes)

    def copied(self, account: str, messages: int, nbytes: int) -> None:
        self.emit("copied", account=account, messages=messages, bytes=nbytes)

    def account_finished(self, account: str, stats: Any) -> None:
        self.emit(
            "account_finished",
            account=account,
            status=stats.status,
            copied=stats.copied,
            bytes=stats.bytes,
            findings=stats.findings,
            error=stats.error or "",
        )

    def note(self, account: str, text: str) -> None:
        self.emit("note", account=account, text=text)

    def close(self) -> None:
        os.close(self._fd)


def run(project_path: Path, events: Path, accounts: list[str]) -> int:
    from mailferry import api
    from mailferry.config.load import load_project

    out = EventWriter(events)
    try:
        try:
            r = api.migrate(load_project(project_path), accounts, reporter=out)
        except MailferryError as e:
            out.emit("end", exit_code=int(e.exit_code), error=e.message, hint=e.hint)
            return int(e.exit_code)
        except Exception as e:  # a bug: the traceback goes to the worker's log, the page says so
            traceback.print_exc()
            out.emit("end", exit_code=int(ExitCode.INTERNAL), error=f"internal error: {type(e).__name__}", hint="")
            return int(ExitCode.INTERNAL)
        d = r.data
        summary = {k: d.get(k) for k in ("copied", "bytes", "matched", "skipped", "refused", "seconds")}
        rows = [
            {"account": a["account"], "exit_code": a["exit_code"], "error": a.get("error", "")} for a in d["accounts"]
        ]
        out.emit("end", exit_code=r.exit_code, run=d.get("run"), summary=summary, accounts=rows)
        return r.exit_code
    finally:
        out.close()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: python -m mailferry.console.worker PROJECT EVENTS ACCOUNT...\n")
        return int(ExitCode.USAGE)
    return run(Path(argv[0]), Path(argv[1]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
