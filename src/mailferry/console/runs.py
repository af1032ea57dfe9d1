"""Migrate runs of batches: started in a worker process, followed through its events file.

Each start writes ``<project folder>/.mailferry-console/runs/<batch key>/<time>.jsonl``: a
``queued`` line (batch, accounts), a ``worker`` line (its pid), the worker's progress lines
(:mod:`mailferry.console.worker`) and one ``end`` line. What a batch is doing is read from its
newest file, so a page reload, a second tab or a restarted console all see the same thing.

A start is refused, with the message of the CLI's second ``migrate``, while the project's run lock
is held (by a CLI run or by a worker) or while a worker this console started has not taken it yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailferry.config.model import Project
from mailferry.errors import ExitCode
from mailferry.state.ledger import locked_error, run_lock_holder

WORKER = "mailferry.console.worker"


def _key(batch: str) -> str:
    return hashlib.sha256(batch.encode()).hexdigest()[:16]


def read_events(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def _alive(pid: int) -> bool:
    """Is ``pid`` a running console worker (not a reused pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return WORKER.encode() in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _append(path: Path, event: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps({"ts": round(time.time(), 3), **event}, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


# The end of a run that was cancelled (by the console, or a kill from outside).
_CANCELLED: dict[str, object] = {
    "t": "end",
    "cancelled": True,
    "exit_code": int(ExitCode.TEMPFAIL),
    "error": "cancelled",
    "hint": "start the batch again to resume: nothing is copied twice",
}


class Runs:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def _dir(self, batch: str) -> Path:
        return self.folder / _key(batch)

    def latest(self, batch: str) -> Path | None:
        d = self._dir(batch)
        files = sorted(d.glob("*.jsonl")) if d.is_dir() else []
        return files[-1] if files else None

    def status(self, batch: str) -> dict[str, Any]:
        """``{"state": idle|running|paused|finished|cancelled|interrupted, ...}`` of the batch's newest run."""
        path = self.latest(batch)
        if path is None:
            return {"state": "idle"}
        events = read_events(path)
        out: dict[str, Any] = {"state": "running", "file": path.name}
        pid = next((e["pid"] for e in events if e.get("t") == "worker"), None)
        started = next((e for e in events if e.get("t") == "queued"), {})
        out["started_at"] = started.get("at")
        out["accounts"] = started.get("accounts", [])
        end = next((e for e in events if e.get("t") == "end"), None)
        if end is not None:
            out.update(
                state="cancelled" if end.get("cancelled") else "finished",
                exit_code=end.get("exit_code"),
                run=end.get("run"),
                error=end.get("error", ""),
                hint=end.get("hint", ""),
                summary=end.get("summary"),
            )
        elif pid is None or not _alive(int(pid)):
            with self._lock:
                proc = self._procs.get(batch)
            if proc is None or proc.poll() is not None:
                out["state"] = "interrupted"
        else:
            marks = [e["t"] for e in events if e.get("t") in ("paused", "resumed")]
            if marks and marks[-1] == "paused":
                out["state"] = "paused"
        out["pid"] = pid
        return out

    def running_pid(self) -> int | None:
        """A worker of this project still running (any batch), or None. Ours are asked
        directly: just after the fork a worker's /proc entry still shows this process."""
        for proc in self._procs.values():
            if proc.poll() is None:
                return proc.pid
        if not self.folder.is_dir():
            return None
        for d in self.folder.iterdir():
            files = sorted(d.glob("*.jsonl"))
            if not files:
                continue
            events = read_events(files[-1])
            if any(e.get("t") == "end" for e in events):
                continue
            pid = next((e["pid"] for e in events if e.get("t") == "worker"), None)
            if pid is not None and _alive(int(pid)):
                return int(pid)
        return None

    def start(self, project: Project, batch: str, accounts: Sequence[str]) -> dict[str, Any]:
        """Start ``api.migrate`` for ``accounts`` in a worker. Raises LockedError when a run holds
        the project (the CLI's message)."""
        with self._lock:
            holder = run_lock_holder(project.ledger_path)
            if holder is None:
                pid = self.running_pid()
                if pid is not None:  # started, not yet holding the lock: it will be "migrate, pid N"
                    holder = f"migrate, pid {pid}"
            if holder is not None:
                raise locked_error(holder)
            d = self._dir(batch)
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{time.time_ns()}.jsonl"
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            _append(path, {"t": "queued", "batch": batch, "accounts": list(accounts), "at": now})
            log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the worker
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", WORKER, str(project.path), str(path), *accounts],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # outlives a Ctrl-C of the console
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            finally:
                log.close()
            _append(path, {"t": "worker", "pid": proc.pid})
            self._procs[batch] = proc
        threading.Thread(target=self._reap, args=(batch, proc, path), daemon=True).start()
        return {"state": "running", "pid": proc.pid, "file": path.name}

    def _reap(self, batch: str, proc: subprocess.Popen[bytes], path: Path) -> None:
        rc = proc.wait()
        if any(e.get("t") == "end" for e in read_events(path)):
            return
        if rc in (-signal.SIGTERM, -signal.SIGKILL):
            _append(path, _CANCELLED)
        else:
            _append(
                path,
                {
                    "t": "end",
                    "exit_code": rc if rc > 0 else int(ExitCode.INTERNAL),
                    "error": "the worker ended without a result",
                    "hint": f"see {path.with_suffix('.log').name} in {path.parent}",
                },
            )

    def pause(self, batch: str) -> bool:
        """Stop the batch's worker where it is (SIGSTOP); its connections stay open, and one a
        server drops meanwhile is opened again on resume (the engine's retries). False when it
        is not running."""
        return self._signal(batch, "running", signal.SIGSTOP, "paused")

    def resume(self, batch: str) -> bool:
        """Let a paused worker go on (SIGCONT). False when it is not paused."""
        return self._signal(batch, "paused", signal.SIGCONT, "resumed")

    def _signal(self, batch: str, state: str, sig: signal.Signals, event: str) -> bool:
        st = self.status(batch)
        path = self.latest(batch)
        if st["state"] != state or st.get("pid") is None or path is None or not _alive(int(st["pid"])):
            return False
        os.kill(int(st["pid"]), sig)
        _append(path, {"t": event})
        return True

    def cancel(self, batch: str) -> bool:
        """End the batch's running (or paused) worker (SIGTERM). False when none runs."""
        st = self.status(batch)
        if st["state"] not in ("running", "paused") or st.get("pid") is None:
            return False
        pid = int(st["pid"])
        if not _alive(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        if st["state"] == "paused":
            os.kill(pid, signal.SIGCONT)  # a stopped process takes its SIGTERM once it runs again
        with self._lock:
            proc = self._procs.get(batch)
        if proc is None:  # started by an earlier console: no one reaps it here, so say it here
            path = self.latest(batch)
            if path is not None:
                _append(path, _CANCELLED)
        return True

    def wait(self, batch: str, timeout: float) -> dict[str, Any]:
        """Wait until the batch's run has ended (tests, the demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(batch)
            if st["state"] not in ("running", "paused"):
                return st
            time.sleep(0.1)
        return self.status(batch)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
