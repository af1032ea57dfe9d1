"""Benchmark calendar and contact migration: mailferry against vdirsyncer, in the same run.

Usage: python bench/dav.py [--quick] [--scale X] [--direction radicale-cyrus|cyrus-radicale|both]
                           [--tools mailferry,vdirsyncer] [--keep DIR] [--out DIR] [--timeout S]

The organization of ``bench/dav_org.py`` (50 accounts, 60 calendars of which 10 shared, 55 address
books, 40,000 events and 10,000 vCards at scale 1) is seeded onto a source server (not measured,
but timed and reported); then every tool copies it into a **fresh, empty target** of the other
kind, and we measure the full copy and a re-run with nothing new (wall time of the process, peak
RSS from GNU time's ``%M``), count what the target holds (PROPFIND Depth 1 on every collection)
and report the ratio mailferry/vdirsyncer, because only figures taken side by side compare.
Servers: Radicale 3 (``python -m radicale``) and Cyrus 3.6 (``mailferry.sandbox.servers``),
on 127.0.0.1 only. See bench/README.md ("DAV benchmark").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET  # noqa: N817 - parses our own servers' answers only
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dav_org  # noqa: E402
from run import run_tool  # noqa: E402

from mailferry.sandbox.servers import CyrusServer, free_port, wait_port_closed  # noqa: E402

HOST = "127.0.0.1"
RADICALE_ADMIN = ("davadmin", "davadminpw")
SEED_THREADS = 16  # Cyrus' httpd has maxchild=20 in the sandbox
# Targets from the issue.
TARGET_RATIO = 0.5
TARGET_NOOP_S = 2.0
TARGET_RSS_MB = 250.0


def log(msg: str) -> None:
    print(msg, flush=True)


def password(user: str) -> str:
    """Every account has the same password on both servers (so either side's IMAP accepts it)."""
    return f"{user}pw"


# --------------------------------------------------------------------------- servers


def radicale_collection_root(base: Path) -> Path:
    """Where :func:`start_radicale` keeps the collections: write a seed here before starting."""
    return base / "collections" / "collection-root"


def start_radicale(base: Path, users: dict[str, str], shares: Iterable[tuple[str, str, str, str]] = (),
                   max_connections: int | None = None) -> tuple[str, Callable[[], None]]:
    """Start Radicale on a free 127.0.0.1 port with its storage in ``base/collections`` and
    return ``(base URL, stop)``. Plain htpasswd of ``users`` plus :data:`RADICALE_ADMIN`, which
    may read and write every collection (mailferry's ``path`` admin route). ``shares``:
    ``(owner, collection, sharee, "read"|"read-write")``, as rights-file rules (Radicale has no
    standard sharing). ``max_connections``: Radicale's ``[server] max_connections`` (its
    default is 8, with a 30 s socket timeout: a client holding more idle keep-alive connections
    than that makes the others wait for the timeout). This is the seam for
    ``mailferry.sandbox.dav_servers.RadicaleServer``."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "collections").mkdir(exist_ok=True)
    port = free_port()
    logins = {**users, RADICALE_ADMIN[0]: RADICALE_ADMIN[1]}
    (base / "users").write_text("".join(f"{u}:{p}\n" for u, p in logins.items()))
    rules = [
        "[root]\nuser: .+\ncollection:\npermissions: R\n",
        f"[admin]\nuser: {RADICALE_ADMIN[0]}\ncollection: .*\npermissions: RWrw\n",
        "[principal]\nuser: .+\ncollection: {user}\npermissions: RW\n",
        "[own-collections]\nuser: .+\ncollection: {user}/[^/]+\npermissions: rwTM\n",
    ]
    for k, (owner, name, sharee, access) in enumerate(shares):
        perm = "rw" if access == "read-write" else "r"
        rules.append(f"[share-{k}]\nuser: {sharee}\ncollection: {owner}/{name}\npermissions: {perm}\n")
    (base / "rights").write_text("\n".join(rules))
    (base / "config").write_text(f"""[server]
hosts = {HOST}:{port}
{f"max_connections = {max_connections}" if max_connections else ""}
[auth]
type = htpasswd
htpasswd_filename = {base}/users
htpasswd_encryption = plain
delay = 0
[rights]
type = from_file
file = {base}/rights
[storage]
filesystem_folder = {base}/collections
[sharing]
type = csv
database_path = {base}/sharing.csv
collection_by_map = true
permit_create_map = true
[logging]
level = warning
mask_passwords = true
""")
    logf = (base / "radicale.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(base / "config")], stdout=logf,
                            stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
    logf.close()
    url = f"http://{HOST}:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + ".web/", timeout=1)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Radicale did not start:\n" + (base / "radicale.log").read_text()[-2000:]) from None
            time.sleep(0.05)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            wait_port_closed(port)

    return url, stop


@dataclass
class Side:
    """One running server: what the benchmark needs to know of it."""

    kind: str  # "radicale" | "cyrus"
    url: str  # DAV base URL, ends with "/"
    stop: Callable[[], None]
    imap_port: int | None = None

    def collection_url(self, col: dav_org.Collection, source: str | None = None) -> str:
        """Where ``col`` is on this server: as the benchmark's pairs put it, or with ``source``
        (the kind of server it came from) where mailferry puts it: under the source's own name
        (Radicale's default address book ``Contacts`` stays ``Contacts`` on Cyrus), and on a
        Radicale target Cyrus' ``Default`` address book beside the ``Default`` calendar becomes
        ``Default-contacts``."""
        name = col.name if self.kind == "cyrus" else col.radicale_name
        if source == "radicale":
            name = col.radicale_name
        elif source == "cyrus" and self.kind == "radicale":
            name = "Default-contacts" if col.kind == "addressbook" and col.name == "Default" else col.name
        if self.kind == "radicale":
            return f"{self.url}{col.owner}/{name}/"
        home = "calendars" if col.kind == "calendar" else "addressbooks"
        return f"{self.url}dav/{home}/user/{col.owner}/{name}/"

    def exists_by_default(self, col: dav_org.Collection) -> bool:
        """Cyrus creates each account's ``Default`` calendar and address book at first login."""
        return self.kind == "cyrus" and col.name == "Default"


def start_side(kind: str, base: Path, users: dict[str, str], *, seed_cache: Path | None = None,
               shares: Iterable[tuple[str, str, str, str]] = (), radicale_max_connections: int | None = None) -> Side:
    if kind == "radicale":
        if seed_cache is not None:
            dav_org.install_radicale(seed_cache, radicale_collection_root(base))
        url, stop = start_radicale(base, users, shares, radicale_max_connections)
        return Side("radicale", url, stop)
    server = CyrusServer.start(base, users=users)
    if server.http_port is None:
        server.close()
        raise RuntimeError("Cyrus has no httpd (apt-get install cyrus-caldav)")
    return Side("cyrus", f"http://{HOST}:{server.http_port}/", server.close, imap_port=server.port)


# --------------------------------------------------------------------------- DAV requests


_local = threading.local()


def client() -> httpx.Client:
    """One keep-alive client per thread."""
    c = getattr(_local, "client", None)
    if c is None:
        # No idle keep-alive connections: Cyrus httpd gives each connection a process of its own
        # (maxchild), and connections the benchmark left open would starve the tools it measures.
        c = _local.client = httpx.Client(timeout=120, limits=httpx.Limits(max_keepalive_connections=0))
    return c


def make_collection(side: Side, col: dav_org.Collection) -> None:
    """MKCALENDAR (RFC 4791) or extended MKCOL (RFC 5689) with a display name."""
    url = side.collection_url(col)
    auth = (col.owner, password(col.owner))
    name = f"<D:displayname>{col.displayname}</D:displayname>"
    if col.kind == "calendar":
        body = ('<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>' + name +
                '<C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>'
                '</D:prop></D:set></C:mkcalendar>')
        r = client().request("MKCALENDAR", url, content=body, auth=auth,
                             headers={"Content-Type": "application/xml; charset=utf-8"})
    else:
        body = ('<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" '
                'xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/>'
                '<CR:addressbook/></D:resourcetype>' + name + '</D:prop></D:set></D:mkcol>')
        r = client().request("MKCOL", url, content=body, auth=auth,
                             headers={"Content-Type": "application/xml; charset=utf-8"})
    if r.status_code not in (201, 200):
        raise RuntimeError(f"creating {url}: HTTP {r.status_code} {r.text[:300]}")


def make_collections(side: Side, cols: Iterable[dav_org.Collection]) -> int:
    todo = [c for c in cols if not side.exists_by_default(c)]
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda c: make_collection(side, c), todo))
    return len(todo)


