"""Faults: kill -9 at random moments, dropped connections, a restarted server.

Each ends the same way: the target holds exactly what an uninterrupted run gives it, no
duplicates, nothing missing, and ``verify --deep`` is clean.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from helpers import cli, holdings, seed_sample, write_project

from conftest import corpus_messages
from mailferry.errors import ExitCode
from mailferry.sandbox.servers import TcpProxy

USERS = {"alice": "alicepw", "bob": "bobpw"}
SMALL_BATCHES = "batch_messages = 4\nconnections_per_account = 2\n"


def everything(server, users) -> dict[str, Counter]:
    return {u: Counter(x for msgs in holdings(server, u, pw).values() for x in msgs) for u, pw in users.items()}


def by_folder(server, user, pw) -> dict[str, Counter]:
    return {name: Counter(msgs) for name, msgs in holdings(server, user, pw).items()}


def ledger_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    killed_tgt = dovecot_factory(style="slash", users=USERS)
    clean_tgt = dovecot_factory(style="slash", users=USERS)
    corpus = [b for _, b in corpus_messages()]
    seed_sample(src, "alice", USERS["alice"], messages=120, corpus=corpus)
    seed_sample(src, "bob", USERS["bob"], messages=80)
    total = sum(sum(c.values()) for c in everything(src, USERS).values())

    killed = write_project(tmp_path / "killed", src, killed_tgt, USERS, extra=SMALL_BATCHES)
    reference = write_project(tmp_path / "reference", src, clean_tgt, USERS, extra=SMALL_BATCHES)
    assert cli("migrate", reference, "--json").code == ExitCode.OK

    rng = random.Random(int(os.environ.get("MAILFERRY_KILL_SEED", "20261121")))
    ledger = tmp_path / "killed" / "project.ledger.sqlite"
    kills = 0
    for _ in range(5):
        threshold = rng.randint(1, total)  # kill once the ledger knows about this many messages
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailferry", "migrate", str(killed), "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if ledger_rows(ledger) >= threshold:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    assert kills >= 3, "the kills should land while the copy runs"

    final = cli("migrate", killed, "--json")
    assert final.code == ExitCode.OK, final.out + final.err
    for user, pw in USERS.items():
        assert by_folder(killed_tgt, user, pw) == by_folder(clean_tgt, user, pw)
    assert everything(killed_tgt, USERS) == everything(src, USERS)
    v = cli("verify", killed, "--deep", "--json")
    assert v.json()["clean"], v.out
    assert cli("migrate", killed, "--json").json()["copied"] == 0


def test_dropped_connections_are_survived_without_duplicates(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=150)
    with TcpProxy.start(src.host, src.port) as sp, TcpProxy.start(tgt.host, tgt.port) as tp:
        project = write_project(
            tmp_path / "p", src, tgt, ["alice"], source_port=sp.port, target_port=tp.port, extra=SMALL_BATCHES
        )
        stop = threading.Event()
        cuts = []

        def saboteur() -> None:
            rng = random.Random(7)
            while not stop.wait(rng.uniform(0.03, 0.12)):
                cuts.append(rng.choice([sp, tp]).cut_all())

        t = threading.Thread(target=saboteur)
        t.start()
        try:
            first = cli("migrate", project, "--json")
        finally:
            stop.set()
            t.join()
        assert sum(cuts) > 0, "the proxy should have cut live connections"
        # Either it made it through the drops, or it stopped with 'retry later' and resumes.
        assert first.code in (ExitCode.OK, ExitCode.TEMPFAIL), first.out + first.err
        final = cli("migrate", project, "--json")
        assert final.code == ExitCode.OK, final.out + final.err
        assert everything(tgt, {"alice": USERS["alice"]}) == everything(src, {"alice": USERS["alice"]})
        assert cli("verify", project, "--deep", "--json").json()["clean"]


def test_connection_cut_mid_transfer_is_retried(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="slash", users=USERS)
    tgt = dovecot_factory(style="dotted", users=USERS, special_use=False)
    seed_sample(src, "bob", USERS["bob"], messages=60)
    with TcpProxy.start(tgt.host, tgt.port) as tp:
        tp.set_cut_after_bytes(400_000)  # every target connection dies after 400 KB each way
        project = write_project(tmp_path / "p", src, tgt, ["bob"], target_port=tp.port, extra=SMALL_BATCHES)
        r = cli("migrate", project, "--json")
        assert r.code == ExitCode.OK, r.out + r.err
    assert everything(tgt, {"bob": USERS["bob"]}) == everything(src, {"bob": USERS["bob"]})


def test_unreachable_server_is_a_temporary_failure(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="slash", users=USERS)
    tgt = dovecot_factory(style="slash", users=USERS)
    project = write_project(tmp_path / "p", src, tgt, ["alice"])
    tgt.stop()
    r = cli("migrate", project, "--json")
    assert r.code == ExitCode.TEMPFAIL
    err = r.json()["accounts"][0]["error"]
    assert "alice" in err and "cannot connect" in err and f"127.0.0.1:{tgt.port}" in err


def test_server_restart_during_the_run(dovecot_factory, tmp_path: Path) -> None:
    src = dovecot_factory(style="dotted", users=USERS, special_use=False)
    tgt = dovecot_factory(style="slash", users=USERS)
    seed_sample(src, "alice", USERS["alice"], messages=200)
    project = write_project(tmp_path / "p", src, tgt, ["alice"], extra=SMALL_BATCHES)
    timer = threading.Timer(0.25, tgt.restart)
    timer.start()
    try:
        first = cli("migrate", project, "--json")
    finally:
        timer.join()
    assert first.code in (ExitCode.OK, ExitCode.TEMPFAIL), first.out + first.err
    final = cli("migrate", project, "--json")
    assert final.code == ExitCode.OK, final.out + final.err
    assert everything(tgt, {"alice": USERS["alice"]}) == everything(src, {"alice": USERS["alice"]})
