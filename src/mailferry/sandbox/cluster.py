"""Throwaway servers of a distributed run, for tests, the benchmark and a local try: PostgreSQL
(the shared ledger) and Redis (the Celery broker and the cluster's connection slots), on 127.0.0.1
at high ports in temporary folders, started as plain background processes like the mail servers.

PostgreSQL refuses to run as root: as root its files belong to, and it runs as, the ``postgres``
system user that Debian's package creates. Its superuser is ``mailferry`` with a password
(scram-sha-256 over TCP), so the tests use the ledger's password by reference as a user would.
Redis keeps an append-only file, fsynced at every write, so a broker killed and started again
(``restart``) still holds its queue: what a run must survive.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from mailferry.sandbox.servers import HOST, SandboxError, _check_free, _log_tail, _terminate, free_port

Process = subprocess.Popen[bytes]


def find_postgres() -> Path | None:
    """The directory of PostgreSQL's server binaries (``postgres``, ``initdb``)."""
    for found in (shutil.which("postgres"), shutil.which("initdb")):
        if found:
            return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def find_redis() -> str | None:
    return shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None)


def _wait_tcp(port: int, proc: Process, log: Path, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"{what} exited with code {proc.returncode}:\n{_log_tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SandboxError(f"{what} did not listen on {HOST}:{port} within {timeout:.0f} s:\n{_log_tail(log)}")


class PostgresServer:
    """A PostgreSQL cluster of its own: database ``mailferry``, superuser ``mailferry``."""

    user = "mailferry"
    database = "mailferry"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.proc: Process | None = None
        bindir = find_postgres()
        if bindir is None:
            raise SandboxError("PostgreSQL is not installed (Debian package postgresql)")
        self.bindir = bindir
        self.owner = pwd.getpwnam("postgres") if os.getuid() == 0 else None

    @classmethod
    def start(cls, directory: Path | None = None) -> PostgresServer:
        server = cls(directory or Path(tempfile.mkdtemp(prefix="mailferry-pg-")))
        server._init()
        server._launch()
        return server

    @property
    def url(self) -> str:
        """The ledger URL, without the password (``ledger_password`` gives it)."""
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, object]:
        return {"user": self.owner.pw_uid, "group": self.owner.pw_gid} if self.owner else {}

    def _init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data, run = self.directory / "data", self.directory / "run"
        pwfile = self.directory / "pw"
        pwfile.write_text(self.password + "\n")
        run.mkdir(exist_ok=True)
        for p in (self.directory, run, pwfile):
            if self.owner:
                os.chown(p, self.owner.pw_uid, self.owner.pw_gid)
        os.chmod(pwfile, 0o600)
        argv = [
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "--locale=C.UTF-8",
            "--encoding=UTF8",
            "--no-sync",
        ]
        done = subprocess.run(argv, capture_output=True, check=False, **self._run_as())  # type: ignore[call-overload]
        pwfile.unlink()
        if done.returncode != 0:
            raise SandboxError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def _launch(self) -> None:
        _check_free(self.port)
        log = self.directory / "postgres.log"
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.directory / "data"),
            "-p",
            str(self.port),
            "-k",
            str(self.directory / "run"),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",  # a throwaway cluster; the tests kill workers, not the database
            "-c",
            "synchronous_commit=off",
        ]
        with open(log, "ab") as out:
            if self.owner:
                os.chown(log, self.owner.pw_uid, self.owner.pw_gid)
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True, **self._run_as()
            )
        assert self.proc is not None
        _wait_tcp(self.port, self.proc, log, "PostgreSQL")
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with self._connect("postgres") as conn:
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (self.database,)).fetchone() is None:
                        conn.execute(f"CREATE DATABASE {self.database}")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _connect(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(
            host=HOST, port=self.port, user=self.user, password=self.password, dbname=dbname, autocommit=True
        )

    def reset(self) -> None:
        """An empty ledger database again (between tests sharing the server)."""

        with self._connect("postgres") as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s AND pid <> pg_backend_pid()",
                (self.database,),
            )
            conn.execute(f"DROP DATABASE IF EXISTS {self.database}")
            conn.execute(f"CREATE DATABASE {self.database}")

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, grace=5.0)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self._launch()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer:
    """A Redis of its own with a password, its data in an append-only file fsynced at every write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.proc: Process | None = None
        self.binary = find_redis()
        if self.binary is None:
            raise SandboxError("Redis is not installed (Debian package redis-server)")

    @classmethod
    def start(cls, directory: Path | None = None) -> RedisServer:
        server = cls(directory or Path(tempfile.mkdtemp(prefix="mailferry-redis-")))
        server._launch()
        return server

    @property
    def url(self) -> str:
        """The broker URL, without the password (``broker_password`` gives it)."""
        return f"redis://{HOST}:{self.port}/0"

    def _launch(self) -> None:
        assert self.binary is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    f"port {self.port}",
                    f"dir {self.directory}",
                    f"requirepass {self.password}",
                    "appendonly yes",
                    "appendfsync always",
                    'save ""',
                    "daemonize no",
                    f"logfile {self.directory / 'redis.log'}",
                ]
            )
            + "\n"
        )
        os.chmod(conf, 0o600)
        _check_free(self.port)
        log = self.directory / "redis.log"
        self.proc = subprocess.Popen(
            [self.binary, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_tcp(self.port, self.proc, log, "Redis")

    def kill(self) -> None:
        """SIGKILL: the broker dies as a machine would lose it."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self._launch()

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, grace=2.0)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