_PROPFIND = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/>'
             '<D:resourcetype/></D:prop></D:propfind>')


def count_collection(side: Side, col: dav_org.Collection, source: str | None = None) -> int:
    """Items in one collection: the Depth 1 PROPFIND's responses that are not collections."""
    url = side.collection_url(col, source)
    r = client().request("PROPFIND", url, content=_PROPFIND, auth=(col.owner, password(col.owner)),
                         headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
    if r.status_code == 404:
        return 0
    if r.status_code != 207:
        raise RuntimeError(f"PROPFIND {url}: HTTP {r.status_code}")
    n = 0
    for resp in ET.fromstring(r.content).iter("{DAV:}response"):
        if resp.find(".//{DAV:}resourcetype/{DAV:}collection") is None:
            n += 1
    return n


def count_items(side: Side, cols: Iterable[dav_org.Collection], source: str | None = None) -> dict[str, int]:
    cols = list(cols)
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        counts = list(pool.map(lambda c: count_collection(side, c, source), cols))
    return {side.collection_url(c, source): n for c, n in zip(cols, counts, strict=True)}


def seed_cyrus(side: Side, org: dav_org.Organization, cache: Path) -> dict[str, Any]:
    """Collections by MKCALENDAR/MKCOL, items by PUT (If-None-Match: *) from a thread pool, then
    the shares (``D:share-resource``, the one sharing request Cyrus 3.6 accepts; see
    recipes/cyrus_share_probe.py). Cyrus has no bulk import over DAV."""
    made = make_collections(side, org.collections)
    jobs: list[tuple[dav_org.Collection, Path]] = []
    for col in org.collections:
        d = cache / "tree" / col.owner / col.radicale_name
        jobs.extend((col, p) for p in sorted(d.iterdir()) if p.name != ".Radicale.props")
    failures: list[str] = []

    def put(job: tuple[dav_org.Collection, Path]) -> None:
        col, path = job
        ctype = "text/calendar; charset=utf-8" if col.kind == "calendar" else "text/vcard; charset=utf-8"
        url = side.collection_url(col) + path.name
        r = client().put(url, content=path.read_bytes(), auth=(col.owner, password(col.owner)),
                         headers={"Content-Type": ctype, "If-None-Match": "*"})
        if r.status_code not in (201, 204):
            failures.append(f"PUT {url}: {r.status_code} {r.text[:200]}")

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(put, jobs))
    share_failures: list[str] = []
    for col in org.collections:
        for sharee, access in col.shares:
            body = ('<?xml version="1.0" encoding="utf-8"?><D:share-resource xmlns:D="DAV:"><D:sharee>'
                    f'<D:href>mailto:{sharee}@internal</D:href><D:share-access><D:{access}/></D:share-access>'
                    '</D:sharee></D:share-resource>')
            r = client().post(side.collection_url(col), content=body, auth=(col.owner, password(col.owner)),
                              headers={"Content-Type": "application/davsharing+xml; charset=utf-8"})
            if r.status_code >= 300:
                share_failures.append(f"share {col.owner}/{col.name} with {sharee}: {r.status_code}")
    return {"collections_created": made, "puts": len(jobs), "put_failures": failures[:20],
            "put_failures_total": len(failures), "share_failures": share_failures[:10]}


