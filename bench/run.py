"""Benchmark mailferry against Dovecot dsync, mbsync and a plain copy, in the same run.

Usage: python bench/run.py [--quick] [--repeat N] [--out bench/out] [--timeout S]

Every tool copies the same source mailbox (two private Dovecot 2.3 servers on 127.0.0.1) into a
fresh, empty target; we report medians and ratios, because shared machines are noisy and only
figures taken side by side in one run compare. See bench/README.md for how to read the output.
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
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_mod  # noqa: E402

from mailferry.sandbox.servers import DovecotServer, _mail_owner  # noqa: E402

USER, USER_PW = "bench", "benchpw"
ADMIN = ("admin", "adminpw")
PARALLEL_USERS = 8
NOOP_RUNS = 5
QUOTA_MB = 1_000_000
# Targets from the issue.
TARGET_DSYNC_RATIO = 0.75
TARGET_NOOP_S = 0.5
TARGET_RSS_MB = 250.0


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- running a tool


@dataclass
class Run:
    tool: str
    rep: int
    argv: list[str]
    wall_s: float = 0.0
    exit_code: int | None = None
    max_rss_mb: float = 0.0
    timed_out: bool = False
    ok: bool = False
    target_messages: int | None = None
    expected_messages: int | None = None
    note: str = ""
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def run_tool(tool: str, rep: int, argv: list[str], *, timeout: float, logdir: Path, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> Run:
    """Run ``argv`` as a new process group; wall time, exit code and peak RSS (``wait4``'s
    rusage, which for a reaped child covers it and the descendants it reaped)."""
    logdir.mkdir(parents=True, exist_ok=True)
    stem = f"{tool}-{rep}-{time.monotonic_ns()}"
    out_path, err_path = logdir / f"{stem}.out", logdir / f"{stem}.err"
    r = Run(tool, rep, argv)
    rss_path = logdir / f"{stem}.rss"
    # Linux keeps ru_maxrss across execve, and Popen may vfork: measured straight from this (big)
    # process, every tool would inherit our own peak. GNU time forks from a small process.
    timer_bin = shutil.which("time") or "/usr/bin/time"
    wrapped = [timer_bin, "-f", "%M", "-o", str(rss_path), *argv] if Path(timer_bin).exists() else argv
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True)
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        r.wall_s = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    r.exit_code = proc.returncode
    r.timed_out = fired.is_set()
    r.max_rss_mb = usage.ru_maxrss / 1024.0
    r.extra["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)  # the tool's own CPU (user + system)
    r.extra["user_s"], r.extra["sys_s"] = round(usage.ru_utime, 2), round(usage.ru_stime, 2)
    with contextlib.suppress(OSError, ValueError):
        r.max_rss_mb = int(rss_path.read_text().split()[-1]) / 1024.0
    r.extra["stdout_file"] = str(out_path)
    r.extra["stderr_file"] = str(err_path)
    err_text = err_path.read_bytes().decode(errors="replace")
    r.stderr_tail = "\n".join(err_text.strip().splitlines()[-15:])
    r.ok = r.exit_code == 0 and not r.timed_out
    if r.timed_out:
        r.note = f"timed out after {timeout:.0f} s"
    elif r.exit_code != 0:
        r.note = f"exit code {r.exit_code}"
    return r


# --------------------------------------------------------------------------- servers


def server_cpu(server: DovecotServer) -> float:
    """CPU seconds (user + system) the server's processes have used, its exited children (the
    imap processes, reaped by Dovecot's master) included: read before and after a tool run, the
    difference is what the server spent on that run."""
    proc = server._proc
    if proc is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [proc.pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for i, pid in enumerate(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if i == 0:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: the master's reaped children
    return total / tick


@contextlib.contextmanager
def server_time(r_holder: list[Any], source: DovecotServer, target: DovecotServer | None) -> Any:
    """Record on the run in ``r_holder[0]`` the CPU the source and target servers spent on it."""
    s0, t0 = server_cpu(source), server_cpu(target) if target else 0.0
    yield
    time.sleep(0.5)  # let the imap processes exit and be reaped
    r = r_holder[0]
    r.extra["source_server_cpu_s"] = round(server_cpu(source) - s0, 2)
    if target is not None:
        r.extra["target_server_cpu_s"] = round(server_cpu(target) - t0, 2)


@contextlib.contextmanager
def straced(enabled: bool, pid: int | None, out: Path) -> Any:
    """``strace -c -f`` attached to ``pid`` (a server's master: its imap processes forked later
    are followed) for the duration: system calls by count and time, written to ``out``."""
    if not enabled or pid is None or shutil.which("strace") is None:
        yield
        return
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)


def folder_counts(server: DovecotServer, user: str) -> dict[str, int]:
    """Messages per folder. (doveadm 2.3.19 patterns like '*' match nothing with this namespace
    setup, so we list the names and ask for each.)"""
    names = [n for n in server.doveadm("mailbox", "list", "-u", user).splitlines() if n.strip()]
    out = server.doveadm("-f", "tab", "mailbox", "status", "-u", user, "messages", *names)
    res = {}
    for name, row in zip(names, out.strip().splitlines()[1:], strict=True):
        res[name] = int(row.rsplit("\t", 1)[-1])
    return res


def count_messages(server: DovecotServer, user: str) -> int:
    return sum(folder_counts(server, user).values())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        self.out: Path = args.out.resolve()
        self.work = self.out / "work"
        self.logs = self.out / "logs"
        self.n = 1000 if args.quick else 10_000
        self.servers: list[DovecotServer] = []
        self.runs: list[Run] = []
        self.commands: dict[str, str] = {}
        self.notes: list[str] = []
        self.uid, self.gid = _mail_owner()
        mf = shutil.which("mailferry")
        self.mailferry = [mf] if mf else [sys.executable, "-c", "from mailferry.cli.main import run; run()"]
        self.source: DovecotServer | None = None
        self.expected: dict[str, int] = {}
        self.corpus_root: Path | None = None
        self.passwords = {USER: USER_PW} | {f"u{k + 1}": f"u{k + 1}pw" for k in range(PARALLEL_USERS)}

    # ---- lifecycle

    def start_server(self, base: Path, users: dict[str, str], *, wipe: bool = True,
                     style: str = "slash") -> DovecotServer:
        if wipe and base.exists():
            shutil.rmtree(base)
        # A (huge) quota limit on every server, the same for every tool. (It was first set because
        # mailferry tripped over Dovecot's empty GETQUOTAROOT answer; the connector handles that now.)
        server = DovecotServer.start(base, style=style, users=users, master=ADMIN, quota_mb=QUOTA_MB)
        self.servers.append(server)
        return server

    def drop_server(self, server: DovecotServer) -> None:
        server.close()
        with contextlib.suppress(ValueError):
            self.servers.remove(server)
        shutil.rmtree(server.base_dir, ignore_errors=True)

    def close(self) -> None:
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                server.close()
        self.servers.clear()

    def fresh_target(self, name: str, users: dict[str, str]) -> DovecotServer:
        return self.start_server(self.work / "targets" / name, users)

    def precompile(self) -> None:
        """Byte-compile mailferry as an installed wheel is (pip compiles at install). Where
        PYTHONDONTWRITEBYTECODE is set, as on the benchmark machine, an editable install never
        writes its .pyc files and every mailferry process compiled its own modules from source
        again (~0.15-0.2 s of each process start, a quarter of the no-op re-run)."""
        import mailferry

        pkg = Path(mailferry.__file__).resolve().parent
        proc = subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], capture_output=True, text=True,
                              check=False)
        self.notes.append(f"byte-compiled {pkg} (compileall exit {proc.returncode}); "
                          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")

    # ---- source

    def prepare_source(self) -> dict[str, Any]:
        spec = corpus_mod.CorpusSpec(self.n)
        t0 = time.perf_counter()
        root = corpus_mod.build(spec, self.out, log=log)
        gen_s = time.perf_counter() - t0
        manifest = json.loads((root / "manifest.json").read_text())
        base = self.work / "source"
        if base.exists():
            shutil.rmtree(base)
        users = dict(self.passwords)
        self.corpus_root = root
        if "floor" in self.tools:  # its CRLF copy of the corpus, once (not timed)
            subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "floor.py"), "prepare", str(root)],
                           check=True, capture_output=True)
        t0 = time.perf_counter()
        # Write the maildirs before Dovecot starts (it then only has to index them).
        homes = base / "home"
        self.expected[USER] = corpus_mod.install(root, homes / USER, self.uid, self.gid)
        for k in range(PARALLEL_USERS):
            self.expected[f"u{k + 1}"] = corpus_mod.install(root, homes / f"u{k + 1}", self.uid, self.gid,
                                                            part=(k, PARALLEL_USERS))
        os.chown(homes, self.uid, self.gid)
        self.source = self.start_server(base, users, wipe=False, style="dotted")
        # Index every folder once (uidlist, index, sizes) so no tool pays for a cold index alone, and
        # pull the files into the page cache.
        for user in users:
            names = [n for n in self.source.doveadm("mailbox", "list", "-u", user).splitlines() if n.strip()]
            for fields in ("uid guid size.physical date.received flags", "hdr"):
                for name in names:
                    self.source.doveadm("fetch", "-u", user, fields, "mailbox", name, "all")
        subprocess.run(["sh", "-c", f"find {shlex.quote(str(homes))} -type f -exec cat {{}} + >/dev/null"],
                       check=False)
        seed_s = time.perf_counter() - t0
        got = count_messages(self.source, USER)
        if got != self.expected[USER]:
            raise SystemExit(f"source has {got} messages, corpus {self.expected[USER]}")
        folders = folder_counts(self.source, USER)
        log(f"source ready on port {self.source.port}: {got} messages in {len(folders)} folders, "
            f"{manifest['bytes'] / 1e6:.1f} MB (corpus {gen_s:.1f} s, seed+index {seed_s:.1f} s)")
        return {"manifest": manifest, "corpus_dir": str(root), "corpus_seconds": round(gen_s, 2),
                "seed_index_seconds": round(seed_s, 2), "source_folders": folders}

    # ---- tools

    def project(self, name: str, target: DovecotServer, users: list[str], *, parallel: int | None = None) -> Path:
        assert self.source is not None
        d = self.work / "projects" / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        (d / "accounts.csv").write_text("source_user,target_user\n" + "".join(f"{u},{u}\n" for u in users))
        blocks = []
        for role, server in (("source", self.source), ("target", target)):
            blocks.append(f'[{role}]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
                          f'[{role}.admin]\nuser = "{ADMIN[0]}"\npassword = "env:MF_BENCH_{role.upper()}"\n')
        settings = ([f"accounts_in_parallel = {parallel}"] if parallel else []) + list(self.args.performance)
        perf = "\n[performance]\n" + "\n".join(settings) + "\n" if settings else ""
        text = '[project]\nname = "bench"\n\n[accounts]\ncsv = "accounts.csv"\n\n' + "\n".join(blocks) + perf
        path = d / "project.toml"
        path.write_text(text)
        return path

    def mf_env(self) -> dict[str, str]:
        return os.environ | {"MF_BENCH_SOURCE": ADMIN[1], "MF_BENCH_TARGET": ADMIN[1]}

    def check_count(self, r: Run, target: DovecotServer, users: list[str]) -> None:
        try:
            got = sum(count_messages(target, u) for u in users)
        except Exception as exc:  # the target may be empty or broken after a failed run
            got = None
            r.note = (r.note + "; " if r.note else "") + f"count failed: {str(exc)[:200]}"
        r.target_messages = got
        r.expected_messages = sum(self.expected[u] for u in users)
        if got != r.expected_messages:
            r.ok = False
            r.note = (r.note + "; " if r.note else "") + f"target has {got} of {r.expected_messages} messages"

    def run_mailferry(self, rep: int, *, keep: bool) -> tuple[DovecotServer, Path] | None:
        """One timed migrate into a fresh target. ``keep``: the target and project are returned
        (for :meth:`after_mailferry`, run once the repetition's pair is over) instead of dropped."""
        target = self.fresh_target(f"mailferry-{rep}", {USER: USER_PW})
        try:
            proj = self.project(f"mailferry-{rep}", target, [USER])
            argv = [*self.mailferry, "migrate", str(proj), "--json"]
            self.commands.setdefault("mailferry", shlex.join(argv))
            holder: list[Any] = []
            assert self.source is not None
            with straced(self.args.strace, target._proc.pid if target._proc else None,
                         self.logs / f"strace-target-mailferry-{rep}.txt"), \
                    server_time(holder, self.source, target):
                holder.append(r := run_tool("mailferry", rep, argv, timeout=self.args.timeout, logdir=self.logs,
                                            env=self.mf_env()))
            self.check_count(r, target, [USER])
            self.attach_json(r)
            self.record(r)
        except BaseException:
            self.drop_server(target)
            raise
        if keep and r.ok:
            return target, proj
        self.drop_server(target)
        return None

    def after_mailferry(self, rep: int, target: DovecotServer, proj: Path, *, verify: bool, noop: bool) -> None:
        """Not timed against a peer: ``verify --deep`` of a run's target, and the no-op re-runs."""
        try:
            argv = [*self.mailferry, "migrate", str(proj), "--json"]
            if verify:
                vargv = [*self.mailferry, "verify", str(proj), "--deep", "--json"]
                self.commands.setdefault("mailferry verify", shlex.join(vargv))
                v = run_tool("mailferry-verify", rep, vargv, timeout=self.args.timeout, logdir=self.logs,
                             env=self.mf_env())
                self.attach_json(v)
                self.record(v)
            if noop:
                for k in range(NOOP_RUNS):
                    n = run_tool("mailferry-noop", k, argv, timeout=120, logdir=self.logs, env=self.mf_env())
                    self.check_count(n, target, [USER])
                    self.attach_json(n)
                    self.record(n)
        finally:
            self.drop_server(target)

    def attach_json(self, r: Run) -> None:
        text = Path(r.extra["stdout_file"]).read_text(errors="replace")
        try:
            r.extra["json"] = json.loads(text)
        except ValueError:
            r.extra["json_error"] = text[-500:]

    def run_dsync(self, rep: int) -> None:
        assert self.source is not None
        target = self.fresh_target(f"dsync-{rep}", {USER: USER_PW})
        try:
            argv = ["doveadm", "-c", str(target.config_path),
                    "-o", "imapc_host=127.0.0.1", "-o", f"imapc_port={self.source.port}",
                    "-o", f"imapc_user={USER}", "-o", f"imapc_password={USER_PW}",
                    "-o", "imapc_features=rfc822.size fetch-headers", "-o", "mail_prefetch_count=20",
                    # The source is Courier-style (INBOX. prefix): map INBOX.X to X.
                    "-o", "imapc_list_prefix=INBOX",
                    *self.args.dsync_extra,
                    "backup", "-R", "-u", USER, "imapc:"]
            self.commands.setdefault("dsync", shlex.join(argv))
            holder: list[Any] = []
            # dsync writes the target's files itself (doveadm, not the target's imap): strace it.
            traced = ["strace", "-c", "-f", "-o", str(self.logs / f"strace-dsync-{rep}.txt"), *argv]
            with server_time(holder, self.source, target):
                holder.append(r := run_tool("dsync", rep, traced if self.args.strace else argv,
                                            timeout=self.args.timeout, logdir=self.logs))
            self.check_count(r, target, [USER])
            self.record(r)
        finally:
            self.drop_server(target)

    def run_mbsync(self, rep: int) -> None:
        assert self.source is not None
        target = self.fresh_target(f"mbsync-{rep}", {USER: USER_PW})
        try:
            d = self.work / "mbsync" / str(rep)
            if d.exists():
                shutil.rmtree(d)
            (d / "state").mkdir(parents=True)
            rc = d / "mbsyncrc"
            rc.write_text(mbsyncrc(self.source.port, target.port, d / "state"))
            argv = ["mbsync", "-c", str(rc), "-q", "bench"]
            self.commands.setdefault("mbsync", shlex.join(argv))
            self.commands.setdefault("mbsyncrc", rc.read_text().replace(USER_PW, "***"))
            r = run_tool("mbsync", rep, argv, timeout=self.args.timeout, logdir=self.logs)
            self.check_count(r, target, [USER])
            self.record(r)
        finally:
            self.drop_server(target)

    def run_cp(self, rep: int) -> None:
        assert self.source is not None
        dst = self.work / "cp" / str(rep)
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        argv = ["cp", "-a", str(self.source.maildir(USER)), str(dst / "Maildir")]
        self.commands.setdefault("cp", shlex.join(argv))
        r = run_tool("cp", rep, argv, timeout=self.args.timeout, logdir=self.logs)
        r.expected_messages = self.expected[USER]
        r.target_messages = sum(1 for p in (dst / "Maildir").rglob("*") if p.parent.name == "cur" and p.is_file())
        r.ok = r.ok and r.target_messages == r.expected_messages
        self.record(r)
        shutil.rmtree(dst, ignore_errors=True)

    def run_parallel(self, rep: int) -> None:
        users = [f"u{k + 1}" for k in range(PARALLEL_USERS)]
        target = self.fresh_target(f"parallel-{rep}", {u: f"{u}pw" for u in users})
        try:
            proj = self.project(f"parallel-{rep}", target, users, parallel=PARALLEL_USERS)
            argv = [*self.mailferry, "migrate", str(proj), "--json"]
            self.commands.setdefault("mailferry 8 accounts", shlex.join(argv) + "   # accounts_in_parallel = 8")
            holder: list[Any] = []
            assert self.source is not None
            with server_time(holder, self.source, target):
                holder.append(r := run_tool("mailferry-8acct", rep, argv, timeout=self.args.timeout, logdir=self.logs,
                                            env=self.mf_env()))
            self.check_count(r, target, users)
            self.attach_json(r)
            self.record(r)
        finally:
            self.drop_server(target)

    def run_floor(self, rep: int, users: list[str], tool: str) -> None:
        """bench/floor.py: ``floor*``, the target's floor over IMAP (the same messages
        MULTIAPPENDed from the corpus files, with no source server, no state and the least client
        work); ``route*``, the route's (the least IMAP-to-IMAP copy: FETCH, then MULTIAPPEND)."""
        assert self.corpus_root is not None and self.source is not None
        target = self.fresh_target(f"{tool}-{rep}", {u: self.passwords[u] for u in users})
        try:
            script = [sys.executable, str(Path(__file__).resolve().parent / "floor.py")]
            conns = ["--port", str(target.port), "--connections", str(self.args.floor_connections)]
            if tool.startswith("route"):
                argv = [*script, "copy", "--from-port", str(self.source.port), *conns,
                        *(f"{u}:{self.passwords[u]}" for u in users)]
            else:
                argv = [*script, "append", *conns, str(self.corpus_root),
                        *(f"{u}:{self.passwords[u]}" + (f":{k}/{len(users)}" if len(users) > 1 else "")
                          for k, u in enumerate(users))]
            self.commands.setdefault(tool, shlex.join(argv))
            holder: list[Any] = []
            assert self.source is not None
            with server_time(holder, self.source, target):
                holder.append(r := run_tool(tool, rep, argv, timeout=self.args.timeout, logdir=self.logs))
            self.check_count(r, target, users)
            self.attach_json(r)
            self.record(r)
        finally:
            self.drop_server(target)

    def record(self, r: Run) -> None:
        self.runs.append(r)
        status = "ok" if r.ok else f"FAILED ({r.note})"
        log(f"  {r.tool:<16} rep {r.rep}: {r.wall_s:8.2f} s  rss {r.max_rss_mb:7.1f} MB  "
            f"msgs {r.target_messages}/{r.expected_messages}  {status}")
        if not r.ok and r.stderr_tail:
            log("    stderr tail:\n" + "\n".join("      " + line for line in r.stderr_tail.splitlines()))


def mbsyncrc(src_port: int, tgt_port: int, state: Path) -> str:
    # isync 1.4 spells it SSLType (1.5 renamed it TLSType). The stores take Path and delimiter
    # from the servers' NAMESPACE (INBOX. and "."), so folder names map one to one.
    accounts = []
    for name, port in (("src", src_port), ("tgt", tgt_port)):
        accounts.append(
            f"IMAPAccount {name}\nHost 127.0.0.1\nPort {port}\nUser {USER}\nPass {USER_PW}\n"
            f"SSLType None\nAuthMechs LOGIN\nPipelineDepth 50\n\nIMAPStore {name}-store\nAccount {name}\n"
        )
    return (
        "\n".join(accounts)
        + f"\nChannel bench\nFar :src-store:\nNear :tgt-store:\nPatterns *\nCreate Near\nSync Pull\n"
        f"Expunge None\nCopyArrivalDate yes\nSyncState {state}/\n"
    )


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(bench: Bench, corpus: dict[str, Any]) -> dict[str, Any]:
    by_tool: dict[str, list[Run]] = {}
    for r in bench.runs:
        by_tool.setdefault(r.tool, []).append(r)
    total_bytes = corpus["manifest"]["bytes"]
    msgs = corpus["manifest"]["messages"]
    tools: dict[str, Any] = {}
    for tool, runs in by_tool.items():
        good = [r.wall_s for r in runs if r.ok]
        med = median(good)
        tools[tool] = {
            "runs": len(runs), "ok_runs": len(good), "times_s": [round(r.wall_s, 3) for r in runs],
            "median_s": round(med, 3) if med is not None else None,
            "max_rss_mb": round(max(r.max_rss_mb for r in runs), 1),
            "msgs_per_s": round(msgs / med, 1) if med else None,
            "mb_per_s": round(total_bytes / 1e6 / med, 1) if med else None,
            "failures": [{"rep": r.rep, "note": r.note, "stderr_tail": r.stderr_tail} for r in runs if not r.ok],
        }
    mf = tools.get("mailferry", {}).get("median_s")

    def ratio(other: str) -> float | None:
        o = tools.get(other, {}).get("median_s")
        return round(mf / o, 3) if mf and o else None

    noop = tools.get("mailferry-noop", {}).get("median_s")
    par = tools.get("mailferry-8acct", {})
    rss = [t["max_rss_mb"] for name, t in tools.items() if name.startswith("mailferry")]
    verify_runs = by_tool.get("mailferry-verify", [])
    verify = None
    if verify_runs:
        v = verify_runs[0]
        verify = {"exit_code": v.exit_code, "clean": v.exit_code == 0, "seconds": round(v.wall_s, 2),
                  "summary": _verify_summary(v.extra.get("json")), "stderr_tail": v.stderr_tail if v.exit_code else ""}
    pairs = paired_ratios(by_tool.get("mailferry", []), by_tool.get("dsync", []))
    par_pairs = paired_ratios(by_tool.get("mailferry-8acct", []), by_tool.get("mailferry", []))
    ratios = {"mailferry/dsync": ratio("dsync"),
              "mailferry/dsync_paired_median": median([p["ratio"] for p in pairs]) if pairs else None,
              "mailferry/mbsync": ratio("mbsync"), "mailferry/cp": ratio("cp"),
              "8acct_vs_single_throughput": (round(par["msgs_per_s"] / tools["mailferry"]["msgs_per_s"], 3)
                                             if par.get("msgs_per_s") and tools.get("mailferry", {}).get("msgs_per_s")
                                             else None),
              # Same messages in total: time ratio single/8acct is the throughput ratio, per repetition.
              "8acct_vs_single_paired_median": (round(1 / statistics.median([p["ratio"] for p in par_pairs]), 3)
                                                if par_pairs else None)}
    # The target's floor over IMAP (bench/floor.py), each ratio paired within a repetition.
    floor_pairs = {
        "mailferry/floor": paired_ratios(by_tool.get("mailferry", []), by_tool.get("floor", [])),
        "floor/dsync": paired_ratios(by_tool.get("floor", []), by_tool.get("dsync", [])),
        "mailferry-8acct/floor-8acct": paired_ratios(by_tool.get("mailferry-8acct", []),
                                                     by_tool.get("floor-8acct", [])),
        "floor-8acct/floor": paired_ratios(by_tool.get("floor-8acct", []), by_tool.get("floor", [])),
        "mailferry/route": paired_ratios(by_tool.get("mailferry", []), by_tool.get("route", [])),
        "route/dsync": paired_ratios(by_tool.get("route", []), by_tool.get("dsync", [])),
        "mailferry-8acct/route-8acct": paired_ratios(by_tool.get("mailferry-8acct", []),
                                                     by_tool.get("route-8acct", [])),
        "route-8acct/route": paired_ratios(by_tool.get("route-8acct", []), by_tool.get("route", [])),
    }
    for name, fp in floor_pairs.items():
        if fp:
            ratios[name + "_paired_median"] = median([p["ratio"] for p in fp])
    dsync_ratio = ratios["mailferry/dsync_paired_median"] or ratios["mailferry/dsync"]
    targets = {
        "mailferry_le_0.75x_dsync": dsync_ratio is not None and dsync_ratio <= TARGET_DSYNC_RATIO,
        "noop_rerun_lt_0.5s": noop is not None and noop < TARGET_NOOP_S,
        "8acct_aggregate_ge_single": ratios["8acct_vs_single_throughput"] is not None
        and ratios["8acct_vs_single_throughput"] >= 1.0,
        "rss_lt_250mb": bool(rss) and max(rss) < TARGET_RSS_MB,
    }
    return {"tools": tools, "ratios": ratios, "pairs": pairs, "pairs_8acct": par_pairs, "targets": targets,
            "pairs_floor": {k: v for k, v in floor_pairs.items() if v},
            "verify_deep": verify,
            "peak_rss_mailferry_mb": max(rss) if rss else None}


def paired_ratios(mine: list[Run], peer: list[Run]) -> list[dict[str, Any]]:
    """``mine``/``peer`` wall time per repetition, for the repetitions where both succeeded. Each
    repetition runs the two back to back, so a pair shares the machine's load of the moment: the
    median of these ratios is steadier on a noisy machine than the ratio of the two medians."""
    peer_by_rep = {r.rep: r for r in peer if r.ok}
    out = []
    for r in mine:
        p = peer_by_rep.get(r.rep)
        if r.ok and p is not None and p.wall_s > 0:
            out.append({"rep": r.rep, "mine_s": round(r.wall_s, 3), "peer_s": round(p.wall_s, 3),
                        "ratio": round(r.wall_s / p.wall_s, 3)})
    return out


def _verify_summary(data: Any) -> Any:
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if not isinstance(v, list | dict)} or list(data)[:20]


