"""Scale benchmark: one local process against 1, 2 and 3 Celery workers on this machine.

    python bench/scale.py [--accounts 200] [--messages 500] [--workers 1,2,3] [--out bench/out]

Starts a source Dovecot holding ``--accounts`` accounts of ``--messages`` messages each (small
text messages and some attachments, over ten folders), PostgreSQL and Redis, then moves the whole
organization, each time into a fresh target Dovecot:

- ``local``: ``mailferry migrate --json``, the SQLite ledger, no broker (the default);
- ``workers=N``: ``mailferry migrate --distributed --json`` with N ``mailferry worker`` processes,
  the PostgreSQL ledger, Redis as broker.

Every run must exit 0 and leave as many messages on the target as the source holds. Reported per
run: wall time, messages/s, and the most connections each server had at once, counted on the
server's side (its established sockets, sampled every 100 ms) against its ``max_connections``.
Then the cost of the distributed machinery itself: a no-change re-run (nothing to copy: what
is left is one task per account and the ledger reads) local vs distributed, per account; and the
ledger's writes, SQLite vs PostgreSQL, per message recorded (intent then fact, as the engine
writes them). Results: ``bench/out/scale-results.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mailferry.sandbox.connections import ConnectionSampler

ROOT = Path(__file__).resolve().parents[1]
MAILFERRY = str(Path(sys.executable).with_name("mailferry"))
FOLDERS = [
    "INBOX", "Sent", "Archive", "Archive/2023", "Archive/2024", "Projects", "Projects/Alpha", "Lists", "Drafts", "Trash"
]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def message(rng: random.Random, user: str, i: int) -> bytes:
    size = rng.choice([1500, 3000, 6000, 12000]) if rng.random() > 0.05 else rng.randint(60_000, 300_000)
    vocabulary = ["mail", "ferry", "moves", "every", "message", "once", "data"]
    words = " ".join(rng.choice(vocabulary) for _ in range(size // 6))
    return (
        f"From: sender{i % 17}@old.example\r\nTo: {user}@old.example\r\nSubject: message {i} of {user}\r\n"
        f"Message-ID: <{user}.{i}@bench.example>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n{words}\r\n"
    ).encode()


def seed_maildirs(base: Path, users: dict[str, str], per_account: int) -> int:
    """Every account's Maildir++ written straight into the source's home folders before Dovecot
    starts (an IMAP APPEND of 100,000 messages took 5 minutes): ten folders, a third of the
    messages unseen, INTERNALDATE from the file's mtime."""
    from mailferry.sandbox.servers import _mail_owner

    uid, gid = _mail_owner()
    total = 0
    for user in users:
        rng = random.Random(user)
        root = base / "home" / user / "Maildir"
        for k, folder in enumerate(FOLDERS):
            d = root if folder == "INBOX" else root / ("." + folder.replace("/", "."))
            for sub in ("cur", "new", "tmp"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            for i in range(k, per_account, len(FOLDERS)):
                body = message(rng, user, i)
                when = 1_700_000_000 + i * 60
                name = d / "cur" / f"{when}.M{i}P1.bench,S={len(body)}:2,{'S' if i % 3 else ''}"
                name.write_bytes(body)
                os.utime(name, (when, when))
                total += 1
    for dirpath, _dirs, files in os.walk(base / "home"):
        os.chown(dirpath, uid, gid)
        for f in files:
            os.chown(Path(dirpath) / f, uid, gid)
    return total


def warm(src: Any, users: dict[str, str]) -> None:
    """STATUS of every folder once: Dovecot builds its indexes before any timed run."""
    from mailferry.connectors.imap import Endpoint, ImapStore, Login

    def one(user: str) -> None:
        st = ImapStore(Endpoint(src.host, src.port, "none"), Login(user, users[user]), readonly=True)
        try:
            for f in st.list_folders():
                if "\\noselect" not in f.attributes:
                    st.status(f.name)
        finally:
            st.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, users))


def write_project(
    d: Path, src: Any, tgt: Any, users: dict[str, str], *, pg: Any = None, redis: Any = None, per_worker: int = 4
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "accounts.csv").write_text("source_user,target_user\n" + "".join(f"{u},{u}\n" for u in users))
    os.environ["BENCH_ADMIN"] = "adminpw"
    ledger = ""
    if pg is not None:
        os.environ["BENCH_PG"], os.environ["BENCH_REDIS"] = pg.password, redis.password
        ledger = f'ledger = "{pg.url}"\nledger_password = "env:BENCH_PG"\n'
    text = (
        f'[project]\nname = "scale"\n{ledger}items = ["mail"]\n[accounts]\ncsv = "accounts.csv"\n'
        f'[source]\nhost = "127.0.0.1"\nport = {src.port}\nsecurity = "none"\nmax_connections = 16\n'
        '[source.admin]\nuser = "admin"\npassword = "env:BENCH_ADMIN"\n'
        f'[target]\nhost = "127.0.0.1"\nport = {tgt.port}\nsecurity = "none"\nmax_connections = 24\n'
        '[target.admin]\nuser = "admin"\npassword = "env:BENCH_ADMIN"\n'
    )
    if pg is not None:
        text += (
            f'[distributed]\nbroker = "{redis.url}"\nbroker_password = "env:BENCH_REDIS"\n'
            f"accounts_per_worker = {per_worker}\n"
        )
    (d / "project.toml").write_text(text)
    return d / "project.toml"