# --------------------------------------------------------------------------- tools


@dataclass
class Measure:
    tool: str
    direction: str
    phase: str  # "discover" | "full" | "noop"
    argv: list[str]
    wall_s: float = 0.0
    max_rss_mb: float = 0.0
    exit_code: int | None = None
    ok: bool = False
    note: str = ""
    stderr_tail: str = ""
    target_items: int | None = None
    expected_items: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def measure(tool: str, direction: str, phase: str, argv: list[str], *, logdir: Path, timeout: float,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> Measure:
    r = run_tool(f"{tool}-{direction}-{phase}", 0, argv, timeout=timeout, logdir=logdir, env=env, cwd=cwd)
    m = Measure(tool, direction, phase, argv, wall_s=r.wall_s, max_rss_mb=r.max_rss_mb, exit_code=r.exit_code,
                ok=r.ok, note=r.note, stderr_tail=r.stderr_tail, extra=r.extra)
    if tool == "vdirsyncer":  # what it wrote: one "Copying (uploading|updating) item" line each
        text = Path(r.extra["stderr_file"]).read_text(errors="replace")
        m.extra["items_written"] = text.count("\nCopying (") + text.startswith("Copying (")
        m.extra["items_deleted"] = text.count("\nDeleting item")
    return m


def vdirsyncer_config(work: Path, org: dav_org.Organization, source: Side, target: Side) -> str:
    """One pair per collection, ``collections = null`` (the storages' URLs are the collections
    themselves; the target's exist already), one way: the source storage ``read_only`` and the
    pair's ``partial_sync = "ignore"``. Everything else (concurrency included) is vdirsyncer's
    default. Why one way: with the default two-way sync, the second run copied every meeting
    back onto the source, because Cyrus rewrites a scheduling object on PUT (new ETag) and
    vdirsyncer takes that for a change on the target; a migration must never write the source."""
    lines = [f'[general]\nstatus_path = "{work / "status"}/"\n']
    for col in org.collections:
        pair = f"c{col.index:03d}_{col.owner}"
        storage = "caldav" if col.kind == "calendar" else "carddav"
        lines.append(f'[pair {pair}]\na = "{pair}_a"\nb = "{pair}_b"\ncollections = null\npartial_sync = "ignore"\n')
        for side, end in ((source, "a"), (target, "b")):
            ro = "read_only = true\n" if end == "a" else ""
            lines.append(f'[storage {pair}_{end}]\ntype = "{storage}"\nurl = "{side.collection_url(col)}"\n'
                         f'username = "{col.owner}"\npassword = "{password(col.owner)}"\n{ro}')
    return "\n".join(lines)


def mailferry_project(work: Path, org: dav_org.Organization, source: Side, target: Side,
                      imap_ports: tuple[int, int]) -> tuple[Path, dict[str, str]]:
    """The project file (current keys of config/load.py; ``items`` and ``[*.dav]`` are the new
    ones) and the environment holding the passwords its accounts CSV refers to. The IMAP side is
    required but unused (``items`` has no mail): ``imap_ports`` are the Cyrus' own port and, for
    Radicale (no IMAP), a port nobody listens on, so that a mailferry that touched mail would
    fail loudly instead of migrating Cyrus' mail onto itself (main's did, before it had DAV)."""
    work.mkdir(parents=True, exist_ok=True)
    rows = ["source_user,target_user,source_password,target_password"]
    env = dict(os.environ)
    for u in org.accounts:
        rows.append(f"{u},{u},env:MF_BENCH_PW_{u},env:MF_BENCH_PW_{u}")
        env[f"MF_BENCH_PW_{u}"] = password(u)
    (work / "accounts.csv").write_text("\n".join(rows) + "\n")
    blocks = []
    for role, side, port in (("source", source, imap_ports[0]), ("target", target, imap_ports[1])):
        blocks.append(f'[{role}]\nhost = "{HOST}"\nport = {port}\nsecurity = "none"\n\n'
                      f'[{role}.dav]\nurl = "{side.url}"\n')
    text = ('[project]\nname = "bench-dav"\nitems = ["calendars", "contacts"]\n\n' + "\n".join(blocks)
            + '\n[accounts]\ncsv = "accounts.csv"\n')
    path = work / "project.toml"
    path.write_text(text)
    return path, env


# --------------------------------------------------------------------------- the benchmark


DIRECTIONS = {"radicale-cyrus": ("radicale", "cyrus"), "cyrus-radicale": ("cyrus", "radicale")}


class DavBench:
    def __init__(self, args: argparse.Namespace, org: dav_org.Organization, cache: Path, work: Path) -> None:
        self.args = args
        self.org = org
        self.cache = cache
        self.work = work
        self.logs = args.out / "logs" / "dav"
        self.users = {u: password(u) for u in org.accounts}
        self.shares = [(c.owner, c.radicale_name, u, a) for c in org.collections for u, a in c.shares]
        self.measures: list[Measure] = []
        self.seeding: dict[str, Any] = {}
        self.commands: dict[str, str] = {}
        self.notes: list[str] = []
        self.sides: list[Side] = []
        mf = shutil.which("mailferry")
        self.mailferry = [mf] if mf else [sys.executable, "-m", "mailferry"]
        self.vdirsyncer = shutil.which("vdirsyncer") or "vdirsyncer"

    def start(self, kind: str, name: str, *, seed: bool = False) -> Side:
        base = self.work / name
        shutil.rmtree(base, ignore_errors=True)
        side = start_side(kind, base, self.users, seed_cache=self.cache if seed and kind == "radicale" else None,
                          shares=self.shares if seed else (),
                          radicale_max_connections=self.args.radicale_max_connections)
        self.sides.append(side)
        return side

    def drop(self, side: Side) -> None:
        side.stop()
        with contextlib.suppress(ValueError):
            self.sides.remove(side)

    def close(self) -> None:
        for side in list(self.sides):
            with contextlib.suppress(Exception):
                side.stop()
        self.sides.clear()

    def seed_source(self, kind: str, direction: str) -> tuple[Side, dict[str, int]]:
        t0 = time.perf_counter()
        side = self.start(kind, f"{direction}/source", seed=True)
        started = time.perf_counter() - t0
        info: dict[str, Any] = {"server": kind, "start_s": round(started, 2)}
        if kind == "cyrus":
            t1 = time.perf_counter()
            info |= seed_cyrus(side, self.org, self.cache)
            info["seed_s"] = round(time.perf_counter() - t1, 2)
        else:
            info["seed_s"] = round(started, 2)
            info["how"] = "hard links into collection-root before start"
        # The count is also the warm-up: Radicale parses each item once and caches it
        # (.Radicale.cache), so that no tool alone pays for a cold cache.
        t1 = time.perf_counter()
        expected = count_items(side, self.org.collections)
        info["count_s"] = round(time.perf_counter() - t1, 2)
        info["items"] = sum(expected.values())
        if kind == "radicale":  # a second pass: what the tools see
            t1 = time.perf_counter()
            count_items(side, self.org.collections)
            info["warm_count_s"] = round(time.perf_counter() - t1, 2)
        info["total_s"] = round(time.perf_counter() - t0, 2)
        self.seeding[direction] = info
        log(f"  source {kind}: {info['items']} items seeded in {info['seed_s']} s "
            f"(server start {info['start_s']} s, count {info['count_s']} s)")
        if info.get("put_failures_total"):
            log(f"  WARNING {info['put_failures_total']} PUTs failed, e.g. {info['put_failures'][:3]}")
        if info.get("share_failures"):
            log(f"  note: shares not applied on the source: {info['share_failures'][:2]}")
        return side, {self._key(c): expected[side.collection_url(c)] for c in self.org.collections}

    @staticmethod
    def _key(col: dav_org.Collection) -> str:
        return f"{col.owner}/{col.kind}/{col.name}"

    def check(self, m: Measure, target: Side, expected: dict[str, int], source: str | None = None) -> None:
        try:
            got = count_items(target, self.org.collections, source)
            by_key = {self._key(c): got[target.collection_url(c, source)] for c in self.org.collections}
        except Exception as exc:  # noqa: BLE001 - a broken target is a finding, not a crash
            m.ok = False
            m.note = (m.note + "; " if m.note else "") + f"count failed: {str(exc)[:200]}"
            return
        m.target_items = sum(by_key.values())
        m.expected_items = sum(expected.values())
        wrong = {k: (by_key[k], v) for k, v in expected.items() if by_key[k] != v}
        if wrong:
            m.ok = False
            m.note = (m.note + "; " if m.note else "") + (
                f"{len(wrong)} collections differ, e.g. " + ", ".join(f"{k}: {g}/{e}" for k, (g, e) in
                                                                     list(wrong.items())[:3]))

    def record(self, m: Measure) -> None:
        self.measures.append(m)
        items = f"{m.target_items}/{m.expected_items}" if m.expected_items is not None else "-"
        status = "ok" if m.ok else f"FAILED ({m.note})"
        if "items_written" in m.extra:
            status += f", wrote {m.extra['items_written']} items"
        cpu = m.extra.get("cpu_s")
        cpu_text = f"cpu {cpu:6.1f} s" if isinstance(cpu, float | int) else ""
        rss = f"rss {m.max_rss_mb:7.1f} MB"
        log(f"  {m.tool:<10} {m.phase:<8} {m.wall_s:8.2f} s  {cpu_text}  {rss}  items {items}  {status}")
        if not m.ok and m.stderr_tail:
            log("    stderr tail:\n" + "\n".join("      " + line for line in m.stderr_tail.splitlines()[-8:]))

    def run_vdirsyncer(self, direction: str, source: Side, tgt_kind: str, expected: dict[str, int]) -> None:
        target = self.start(tgt_kind, f"{direction}/target-vdirsyncer")
        try:
            made = make_collections(target, self.org.collections)
            d = self.work / direction / "vdirsyncer"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            conf = d / "config"
            conf.write_text(vdirsyncer_config(d, self.org, source, target))
            self.commands.setdefault("vdirsyncer config (first pair)", "\n".join(conf.read_text().split("\n\n")[:4]))
            base = [self.vdirsyncer, "-c", str(conf)]
            disc = measure("vdirsyncer", direction, "discover", [*base, "discover"], logdir=self.logs,
                           timeout=self.args.timeout)
            disc.extra["target_collections_created_before"] = made
            self.record(disc)
            argv = [*base, "sync"]
            self.commands.setdefault("vdirsyncer", shlex.join(argv))
            full = measure("vdirsyncer", direction, "full", argv, logdir=self.logs, timeout=self.args.timeout)
            self.check(full, target, expected)
            self.record(full)
            if full.exit_code == 0:
                noop = measure("vdirsyncer", direction, "noop", argv, logdir=self.logs, timeout=self.args.timeout)
                self.check(noop, target, expected)
                self.record(noop)
        finally:
            self.drop(target)

    def run_mailferry(self, direction: str, source: Side, tgt_kind: str, expected: dict[str, int]) -> None:
        target = self.start(tgt_kind, f"{direction}/target-mailferry")
        try:
            ports = (source.imap_port or free_port(), target.imap_port or free_port())
            proj, env = mailferry_project(self.work / direction / "mailferry", self.org, source, target, ports)
            self.commands.setdefault("mailferry project", proj.read_text())
            argv = [*self.mailferry, "migrate", str(proj), "--json"]
            self.commands.setdefault("mailferry", shlex.join(argv))
            full = measure("mailferry", direction, "full", argv, logdir=self.logs, timeout=self.args.timeout,
                           env=env)
            if full.exit_code != 0:
                err = (full.stderr_tail.strip().splitlines() or [full.note])[-1]
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError, StopIteration):
                    report = json.loads(Path(full.extra["stdout_file"]).read_text())
                    first = next(a["error"] for a in report["accounts"] if a.get("error"))
                    err = f"exit code {full.exit_code}: {first}"
                full.note = f"not available: {err}"
                self.record(full)
                return
            self.check(full, target, expected, source.kind)
            if full.target_items == 0:
                full.note = f"not available: migrate exited 0 but copied none of the {full.expected_items} items"
                self.record(full)
                return
            self.record(full)
            noop = measure("mailferry", direction, "noop", argv, logdir=self.logs, timeout=self.args.timeout, env=env)
            self.check(noop, target, expected, source.kind)
            self.record(noop)
        finally:
            self.drop(target)

    def run_direction(self, direction: str, tools: list[str]) -> None:
        src_kind, tgt_kind = DIRECTIONS[direction]
        log(f"{direction}:")
        source, expected = self.seed_source(src_kind, direction)
        try:
            for tool in tools:
                if tool == "vdirsyncer":
                    self.run_vdirsyncer(direction, source, tgt_kind, expected)
                elif tool == "mailferry":
                    self.run_mailferry(direction, source, tgt_kind, expected)
        finally:
            self.drop(source)


