"""Profile the TARGET server while mailferry or dsync writes into it (issue 11).

Usage: python bench/profile.py [--quick] [--tools mailferry,dsync,route] [--modes cpu,strace,perf,pyspy,sched]

Same corpus, source server and fresh targets as ``bench/run.py``. For every tool and mode one
copy into a fresh target:

- ``cpu``: CPU seconds of the target's and the source's imap processes (the Dovecot masters'
  ``cutime``+``cstime`` before and after: ``perf stat -p`` does not follow the imap processes
  forked after it attaches) and the tool's own CPU from ``wait4``. dsync (``doveadm backup``) has
  no target server process: it writes the target's Maildir itself, inside the doveadm process.
- ``strace``: ``strace -c -w -f`` (wall time in syscalls, children followed) of the target's
  master (mailferry: every imap process) or of the doveadm process (dsync: the imapc client side
  and the target storage together).
- ``perf``: ``perf record -a -e cpu-clock -g`` (machine-wide: ``-p`` does not follow new
  children) reported for the target's imap processes only; for dsync, of the doveadm process.
- ``pyspy``: ``py-spy record --threads`` of mailferry (``pip install py-spy``): collapsed stacks
  by thread, the functions with most samples.
- ``sched``: what each process of the target server, the source server and the tool did over
  the run, from the kernel's own accounting: CPU time and time runnable but waiting for a core
  (``/proc/PID/schedstat``), and the process's state sampled every ~10 ms (``/proc/PID/stat``
  and ``wchan``): running or runnable, waiting for the disk (``D``: page writeback, journal
  commits after fsync), waiting for input (``S`` in epoll/poll/select: for a server, waiting for
  its client), other sleep. It answers "who waits for whom": a target that is never waiting for
  input is not being kept waiting by the tool.
- The target Dovecot of every run gets a ``metric`` on ``imap_command_finished`` grouped by
  command, read with ``doveadm stats dump`` after a mailferry run: the server's own time per
  IMAP command (APPEND, SELECT, ...).

Writes ``bench/out/profile/`` (raw files) and ``profile.json``; prints a summary. Profiling slows
the runs (strace most): the figures are for where the time goes, not for the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench_run  # noqa: E402

from mailferry.sandbox.servers import DovecotServer  # noqa: E402

METRIC = """
metric imap_command {
  filter = event=imap_command_finished
  group_by = cmd_name
}
"""


def log(msg: str) -> None:
    print(msg, flush=True)


def master_pid(server: DovecotServer) -> int:
    proc = server._proc  # noqa: SLF001 - the sandbox's own process handle: the Dovecot master (-F)
    assert proc is not None
    return proc.pid


def add_metric(server: DovecotServer) -> None:
    with server.config_path.open("a") as f:
        f.write(METRIC)
    assert server._proc is not None  # noqa: SLF001
    server._proc.send_signal(signal.SIGHUP)  # noqa: SLF001
    time.sleep(1.0)


def stats_dump(server: DovecotServer) -> list[dict[str, str]]:
    try:
        text = server.doveadm("-f", "tab", "stats", "dump")
    except Exception as exc:
        return [{"error": str(exc)[:300]}]
    lines = [line.split("\t") for line in text.strip().splitlines()]
    if not lines:
        return []
    head = lines[0]
    return [dict(zip(head, row, strict=False)) for row in lines[1:]]


def children_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the children ``pid`` has reaped so far (``cutime`` and
    ``cstime``): for a Dovecot master, its imap, imap-login and auth processes that have exited.
    (``perf stat -p`` does not follow children forked after it attaches.)"""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(line.split()[0]) for line in out.stdout.splitlines() if line.split()[1:] == ["imap"]]


# Sleeping in one of these: waiting for input (a socket, a pipe), i.e. for the other side.
_INPUT_WAITS = ("do_epoll_wait", "ep_poll", "do_select", "do_sys_poll", "core_sys_select", "sk_wait_data",
                "wait_woken", "pipe_read", "unix_stream_read_generic", "inet_csk_accept")

