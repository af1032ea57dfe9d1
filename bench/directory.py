"""Benchmark ``mailferry directory plan`` and ``directory apply`` on 10,000 people (issue 3).

Usage: python bench/directory.py [--people N] [--out bench/out] [--repeat 3] [--group-size 100] [--profile]

Two throw-away OpenLDAP servers (generic dialect) on 127.0.0.1. The source holds N people, the
target N entries: N/2 users the source people match by address (``smtp`` rule), N/4 address-book
entries (contacts) standing for source people, and N/4 filler users that match nobody; the last
quarter of the source has nothing in the target. Expected plan: N/2 ``matched``, N/4
``contact_to_merge``, N/4 ``to_create``. See bench/README.md ("Directory benchmark").
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import io
import json
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mailferry.formats.ldif import entry_to_ldif, rdn
from mailferry.sandbox.ldap_servers import Slapd
from mailferry.sandbox.servers import free_port

SRC_SUFFIX, TGT_SUFFIX = "dc=src,dc=test", "dc=tgt,dc=test"
SRC_PW, TGT_PW = "srcpw", "tgtpw"
GIVEN = ["Anna", "Bruno", "Chloé", "Dmitri", "Eva", "Frank", "Grete", "Hugo", "Inès", "Jürgen", "Kai", "Lena"]
SURNAMES = ["Meyer", "Novak", "O'Brien", "Petrov", "Quinn", "Rossi", "Schäfer", "Tanaka", "Umar", "Vogel"]
TITLES = ["Accountant", "Engineer", "Sales", "Support", "Manager", "Counsel"]
ENV = {"MF_BENCH_SRC": SRC_PW, "MF_BENCH_TGT": TGT_PW, "MF_BENCH_IMAP": "unused"}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- data


class Layout:
    """Who is what. Source person i: i < matched -> matched; < matched + merge -> contact to
    merge; else to create. Target: ``matched`` users, ``merge`` contacts, ``filler`` users."""

    def __init__(self, n: int, group_size: int) -> None:
        self.n = n
        self.matched = n // 2
        self.merge = n // 4
        self.create = n - self.matched - self.merge
        self.filler = n - self.matched - self.merge  # the target has n entries (groups aside)
        self.group_size = max(1, group_size)

    def expected_counts(self) -> dict[str, int]:
        return {"matched": self.matched, "contact_to_merge": self.merge, "to_create": self.create}


def _names(i: int) -> tuple[str, str, str]:
    given, sn = GIVEN[i % len(GIVEN)], SURNAMES[(i // len(GIVEN)) % len(SURNAMES)]
    # Every 50th cn has a comma (RFC 4514 escaping in DNs); all are unique by the number.
    cn = f"{sn}, {given} {i:05d}" if i % 50 == 7 else f"{given} {sn} {i:05d}"
    return given, sn, cn


def source_ldif(lay: Layout) -> tuple[str, int]:
    users, groups = f"ou=Users,{SRC_SUFFIX}", f"ou=Groups,{SRC_SUFFIX}"
    parts = [f"dn: {groups}\nobjectClass: organizationalUnit\nou: Groups\n"]
    dns: list[str] = []
    for i in range(lay.n):
        given, sn, cn = _names(i)
        dn = f"{rdn('cn', cn)},{users}"
        dns.append(dn)
        parts.append(
            entry_to_ldif(
                dn,
                {
                    "objectClass": ["inetOrgPerson", "mailAlternateRecipient"],
                    "uid": [f"u{i:05d}"],
                    "cn": [cn],
                    "sn": [sn],
                    "givenName": [given],
                    "mail": [f"u{i:05d}@src.test"],
                    "mailAlternateAddress": [f"u{i:05d}.old@src.test"],
                    "title": [TITLES[i % len(TITLES)]],
                    "telephoneNumber": [f"+41 44 {i // 100:03d} {i % 100:02d} 00"],
                },
            )
        )
    ngroups = 0
    for k in range(0, lay.n, lay.group_size):
        parts.append(
            entry_to_ldif(
                f"cn=Team {ngroups:04d},{groups}",
                {
                    "objectClass": ["groupOfNames"],
                    "cn": [f"Team {ngroups:04d}"],
                    "member": dns[k : k + lay.group_size],
                },
            )
        )
        ngroups += 1
    return "\n".join(parts), ngroups


def target_ldif(lay: Layout) -> tuple[str, int]:
    users, contacts, groups = (f"ou={o},{TGT_SUFFIX}" for o in ("Users", "Contacts", "Groups"))
    parts = [f"dn: {o}\nobjectClass: organizationalUnit\nou: {o.split(',')[0][3:]}\n" for o in (contacts, groups)]
    for i in range(lay.matched):
        # Even: the target user has the source's mail as its alias; odd: the source's alias.
        # Either way the source's other address is missing (apply adds it: old addresses kept).
        alias = f"u{i:05d}@src.test" if i % 2 == 0 else f"u{i:05d}.old@src.test"
        parts.append(
            entry_to_ldif(
                f"cn=Target {i:05d},{users}",
                {
                    "objectClass": ["inetOrgPerson", "mailAlternateRecipient"],
                    "uid": [f"t{i:05d}"],
                    "cn": [f"Target {i:05d}"],
                    "sn": ["Target"],
                    "mail": [f"t{i:05d}@tgt.test"],
                    "mailAlternateAddress": [alias],
                    "title": ["Staff"],
                },
            )
        )
    contact_dns: list[str] = []
    for i in range(lay.matched, lay.matched + lay.merge):
        dn = f"cn=Contact {i:05d},{contacts}"
        contact_dns.append(dn)
        parts.append(
            entry_to_ldif(
                dn,
                {  # an address-book entry: inetOrgPerson without uid
                    "objectClass": ["inetOrgPerson"],
                    "cn": [f"Contact {i:05d}"],
                    "sn": ["Contact"],
                    "mail": [f"u{i:05d}@src.test"],
                    "telephoneNumber": [f"+1 555 {i:05d}"],
                    "description": ["partner"],
                },
            )
        )
    for j in range(lay.filler):
        parts.append(
            entry_to_ldif(
                f"cn=Filler {j:05d},{users}",
                {
                    "objectClass": ["inetOrgPerson", "mailAlternateRecipient"],
                    "uid": [f"f{j:05d}"],
                    "cn": [f"Filler {j:05d}"],
                    "sn": ["Filler"],
                    "mail": [f"f{j:05d}@tgt.test"],
                },
            )
        )
    ngroups = 0
    for k in range(0, len(contact_dns), lay.group_size):
        parts.append(
            entry_to_ldif(
                f"cn=Partners {ngroups:04d},{groups}",
                {
                    "objectClass": ["groupOfNames"],
                    "cn": [f"Partners {ngroups:04d}"],
                    "member": contact_dns[k : k + lay.group_size],
                },
            )
        )
        ngroups += 1
    return "\n".join(parts), ngroups


def load(server: Slapd, ldif: str) -> float:
    """One ``ldapadd`` for the whole LDIF (the sandbox's add_ldif has a 60 s timeout)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["ldapadd", "-x", "-H", server.uri, "-D", server.root_dn, "-w", server.root_pw, "-o", "nettimeout=30"],
        input=ldif.encode(),
        capture_output=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ldapadd into {server.suffix} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- project


def write_project(work: Path, src: Slapd, tgt: Slapd, imap_ports: tuple[int, int]) -> Path:
    d = work / "project"
    d.mkdir(parents=True, exist_ok=True)
    side = lambda role, port: (  # noqa: E731
        f'[{role}]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'[{role}.admin]\nuser = "admin"\npassword = "env:MF_BENCH_IMAP"\n\n'
    )
    ldap = lambda role, s, env, bases: (  # noqa: E731
        f'[directory.{role}]\nurl = "ldap://127.0.0.1:{s.port}"\nbind_dn = "{s.root_dn}"\n'
        f'password = "env:{env}"\ndialect = "generic"\nbases = {json.dumps(bases)}\n\n'
    )
    text = (
        '[project]\nname = "directory-bench"\n\n[accounts]\ncsv = "accounts.csv"\n\n'
        + side("source", imap_ports[0])
        + side("target", imap_ports[1])
        + f'[directory]\ntarget_container = "{tgt.users_dn}"\nrules = ["smtp", "login"]\n'
        "confirm_mailboxes = false\n\n"
        + ldap("source", src, "MF_BENCH_SRC", [src.users_dn, f"ou=Groups,{SRC_SUFFIX}"])
        + ldap("target", tgt, "MF_BENCH_TGT", [tgt.users_dn, f"ou=Contacts,{TGT_SUFFIX}", f"ou=Groups,{TGT_SUFFIX}"])
        + '[directory.create]\nobjectClass = "top person organizationalPerson inetOrgPerson mailAlternateRecipient"\n\n'
        '[directory.lock]\nemployeeType = "locked"\n'
    )
    (d / "project.toml").write_text(text)
    return d / "project.toml"


class Tripwire:
    """Listens on the IMAP ports the project names and counts connections: plan and apply with
    ``confirm_mailboxes = false`` must make none."""

    def __init__(self, ports: tuple[int, int]) -> None:
        self.hits = 0
        self.socks = []
        for p in ports:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            s.listen(8)
            s.settimeout(0.2)
            self.socks.append(s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            for s in self.socks:
                with contextlib.suppress(TimeoutError, OSError):
                    conn, _ = s.accept()
                    self.hits += 1
                    conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for s in self.socks:
            s.close()


# --------------------------------------------------------------------------- measuring


def run_cli(name: str, argv: list[str], logs: Path) -> dict[str, Any]:
    """Run under GNU time: wall seconds and peak RSS (KB) of the mailferry process."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err, tf = logs / f"{name}.json", logs / f"{name}.err", logs / f"{name}.time"
    env = os.environ | ENV
    with out.open("wb") as fo, err.open("wb") as fe:
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", str(tf), *argv],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=3600,
        )
        wall = time.perf_counter() - t0
    e, m = tf.read_text().strip().splitlines()[-1].split()
    r: dict[str, Any] = {
        "name": name,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 3),
        "time_e_s": float(e),
        "max_rss_mb": round(int(m) / 1024, 1),
        "stdout": str(out),
    }
    try:
        r["data"] = json.loads(out.read_text())
    except ValueError:
        r["data"] = None
        r["stderr_tail"] = err.read_text(errors="replace")[-3000:]
    if proc.returncode != 0:
        r["stderr_tail"] = err.read_text(errors="replace")[-3000:]
    return r


class LdapCounter:
    """Counts ldap3 requests in this process: every ``Connection.search`` call is one request on the
    wire (paged_search calls it once per page); a call without a paging cookie starts a search."""

    def __init__(self) -> None:
        import ldap3

        self.ldap3 = ldap3
        self.c: Counter[str] = Counter()
        self.unpaged: list[str] = []
        self.saved = {n: getattr(ldap3.Connection, n) for n in ("search", "add", "modify", "delete")}

    def __enter__(self) -> LdapCounter:
        orig_search = self.saved["search"]
        sig = inspect.signature(orig_search)
        c = self.c

        def search(conn: Any, *a: Any, **kw: Any) -> Any:
            b = sig.bind(conn, *a, **kw).arguments
            c["requests"] += 1
            if not b.get("paged_cookie"):
                c["searches"] += 1
                c["paged_searches" if b.get("paged_size") else "unpaged_searches"] += 1
                if not b.get("paged_size") and len(self.unpaged) < 10:
                    self.unpaged.append(f"{b.get('search_base')!r} {b.get('search_filter')}")
            res = orig_search(conn, *a, **kw)
            c["entries"] += sum(1 for e in conn.response or () if e.get("type") == "searchResEntry")
            return res

        self.ldap3.Connection.search = search
        for name in ("add", "modify", "delete"):
            orig = self.saved[name]

            def op(conn: Any, *a: Any, _orig: Any = orig, _name: str = name, **kw: Any) -> Any:
                c[_name] += 1
                return _orig(conn, *a, **kw)

            setattr(self.ldap3.Connection, name, op)
        return self

    def __exit__(self, *exc: object) -> None:
        for n, f in self.saved.items():
            setattr(self.ldap3.Connection, n, f)


def in_process_plan(project_path: Path, *, profile: bool) -> dict[str, Any]:
    from mailferry import api
    from mailferry.config.load import load_project

    for k, v in ENV.items():
        os.environ[k] = v
    project = load_project(project_path)
    out: dict[str, Any] = {}
    with LdapCounter() as lc:
        t0 = time.perf_counter()
        r = api.directory_plan(project)
        out["wall_s"] = round(time.perf_counter() - t0, 3)
    out["ldap"] = dict(lc.c) | {"unpaged_examples": lc.unpaged}
    out["counts"] = r.data["counts"]
    out["read_seconds"], out["plan_seconds"] = r.data["read_seconds"], r.data["plan_seconds"]
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        api.directory_plan(load_project(project_path))
        prof.disable()
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(20)
            out[f"profile_{key}"] = buf.getvalue()
    return out


def count_target(tgt: Slapd) -> dict[str, int]:
    from ldap3 import SUBTREE, Connection, Server

    c = Connection(Server("127.0.0.1", port=tgt.port), tgt.root_dn, tgt.root_pw, auto_bind=True)
    out: dict[str, int] = {}
    for name, base, flt in (
        ("users", tgt.users_dn, "(&(objectClass=inetOrgPerson)(uid=*))"),
        ("locked_users", tgt.users_dn, "(&(objectClass=inetOrgPerson)(uid=*)(employeeType=locked))"),
        ("contacts", TGT_SUFFIX, "(&(objectClass=inetOrgPerson)(!(uid=*)))"),
    ):
        gen = c.extend.standard.paged_search(
            base, flt, search_scope=SUBTREE, attributes=["1.1"], paged_size=1000, generator=True
        )
        out[name] = sum(1 for e in gen if e.get("type") == "searchResEntry")
    c.unbind()
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--repeat", type=int, default=3, help="plan runs (the median is reported)")
    ap.add_argument("--group-size", type=int, default=100, help="members per group, both sides")
    ap.add_argument("--profile", action="store_true", help="always profile the plan in-process")
    args = ap.parse_args()
    if args.people < 4:
        ap.error("--people must be at least 4")
    out: Path = args.out.resolve()
    work, logs = out / "directory-work", out / "logs" / "directory"
    for d in (work, logs):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    mf = shutil.which("mailferry")
    mailferry = [mf] if mf else [sys.executable, "-c", "from mailferry.cli.main import run; run()"]
    lay = Layout(args.people, args.group_size)
    res: dict[str, Any] = {
        "people": lay.n,
        "expected": lay.expected_counts(),
        "group_size": lay.group_size,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "failures": [],
    }
    fail = res["failures"].append

    src = Slapd.start(work / "src-ldap", suffix=SRC_SUFFIX, root_pw=SRC_PW)
    tgt = Slapd.start(work / "tgt-ldap", suffix=TGT_SUFFIX, root_pw=TGT_PW)
    ports = (free_port(), free_port())
    trip = Tripwire(ports)
    try:
        t0 = time.perf_counter()
        s_ldif, s_groups = source_ldif(lay)
        t_ldif, t_groups = target_ldif(lay)
        gen_s = time.perf_counter() - t0
        log(f"LDIF generated in {gen_s:.1f} s; loading source ({lay.n} people, {s_groups} groups) ...")
        s_load = load(src, s_ldif)
        log(f"  source loaded in {s_load:.1f} s; loading target ({lay.n} entries, {t_groups} groups) ...")
        t_load = load(tgt, t_ldif)
        log(f"  target loaded in {t_load:.1f} s")
        res["setup"] = {
            "ldif_s": round(gen_s, 2),
            "load_source_s": round(s_load, 2),
            "load_target_s": round(t_load, 2),
            "source_groups": s_groups,
            "target_groups": t_groups,
            "target_layout": {"matched_users": lay.matched, "contacts": lay.merge, "filler_users": lay.filler},
        }
        res["target_before"] = count_target(tgt)
        project = write_project(work, src, tgt, ports)
        res["project"] = project.read_text()

        plans = []
        for k in range(args.repeat):
            r = run_cli(f"plan-{k + 1}", [*mailferry, "directory", "plan", str(project), "--json"], logs)
            plans.append(r)
            log(f"plan {k + 1}: {r['wall_s']:.2f} s, {r['max_rss_mb']:.0f} MB, exit {r['exit_code']}")
        good = [p for p in plans if p["exit_code"] == 0 and p["data"]]
        counts = good[0]["data"]["counts"] if good else None
        res["plan"] = {
            "runs": [{k: v for k, v in p.items() if k != "data"} for p in plans],
            "median_s": round(statistics.median(p["wall_s"] for p in good), 3) if good else None,
            "max_rss_mb": max((p["max_rss_mb"] for p in plans), default=None),
            "counts": counts,
            "read_seconds": [p["data"]["read_seconds"] for p in good],
            "plan_seconds": [p["data"]["plan_seconds"] for p in good],
            "source_people": good[0]["data"]["source_people"] if good else None,
            "target_people": good[0]["data"]["target_people"] if good else None,
            "actions": dict(Counter(a["action"] for a in good[0]["data"]["actions"])) if good else None,
            "problems": good[0]["data"]["problems"][:10] if good else None,
        }
        if len(good) != len(plans):
            fail(f"plan failed: exit codes {[p['exit_code'] for p in plans]}: {plans[0].get('stderr_tail', '')}")
        if counts != lay.expected_counts():
            fail(f"plan counts {counts} != expected {lay.expected_counts()}")

        median = res["plan"]["median_s"] or 0.0
        log("plan in-process (counting LDAP requests) ...")
        ip = in_process_plan(project, profile=args.profile or median > 3.0)
        res["plan_in_process"] = ip
        res["plan"]["ldap"] = ip["ldap"]
        per_person = lay.n * 2  # what a per-person-per-rule planner would need at least
        if ip["ldap"].get("requests", 0) >= per_person / 10:
            fail(f"plan issued {ip['ldap'].get('requests')} LDAP requests for {lay.n} people")

        a1 = run_cli("apply-1", [*mailferry, "directory", "apply", str(project), "--json"], logs)
        log(f"apply: {a1['wall_s']:.2f} s, {a1['max_rss_mb']:.0f} MB, exit {a1['exit_code']}")
        a2 = run_cli("apply-2", [*mailferry, "directory", "apply", str(project), "--json"], logs)
        log(f"re-apply: {a2['wall_s']:.2f} s, {a2['max_rss_mb']:.0f} MB, exit {a2['exit_code']}")
        keys = (
            "created",
            "merged",
            "addresses_added",
            "mail_attributes_set",
            "skipped",
            "failed",
            "mailboxes_confirmed",
            "seconds",
            "plan_seconds",
        )
        expect1 = {"created": lay.create + lay.merge, "merged": lay.merge, "addresses_added": lay.matched, "failed": 0}
        expect2 = {"created": 0, "merged": 0, "addresses_added": 0, "failed": 0}
        for name, r, exp in (("apply", a1, expect1), ("reapply", a2, expect2)):
            d = r["data"] or {}
            got = {k: d.get(k) for k in keys}
            res[name] = {
                **{k: v for k, v in r.items() if k != "data"},
                **got,
                "findings": (d.get("findings") or [])[:10],
                "findings_total": len(d.get("findings") or []),
                "identity_rows": len(d.get("identity") or []),
            }
            bad = {k: (got.get(k), v) for k, v in exp.items() if got.get(k) != v}
            if r["exit_code"] != 0 or bad:
                fail(
                    f"{name}: exit {r['exit_code']}, (got, expected) {bad}; "
                    f"findings {(d.get('findings') or [])[:3]} {r.get('stderr_tail', '')[-500:]}"
                )
        res["target_after"] = count_target(tgt)
        exp_after = {
            "users": lay.matched + lay.filler + lay.create + lay.merge,
            "locked_users": lay.create + lay.merge,
            "contacts": 0,
        }
        if res["target_after"] != exp_after:
            fail(f"target after apply {res['target_after']} != expected {exp_after}")
        after = in_process_plan(project, profile=False)
        res["plan_after_apply"] = {"counts": after["counts"], "ldap": after["ldap"], "wall_s": after["wall_s"]}
        if after["counts"] != {"matched": lay.n}:
            fail(f"plan after apply: {after['counts']} (expected all {lay.n} matched)")
        res["imap_connections"] = trip.hits
        if trip.hits:
            fail(f"{trip.hits} connection(s) to the unused IMAP ports during plan/apply")
    finally:
        trip.close()
        src.stop()
        tgt.stop()

    report(res)
    (out / "directory-results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    log(f"\nwritten: {out / 'directory-results.json'}")
    return 1 if res["failures"] else 0


def report(res: dict[str, Any]) -> None:
    p, a1, a2 = res.get("plan", {}), res.get("apply", {}), res.get("reapply", {})
    ld = p.get("ldap", {})
    rows = [
        (
            "plan (median)",
            p.get("median_s"),
            p.get("max_rss_mb"),
            f"read {min(p.get('read_seconds') or [0])} s + match/plan {min(p.get('plan_seconds') or [0])} s",
        ),
        (
            "apply",
            a1.get("wall_s"),
            a1.get("max_rss_mb"),
            f"created {a1.get('created')}, merged {a1.get('merged')}, addresses {a1.get('addresses_added')}, "
            f"failed {a1.get('failed')}",
        ),
        (
            "re-apply",
            a2.get("wall_s"),
            a2.get("max_rss_mb"),
            f"created {a2.get('created')}, merged {a2.get('merged')}, addresses {a2.get('addresses_added')}, "
            f"failed {a2.get('failed')}",
        ),
    ]
    log(f"\nDirectory benchmark: {res['people']} source people, {res['people']} target entries")
    log(f"{'run':<15}{'wall s':>9}{'RSS MB':>9}  notes")
    for name, s, m, note in rows:
        log(f"{name:<15}{s if s is not None else '-':>9}{m if m is not None else '-':>9}  {note}")
    log(f"plan counts:   {p.get('counts')} (expected {res['expected']})")
    log(
        f"plan LDAP:     {ld.get('searches')} searches ({ld.get('paged_searches')} paged), "
        f"{ld.get('requests')} requests/pages, {ld.get('entries')} entries read"
    )
    log(f"IMAP connections during plan/apply: {res.get('imap_connections')}")
    for f in res["failures"]:
        log(f"FAILED: {f}")


if __name__ == "__main__":
    sys.exit(main())