# --------------------------------------------------------------------------- report


def summarize(bench: DavBench) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for m in bench.measures:
        row = rows.setdefault(f"{m.tool} {m.direction}", {"tool": m.tool, "direction": m.direction})
        row[m.phase] = {"s": round(m.wall_s, 3), "ok": m.ok, "rss_mb": round(m.max_rss_mb, 1), "note": m.note,
                        "items": m.target_items, "expected": m.expected_items}
    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for direction in DIRECTIONS:
        mf, vd = rows.get(f"mailferry {direction}", {}), rows.get(f"vdirsyncer {direction}", {})
        mf_full, vd_full = mf.get("full", {}), vd.get("full", {})
        if not mf and not vd:
            continue
        ok = mf_full.get("ok") and vd_full.get("ok")
        ratio = round(mf_full["s"] / vd_full["s"], 3) if ok else None
        noop_ratio = (round(mf["noop"]["s"] / vd["noop"]["s"], 3)
                      if mf.get("noop", {}).get("ok") and vd.get("noop", {}).get("ok") else None)
        ratios[direction] = {"mailferry/vdirsyncer full": ratio, "mailferry/vdirsyncer noop": noop_ratio}
        if mf_full.get("ok"):
            rss = max(p.get("rss_mb", 0) for k, p in mf.items() if k in ("full", "noop"))
            targets[direction] = {
                "full_le_0.5x_vdirsyncer": ratio is not None and ratio <= TARGET_RATIO,
                "noop_le_2s": mf.get("noop", {}).get("ok", False) and mf["noop"]["s"] <= TARGET_NOOP_S,
                "rss_lt_250mb": rss < TARGET_RSS_MB,
            }
    return {"rows": rows, "ratios": ratios, "targets": targets}