_STATE_NAMES = {"R": "running or runnable", "D": "waiting for the disk", "I": "waiting for input", "S": "other sleep"}


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for t in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    kids = [int(c) for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
                    out += kids
                    todo += kids
    return out


class SchedSampler:
    """Samples every process under ``roots`` (role -> pid; a process under none of them but
    under this one is the tool's) every ~10 ms: its CPU time (all threads, ended ones included),
    its run-queue wait (``schedstat`` of the threads alive, the most seen) and a count of the
    states its threads were found in (a tool's threads that wait on each other count as "other
    sleep"). Processes using under 0.1 s of CPU are left out (logins, auth, the tool's wrappers)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.stat: dict[int, tuple[str, str, int, int]] = {}  # pid -> (role, comm, cpu ns, wait ns)
        self.states: dict[int, dict[str, int]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SchedSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        me = os.getpid()
        while not self._done.is_set():
            role_of: dict[int, str] = {}
            for role, root in self.roots.items():
                for pid in _descendants(root):
                    role_of[pid] = role
            for pid in _descendants(me):
                role_of.setdefault(pid, "tool")
            for pid, role in role_of.items():
                if pid in self.roots.values():
                    continue  # the masters themselves
                cpu = wait = 0
                seen: list[str] = []
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    if comm in ("time", "strace", "perf", "py-spy", "sh"):
                        continue
                    for tid in os.listdir(f"/proc/{pid}/task"):  # every thread (the tool has several)
                        task = f"/proc/{pid}/task/{tid}"
                        c, w = (int(x) for x in Path(f"{task}/schedstat").read_text().split()[:2])
                        state = Path(f"{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
                        chan = Path(f"{task}/wchan").read_text().strip() if state != "R" else ""
                        cpu, wait = cpu + c, wait + w
                        seen.append(state if state in "RD" else
                                    "I" if state == "S" and any(chan.startswith(x) for x in _INPUT_WAITS) else "S")
                    # utime + stime count the threads that have ended too (their schedstat is gone)
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    ticks = int(fields[11]) + int(fields[12])
                    cpu = max(cpu, ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK"))
                except (OSError, ValueError):
                    continue
                self.stat[pid] = (role, comm, cpu, max(wait, self.stat.get(pid, ("", "", 0, 0))[3]))
                counts = self.states.setdefault(pid, {})
                for state in seen:
                    counts[_STATE_NAMES[state]] = counts.get(_STATE_NAMES[state], 0) + 1
            time.sleep(0.01)

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for pid, (role, comm, cpu, wait) in sorted(self.stat.items(), key=lambda kv: (kv[1][0], -kv[1][2])):
            if cpu < 100_000_000:
                continue
            counts = self.states.get(pid, {})
            n = sum(counts.values()) or 1
            rows.append({"role": role, "pid": pid, "comm": comm, "cpu_s": round(cpu / 1e9, 2),
                         "runqueue_wait_s": round(wait / 1e9, 2), "samples": n,
                         **{k: round(v / n, 3) for k, v in sorted(counts.items())}})
        return rows


def start_attached(mode: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    if mode == "strace":
        argv = ["strace", "-c", "-w", "-f", "-o", str(out), "-p", str(pid)]
    else:  # perf record -p does not follow new children either: the whole machine, filtered later
        argv = ["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "499", "-g", "-o", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached before the tool starts
    return proc


def stop_attached(proc: subprocess.Popen[bytes]) -> None:
    time.sleep(0.5)  # the server's last logout
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrap(mode: str, argv: list[str], out: Path) -> list[str]:
    if mode in ("cpu", "pyspy", "sched"):  # py-spy is for mailferry: dsync just runs (one more pair)
        return argv
    if mode == "strace":
        return ["strace", "-c", "-w", "-f", "-o", str(out), "--", *argv]
    return ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-g", "-o", str(out), "--", *argv]


def parse_strace(path: Path) -> dict[str, Any]:
    rows = []
    total = None
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\S+)\s*$", line)
            if m:
                row = {"pct": float(m[1]), "seconds": float(m[2]), "usecs_call": int(m[3]), "calls": int(m[4]),
                       "errors": int(m[5] or 0), "syscall": m[6]}
                if row["syscall"] == "total":
                    total = row
                else:
                    rows.append(row)
    rows.sort(key=lambda r: -r["seconds"])
    by = {r["syscall"]: r for r in rows}

    def calls(*names: str) -> int:
        return sum(by[n]["calls"] for n in names if n in by)

    return {"total": total, "top": rows[:15], "fsync_calls": calls("fsync", "fdatasync"),
            "fsync_seconds": round(sum(by[n]["seconds"] for n in ("fsync", "fdatasync") if n in by), 3),
            "rename_link_calls": calls("rename", "renameat", "renameat2", "link", "linkat"),
            "open_calls": calls("open", "openat"), "write_calls": calls("write", "writev", "pwrite64", "pwritev"),
            "read_calls": calls("read", "readv", "pread64", "recvfrom")}


def pyspy_summary(path: Path) -> dict[str, Any]:
    """Samples by thread, and the functions with most samples (self, and inclusive), from
    py-spy's collapsed stacks (``frame;frame;... count``)."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            frames = stack.split(";")
            total += count
            thread = re.sub(r"-\d+$", "", frames[0].split(":", 1)[-1].strip())
            threads[thread] = threads.get(thread, 0) + count
            funcs = [re.sub(r" \(.*/", " (", f) for f in frames[1:]]
            if funcs:
                own[funcs[-1]] = own.get(funcs[-1], 0) + count
            for f in set(funcs):
                incl[f] = incl.get(f, 0) + count

    def top(d: dict[str, int], n: int) -> list[tuple[str, int]]:
        return sorted(d.items(), key=lambda kv: -kv[1])[:n]

    return {"samples": total, "threads": top(threads, 20), "self": top(own, 25), "inclusive": top(incl, 40)}


def sched_table(tool: str, wall: float, rows: list[dict[str, Any]]) -> str:
    keys = ("running or runnable", "waiting for the disk", "waiting for input", "other sleep")
    out = [f"{tool}: {wall:.2f} s wall. Per process: CPU s, run-queue wait s, share of samples "
           "running/runnable, waiting for the disk, waiting for input, other sleep"]
    for row in rows:
        shares = "  ".join(f"{row.get(k, 0.0):5.0%}" for k in keys)
        out.append(f"  {row['role']:<6} {row['comm']:<10} {row['cpu_s']:6.2f} {row['runqueue_wait_s']:6.2f}  {shares}")
    return "\n".join(out)


def perf_report(path: Path, out: Path, pids: list[int]) -> str:
    argv = ["perf", "report", "-i", str(path), "--stdio", "--no-children", "--sort", "comm,dso,sym",
            "-g", "none", "--percent-limit", "1", "--percentage", "relative"]
    if pids:  # the target's imap processes only (recorded machine-wide)
        argv.append("--pid=" + ",".join(map(str, pids)))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    out.write_text(proc.stdout + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join(lines[:40])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--tools", default="mailferry,dsync")
    ap.add_argument("--modes", default="cpu,strace,perf")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    args.dsync_extra = []
    args.performance = []
    args.strace = False
    tools = [t for t in args.tools.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    bench = bench_run.Bench(args)
    pdir = bench.out / "profile"
    pdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"commands": {}, "runs": []}

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        bench.prepare_source()
        assert bench.source is not None
        for mode in modes:
            for tool in tools:
                users = ([f"u{k + 1}" for k in range(bench_run.PARALLEL_USERS)] if tool == "parallel"
                         else [bench_run.USER])
                target = bench.fresh_target(f"profile-{tool}-{mode}",
                                            {u: bench_run.USER_PW if u == bench_run.USER else f"{u}pw" for u in users})
                add_metric(target)
                stem = pdir / f"{tool}-{mode}"
                data_path = stem.with_suffix(".data" if mode == "perf" else ".txt")
                attached = []
                if tool in ("mailferry", "parallel"):  # parallel: u1..u8 at once, as run.py's 8-account run
                    proj = bench.project(f"profile-{tool}-{mode}", target, users,
                                         parallel=bench_run.PARALLEL_USERS if tool == "parallel" else None)
                    cmd = [*bench.mailferry, "migrate", str(proj), "--json"]
                    env = bench.mf_env()
                    if mode == "pyspy":  # where mailferry's own CPU goes (collapsed stacks, per thread)
                        cmd = ["py-spy", "record", "-r", "250", "-f", "raw", "--threads", "-o", str(data_path), "--",
                               *cmd]
                    if mode == "strace":
                        attached.append(start_attached(mode, master_pid(target), data_path))
                elif tool == "route":  # bench/floor.py copy: the least IMAP-to-IMAP copy, as run.py runs it
                    cmd = [sys.executable, str(Path(__file__).resolve().parent / "floor.py"), "copy",
                           "--from-port", str(bench.source.port), "--port", str(target.port),
                           "--connections", "2", f"{bench_run.USER}:{bench_run.USER_PW}"]
                    env = None
                    if mode == "strace":  # the target's imap processes, as for mailferry
                        attached.append(start_attached(mode, master_pid(target), data_path))
                else:
                    cmd = ["doveadm", "-c", str(target.config_path),
                           "-o", "imapc_host=127.0.0.1", "-o", f"imapc_port={bench.source.port}",
                           "-o", f"imapc_user={bench_run.USER}", "-o", f"imapc_password={bench_run.USER_PW}",
                           "-o", "imapc_features=rfc822.size fetch-headers", "-o", "mail_prefetch_count=20",
                           "-o", "imapc_list_prefix=INBOX", "backup", "-R", "-u", bench_run.USER, "imapc:"]
                    env = None
                    cmd = wrap(mode, cmd, data_path)
                cpu0 = {"target": children_cpu(master_pid(target)), "source": children_cpu(master_pid(bench.source))}
                results["commands"][f"{tool} {mode}"] = shlex.join(cmd)
                seen: set[int] = set()
                done = threading.Event()
                if mode == "perf" and tool != "dsync":
                    attached.append(start_attached(mode, master_pid(target), data_path))

                    def poll() -> None:
                        while not done.is_set():
                            seen.update(child_pids(master_pid(target)))  # noqa: B023
                            time.sleep(0.3)

                    t = threading.Thread(target=poll)
                    t.start()
                sampler = SchedSampler({"target": master_pid(target), "source": master_pid(bench.source)})
                with sampler if mode == "sched" else contextlib.nullcontext():
                    r = bench_run.run_tool(f"{tool}-{mode}", 0, cmd, timeout=args.timeout, logdir=bench.logs,
                                           env=env)
                done.set()
                for proc in attached:
                    stop_attached(proc)
                time.sleep(1.0)  # the servers' imap processes end after the logout
                cpu = {k: round(children_cpu(master_pid(srv)) - cpu0[k], 2)
                       for k, srv in (("target", target), ("source", bench.source))}
                bench.check_count(r, target, users)
                entry: dict[str, Any] = {"tool": tool, "mode": mode, "wall_s": round(r.wall_s, 2), "ok": r.ok,
                                         "note": r.note, "tool_cpu_s": r.extra.get("cpu_s"),
                                         "target_server_cpu_s": cpu["target"], "source_server_cpu_s": cpu["source"]}
                if mode == "strace":
                    entry["strace"] = parse_strace(data_path)
                elif mode == "pyspy":
                    entry["pyspy"] = pyspy_summary(data_path)
                elif mode == "sched":
                    entry["sched"] = sampler.summary()
                    log(sched_table(tool, r.wall_s, entry["sched"]))
                elif mode == "perf":
                    entry["perf_pids"] = sorted(seen)
                    entry["perf_top"] = perf_report(data_path, stem.with_suffix(".report.txt"), sorted(seen))
                if tool != "dsync":
                    entry["imap_commands"] = [row for row in stats_dump(target)
                                              if row.get("metric_name", "").startswith("imap_command")]
                if tool == "mailferry" and mode == "pyspy" and r.ok:
                    # The no-op re-run, wall clock (idle included: it is all waiting and starting).
                    noop_path = pdir / "mailferry-noop-pyspy.txt"
                    plain = [*bench.mailferry, "migrate", str(proj), "--json"]
                    n = bench_run.run_tool("mailferry-noop", 0, plain, timeout=120, logdir=bench.logs, env=env)
                    spy = ["py-spy", "record", "-r", "1000", "-f", "raw", "--threads", "--idle", "-o",
                           str(noop_path), "--", *plain]
                    ns = bench_run.run_tool("mailferry-noop-pyspy", 0, spy, timeout=120, logdir=bench.logs, env=env)
                    entry["noop"] = {"wall_s": round(n.wall_s, 3), "ok": n.ok, "cpu_s": n.extra.get("cpu_s"),
                                     "under_pyspy_s": round(ns.wall_s, 3), "pyspy": pyspy_summary(noop_path)}
                results["runs"].append(entry)
                log(json.dumps(entry, indent=1)[:6000])
                bench.drop_server(target)
    finally:
        bench.close()
    (bench.out / "profile.json").write_text(json.dumps(results, indent=2, default=str))
    log(f"\nresults: {bench.out / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
