"""mailferry worker's supervision: a Celery worker that stops on an error is started again; one
that ends cleanly is not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mailferry.distributed import supervise as sup


def test_a_worker_that_fails_is_started_again_until_it_ends_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sup, "RESTART_PAUSE", 0.0)
    runs = tmp_path / "runs"
    script = (
        "import sys, pathlib; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) + 1 if p.exists() else 1; "
        "p.write_text(str(n)); sys.exit(0 if n >= 3 else 70)"
    )
    assert sup.supervise([sys.executable, "-c", script, str(runs)]) == 0
    assert runs.read_text() == "3"
    assert capfd.readouterr().err.count("starting it again") == 2


STUCK = """
import logging, sys, threading, time
from mailferry.distributed.supervise import exit_when_stuck_after_unrecoverable_error
exit_when_stuck_after_unrecoverable_error(0.5)
logging.getLogger("celery.worker.worker").critical(sys.argv[1])
threading.Thread(target=time.sleep, args=(float(sys.argv[2]),)).start()  # a stop that hangs this long
"""


@pytest.mark.parametrize(
    ("message", "hang", "code"),
    [("Unrecoverable error: AttributeError('x')", 30.0, 1), ("Something else went wrong", 1.5, 0)],
)
def test_a_celery_worker_stuck_after_an_unrecoverable_error_leaves(message: str, hang: float, code: int) -> None:
    """Celery's worker, after "Unrecoverable error", stops warmly; one was seen never to finish
    (its supervisor then never started it again): the process leaves by itself soon after. Any
    other message leaves the process alone."""
    import subprocess
    import time

    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", STUCK, message, str(hang)], capture_output=True, text=True, timeout=60)
    assert p.returncode == code, p.stderr
    assert time.monotonic() - t0 < 20
    assert ("did not stop within" in p.stderr) == (code == 1)
