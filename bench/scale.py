"""Scale benchmark: one local process against 1, 2 and 3 Celery workers on this machine.

    python bench/scale.py [--accounts 200] [--messages 500] [--events 20] [--contacts 10]
                          [--workers 1,2,3] [--out bench/out]

Starts a source Dovecot holding ``--accounts`` accounts of ``--messages`` messages each (small
text messages and some attachments, over ten folders), a source Radicale holding one calendar
(``Default``, ``--events`` events) and one address book (``Contacts``, ``--contacts`` vCards 3.0)
per account, PostgreSQL and Redis, then moves the whole organization (mail, calendars and
contacts; ``--events 0 --contacts 0``: mail only), each time into a fresh target Dovecot and a
fresh target Radicale:

- ``local``: ``mailferry migrate --json``, the SQLite ledger, no broker (the default);
- ``workers=N``: ``mailferry migrate --distributed --json`` with N ``mailferry worker`` processes,
  the PostgreSQL ledger, Redis as broker.

Every run must exit 0 and leave as many messages on the target as the source holds, and every
account's calendar and address book with as many items as were seeded (counted in the target
Radicale's collection folders: one file per item). Reported per run: wall time, messages/s, DAV
items/s over the time the target Radicale had connections, and the most connections each server
(both Dovecots, both Radicales) had at once, counted on the server's side (its established
sockets, sampled every 100 ms) against the project's ``max_connections``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dav_org  # noqa: E402
from dav import RADICALE_ADMIN, radicale_collection_root, start_radicale  # noqa: E402

from mailferry.sandbox.connections import ConnectionSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAILFERRY = str(Path(sys.executable).with_name("mailferry"))
# Connections the project allows per server (what each peak is judged against). Each Radicale
# itself accepts more (RADICALE_CONNECTIONS), so that an overshoot shows as a peak above the
# project's limit instead of as clients waiting out Radicale's 30 s socket timeout.
LIMITS = {"source": 16, "target": 24, "source_dav": 16, "target_dav": 16}
RADICALE_CONNECTIONS = 256
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


def seed_dav(root: Path, users: dict[str, str], events: int, contacts: int) -> dict[str, int]:
    """Every account's calendar ``Default`` and address book ``Contacts`` written straight into a
    Radicale's ``collection-root`` before it starts (``.Radicale.props`` and one file per item,
    as Radicale itself stores them). Items come from dav_org's generators (a quarter recurring
    with ``RRULE`` and overrides, all-day events, meetings, a third in Europe/Berlin with its
    VTIMEZONE; vCards 3.0), seeded per account, so the organization is the same every run."""
    accounts = tuple(users)
    seeded = {"events": 0, "contacts": 0}
    for user in users:
        rng = random.Random(user)
        for kind, count, what in (("calendar", events, "events"), ("addressbook", contacts, "contacts")):
            if count <= 0:
                continue
            col = dav_org.Collection(user, "Default", kind, f"{user} {what}", count, 0)
            d = root / user / col.radicale_name
            d.mkdir(parents=True)
            (d / ".Radicale.props").write_text(json.dumps(dav_org.radicale_props(col), sort_keys=True))
            for i in range(count):
                uid, body = dav_org._event(rng, i, col, accounts) if kind == "calendar" else dav_org._vcard(rng, i, col)
                (d / (uid.split("@", 1)[0] + col.suffix)).write_bytes(body)
                seeded[what] += 1
    return seeded


_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
)


def warm_dav(url: str, root: Path) -> None:
    """A Depth 1 PROPFIND of every seeded collection: Radicale parses each item once and keeps
    it in its cache (~6 ms an item), so no timed run pays for a cold cache."""
    import httpx

    cols = [f"{url}{c.parent.name}/{c.name}/" for c in sorted(root.glob("*/*")) if c.is_dir()]

    def one(col_url: str) -> None:
        with httpx.Client(timeout=300, auth=RADICALE_ADMIN) as c:
            r = c.request("PROPFIND", col_url, content=_PROPFIND, headers={"Depth": "1"})
            if r.status_code != 207:
                raise RuntimeError(f"PROPFIND {col_url}: HTTP {r.status_code}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, cols))


def dav_on_target(root: Path) -> dict[str, dict[str, int]]:
    """Items per account and kind in a Radicale's collection folders (one file per item; the
    kind from the collection's ``.Radicale.props`` tag)."""
    out: dict[str, dict[str, int]] = {}
    for props in root.glob("*/*/.Radicale.props"):
        tag = json.loads(props.read_text() or "{}").get("tag")
        kind = {"VCALENDAR": "events", "VADDRESSBOOK": "contacts"}.get(tag or "")
        if kind is None:
            continue
        n = sum(1 for f in props.parent.iterdir() if f.is_file() and not f.name.startswith("."))
        per = out.setdefault(props.parent.parent.name, {"events": 0, "contacts": 0})
        per[kind] += n
    return out


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
    d: Path,
    src: Any,
    tgt: Any,
    users: dict[str, str],
    *,
    dav: tuple[str, str] | None = None,
    pg: Any = None,
    redis: Any = None,
    per_worker: int = 4,
) -> Path:
    """``dav``: the source and target Radicale URLs, both opened with the Radicale admin's login
    (mailferry's ``path`` route: it reads and writes every account's collections by path)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "accounts.csv").write_text("source_user,target_user\n" + "".join(f"{u},{u}\n" for u in users))
    os.environ["BENCH_ADMIN"] = "adminpw"
    os.environ["BENCH_DAVADMIN"] = RADICALE_ADMIN[1]
    ledger = ""
    if pg is not None:
        os.environ["BENCH_PG"], os.environ["BENCH_REDIS"] = pg.password, redis.password
        ledger = f'ledger = "{pg.url}"\nledger_password = "env:BENCH_PG"\n'
    items = '["mail", "calendars", "contacts"]' if dav else '["mail"]'
    sides = {"source": (src.port, LIMITS["source"]), "target": (tgt.port, LIMITS["target"])}
    text = f'[project]\nname = "scale"\n{ledger}items = {items}\n[accounts]\ncsv = "accounts.csv"\n'
    for k, (role, (port, limit)) in enumerate(sides.items()):
        text += (
            f'[{role}]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\nmax_connections = {limit}\n'
            f'[{role}.admin]\nuser = "admin"\npassword = "env:BENCH_ADMIN"\n'
        )
        if dav:
            text += (
                f'[{role}.dav]\nurl = "{dav[k]}"\nmax_connections = {LIMITS[role + "_dav"]}\n'
                f'[{role}.dav.admin]\nuser = "{RADICALE_ADMIN[0]}"\npassword = "env:BENCH_DAVADMIN"\nmethod = "path"\n'
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


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--events", type=int, default=20, help="events in each account's calendar (0: none)")
    ap.add_argument("--contacts", type=int, default=10, help="vCards in each account's address book (0: none)")
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args(argv)
    from mailferry.sandbox.cluster import PostgresServer, RedisServer
    from mailferry.sandbox.servers import DovecotServer

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mf-scale-"))
    os.chmod(work, 0o755)
    users = {f"u{i:05d}": f"pw{i}" for i in range(args.accounts)}
    with_dav = args.events > 0 or args.contacts > 0
    servers: list[Any] = []
    stops: list[Any] = []
    results: dict[str, Any] = {
        "accounts": args.accounts,
        "messages_per_account": args.messages,
        "events_per_account": args.events,
        "contacts_per_account": args.contacts,
        "max_connections": {k: v for k, v in LIMITS.items() if with_dav or not k.endswith("_dav")},
        "runs": {},
    }
    try:
        t0 = time.monotonic()
        total = seed_maildirs(work / "src", users, args.messages)
        src = DovecotServer.start(work / "src", style="dotted", users=users)
        servers.append(src)
        warm(src, users)
        seeded = {"events": 0, "contacts": 0}
        src_dav = ""
        if with_dav:
            seeded = seed_dav(radicale_collection_root(work / "dav-src"), users, args.events, args.contacts)
            src_dav, stop = start_radicale(work / "dav-src", users, max_connections=RADICALE_CONNECTIONS)
            stops.append(stop)
            warm_dav(src_dav, radicale_collection_root(work / "dav-src"))
        pg, redis = PostgresServer.start(work / "pg"), RedisServer.start(work / "redis")
        servers += [pg, redis]
        log(
            f"seeded {total} messages, {seeded['events']} events, {seeded['contacts']} contacts in "
            f"{args.accounts} accounts in {time.monotonic() - t0:.0f} s"
        )
        results["messages"] = total
        results["events"], results["contacts"] = seeded["events"], seeded["contacts"]
        dav_items = seeded["events"] + seeded["contacts"]
        configs = ["local", *[f"workers={n}" for n in args.workers.split(",") if n]]
        for config in configs:
            tgt = DovecotServer.start(work / f"tgt-{config}", style="slash", users=users)
            servers.append(tgt)
            ports = {"source": src.port, "target": tgt.port}
            dav: tuple[str, str] | None = None
            tgt_base = work / f"dav-tgt-{config}"
            if with_dav:
                tgt_dav, tgt_stop = start_radicale(tgt_base, users, max_connections=RADICALE_CONNECTIONS)
                stops.append(tgt_stop)
                dav = (src_dav, tgt_dav)
                ports |= {"source_dav": port_of(src_dav), "target_dav": port_of(tgt_dav)}
            d = work / config
            workers: list[subprocess.Popen[bytes]] = []
            if config == "local":
                project = write_project(d, src, tgt, users, dav=dav)
                argv = [MAILFERRY, "migrate", str(project), "--json"]
            else:
                pg.reset()
                import redis as redis_lib

                redis_lib.Redis(host="127.0.0.1", port=redis.port, password=redis.password).flushall()
                n = int(config.split("=")[1])
                project = write_project(d, src, tgt, users, dav=dav, pg=pg, redis=redis)
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
                sampler = ConnectionSampler(ports, every=0.1)
                with sampler:
                    seconds, code, data = timed(argv, d / "migrate.log")
                noop, noop_code, noop_data = timed(argv, d / "noop.log")
            finally:
                for w in workers:
                    os.killpg(w.pid, 9)
            landed = target_count(tgt, users)
            row: dict[str, Any] = {
                "seconds": round(seconds, 1),
                "exit_code": code,
                "messages_per_s": round(total / seconds, 1),
                "copied": data.get("copied"),
                "on_target": landed,
                "complete": landed == total,
            }
            if with_dav:
                per = dav_on_target(radicale_collection_root(tgt_base))
                events = sum(p["events"] for p in per.values())
                contacts = sum(p["contacts"] for p in per.values())
                dav_seconds = sampler.busy("target_dav")
                row |= {
                    "dav_copied": (data.get("calendars") or {}).get("copied"),
                    "events_on_target": events,
                    "contacts_on_target": contacts,
                    # Every account's calendar and address book whole, not just the totals.
                    "dav_complete": all(
                        per.get(u, {}).get("events", 0) == args.events
                        and per.get(u, {}).get("contacts", 0) == args.contacts
                        for u in users
                    ),
                    "dav_seconds": round(dav_seconds, 1),
                    "dav_items_per_s": round(dav_items / dav_seconds, 1) if dav_seconds else None,
                    "items_per_s": round((total + dav_items) / seconds, 1),
                    "noop_dav_copied": (noop_data.get("calendars") or {}).get("copied"),
                }
            row |= {
                "peak_connections": sampler.peak,
                "max_connections": {k: LIMITS[k] for k in ports},
                "noop_seconds": round(noop, 2),
                "noop_ms_per_account": round(noop / args.accounts * 1000, 1),
                "noop_exit_code": noop_code,
                "noop_copied": noop_data.get("copied"),
            }
            results["runs"][config] = row
            log(f"{config}: {json.dumps(row)}")
            tgt.close()
            servers.remove(tgt)
            if with_dav:
                tgt_stop()
                stops.remove(tgt_stop)
        results["ledger_us_per_message"] = ledger_writes(pg, work)
        log(f"ledger writes, µs per message: {results['ledger_us_per_message']}")
    finally:
        for stop in stops:
            stop()
        for s in servers:
            s.close()
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, with_dav)
    (args.out / "scale-results.json").write_text(json.dumps(results, indent=2))
    ok = all(r["exit_code"] == 0 and r["complete"] and r.get("dav_complete", True) for r in results["runs"].values())
    return 0 if ok else 1


def print_table(results: dict[str, Any], with_dav: bool) -> None:
    runs = results["runs"]
    base = runs["local"]["seconds"]
    names = ["source", "target", "source_dav", "target_dav"] if with_dav else ["source", "target"]
    limits = "/".join(str(LIMITS[n]) for n in names)
    head = f"{'config':<11} {'wall s':>7} {'msgs/s':>7} {'ratio':>6}   {'peak conns ' + '/'.join(names):<32}"
    head += f" {'no-op ms/acct':>13}   {'on target: mail':>15}"
    if with_dav:
        head += f" {'events':>7} {'contacts':>8}   {'DAV s':>6} {'DAV items/s':>11} {'all items/s':>11}"
    print("\n" + head + "   exit")
    for config, r in runs.items():
        peaks = "/".join(str(r["peak_connections"][n]) for n in names)
        line = f"{config:<11} {r['seconds']:>7} {r['messages_per_s']:>7} {r['seconds'] / base:>6.2f}"
        line += f"   {peaks + ' (' + limits + ')':<32} {r['noop_ms_per_account']:>13}   {r['on_target']:>15}"
        if with_dav:
            line += (
                f" {r['events_on_target']:>7} {r['contacts_on_target']:>8}   {r['dav_seconds']:>6}"
                f" {r['dav_items_per_s'] or '-':>11} {r['items_per_s']:>11}"
            )
        line += f"   {r['exit_code']}/{r['noop_exit_code']}"
        print(line)
    seeded = f"source: {results['messages']} messages"
    if with_dav:
        seeded += f", {results['events']} events, {results['contacts']} contacts"
    print(f"{seeded} in {results['accounts']} accounts; exit = migrate/no-op re-run")


if __name__ == "__main__":
    sys.exit(main())
