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