def print_table(summary: dict[str, Any], bench: DavBench) -> None:
    org = bench.org
    log(f"\norganization: scale {org.spec.scale}, {len(org.accounts)} accounts, {len(org.calendars)} calendars "
        f"({sum(1 for c in org.collections if c.shares)} shared), {len(org.addressbooks)} address books, "
        f"{org.spec.events} events, {org.spec.contacts} vCards ({org.items} items)")
    for direction, info in bench.seeding.items():
        log(f"seeding {direction}: {info['server']} {info['items']} items in {info['seed_s']} s "
            f"(+ count/warm-up {info['count_s']} s)")
    log("")
    log(f"{'tool':<11}{'direction':<16}{'items':>13}{'full s':>10}{'no-op s':>10}{'discover s':>12}{'peak RSS MB':>13}")
    for row in summary["rows"].values():
        full, noop, disc = row.get("full", {}), row.get("noop", {}), row.get("discover", {})
        if full and not full["ok"] and full.get("note", "").startswith("not available"):
            log(f"{row['tool']:<11}{row['direction']:<16}  {row['tool']}: {full['note']}")
            continue
        items = f"{full.get('items')}/{full.get('expected')}"
        fs = f"{full['s']:.2f}" + ("" if full.get("ok") else "!") if full else "-"
        ns = f"{noop['s']:.2f}" + ("" if noop.get("ok") else "!") if noop else "-"
        ds = f"{disc['s']:.2f}" if disc else "-"
        rss = max((p.get("rss_mb", 0) for k, p in row.items() if k in ("full", "noop")), default=0)
        log(f"{row['tool']:<11}{row['direction']:<16}{items:>13}{fs:>10}{ns:>10}{ds:>12}{rss:>13.1f}")
    log("(! = failed: see notes)")
    for direction, r in summary["ratios"].items():
        for k, v in r.items():
            log(f"ratio {direction} {k}: {v if v is not None else 'n/a'}")
    for direction, t in summary["targets"].items():
        for k, v in t.items():
            log(f"target {direction} {k}: {'MET' if v else 'not met'}")
    for m in bench.measures:
        if not m.ok and not m.note.startswith("not available"):
            log(f"\n{m.tool} {m.direction} {m.phase} failed: {m.note}\n{m.stderr_tail}")
    for note in bench.notes:
        log(f"note: {note}")


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20).stdout.strip()
    except OSError as exc:
        return f"unavailable: {exc}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"scale {dav_org.QUICK_SCALE} (2,000 events, 500 vCards)")
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = 40,000 events and 10,000 vCards")
    ap.add_argument("--direction", choices=[*DIRECTIONS, "both"], default="both")
    ap.add_argument("--tools", default="mailferry,vdirsyncer", help="comma-separated subset of mailferry,vdirsyncer")
    ap.add_argument("--keep", type=Path, default=None,
                    help="work in DIR and keep it (servers' data, configs, vdirsyncer status); default: a temp dir")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out",
                    help="organization cache, logs and dav-results.json (default bench/out)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds before one tool run is killed")
    ap.add_argument("--radicale-max-connections", type=int, default=None,
                    help="Radicale's [server] max_connections (default: Radicale's own, 8)")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - {"mailferry", "vdirsyncer"}:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")
    directions = list(DIRECTIONS) if args.direction == "both" else [args.direction]
    spec = dav_org.OrgSpec(dav_org.QUICK_SCALE if args.quick else args.scale)
    started = time.time()
    t0 = time.perf_counter()
    cache = dav_org.write_tree(spec, args.out, log=log)
    generate_s = time.perf_counter() - t0
    org = dav_org.organization(spec)
    if args.keep:
        work = args.keep.resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="mf-dav-bench-"))
    bench = DavBench(args, org, cache, work)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # so that the finally below stops the servers

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        for direction in directions:
            bench.run_direction(direction, tools)
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(bench)
    manifest = json.loads((cache / "manifest.json").read_text())
    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "args": {"scale": spec.scale, "directions": directions, "tools": tools, "timeout": args.timeout,
                 "radicale_max_connections": args.radicale_max_connections},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "vdirsyncer": _version([bench.vdirsyncer, "--version"]),
                    "radicale": _version([sys.executable, "-m", "radicale", "--version"])},
        "organization": {k: manifest[k] for k in ("spec", "calendars", "addressbooks", "stats", "shared_calendars")}
        | {"generate_s_this_run": round(generate_s, 1), "cache": str(cache)},
        "seeding": bench.seeding,
        "commands": bench.commands,
        "measures": [asdict(m) for m in bench.measures],
        **summary,
    }
    out = args.out / "dav-results.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print_table(summary, bench)
    log(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