def print_table(summary: dict[str, Any], corpus: dict[str, Any], bench: Bench) -> None:
    m = corpus["manifest"]
    log("")
    log(f"corpus: {m['messages']} messages, {m['bytes'] / 1e6:.1f} MB, {m['folder_count']} folders, "
        f"largest {m['largest'] / 1e6:.1f} MB, sizes {m['size_buckets']}")
    log("")
    log(f"{'tool':<17}{'ok/runs':>8}{'median s':>10}{'msgs/s':>9}{'MB/s':>8}{'peak RSS MB':>13}  times (s)")
    for tool, t in summary["tools"].items():
        med = f"{t['median_s']:.3f}" if t["median_s"] is not None else "-"
        ms = f"{t['msgs_per_s']:.0f}" if t["msgs_per_s"] else "-"
        mbs = f"{t['mb_per_s']:.1f}" if t["mb_per_s"] else "-"
        if tool in ("mailferry-noop", "mailferry-verify"):
            ms = mbs = "-"
        runs = f"{t['ok_runs']:>4}/{t['runs']:<3}"
        log(f"{tool:<17}{runs}{med:>10}{ms:>9}{mbs:>8}{t['max_rss_mb']:>13.1f}  {t['times_s']}")
    if summary["pairs"]:
        log("")
        log("pairs (mailferry and dsync back to back): "
            + ", ".join(f"rep {p['rep']}: {p['mine_s']:.1f}/{p['peer_s']:.1f} = {p['ratio']:.3f}"
                        for p in summary["pairs"]))
    if summary["pairs_8acct"]:
        log("pairs (8 accounts / 1 account time): "
            + ", ".join(f"rep {p['rep']}: {p['mine_s']:.1f}/{p['peer_s']:.1f} = {p['ratio']:.3f}"
                        for p in summary["pairs_8acct"]))
    for name, fp in summary.get("pairs_floor", {}).items():
        log(f"pairs ({name} time): " + ", ".join(f"rep {p['rep']}: {p['mine_s']:.1f}/{p['peer_s']:.1f} = "
                                                 f"{p['ratio']:.3f}" for p in fp))
    log("")
    for k, v in summary["ratios"].items():
        log(f"ratio {k:<28} {v if v is not None else 'n/a'}")
    if summary["verify_deep"]:
        v = summary["verify_deep"]
        log(f"verify --deep: {'clean' if v['clean'] else 'NOT clean'} (exit {v['exit_code']}, {v['seconds']} s)")
    log("")
    for k, v in summary["targets"].items():
        log(f"target {k:<28} {'MET' if v else 'not met'}")
    for tool, t in summary["tools"].items():
        for f in t["failures"]:
            log(f"\n{tool} rep {f['rep']} failed: {f['note']}\n{f['stderr_tail']}")
    log("\ncommands:")
    for k, v in bench.commands.items():
        log(f"  [{k}]\n" + "\n".join("    " + line for line in v.splitlines()))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 messages (~85 MB) instead of 10,000 (~790 MB)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; medians are reported (default 3)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before one tool run is killed")
    ap.add_argument("--tools", default="mailferry,dsync,mbsync,cp,parallel",
                    help="comma-separated subset of mailferry,dsync,mbsync,cp,parallel,floor,route (floor: "
                         "the target's own floor over IMAP; route: the least IMAP-to-IMAP copy; both "
                         "bench/floor.py, for one account and, with parallel, for the eight)")
    ap.add_argument("--floor-connections", type=int, default=2,
                    help="connections per account for floor and route (default 2, mailferry's default)")
    ap.add_argument("--performance", action="append", default=[], metavar="KEY = VALUE",
                    help="extra [performance] line for mailferry's project (repeatable), e.g. "
                         "'connections_per_account = 3'; the default run uses none (default settings)")
    ap.add_argument("--strace", action="store_true",
                    help="profile: strace -c the target's imap processes (mailferry) and doveadm (dsync); "
                         "slows both, use for the syscall counts, not the times")
    ap.add_argument("--dsync-extra", action="append", default=[],
                    help="extra doveadm argument (repeatable), e.g. --dsync-extra=-o --dsync-extra=imapc_list_prefix=")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    tools = bench.tools
    started = time.time()

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # so that the finally below stops the servers

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        bench.precompile()
        corpus = bench.prepare_source()
        order = [t for t in ("mailferry", "dsync", "floor", "route", "mbsync", "cp") if t in tools]
        for rep in range(args.repeat):
            log(f"repetition {rep + 1}/{args.repeat}")
            # Rotate the order so no tool always runs first (cold caches) or last.
            k = rep % len(order) if order else 0
            verify, noop = rep == 0, rep == args.repeat - 1
            kept: tuple[DovecotServer, Path] | None = None
            for tool in order[k:] + order[:k]:
                if tool == "mailferry":
                    kept = bench.run_mailferry(rep, keep=verify or noop)
                elif tool == "dsync":
                    bench.run_dsync(rep)
                elif tool == "mbsync":
                    bench.run_mbsync(rep)
                elif tool == "cp":
                    bench.run_cp(rep)
                elif tool in ("floor", "route"):
                    bench.run_floor(rep, [USER], tool)
            # After the pair, so that mailferry and its peers run back to back.
            if kept is not None:
                bench.after_mailferry(rep, *kept, verify=verify, noop=noop)
            if "parallel" in tools:
                bench.run_parallel(rep)
                for tool in ("floor", "route"):
                    if tool in tools:
                        bench.run_floor(rep, [f"u{k + 1}" for k in range(PARALLEL_USERS)], f"{tool}-8acct")
    finally:
        bench.close()
    summary = summarize(bench, corpus)
    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "args": {"quick": args.quick, "repeat": args.repeat, "timeout": args.timeout, "tools": tools,
                 "performance": args.performance},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "dovecot": _version(["dovecot", "--version"]), "mbsync": _version(["mbsync", "--version"])},
        "corpus": corpus,
        "commands": bench.commands,
        "notes": bench.notes,
        "runs": [asdict(r) for r in bench.runs],
        **summary,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print_table(summary, corpus, bench)
    log(f"\nresults: {args.out / 'results.json'}")
    return 0


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except OSError as exc:
        return f"unavailable: {exc}"


if __name__ == "__main__":
    sys.exit(main())
