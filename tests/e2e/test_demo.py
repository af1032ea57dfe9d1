"""The demo (`scripts/setup demo`, `mailferry demo`) is the first thing a new user runs: it must
finish clean, and show on the target alone what issue 9 carries (a delegate's and a group
member's rights, the target's own out-of-office reply)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from mailferry.cli import demo


def test_the_demo_finishes_clean_and_the_target_answers_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    out = io.StringIO()
    monkeypatch.setattr(demo, "Console", lambda **kw: Console(file=out, width=200, **kw))
    assert demo.run_demo(tmp_path / "demo") == 0, out.getvalue()
    text = out.getvalue()
    assert "verification CLEAN" in text
    assert "bob on the target, shared/alice: rights lrs" in text
    assert "dave on the target, Public/Team: rights ilrsw" in text
    assert "out-of-office reply, sent by the target" in text
    # Readiness and cut-over: the MX still at the old server is a warning before, a blocker at
    # cut-over; switched, with the source servers off, the target stands alone.
    shown = capsys.readouterr().out  # what the commands' renderers printed
    assert "names: ready with warnings" in shown and "still leads to the source (mail.old.example)" in shown
    assert "dns: BLOCKED" in shown and "offline: ready" in shown and "bob opens alice's INBOX" in shown
    assert shown.rstrip().endswith("verdict: ready")  # the last cut-over check, with the source switched off
    reports = {int(p.stem.split("-")[1]): p for p in (tmp_path / "demo").rglob("migrate-*.json")}
    second = json.loads(reports[2].read_text())
    assert second["copied"] == 0 and second["exit_code"] == 0, second
    # The third pass ran on two Celery workers (PostgreSQL ledger, Redis broker) and carried
    # alice's new message; its ledger came back into the SQLite file the later steps read.
    spread = json.loads(reports[3].read_text())
    assert spread["copied"] == 1 and spread["exit_code"] == 0, spread
    assert "accounts as tasks, copied 1 message" in text