def target_count(tgt: Any, users: dict[str, str]) -> int:
    from mailferry.connectors.imap import Endpoint, ImapStore, Login

    total = 0
    for u, pw in users.items():
        st = ImapStore(Endpoint(tgt.host, tgt.port, "none"), Login(u, pw), readonly=True)
        try:
            total += sum(st.status(f.name).messages for f in st.list_folders() if "\\noselect" not in f.attributes)
        finally:
            st.close()
    return total


def timed(argv: list[str], logf: Path) -> tuple[float, int, dict[str, Any]]:
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=7200)
    seconds = time.monotonic() - t0
    logf.write_text(p.stderr[-20000:])
    data = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
    return seconds, p.returncode, data


def ledger_writes(pg: Any, work: Path, rows: int = 20_000, batch: int = 100) -> dict[str, float]:
    """Microseconds per message recorded (intent, then fact), SQLite vs PostgreSQL."""
    from mailferry.state.ledger import MessageRecord, SqliteLedger
    from mailferry.state.pgledger import PostgresLedger

    out: dict[str, float] = {}
    pg.reset()
    for name, led in (("sqlite", SqliteLedger(work / "w.sqlite")), ("postgresql", PostgresLedger(pg.url, pg.password))):
        run = led.start_run("bench", "now")
        t0 = time.perf_counter()
        for start in range(0, rows, batch):
            recs = [
                MessageRecord(1, u, f"k{u}", 1000, "pending", "", "INBOX", None, None, 0, ())
                for u in range(start, start + batch)
            ]
            led.record_pending("a", "INBOX", recs, run)
            done = [
                MessageRecord(1, r.uid, r.key, r.size, "copied", "appended", "INBOX", 1, r.uid, 0, ()) for r in recs
            ]
            led.record_copied("a", "INBOX", done, run)
        out[name] = round((time.perf_counter() - t0) / rows * 1e6, 1)
        led.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args(argv)
    from mailferry.sandbox.cluster import PostgresServer, RedisServer
    from mailferry.sandbox.servers import DovecotServer

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mf-scale-"))
    os.chmod(work, 0o755)
    users = {f"u{i:05d}": f"pw{i}" for i in range(args.accounts)}
    servers: list[Any] = []
    results: dict[str, Any] = {"accounts": args.accounts, "messages_per_account": args.messages, "runs": {}}
    try:
        t0 = time.monotonic()
        total = seed_maildirs(work / "src", users, args.messages)
        src = DovecotServer.start(work / "src", style="dotted", users=users)
        servers.append(src)
        warm(src, users)
        pg, redis = PostgresServer.start(work / "pg"), RedisServer.start(work / "redis")
        servers += [pg, redis]
        log(f"seeded {total} messages in {args.accounts} accounts in {time.monotonic() - t0:.0f} s")
        results["messages"] = total
        configs = ["local", *[f"workers={n}" for n in args.workers.split(",") if n]]
        for config in configs:
            tgt = DovecotServer.start(work / f"tgt-{config}", style="slash", users=users)
            servers.append(tgt)
            d = work / config
            workers: list[subprocess.Popen[bytes]] = []
            if config == "local":
                project = write_project(d, src, tgt, users)
                argv = [MAILFERRY, "migrate", str(project), "--json"]
            else:
                pg.reset()
                import redis as redis_lib

                redis_lib.Redis(host="127.0.0.1", port=redis.port, password=redis.password).flushall()
                n = int(config.split("=")[1])
                project = write_project(d, src, tgt, users, pg=pg, redis=redis)
                for i in range(n):
                    workers.append(
                        subprocess.Popen(
                            [MAILFERRY, "worker", str(project), "--name", f"w{i}@bench", "--loglevel", "WARNING"],
                            stdout=(d / f"w{i}.log").open("wb"),
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                time.sleep(3)
                argv = [MAILFERRY, "migrate", str(project), "--distributed", "--json"]
            try:
                with ConnectionSampler({"source": src.port, "target": tgt.port}, every=0.1) as sampler:
                    seconds, code, data = timed(argv, d / "migrate.log")
                noop, noop_code, _ = timed(argv, d / "noop.log")
            finally:
                for w in workers:
                    os.killpg(w.pid, 9)
            landed = target_count(tgt, users)
            row = {
                "seconds": round(seconds, 1),
                "exit_code": code,
                "messages_per_s": round(total / seconds, 1),
                "copied": data.get("copied"),
                "on_target": landed,
                "complete": landed == total,
                "peak_connections": sampler.peak,
                "max_connections": {"source": 16, "target": 24},
                "noop_seconds": round(noop, 2),
                "noop_ms_per_account": round(noop / args.accounts * 1000, 1),
                "noop_exit_code": noop_code,
            }
            results["runs"][config] = row
            log(f"{config}: {json.dumps(row)}")
            tgt.close()
            servers.remove(tgt)
        results["ledger_us_per_message"] = ledger_writes(pg, work)
        log(f"ledger writes, µs per message: {results['ledger_us_per_message']}")
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(work, ignore_errors=True)
    base = results["runs"]["local"]["seconds"]
    print("\nconfig        seconds   msgs/s   ratio to local   peak src/tgt conns   no-op ms/account")
    for config, r in results["runs"].items():
        print(
            f"{config:<12} {r['seconds']:>8} {r['messages_per_s']:>8} {r['seconds'] / base:>15.2f}"
            f"   {r['peak_connections']['source']:>3}/{r['peak_connections']['target']:<3} (16/24)"
            f"   {r['noop_ms_per_account']:>10}"
        )
    (args.out / "scale-results.json").write_text(json.dumps(results, indent=2))
    ok = all(r["exit_code"] == 0 and r["complete"] for r in results["runs"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
