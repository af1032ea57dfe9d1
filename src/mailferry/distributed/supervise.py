"""``mailferry worker``'s supervision: the Celery worker runs in a child process, started again
when it stops on an error. Celery's worker can die of its broker going away (kombu, restoring
its unacknowledged messages on a connection that is already gone, raises "Unrecoverable error");
a run must survive a restarted broker, so the worker comes back and takes work again. Its
tasks in flight were not acknowledged: the broker gives them to a worker after the visibility
timeout, as for a worker that died."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

RESTART_PAUSE = 3.0  # seconds before a worker that stopped on an error starts again
STUCK_AFTER = 20.0  # seconds a Celery worker may take to stop after an unrecoverable error


class _Unrecoverable(logging.Handler):
    """Arms the exit of :func:`exit_when_stuck_after_unrecoverable_error`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(level=logging.CRITICAL)
        self.seconds = seconds
        self.armed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.armed or not record.getMessage().startswith("Unrecoverable error"):
            return
        self.armed = True

        def leave() -> None:
            time.sleep(self.seconds)
            print(
                f"mailferry worker: the Celery worker did not stop within {self.seconds:.0f} s of its "
                "unrecoverable error; leaving (its tasks in flight go back to the queue)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)

        threading.Thread(target=leave, name="stuck-exit", daemon=True).start()


def exit_when_stuck_after_unrecoverable_error(seconds: float = STUCK_AFTER) -> None:
    """In the Celery worker's process: once Celery logs "Unrecoverable error" (kombu's broker
    connection lost while it restored messages, seen in the tests), the process leaves with exit
    code 1 if it has not stopped ``seconds`` later. Celery then stops warmly, and one such
    worker was seen never to finish stopping: it took no more work and its supervisor, waiting
    for it to exit, never started it again. Leaving is safe: unacknowledged tasks are delivered
    again (``acks_late``), as after a ``kill -9``."""
    logging.getLogger("celery.worker.worker").addHandler(_Unrecoverable(seconds))


def supervise(argv: list[str]) -> int:
    """Run ``argv`` until it ends on its own with exit code 0 or this process is told to stop
    (SIGTERM, SIGINT: passed on to the child, which winds down); returns the exit code."""
    state: dict[str, Any] = {"stopping": False, "child": None}

    def stop(signum: int, _frame: FrameType | None) -> None:
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            state["child"] = child = subprocess.Popen(argv)
            code = child.wait()
            if state["stopping"] or code == 0:
                return code
            print(
                f"mailferry worker: the Celery worker stopped with exit code {code}; starting it again in "
                f"{RESTART_PAUSE:.0f} s (its tasks in flight go back to the queue)",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(RESTART_PAUSE)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
