"""Throw-away IMAP servers on 127.0.0.1 for tests, the demo and the benchmark.

Terminology:

- *instance*: one server process tree with its own directory (``base_dir``), ports, users and
  mail. Several instances run side by side; nothing is shared with a system-wide server.
- *style*: the namespace a Dovecot instance shows. ``"dotted"`` is Courier/Cyrus-like
  (``INBOX.`` prefix, ``.`` separator, Maildir++ on disk); ``"slash"`` has an empty prefix and
  ``/`` as separator (maildir ``LAYOUT=fs`` on disk, so folder names may contain dots).
- *master user*: a Dovecot login that may act as any user, either ``LOGIN alice*admin pw`` or
  SASL PLAIN with authorization identity ``alice`` and authentication identity ``admin``.

Contracts:

- ``start()`` returns only when the IMAP port answers ``* OK``; on failure it stops what it
  started and raises :class:`SandboxError` with the tail of the server log.
- ``stop()`` is idempotent and returns only when the process tree is gone and the ports are
  closed. ``restart()`` keeps ports, users and mail. ``close()`` (also the context manager's
  exit, and run at interpreter exit if forgotten) stops and removes private temp dirs.
- Everything (config, sockets, state, logs, mail) lives under ``base_dir`` except, for long
  paths, a short private run directory for UNIX sockets (their path is limited to 107 bytes).

This module runs everything as the current user (root on CI machines). It is test tooling: it
never touches the network beyond 127.0.0.1 and depends only on the stdlib, IMAPClient and the
server binaries (see ``tests/servers/REQUIREMENTS.txt``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import grp
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from mailferry.sandbox.sink import SentMessage, SmtpSink

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
Process = subprocess.Popen[bytes]
# sun_path is 108 bytes; keep generous headroom for Dovecot's and Cyrus's socket names.
_MAX_SOCKET_DIR = 60

__all__ = [
    "HOST",
    "CyrusServer",
    "DovecotServer",
    "ImipMessage",
    "LdapUserdb",
    "SandboxError",
    "TcpProxy",
    "find_cyrus_imapd",
    "free_port",
    "seed_messages",
    "wait_port_closed",
    "wait_port_greeting",
]


class SandboxError(RuntimeError):
    """A sandbox server could not be started or stopped; the message carries the log tail."""


# --------------------------------------------------------------------------- helpers


_HANDED_OUT: set[int] = set()  # ports free_port() has given in this process
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0), never one it
    has given before in this process: the kernel may hand the port just closed out again, and two
    listeners of one server got the same port (Dovecot: "duplicate listener", seen in CI)."""
    with _HANDED_OUT_LOCK:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port: int = s.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def _check_free(*ports: int | None) -> None:
    """Fail fast and clearly on a taken port (Cyrus's master would just log it to syslog)."""
    for port in ports:
        if port is None:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError as exc:
                raise SandboxError(f"port {HOST}:{port} is not free: {exc.strerror}") from None


def _greeting(host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        with sock:
            sock.settimeout(timeout)
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return data
                data += chunk
            # Log out rather than drop: a login process left with a half-closed (TLS) client
            # ignores SIGTERM for a while, which would slow down the next stop().
            with contextlib.suppress(OSError):
                sock.sendall(b"z LOGOUT\r\n")
                while sock.recv(4096):
                    pass
            return data


def wait_port_greeting(
    port: int,
    *,
    host: str = HOST,
    timeout: float = START_TIMEOUT,
    alive: Process | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Wait until ``host:port`` accepts a connection and greets with ``* OK`` (over TLS with
    ``tls``).

    ``alive``, if given, is checked on every round so that a server that died early fails fast.
    """
    deadline = time.monotonic() + timeout
    last: Exception | bytes | None = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise SandboxError(f"server process exited with code {alive.returncode} during start")
        try:
            greeting = _greeting(host, port, timeout=1.0, tls=tls)
        except OSError as exc:
            last = exc
        else:
            if greeting.startswith(b"* OK"):
                return
            last = greeting
        time.sleep(0.02)
    raise SandboxError(f"{host}:{port} did not greet with '* OK' within {timeout:.0f} s (last: {last!r})")


def wait_port_closed(port: int, *, host: str = HOST, timeout: float = STOP_TIMEOUT) -> None:
    """Wait until nothing accepts connections on ``host:port`` any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.02)
    raise SandboxError(f"{host}:{port} still accepts connections {timeout:.0f} s after stop")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log {path})"


def _short_run_dir(preferred: Path, prefix: str) -> tuple[Path, bool]:
    """Return a directory for UNIX sockets, and whether it is a private temp dir to remove."""
    if len(str(preferred)) <= _MAX_SOCKET_DIR:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, False
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")), True


def _terminate(proc: Process, grace: float = 0.5) -> None:
    """SIGTERM the whole process group (started with ``start_new_session``), then SIGKILL it.

    Signalling the group, not just the master, matters for Dovecot: its master alone takes about
    a second to wind its children down, the group goes in milliseconds. An imap-login process
    with a client still in a TLS handshake ignores SIGTERM (master would wait ~6 s before
    killing it), hence the short grace before SIGKILL. These are throw-away servers; maildir and the Dovecot and
    Cyrus indexes survive a kill.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
    # Children that outlived their master must not keep ports or files busy.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _make_tls_files(directory: Path, hostname: str) -> tuple[Path, Path, Path]:
    """Create a private CA and a server certificate for ``hostname`` and 127.0.0.1.

    Returns ``(ca_cert, server_cert, server_key)``. A separate CA (rather than one self-signed
    leaf) keeps the chain valid under OpenSSL's strict X.509 checks (Python >= 3.13 default).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run_tool(
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_cert),
            "-days",
            "3650",
            "-subj",
            "/CN=mailferry sandbox CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )
    run_tool(["openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hostname}"])
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{hostname},IP:{HOST}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    run_tool(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            str(ext),
            "-out",
            str(cert),
        ]
    )
    key.chmod(0o600)
    return ca_cert, cert, key


def run_tool(argv: Sequence[str], *, input_: bytes | str | None = None, timeout: float = 60.0) -> str:
    """Run a helper program (openssl, saslpasswd2, ldapadd, samba-tool...) and return its output;
    a failure raises SandboxError with the end of what it printed."""
    data = input_.encode() if isinstance(input_, str) else input_
    proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise SandboxError(f"{Path(argv[0]).name} failed ({proc.returncode}): {err[-2000:]}")
    return proc.stdout.decode(errors="replace")


# --------------------------------------------------------------------------- Dovecot

DovecotStyle = Literal["dotted", "slash"]


@dataclass(frozen=True)
class LdapUserdb:
    """Where a sandbox Dovecot finds its users over LDAP (``passdb`` and ``userdb`` with
    ``driver = ldap``, one ``dovecot-ldap.conf.ext`` for both).

    - Users are found with ``user_filter`` (``%u`` is the login as typed, ``%n`` its local
      part; Dovecot escapes them for the filter) using the ``bind_dn`` service account.
    - Passwords are checked by binding as the entry found (``auth_bind = yes``): any password
      scheme the directory knows works, and a disabled AD account is refused by the DC.
    - ``login_attr`` becomes the canonical user name (``pass_attrs = <login_attr>=user``), so
      logging in with the mail address ends up in the same mailbox; the home is
      ``base_dir/home/<login_attr value>`` and uid/gid are the sandbox's mail owner.
    - ``pass_attrs`` / ``user_attrs`` given here replace the derived ones verbatim.
    - ``tls_ca_file``: verify the server certificate with it (``ldaps://`` in ``uri``, or
      ``start_tls=True`` for StartTLS on ``ldap://``).
    """

    uri: str
    base: str
    bind_dn: str
    bind_password: str
    user_filter: str = "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))"
    login_attr: str = "uid"
    pass_filter: str | None = None
    iterate_filter: str | None = None
    pass_attrs: str | None = None
    user_attrs: str | None = None
    tls_ca_file: Path | None = None
    start_tls: bool = False

    def config_text(self, home_root: Path, uid: int, gid: int) -> str:
        """The ``dovecot-ldap.conf.ext`` for these settings."""
        for name, value in (
            ("uri", self.uri),
            ("base", self.base),
            ("bind_dn", self.bind_dn),
            ("user_filter", self.user_filter),
            ("bind_password", self.bind_password),
        ):
            if "\n" in value or "\r" in value:
                raise ValueError(f"LdapUserdb.{name} must be a single line")
        pass_attrs = self.pass_attrs or f"{self.login_attr}=user"
        user_attrs = self.user_attrs or (
            f"{self.login_attr}=user, =home={home_root}/./%{{ldap:{self.login_attr}}}, =uid={uid}, =gid={gid}"
        )
        quoted_pw = self.bind_password.replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            "# Generated by mailferry.sandbox; throw-away test server. Do not edit.",
            f"uris = {self.uri}",
            "ldap_version = 3",
            f"dn = {self.bind_dn}",
            f'dnpass = "{quoted_pw}"',
            "auth_bind = yes",
            f"base = {self.base}",
            "scope = subtree",
            "deref = never",
            f"user_filter = {self.user_filter}",
            f"pass_filter = {self.pass_filter or self.user_filter}",
            f"pass_attrs = {pass_attrs}",
            f"user_attrs = {user_attrs}",
            f"iterate_filter = {self.iterate_filter or self.user_filter.replace('%u', '*').replace('%n', '*')}",
            f"iterate_attrs = {self.login_attr}=user",
        ]
        if self.start_tls:
            lines.append("tls = yes")
        if self.tls_ca_file is not None:
            lines += [f"tls_ca_cert_file = {self.tls_ca_file}", "tls_require_cert = demand"]
        return "\n".join(lines) + "\n"


SPECIAL_USE_MAILBOXES: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


class DovecotServer:
    """A private Dovecot 2.3 IMAP server (``dovecot -F`` as our child process).

    Decisions (why):

    - ``style="dotted"``: Maildir++ (``mail_location = maildir:~/Maildir``), namespace prefix
      ``INBOX.`` and separator ``.``, like Courier and old Cyrus: a ``.`` can't be in a name.
    - ``style="slash"``: ``maildir:~/Maildir:LAYOUT=fs``, prefix empty, separator ``/``; one
      directory per folder, so dots are allowed in names.
    - Special-use folders are declared but not auto-created (``auto = no``): tests decide what
      exists. With ``special_use=False`` none is declared, so LIST shows no special-use flags.
    - The quota plugin (``count`` backend) is always loaded so QUOTA is advertised;
      ``quota_mb`` sets ``quota_rule = *:storage=<n>M`` and ``max_message_size`` sets
      ``quota_max_mail_size``, which makes APPEND of a larger message fail with a tagged NO.
    - ``max_keyword_length`` sets ``mail_max_keyword_length`` (Dovecot's default: 50 bytes; an
      APPEND or STORE with a longer keyword is refused with ``[CANNOT]``), e.g. for a source that
      holds keywords a default target can't. :meth:`set_limits` changes the quota and the
      maximum message size of a running server (it restarts it).
    - Master user (``master=("admin", "adminpw")``): a ``master = yes`` passdb, and
      ``auth_master_user_separator = *``; both ``LOGIN alice*admin`` and SASL PLAIN with
      authzid work.
    - Users live in a passwd-file (``{PLAIN}`` passwords), mail under ``base_dir/home/USER``.
    - Run as root (CI), the master and auth run as root, but Dovecot refuses root for two
      roles: login processes run as ``dovenull`` (chrooted, so they need no access to
      ``base_dir``) and mail is owned by the ``mail`` user; the imap process chroots to
      ``base_dir/home`` first (``/./`` in the home), so ``base_dir`` may sit under a 0700 dir.
      Run as another user, everything runs as that user.
    - The per-IP auth penalty is switched off (see ``_disable_auth_penalty``); a failed login
      still takes about 0.5 s.
    """

    host: str
    port: int
    tls_port: int | None
    ca_file: Path | None
    cert_hostname: str
    base_dir: Path
    config_path: Path
    log_path: Path
    users: dict[str, str]
    master: tuple[str, str] | None

    def __init__(
        self,
        base_dir: Path,
        *,
        style: DovecotStyle,
        users: dict[str, str],
        master: tuple[str, str] | None,
        tls: bool,
        special_use: bool,
        port: int | None,
        tls_port: int | None,
        quota_mb: int | None,
        max_message_size: int | None,
        dovecot: str,
        ldap: LdapUserdb | None = None,
        max_keyword_length: int | None = None,
        public: str | None = None,
        sieve: bool = False,
        acl: bool = False,
        acl_groups: Mapping[str, Sequence[str]] | None = None,
        acl_global: str = "",
        metadata: bool = False,
        submission: bool = False,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> None:
        if style not in ("dotted", "slash"):
            raise ValueError(f"unknown style {style!r}")
        self.host = HOST
        self.base_dir = base_dir.resolve()
        self.style = style
        self.users = dict(users)
        self.master = master
        self.tls = tls
        self.special_use = special_use
        self.port = port or free_port()
        self.tls_port = (tls_port or free_port()) if tls else None
        self.quota_mb = quota_mb
        self.max_message_size = max_message_size
        self.max_keyword_length = max_keyword_length
        self.public = public
        self._tls_files: tuple[Path | None, Path | None] = (None, None)
        self.dovecot = dovecot
        self.cert_hostname = "localhost"
        self.ca_file = None
        self.config_path = self.base_dir / "dovecot.conf"
        self.log_path = self.base_dir / "log" / "dovecot.log"
        self._users_file = self.base_dir / "users.passwd"
        self._master_file = self.base_dir / "master.passwd"
        self.ldap = ldap
        self._ldap_file = self.base_dir / "dovecot-ldap.conf.ext"
        self._run_dir: Path | None = None
        self._run_dir_is_temp = False
        self._proc: Process | None = None
        self._init_sieve(sieve)
        self._init_submission(submission)
        self.acl = acl
        self.acl_groups = {u: tuple(g) for u, g in (acl_groups or {}).items()}
        self.acl_global = acl_global
        self.metadata = metadata
        self._acl_root: Path | None = None  # see _acl_prepare
        self._given_tls = tls_files

    # ---- lifecycle

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        style: DovecotStyle,
        users: dict[str, str],
        master: tuple[str, str] | None = ("admin", "adminpw"),
        tls: bool = False,
        special_use: bool = True,
        port: int | None = None,
        tls_port: int | None = None,
        quota_mb: int | None = None,
        max_message_size: int | None = None,
        dovecot: str | None = None,
        ldap: LdapUserdb | None = None,
        max_keyword_length: int | None = None,
        public: str | None = None,
        sieve: bool = False,
        acl: bool = False,
        acl_groups: Mapping[str, Sequence[str]] | None = None,
        acl_global: str = "",
        metadata: bool = False,
        submission: bool = False,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> DovecotServer:
        """Write a config under ``base_dir``, start Dovecot and wait for its greeting.

        With ``ldap``, users are looked up (and their passwords checked by LDAP bind) in that
        directory first; ``users`` and the master user keep working alongside (needs the
        ``dovecot-ldap`` package). ``tls_files=(ca, cert, key)``: with ``tls``, serve that
        certificate (e.g. a broken one of :mod:`mailferry.sandbox.certs`) instead of making one;
        ``ca_file`` is then ``ca``.
        """
        binary = dovecot or shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise SandboxError("dovecot binary not found (apt-get install dovecot-imapd)")
        server = cls(
            Path(base_dir),
            style=style,
            users=users,
            master=master,
            tls=tls,
            special_use=special_use,
            port=port,
            tls_port=tls_port,
            quota_mb=quota_mb,
            max_message_size=max_message_size,
            dovecot=binary,
            ldap=ldap,
            max_keyword_length=max_keyword_length,
            public=public,
            sieve=sieve,
            acl=acl,
            acl_groups=acl_groups,
            acl_global=acl_global,
            metadata=metadata,
            submission=submission,
            tls_files=tls_files,
        )
        try:
            server._prepare()
            server._launch()
        except BaseException:
            server.close()
            raise
        # A script that dies of an exception or Ctrl-C must not leave servers holding ports.
        atexit.register(server.close)
        return server

    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group) and wait until its ports are closed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            was_running = proc.poll() is None
            _terminate(proc)
            if was_running:
                wait_port_closed(self.port)
                if self.tls_port is not None:
                    wait_port_closed(self.tls_port)

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data (to test reconnects)."""
        self.stop()
        self._launch()

    def set_limits(self, *, quota_mb: int | None, max_message_size: int | None = None) -> None:
        """Change the storage quota and the maximum message size (None: none), and restart."""
        self.quota_mb = quota_mb
        self.max_message_size = max_message_size
        self.config_path.write_text(self._config(*self._tls_files))
        self.restart()

    def close(self) -> None:
        """Stop the server and remove the private socket directory, if one was made."""
        atexit.unregister(self.close)
        self.stop()
        if self._sink is not None:
            self._sink.close()
        if self._run_dir_is_temp and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        if self._acl_root is not None:
            shutil.rmtree(self._acl_root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- users and mail

    def add_user(self, name: str, password: str) -> None:
        """Add a user to the running server; returns once the user can log in.

        Dovecot re-reads a changed passwd-file at most once a second; a reload (SIGHUP) starts
        fresh auth processes at once, and polling a LOGIN closes the remaining race.
        """
        _check_user(name, password)
        self.users[name] = password
        self._write_users()
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT
        while not _can_login(self.port, name, password):
            if time.monotonic() > deadline:
                raise SandboxError(f"new user {name!r} still cannot log in to Dovecot on {self.port}")
            time.sleep(0.05)

    def home(self, user: str) -> Path:
        return (self._acl_root or self.base_dir) / "home" / user

    def maildir(self, user: str) -> Path:
        """The root maildir of ``user`` (the INBOX; other folders live inside it)."""
        return self.home(user) / "Maildir"

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <config> ARGS`` and return its stdout (raises on failure)."""
        proc = subprocess.run(["doveadm", "-c", str(self.config_path), *args], capture_output=True, check=False)
        if proc.returncode != 0:
            raise SandboxError(f"doveadm {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode(errors="replace")

    @property
    def separator(self) -> str:
        return "." if self.style == "dotted" else "/"

    @property
    def prefix(self) -> str:
        return "INBOX." if self.style == "dotted" else ""

    def folder(self, *parts: str) -> str:
        """The on-the-wire name of a personal folder, e.g. ``folder("Sent")`` -> ``INBOX.Sent``."""
        return self.prefix + self.separator.join(parts)

    # ---- Sieve (Pigeonhole): ManageSieve, LMTP delivery with the sieve plugin, outgoing mail

    def _init_sieve(self, sieve: bool) -> None:
        """``sieve=True``: ManageSieve on :attr:`sieve_port`, LMTP on :attr:`lmtp_port` (mail
        delivered there runs the user's active script), and what Sieve sends (vacation,
        redirect) goes to an :class:`~mailferry.sandbox.sink.SmtpSink`: :meth:`sent_messages`.
        Scripts live in ``~/sieve``, the active one linked from ``~/.dovecot.sieve``."""
        self.sieve = sieve
        self.sieve_port: int | None = free_port() if sieve else None
        self.lmtp_port: int | None = free_port() if sieve else None
        self._sink: SmtpSink | None = SmtpSink() if sieve else None

    def _sieve_protocols(self) -> str:
        self._lmtp_reach()
        return (" sieve lmtp" if self.sieve else "") + (" submission" if self.submission else "")

    def _lmtp_reach(self) -> None:
        """LMTP does not chroot (unlike imap, see the "/./" homes): it reaches the maildir by its
        full path as the mail user, who needs search (x) permission on every directory above it,
        e.g. pytest's 0700 temp dirs (its process keeps the group of Dovecot's master among its
        groups, so group x too). Only x is added, never read. Done again before each delivery:
        another pytest session starting meanwhile puts its 0700 back on /tmp/pytest-of-<user>."""
        if self.sieve and os.getuid() == 0:
            uid, gid = _mail_owner()
            for directory in reversed([self.base_dir, *self.base_dir.parents]):
                if not _reachable(directory, uid, gid):
                    directory.chmod(directory.stat().st_mode | 0o011)

    def _sieve_config(self) -> str:
        if not self.sieve:
            return ""
        assert self._sink is not None
        return f"""
service managesieve-login {{
  inet_listener sieve {{
    address = {HOST}
    port = {self.sieve_port}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.lmtp_port}
  }}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@localhost
}}
# LMTP runs chrooted (the "/./" homes): a sendmail_path script would be out of its reach.
submission_host = {HOST}:{self._sink.port}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
"""

    # ---- SMTP submission (dovecot-submissiond), relaying to the sink

    def _init_submission(self, submission: bool) -> None:
        """``submission=True``: Dovecot's submission service (RFC 6409) on
        :attr:`submission_port`, relaying to the :class:`~mailferry.sandbox.sink.SmtpSink`. It
        offers STARTTLS when the server has TLS; without TLS it offers AUTH in plain text."""
        self.submission = submission
        self.submission_port: int | None = free_port() if submission else None
        if submission and self._sink is None:
            self._sink = SmtpSink()

    def _submission_config(self) -> str:
        if not self.submission:
            return ""
        assert self._sink is not None
        return f"""
service submission-login {{
  inet_listener submission {{
    address = {HOST}
    port = {self.submission_port}
  }}
}}
hostname = localhost
submission_relay_host = {HOST}
submission_relay_port = {self._sink.port}
submission_relay_trusted = yes
submission_max_mail_size = 40M
"""

    def sent_messages(self) -> list[SentMessage]:
        """What Sieve has sent so far (vacation replies, redirects), oldest first."""
        return list(self._sink.messages) if self._sink is not None else []

    def deliver(self, user: str, message: bytes, *, mail_from: str = "sender@example.org") -> None:
        """Deliver ``message`` to ``user`` over LMTP: the user's active Sieve script runs."""
        if self.lmtp_port is None:
            raise SandboxError("this Dovecot was started without sieve=True: no LMTP listener")
        self._lmtp_reach()
        _lmtp_deliver(("inet", (HOST, self.lmtp_port)), user, message, mail_from)

    # ---- internals

    def _prepare(self) -> None:
        for sub in ("home", "log", "state"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self._run_dir, self._run_dir_is_temp = _short_run_dir(self.base_dir / "run", "mf-dovecot-")
        self._acl_prepare()
        for name, pw in self.users.items():
            _check_user(name, pw)
        self._write_users()
        if self.master is not None:
            _check_user(*self.master)
            self._master_file.write_text(f"{self.master[0]}:{{PLAIN}}{self.master[1]}\n")
            self._master_file.chmod(0o600)
        if self.ldap is not None:
            self._prepare_ldap(self.ldap)
        cert = key = None
        if self.tls:
            ca, cert, key = self._given_tls or _make_tls_files(self.base_dir / "tls", self.cert_hostname)
            self.ca_file = ca
        self._tls_files = (cert, key)
        self.config_path.write_text(self._config(cert, key))

    def _prepare_ldap(self, ldap: LdapUserdb) -> None:
        if not Path("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so").exists() and os.path.isdir(
            "/usr/lib/dovecot/modules/auth"
        ):
            raise SandboxError("Dovecot's LDAP driver is missing (apt-get install dovecot-ldap)")
        uid, gid = _mail_owner()
        # LDAP users are not known in advance: the (chrooted, unprivileged) imap process creates
        # their homes, so it must own the chroot's top directory.
        home_root = self.base_dir / "home"
        os.chown(home_root, uid, gid)
        self._ldap_file.write_text(ldap.config_text(home_root, uid, gid))
        self._ldap_file.chmod(0o600)

    def _write_users(self) -> None:
        # Mail is owned by an unprivileged uid (see _mail_owner; passwd-file also rejects UID 0,
        # and without uid/gid fields it ignores the home field). The "/./" in the home makes
        # Dovecot chroot to base_dir/home before dropping privileges, so that user needs no
        # access to base_dir's ancestors (e.g. pytest's 0700 temp dirs).
        uid, gid = _mail_owner()
        lines = []
        for name, pw in self.users.items():
            home = self.home(name)
            if not home.exists():
                home.mkdir(parents=True)
                os.chown(home, uid, gid)
            extra = f"userdb_acl_groups={','.join(self.acl_groups[name])}" if self.acl_groups.get(name) else ""
            chroot = "" if self.acl else "./"  # see _acl_prepare
            lines.append(f"{name}:{{PLAIN}}{pw}:{uid}:{gid}::{home.parent}/{chroot}{name}::{extra}\n")
        tmp = self._users_file.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o600)
        tmp.replace(self._users_file)

    def _config(self, cert: Path | None, key: Path | None) -> str:
        me = pwd.getpwuid(os.getuid()).pw_name
        mail_uid, mail_gid = _mail_owner()
        if self.style == "dotted":
            location, sep, prefix = "maildir:~/Maildir", ".", "INBOX."
        else:
            location, sep, prefix = "maildir:~/Maildir:LAYOUT=fs", "/", ""
        mailboxes = ""
        if self.special_use:
            mailboxes = "".join(
                f"  mailbox {name} {{\n    special_use = {flag}\n    auto = no\n  }}\n"
                for name, flag in SPECIAL_USE_MAILBOXES.items()
            )
        master_passdb = ""
        if self.master is not None:
            # Checked first; "pass = yes" then still looks the target user up in the next passdb.
            master_passdb = (
                "passdb {\n  driver = passwd-file\n"
                f"  args = scheme=PLAIN {self._master_file}\n  master = yes\n  pass = yes\n}}\n"
            )
        ldap_passdb = ldap_userdb = ""
        if self.ldap is not None:
            # Before the passwd-file ones: a user unknown to LDAP falls through to them.
            ldap_passdb = f"passdb {{\n  driver = ldap\n  args = {self._ldap_file}\n}}\n"
            ldap_userdb = f"userdb {{\n  driver = ldap\n  args = {self._ldap_file}\n}}\n"
        quota_rule = f"*:storage={self.quota_mb}M" if self.quota_mb is not None else "*:storage=0"
        max_size = f"  quota_max_mail_size = {self.max_message_size}B\n" if self.max_message_size is not None else ""
        if self.tls:
            ssl_conf = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2\n"
            imaps = f"  inet_listener imaps {{\n    address = {HOST}\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"
        else:
            ssl_conf = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        run_dir = self._run_dir
        keyword_length = (
            f"mail_max_keyword_length = {self.max_keyword_length}\n" if self.max_keyword_length is not None else ""
        )
        return f"""# Generated by mailferry.sandbox; throw-away test server. Do not edit.
instance_name = mailferry-{self.port}
base_dir = {run_dir}
state_dir = {self.base_dir / "state"}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = imap{self._sieve_protocols()}
listen = {HOST}
shutdown_clients = yes
default_internal_user = {me}
default_internal_group = {grp.getgrgid(os.getgid()).gr_name}
default_login_user = {_login_user()}
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {mail_uid}
mail_gid = {mail_gid}
valid_chroot_dirs = {self.base_dir / "home"}
mail_location = {location}
# listescape: names may hold the other style's separator ('/' under '.', '.' under '/'), as
# on real servers, so the separator-clash mapping is exercised.
mail_plugins = $mail_plugins quota listescape{" acl" if self.acl else ""}
mail_max_userip_connections = 100
{keyword_length}imap_max_line_length = 256k
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_cache_size = 0
# A failed login is answered at the next 0.5 s tick of the failure queue, not after 2 s.
auth_failure_delay = 0
{ssl_conf}
namespace inbox {{
  inbox = yes
  separator = {sep}
  prefix = {prefix}
{mailboxes}}}
{self._public_config()}
{master_passdb}{ldap_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self._users_file}
}}
{ldap_userdb}userdb {{
  driver = passwd-file
  args = {self._users_file}
}}

protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}

plugin {{
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = {quota_rule}
{max_size}}}

service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
{imaps}  process_min_avail = 0
}}
service imap {{
  process_limit = 256
}}
{self._sieve_config()}{self._submission_config()}{self._acl_config(location, sep)}{self._metadata_config()}"""

    def public_dir(self) -> Path:
        """Where the public namespace's mail lives (inside the imap processes' chroot; with
        ``acl``, in the homes' directory that has no chroot, see :meth:`_acl_prepare`)."""
        return (self._acl_root or self.base_dir) / "home" / "public"

    def _public_config(self) -> str:
        """The public namespace (``public="Public"``: prefix ``Public/`` or ``Public.``), with
        ``\\Seen`` kept per user (``INDEXPVT``, Dovecot's private flags: each user's own index
        under the home). Without the ACL plugin every user may read and write it."""
        if self.public is None:
            return ""
        uid, gid = _mail_owner()
        public = self.public_dir()
        if not public.exists():
            public.mkdir(parents=True)
            os.chown(public, uid, gid)
        layout = "" if self.style == "dotted" else ":LAYOUT=fs"
        # Subscriptions to public folders are each user's: kept in the first namespace above
        # the public one that keeps subscriptions. Under "INBOX." there is none, so a hidden
        # one with the empty prefix (Dovecot's documented answer) holds them.
        holder = ""
        if self.style == "dotted":
            holder = (
                "namespace subscriptions {\n  prefix =\n  separator = .\n  hidden = yes\n  list = no\n"
                "  subscriptions = yes\n  location = maildir:~/Maildir\n}\n"
            )
        # The imap process is chrooted to base_dir/home: paths inside the config are the chroot's.
        return holder + (
            "namespace public {\n  type = public\n"
            f"  separator = {self.separator}\n  prefix = {self.public}{self.separator}\n"
            f"  location = maildir:{self.public_dir() if self.acl else '/public'}{layout}:INDEXPVT=~/public-pvt\n"
            "  subscriptions = no\n  list = yes\n}\n"
        )

    def _acl_prepare(self) -> None:
        """With ``acl``: homes and sockets where the mail user can reach them without a chroot.

        The shared namespace makes the imap process of one user look another one up (userdb,
        over the ``auth-userdb`` socket) and open that one's maildir, after it dropped root and
        (without ``acl``) chrooted into its own home root, where neither the socket nor the
        other homes are in reach. So with ``acl`` the homes and the sockets go to a private
        directory under /tmp that the mail user may traverse (pytest's temp dirs are 0700), and
        nobody is chrooted."""
        if not self.acl:
            return
        self._acl_root = Path(tempfile.mkdtemp(prefix="mf-dovecot-acl-", dir="/tmp"))
        self._acl_root.chmod(0o755)
        for sub in ("home", "run", "dict"):
            (self._acl_root / sub).mkdir(mode=0o755)
        (self._acl_root / "global-acl").write_text(self.acl_global)
        os.chown(self._acl_root / "dict", *_mail_owner())
        if self._run_dir_is_temp and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir, self._run_dir_is_temp = self._acl_root / "run", False

    def _metadata_config(self) -> str:
        """Folder METADATA (RFC 5464) when ``metadata`` is on: entries in a dict file in each
        user's home (``/shared/`` ones too: a user's folders are only that user's here)."""
        if not self.metadata:
            return ""
        return "mail_attribute_dict = file:%h/dovecot-attributes\nprotocol imap {\n  imap_metadata = yes\n}\n"

    def _acl_config(self, location: str, sep: str) -> str:
        """The ACL plugin (RFC 4314) when ``acl`` is on, else nothing.

        ``acl = vfile``: per-folder ACL files in the maildirs; the owner has every right by
        default. ``acl_anyone = allow``: ``anyone`` and ``authenticated`` may be granted rights (Dovecot
        refuses them otherwise). ``acl_shared_dict``: which user shared what with whom, so that the shared
        namespace (``shared/<owner>/...``, RFC 2342 "Other Users") lists only what is shared
        with the one logged in. Groups come from the userdb extra field ``acl_groups``
        (``acl_groups`` of :meth:`start`: user -> group names) and are named ``$group`` in IMAP.
        ``acl`` itself is in the global ``mail_plugins`` (in ``protocol imap`` alone, opening
        another user's folder through the shared namespace panics: "Module context
        acl_storage_module missing"); the ``protocol imap`` block here adds ``imap_acl`` to the
        one above (Dovecot merges them).
        """
        if not self.acl:
            return ""
        prefix = f"shared{sep}%%u{sep}"
        return f"""
protocol imap {{
  mail_plugins = $mail_plugins imap_acl
}}
plugin {{
  acl = vfile:{self._acl_root / "global-acl" if self._acl_root else ""}
  acl_user = %u
  acl_anyone = allow
  acl_shared_dict = file:{self._acl_root / "dict" / "shared-mailboxes.db" if self._acl_root else ""}
}}
namespace shared {{
  type = shared
  separator = {sep}
  prefix = {prefix}
  location = {location.replace("~/", "%%h/")}:INDEXPVT=~/shared/%%u
  subscriptions = no
  list = children
}}
"""

    def _launch(self) -> None:
        _check_free(self.port, self.tls_port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr = (self.base_dir / "log" / "dovecot.stderr").open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        try:
            self._disable_auth_penalty()
            wait_port_greeting(self.port, alive=self._proc)
            if self.tls_port is not None and self.ca_file is not None:
                # A full handshake: a half-open TLS client would keep an imap-login busy.
                context = ssl.create_default_context(cafile=str(self.ca_file))
                if self._given_tls is not None:  # it may be broken on purpose (expired, untrusted)
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                wait_port_greeting(self.tls_port, alive=self._proc, tls=context)
        except SandboxError as exc:
            self._stop_quietly()
            raise SandboxError(
                f"Dovecot in {self.base_dir} did not start: {exc}\n"
                f"--- {self.log_path}\n{_log_tail(self.log_path)}\n"
                f"--- stderr\n{_log_tail(self.base_dir / 'log' / 'dovecot.stderr')}"
            ) from None

    def _disable_auth_penalty(self) -> None:
        """Turn off Dovecot's per-IP auth penalty (2, 4, 8, 15 s before each login after a
        failed one, for ~30 s). Tests fail logins on purpose; all clients come from 127.0.0.1.

        Dovecot 2.3 has no setting for it (``login_trusted_networks`` no longer exempts), but
        the auth process disables the penalty when it can't reach the ``anvil-auth-penalty``
        socket. The auth process starts with the first client, so removing the socket right
        after master creates it, before we connect, is enough.
        """
        assert self._proc is not None and self._run_dir is not None
        socket_path = self._run_dir / "anvil-auth-penalty"
        deadline = time.monotonic() + START_TIMEOUT
        while not socket_path.exists():
            if self._proc.poll() is not None:
                raise SandboxError(f"server process exited with code {self._proc.returncode} during start")
            if time.monotonic() > deadline:
                raise SandboxError(f"{socket_path} did not appear")
            time.sleep(0.005)
        socket_path.unlink()

    def _stop_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def _lmtp_deliver(where: tuple[str, Path | tuple[str, int]], user: str, message: bytes, mail_from: str) -> None:
    """One LMTP transaction (RFC 2033) to ``user``; raises SandboxError unless delivered."""
    import smtplib

    lmtp = smtplib.LMTP()
    try:
        _kind, address = where
        if isinstance(address, Path):
            lmtp.connect(str(address))
        else:
            lmtp.connect(address[0], address[1])
        lmtp.ehlo_or_helo_if_needed()
        refused = lmtp.sendmail(mail_from, [user], message)
        if refused:
            raise SandboxError(f"LMTP refused {user}: {refused}")
    except smtplib.SMTPException as e:
        raise SandboxError(f"LMTP delivery to {user} failed: {e}") from None
    finally:
        with contextlib.suppress(Exception):
            lmtp.quit()


def _can_login(port: int, user: str, password: str) -> bool:
    from imapclient import IMAPClient
    from imapclient.exceptions import LoginError

    client = IMAPClient(HOST, port, ssl=False, timeout=5)
    try:
        client.login(user, password)
    except LoginError:
        return False
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return True


def _wait_listening(port: int, *, alive: Process, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            raise SandboxError(f"server process exited with code {alive.returncode} during start")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.02)
    raise SandboxError(f"{HOST}:{port} not listening after {timeout:.0f} s")


def _mail_owner() -> tuple[int, int]:
    """The uid/gid that owns the mail: Dovecot's imap refuses root ("Mail access not allowed
    for root"), so as root use the ``mail`` system user (always present on Debian)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    for candidate in ("mail", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(candidate)
            return entry.pw_uid, entry.pw_gid
    raise SandboxError("no unprivileged user to own the mail (mail or nobody)")


def _login_user() -> str:
    """Dovecot's login processes refuse to run as root ("This process must not be run as root").

    They run chrooted in ``base_dir/login``, so an unprivileged user needs no access to the tree.
    """
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    for candidate in ("dovenull", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(candidate).pw_name
    raise SandboxError("no unprivileged user for Dovecot's login processes (dovenull or nobody)")


def _check_user(name: str, password: str) -> None:
    bad = set(":*\n\r\t /\\") & set(name) or set(":\n\r") & set(password)
    if not name or bad:
        raise ValueError(f"user name or password unusable in a passwd-file: {name!r}")


# --------------------------------------------------------------------------- Cyrus

CYRUS_BIN = Path("/usr/lib/cyrus/bin")
CYRUS_IMAPD_ENV = "MAILFERRY_CYRUS_IMAPD"
_CYRUS_IMAPD_CANDIDATES = (CYRUS_BIN / "imapd", Path("/opt/cyrus-imapd/usr/lib/cyrus/bin/imapd"))


@contextlib.contextmanager
def system_group(name: str, members: Sequence[str]) -> Iterator[str]:
    """A throw-away system group ``name`` with ``members``, removed on exit (root only).

    For Cyrus' ``group:NAME`` ACL identifiers: with its default ``auth_mech: unix`` Cyrus takes
    a user's groups from the system's group database (measured with Cyrus 3.6: a member listed
    in /etc/group gets the group's rights, no system user needed). Sandbox users are SASL users,
    which ``groupadd --users`` refuses, so the member list is written into the group's line of
    /etc/group directly (atomically, by rename)."""
    if os.getuid() != 0:
        raise SandboxError("a system group for Cyrus needs root")
    run_tool(["groupadd", name])
    try:
        path = Path("/etc/group")
        lines = path.read_text().splitlines()
        lines = [line + ",".join(members) if line.startswith(f"{name}:") else line for line in lines]
        tmp = path.with_name(".group.mailferry")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o644)
        tmp.replace(path)
        yield name
    finally:
        with contextlib.suppress(SandboxError):
            run_tool(["groupdel", name])


def find_cyrus_imapd(imapd: str | None = None) -> str | None:
    """Locate a Cyrus ``imapd``: the argument, else ``$MAILFERRY_CYRUS_IMAPD``, else the Debian path, then
    ``/opt/cyrus-imapd`` (the ``cyrus-imapd`` .deb extracted there, which keeps Dovecot
    installed: the package conflicts with ``dovecot-imapd``). ``None`` if none, or if the rest
    of Cyrus (``cyrus-common``: master, ctl_cyrusdb; ``sasl2-bin``: saslpasswd2) is missing."""
    if not ((CYRUS_BIN / "master").exists() and shutil.which("saslpasswd2")):
        return None
    # An explicit choice (argument, then environment) is the only candidate: a typo must not
    # silently fall back to another Cyrus.
    given = imapd or os.environ.get(CYRUS_IMAPD_ENV)
    candidates = [Path(given)] if given else list(_CYRUS_IMAPD_CANDIDATES)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


class CyrusServer:
    """A private Cyrus IMAP 3.6 server (``master -D`` as our child process).

    Namespace: ``INBOX/`` prefix with ``/`` separator (``unixhierarchysep: yes``,
    ``altnamespace: no``); other users under ``user/``, shared folders at the root.
    The admin (``admins:``) may log in as any user with SASL PLAIN and an authorization
    identity (RFC 4616), e.g. ``plain_login(identity="cyrus", password="cyruspw",
    authorization_identity="alice")``. Users are SASL users in a private sasldb; each is
    logged in once at start, which autocreates its INBOX (and ``autocreate_folders``).

    Cyrus refuses to run as root ("must run as the Cyrus user"): as root the server runs as the
    ``cyrus`` system user (from ``cyrus-common``). If that user can't reach ``base_dir``
    (e.g. under pytest's 0700 temp dirs), the data lives in a private dir under /tmp and
    ``base_dir/data`` is a symlink to it; :meth:`close` removes it.

    ``munge8bit: no`` and ``reject8bit: no``: 8-bit header bytes are stored as sent.
    """

    host: str
    port: int
    http_port: int | None
    base_dir: Path
    data_dir: Path
    config_path: Path
    users: dict[str, str]
    admin: tuple[str, str]
    #: The domain of this server's calendar user addresses (``defaultdomain``): ``mailto:bob@internal``
    #: is the user bob (scheduling messages go to his Inbox); any other domain is external (iMIP).
    mail_domain: str = "internal"

    def __init__(
        self,
        base_dir: Path,
        *,
        users: dict[str, str],
        admin: tuple[str, str],
        imap_port: int | None,
        http_port: int | None,
        imapd: str,
        httpd: str | None,
        autocreate_folders: Sequence[str],
        max_message_size: int | None,
        repeat_ids: bool = False,
        scheduling: bool = True,
    ) -> None:
        self.host = HOST
        self.scheduling = scheduling
        self.base_dir = base_dir.resolve()
        self.users = dict(users)
        self.admin = admin
        self.repeat_ids = repeat_ids
        self.port = imap_port or free_port()
        self.http_port = (http_port or free_port()) if httpd else None
        self.sieve_port = free_port()  # timsieved (ManageSieve); mail delivered by deliver() runs Sieve
        self.imapd = imapd
        self.httpd = httpd
        self.autocreate_folders = tuple(autocreate_folders)
        self.max_message_size = max_message_size
        self.data_dir = self.base_dir / "data"
        self.config_path = self.data_dir / "imapd.conf"
        self._private_data: Path | None = None
        self._proc: Process | None = None
        self._owner = _cyrus_owner()
        self._dav_homes: set[str] = set()  # users whose DAV home was touched (_touch_dav_home)

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        users: dict[str, str],
        admin: tuple[str, str] = ("cyrus", "cyruspw"),
        imap_port: int | None = None,
        http_port: int | None = None,
        imapd: str | None = None,
        autocreate_folders: Sequence[str] = (),
        max_message_size: int | None = None,
        first_login: bool = True,
        repeat_ids: bool = False,
        scheduling: bool = True,
    ) -> CyrusServer:
        """Write a config under ``base_dir``, start Cyrus, wait for its greeting and log every
        user in once, one after another (INBOX autocreation). ``first_login=False`` leaves the
        accounts never used: no mailbox until their first login (see :meth:`first_logins_at_once`).

        ``repeat_ids``: keep Cyrus' own mailbox ids. The Debian build makes them from ``rand()``,
        and its server processes repeat each other's ids: several accounts' first logins at once
        get one INBOX, and folders created in different connections can get one id (see the
        README's server notes). By default the sandbox preloads a ``rand()`` drawn from
        ``getrandom()`` (built with the C compiler once), which makes the ids unique (12 first
        logins at once: 12 ids instead of 1), so that tests of migrations into Cyrus don't meet
        that defect by chance; the tests of the defect itself pass ``repeat_ids=True``.

        CalDAV/CardDAV (``httpd``, package ``cyrus-caldav``) is started too when its binary is
        found next to ``imapd`` or in /usr/lib/cyrus/bin; ``http_port`` is ``None`` otherwise.
        ``scheduling=False`` starts it with ``caldav_allowscheduling: off`` (RFC 6638 implicit
        scheduling paused, as an admin would for a migration window); see :meth:`set_scheduling`.
        Every iMIP message Cyrus sends (invitations, replies, cancellations) goes to a recording
        ``sendmail`` instead of the world: :meth:`imip_messages`. With DAV, every user's DAV home
        is touched once after the first logins (Cyrus creates Default, Inbox and Outbox on a
        user's first DAV request; before that the user can't receive scheduling messages).
        Addresses at :attr:`mail_domain` are this server's users; any other domain is external.
        """
        binary = find_cyrus_imapd(imapd)
        if binary is None:
            raise SandboxError(
                "no Cyrus imapd: install cyrus-common + sasl2-bin and cyrus-imapd (or extract the "
                f"cyrus-imapd .deb to /opt/cyrus-imapd), or set ${CYRUS_IMAPD_ENV}"
            )
        httpd = next((str(p) for p in (Path(binary).parent / "httpd", CYRUS_BIN / "httpd") if p.is_file()), None)
        if http_port is not None and httpd is None:
            raise SandboxError("http_port given but no Cyrus httpd found (apt-get install cyrus-caldav)")
        for attempt in range(3):
            server = cls(
                Path(base_dir) / f"try{attempt}" if attempt else Path(base_dir),
                users=users,
                admin=admin,
                imap_port=imap_port,
                http_port=http_port,
                imapd=binary,
                httpd=httpd,
                autocreate_folders=autocreate_folders,
                max_message_size=max_message_size,
                repeat_ids=repeat_ids,
                scheduling=scheduling,
            )
            try:
                server._prepare()
                server._launch()
                for name, pw in server.users.items() if first_login else ():
                    server._first_login(name, pw)
                    server._touch_dav_home(name, pw)
                ids = server.inbox_ids() if first_login else {}
            except BaseException:
                server.close()
                raise
            if len(set(ids.values())) == len(ids):
                atexit.register(server.close)
                return server
            # Cyrus (Debian 3.6) gave two users one INBOX even though they logged in one after
            # another (its mailbox ids repeat across server processes): a broken server is no base
            # for a test. Start afresh.
            server.close()
        raise SandboxError(f"Cyrus gave several users one INBOX three times in a row: {ids}")

    # ---- lifecycle

    def stop(self) -> None:
        """Stop master and its children and wait until the ports are closed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            was_running = proc.poll() is None
            _terminate(proc)
            if was_running:
                wait_port_closed(self.port)
                if self.http_port is not None:
                    wait_port_closed(self.http_port)

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self._launch()

    def close(self) -> None:
        """Stop the server and remove the private data dir, if one was needed."""
        atexit.unregister(self.close)
        self.stop()
        if self._private_data is not None:
            shutil.rmtree(self._private_data, ignore_errors=True)
            self._private_data = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def dav_url(self) -> str:
        """The CalDAV/CardDAV base URL (``http://127.0.0.1:<http_port>/``); discovery starts here."""
        if self.http_port is None:
            raise SandboxError("this Cyrus has no httpd (apt-get install cyrus-caldav)")
        return f"http://{self.host}:{self.http_port}/"

    def set_scheduling(self, on: bool) -> None:
        """Switch ``caldav_allowscheduling`` (implicit scheduling, RFC 6638) on or off: rewrite
        imapd.conf and restart (Cyrus reads it once per server process). Switched on, every
        user's DAV home is touched again: Cyrus creates the scheduling Inbox and Outbox on a DAV
        request only while scheduling is on, and an attendee without an Inbox gets nothing."""
        self.scheduling = on
        root = self.data_dir.resolve()
        (root / "imapd.conf").write_text(self._imapd_conf(root))
        if self.running:
            self.restart()
            for name in sorted(self._dav_homes) if on else ():
                self._touch_dav_home(name, self.users[name])

    def imip_messages(self) -> list[ImipMessage]:
        """Every iMIP message Cyrus has handed to ``sendmail`` so far, oldest first, with its SMTP
        envelope. Cyrus sends while it answers the DAV request (``sendmail -bs``, SMTP over a
        pipe, to the recording script that ``sendmail:`` in imapd.conf names), so a message is
        here as soon as the PUT that caused it has been answered. Nothing leaves the machine."""
        folder = self.data_dir.resolve() / "imip"
        out = []
        for path in sorted(folder.glob("*.eml")):
            head, _, data = path.read_bytes().partition(b"\n")
            envelope = json.loads(head)
            out.append(ImipMessage(envelope["mail_from"], tuple(envelope["rcpt_to"]), data))
        return out

    def inbox_items(self, user: str, password: str | None = None) -> dict[str, bytes]:
        """The items in ``user``'s CalDAV scheduling Inbox (``/dav/calendars/user/<user>/Inbox/``),
        href -> iCalendar bytes, read as that user (``password`` defaults to the one it was
        created with): the scheduling messages (REQUEST, REPLY, CANCEL) Cyrus delivered to it.
        With scheduling off Cyrus serves no Inbox: then ``{}``."""
        from defusedxml import ElementTree as SafeET

        password = self.users[user] if password is None else password
        inbox = f"/dav/calendars/user/{user}/Inbox/"
        listing = self._dav_request("PROPFIND", inbox, user, password, depth="1", body=_PROPFIND_RESOURCETYPE)
        if listing.status == 404 and not self.scheduling:
            return {}
        if listing.status != 207:
            raise SandboxError(f"PROPFIND {inbox} as {user}: HTTP {listing.status}")
        hrefs = sorted(
            h.text
            for h in SafeET.fromstring(listing.body).iter("{DAV:}href")
            if h.text and h.text.rstrip("/") != inbox.rstrip("/")
        )
        items: dict[str, bytes] = {}
        for href in hrefs:
            got = self._dav_request("GET", href, user, password)
            if got.status == 200:
                items[href] = got.body
        return items

    separator = "/"
    prefix = "INBOX/"

    def folder(self, *parts: str) -> str:
        """The on-the-wire name of a personal folder, e.g. ``folder("Sent")`` -> ``INBOX/Sent``."""
        return self.prefix + self.separator.join(parts)

    def add_user(self, name: str, password: str, *, first_login: bool = True) -> None:
        """Add a SASL user and create its INBOX by logging it in once, and its DAV home (Default,
        Inbox, Outbox) by one DAV request (unless ``first_login`` is off)."""
        _check_user(name, password)
        self.users[name] = password
        self._saslpasswd(name, password)
        if self.running and first_login:
            self._first_login(name, password)
            self._touch_dav_home(name, password)

    def first_logins_at_once(self, names: Sequence[str]) -> dict[str, str]:
        """Log ``names`` (never-used accounts) in at the same moment, one thread each, and
        return each one's INBOX MAILBOXID. Cyrus 3.6 auto-creates the INBOX at first login and
        concurrent first logins can give several accounts one INBOX (the same id): this is how
        the tests make that broken state. Nothing is appended."""
        from imapclient import IMAPClient

        barrier = threading.Barrier(len(names))
        ids: dict[str, str] = {}
        errors: list[BaseException] = []

        def login(name: str) -> None:
            try:
                c = IMAPClient(HOST, self.port, ssl=False, timeout=30)
                try:
                    barrier.wait(timeout=30)
                    c.login(name, self.users[name])
                    st = c.folder_status("INBOX", ["MAILBOXID"])
                    value = st[b"MAILBOXID"]
                    ids[name] = (value[0] if isinstance(value, tuple) else value).decode()
                finally:
                    with contextlib.suppress(Exception):
                        c.logout()
            except BaseException as e:  # handed to the caller
                errors.append(e)

        threads = [threading.Thread(target=login, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SandboxError(f"first logins at once failed: {errors[0]!r}")
        return ids

    # ---- internals

    def _prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        uid, gid = self._owner
        if self.data_dir.is_symlink() or self.data_dir.exists():
            raise SandboxError(f"{self.data_dir} exists already: give each Cyrus a fresh base_dir")
        if len(str(self.data_dir)) > _MAX_SOCKET_DIR or not _reachable(self.base_dir, uid, gid):
            self._private_data = Path(tempfile.mkdtemp(prefix="mf-cyrus-", dir="/tmp"))
            self.data_dir.symlink_to(self._private_data)
            root = self._private_data
        else:
            self.data_dir.mkdir()
            root = self.data_dir
        # Paths inside the config are the real ones (short, reachable), not the symlink.
        for sub in ("conf", "spool", "sieve", "run/socket", "run/proc", "run/lock", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "imapd.conf").write_text(self._imapd_conf(root))
        (root / "cyrus.conf").write_text(self._cyrus_conf(root))
        (root / "imip").mkdir(exist_ok=True)
        sendmail = root / "sendmail"
        sendmail.write_text(
            f"#!{_system_python()}\n" + _RECORDING_SENDMAIL.replace("@FOLDER@", repr(str(root / "imip")))
        )
        sendmail.chmod(0o755)
        self._saslpasswd(self.admin[0], self.admin[1])
        for name, pw in self.users.items():
            _check_user(name, pw)
            self._saslpasswd(name, pw)
        for path in [root, *root.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)

    def _imapd_conf(self, root: Path) -> str:
        user = pwd.getpwuid(self._owner[0]).pw_name
        group = grp.getgrgid(self._owner[1]).gr_name
        folders = "|".join(self.autocreate_folders)
        size = f"maxmessagesize: {self.max_message_size}\n" if self.max_message_size else ""
        return f"""# Generated by mailferry.sandbox; throw-away test server. Do not edit.
configdirectory: {root}/conf
partition-default: {root}/spool
sievedir: {root}/sieve
proc_path: {root}/run/proc
mboxname_lockpath: {root}/run/lock
lmtpsocket: {root}/run/socket/lmtp
idlesocket: {root}/run/socket/idle
cyrus_user: {user}
cyrus_group: {group}
servername: localhost
# the domain of this server's calendar users (mailto:alice@internal): Cyrus delivers scheduling
# messages for addresses there to the user's Inbox and mails (iMIP) every other address
defaultdomain: {self.mail_domain}
admins: {self.admin[0]}
unixhierarchysep: yes
altnamespace: no
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {root}/sasldb2
sasl_mech_list: PLAIN LOGIN
# store 8-bit headers untouched instead of replacing the bytes with 'X' or refusing them
munge8bit: no
reject8bit: no
# no 3 s pause after a failed login (tests try wrong credentials on purpose)
failedloginpause: 0
{size}specialusealways: yes
annotation_allow_undefined: yes
autocreate_quota: 0
{"autocreate_inbox_folders: " + folders if folders else ""}
autocreate_post: yes
sharedprefix: Shared Folders
httpmodules: caldav carddav freebusy
caldav_allowscheduling: {"on" if self.scheduling else "off"}
# iMIP (invitations to people outside the server): with no imipnotifier, httpd itself runs
# "sendmail -bs" and speaks SMTP to it; here a script that records it (imip_messages())
sendmail: {root}/sendmail
caldav_create_default: yes
caldav_create_sched: yes
carddav_allowaddmember: yes
syslog_prefix: mailferry-cyrus-{self.port}
"""

    def _cyrus_conf(self, root: Path) -> str:
        conf = root / "imapd.conf"
        http = ""
        if self.httpd is not None:
            http = f'  http cmd="{self.httpd} -C {conf}" listen="{HOST}:{self.http_port}" prefork=0 maxchild=100\n'
        return f"""START {{
  recover cmd="{CYRUS_BIN}/ctl_cyrusdb -C {conf} -r"
}}
SERVICES {{
  imap cmd="{self.imapd} -C {conf}" listen="{HOST}:{self.port}" prefork=0 maxchild=50
{http}{self._sieve_services(root)}}}
EVENTS {{
  checkpoint cmd="{CYRUS_BIN}/ctl_cyrusdb -C {conf} -c" period=30
}}
DAEMON {{
}}
"""

    def _sieve_services(self, root: Path) -> str:
        """timsieved (ManageSieve) on :attr:`sieve_port`, and lmtpd on the ``lmtpsocket`` (a UNIX
        socket: pre-authenticated, unlike an LMTP TCP port) for :meth:`deliver`. What Sieve sends
        (vacation, redirect) goes to the recording ``sendmail``: :meth:`imip_messages`."""
        conf = root / "imapd.conf"
        return (
            f'  sieve cmd="{CYRUS_BIN}/timsieved -C {conf}" listen="{HOST}:{self.sieve_port}" prefork=0 maxchild=20\n'
            f'  lmtpunix cmd="{CYRUS_BIN}/lmtpd -C {conf}" listen="{root}/run/socket/lmtp" prefork=0 maxchild=5\n'
        )

    def deliver(self, user: str, message: bytes, *, mail_from: str = "sender@example.org") -> None:
        """Deliver ``message`` to ``user`` over LMTP: the user's active Sieve script runs."""
        _lmtp_deliver(("unix", self.data_dir.resolve() / "run" / "socket" / "lmtp"), user, message, mail_from)

    def _saslpasswd(self, name: str, password: str) -> None:
        sasldb = self.data_dir / "sasldb2"
        run_tool(["saslpasswd2", "-p", "-c", "-f", str(sasldb), "-u", "localhost", name], input_=password.encode())
        os.chown(sasldb, *self._owner)
        sasldb.chmod(0o640)

    def _launch(self) -> None:
        _check_free(self.port, self.http_port)
        root = self.data_dir.resolve()
        argv = [
            str(CYRUS_BIN / "master"),
            "-D",
            "-C",
            str(root / "imapd.conf"),
            "-M",
            str(root / "cyrus.conf"),
            "-p",
            str(root / "run" / "master.pid"),
        ]
        uid, gid = self._owner
        if os.getuid() == 0 and uid != 0:
            # setpriv execs, so the Popen pid is master's. Starting master as root would also
            # work (it drops privileges) but leaves root-owned files a later start can't replace.
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", *argv]
        log = (root / "log" / "master.log").open("ab")
        try:
            env = dict(os.environ)
            if not self.repeat_ids:
                lib = _unique_rand_library()
                if lib is not None:
                    env["LD_PRELOAD"] = str(lib)
            self._proc = subprocess.Popen(
                argv, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env
            )
        finally:
            log.close()
        try:
            wait_port_greeting(self.port, alive=self._proc)
            if self.http_port is not None:
                _wait_listening(self.http_port, alive=self._proc)
        except SandboxError as exc:
            with contextlib.suppress(Exception):
                self.stop()
            raise SandboxError(
                f"Cyrus in {self.base_dir} did not start: {exc}\n"
                f"--- master.log (Cyrus itself logs to syslog)\n{_log_tail(root / 'log' / 'master.log')}"
            ) from None

    def _first_login(self, name: str, password: str) -> None:
        """Log ``name`` in (Cyrus creates its INBOX), open the INBOX, log out, and give the
        server process a moment to be free again (so that the next login reuses it)."""
        from imapclient import IMAPClient
        from imapclient.exceptions import LoginError

        client = IMAPClient(HOST, self.port, ssl=False, timeout=10)
        try:
            client.login(name, password)
            client.select_folder("INBOX", readonly=True)
        except LoginError:
            raise SandboxError(f"Cyrus user {name!r} cannot log in on port {self.port}") from None
        finally:
            with contextlib.suppress(Exception):
                client.logout()
        time.sleep(0.05)

    def _dav_request(
        self, method: str, path: str, user: str, password: str, *, depth: str | None = None, body: bytes = b""
    ) -> _HttpAnswer:
        if self.http_port is None:
            raise SandboxError("this Cyrus has no httpd (apt-get install cyrus-caldav)")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        if depth is not None:
            headers["Depth"] = depth
        if body:
            headers["Content-Type"] = "application/xml; charset=utf-8"
        conn = http.client.HTTPConnection(HOST, self.http_port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            answer = conn.getresponse()
            return _HttpAnswer(answer.status, answer.read())
        finally:
            conn.close()

    def _touch_dav_home(self, name: str, password: str) -> None:
        """One DAV request as ``name``: Cyrus creates the user's calendar home (Default, and the
        scheduling Inbox and Outbox) on a user's first authenticated DAV request."""
        if self.http_port is None:
            return
        home = f"/dav/calendars/user/{name}/"
        answer = self._dav_request("PROPFIND", home, name, password, depth="0", body=_PROPFIND_RESOURCETYPE)
        if answer.status != 207:
            raise SandboxError(f"Cyrus user {name!r}: PROPFIND {home} answered HTTP {answer.status}")
        self._dav_homes.add(name)

    def inbox_ids(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """Each user's INBOX MAILBOXID, read through the admin (SASL authorization identity);
        users without a mailbox are left out (the admin looks first: no login creates one)."""
        from imapclient import IMAPClient

        out: dict[str, str] = {}
        admin = IMAPClient(HOST, self.port, ssl=False, timeout=10)
        try:
            admin.login(*self.admin)
            existing = [n for n in (names or list(self.users)) if admin.folder_exists(f"user/{n}")]
        finally:
            with contextlib.suppress(Exception):
                admin.logout()
        for n in existing:
            c = IMAPClient(HOST, self.port, ssl=False, timeout=10)
            try:
                c.plain_login(self.admin[0], self.admin[1], authorization_identity=n)
                value = c.folder_status("INBOX", ["MAILBOXID"])[b"MAILBOXID"]
                out[n] = (value[0] if isinstance(value, tuple) else value).decode()
            finally:
                with contextlib.suppress(Exception):
                    c.logout()
        return out


@dataclass(frozen=True)
class ImipMessage:
    """One message Cyrus handed to ``sendmail`` (see :meth:`CyrusServer.imip_messages`).

    ``sender`` and ``recipients`` are the SMTP envelope (``MAIL FROM`` / ``RCPT TO`` addresses,
    without the angle brackets and parameters); ``data`` is the message as Cyrus wrote it
    (headers and MIME body, CRLF line ends, dot-stuffing undone)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes

    @property
    def method(self) -> str | None:
        """The iTIP method of the calendar it carries (``REQUEST``, ``REPLY``, ``CANCEL``...)."""
        found = re.search(rb"^METHOD:([A-Za-z-]+)\r?$", self.data, re.MULTILINE)
        return found.group(1).decode().upper() if found else None


@dataclass(frozen=True)
class _HttpAnswer:
    status: int
    body: bytes


_PROPFIND_RESOURCETYPE = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>'
)


def _system_python() -> str:
    """A Python the ``cyrus`` user may run (a virtualenv under root's home often is not)."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


# The sandbox's sendmail. Cyrus (3.6, smtpclient) runs it as "sendmail -bs" and speaks SMTP on
# its stdin/stdout: recipients are in RCPT TO, not in argv. One file per message: a JSON line
# with the envelope, then the message; named so that sorting keeps the order (nanosecond time,
# pid, counter), written under a temp name and renamed when complete (before the 250 reply).
_RECORDING_SENDMAIL = """# mailferry sandbox: record what Cyrus would send; never send anything.
import json, os, re, sys, time

FOLDER = @FOLDER@
out, env, data, count = sys.stdout.buffer, {"mail_from": "", "rcpt_to": [], "argv": sys.argv[1:]}, None, 0


def reply(line):
    out.write(line.encode() + b"\\r\\n")
    out.flush()


def address(line):
    found = re.search(r"<([^>]*)>", line)
    return found.group(1) if found else line.split(":", 1)[1].strip().split(" ")[0]


if "-bs" not in sys.argv[1:]:
    # "sendmail [-i] -f FROM [--] TO...": the message on stdin (lmtpd's Sieve vacation, redirect)
    args, rcpt = sys.argv[1:], []
    i = 0
    while i < len(args):
        if args[i] == "-f" and i + 1 < len(args):
            env["mail_from"] = args[i + 1]
            i += 1
        elif not args[i].startswith("-"):
            rcpt.append(args[i])
        i += 1
    env["rcpt_to"] = rcpt
    name = os.path.join(FOLDER, "%d-%08d-0000" % (time.time_ns(), os.getpid()))
    with open(name + ".tmp", "wb") as f:
        f.write(json.dumps(env).encode() + b"\\n" + sys.stdin.buffer.read())
    os.rename(name + ".tmp", name + ".eml")
    sys.exit(0)
reply("220 localhost mailferry-recording-sendmail ESMTP")
for raw in sys.stdin.buffer:
    if data is not None:
        if raw.rstrip(b"\\r\\n") == b".":
            count += 1
            name = os.path.join(FOLDER, "%d-%08d-%04d" % (time.time_ns(), os.getpid(), count))
            with open(name + ".tmp", "wb") as f:
                f.write(json.dumps(env).encode() + b"\\n" + b"".join(data))
            os.rename(name + ".tmp", name + ".eml")
            env, data = {"mail_from": "", "rcpt_to": [], "argv": sys.argv[1:]}, None
            reply("250 2.0.0 recorded")
        else:
            data.append(raw[1:] if raw.startswith(b".") else raw)
        continue
    line = raw.decode("utf-8", "replace").rstrip("\\r\\n")
    verb = line[:4].upper()
    if verb == "EHLO":
        reply("250-localhost")
        reply("250-8BITMIME")
        reply("250 DSN")
    elif verb == "MAIL":
        env["mail_from"] = address(line)
        reply("250 2.1.0 ok")
    elif verb == "RCPT":
        env["rcpt_to"].append(address(line))
        reply("250 2.1.5 ok")
    elif verb == "DATA":
        data = []
        reply("354 go ahead")
    elif verb == "RSET":
        env, data = {"mail_from": "", "rcpt_to": [], "argv": sys.argv[1:]}, None
        reply("250 2.0.0 ok")
    elif verb == "QUIT":
        reply("221 2.0.0 bye")
        break
    else:
        reply("250 ok")
"""


_UNIQUE_RAND_C = b"""
/* mailferry sandbox: rand() from getrandom(), so that Cyrus' mailbox ids don't repeat. */
#include <sys/random.h>
int rand(void) { unsigned int x = 0; if (getrandom(&x, sizeof x, 0) != sizeof x) x = 0; return (int)(x & 0x7fffffff); }
void srand(unsigned int seed) { (void)seed; }
"""


def _unique_rand_library() -> Path | None:
    """The preload library of :class:`CyrusServer` (``repeat_ids``), built once per machine in
    the temp folder; None without a C compiler (then Cyrus keeps its repeating ids)."""
    import hashlib

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    lib = Path(tempfile.gettempdir()) / f"mailferry-rand-{hashlib.sha256(_UNIQUE_RAND_C).hexdigest()[:16]}.so"
    if not lib.exists():
        src = lib.with_suffix(".c")
        src.write_bytes(_UNIQUE_RAND_C)
        tmp = lib.with_name(lib.name + f".{os.getpid()}")
        run_tool([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src)])
        tmp.chmod(0o755)
        os.replace(tmp, lib)
    return lib


def _cyrus_owner() -> tuple[int, int]:
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    try:
        entry = pwd.getpwnam("cyrus")
    except KeyError:
        raise SandboxError("no 'cyrus' system user (apt-get install cyrus-common)") from None
    return entry.pw_uid, entry.pw_gid


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` can traverse every directory down to ``path`` (mode bits only)."""
    try:
        groups = {gid, *os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)}
    except KeyError:
        groups = {gid}
    for directory in [path, *path.parents]:
        st = directory.stat()
        if uid == 0 or st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------- TCP proxy


class _Link:
    """One proxied connection: the client socket, the upstream socket, byte budgets."""

    def __init__(self, client: socket.socket, upstream: socket.socket, cut_after: int | None) -> None:
        self.client = client
        self.upstream = upstream
        self.cut_after = cut_after
        self.sent = {"up": 0, "down": 0}
        self.closed = False
        self.lock = threading.Lock()

    def cut(self) -> None:
        """Close both sides abruptly: SO_LINGER 0 makes close() send RST, not FIN."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can drop connections on demand (stdlib threads).

    - :meth:`cut_all` resets every live connection, both sides, like a failing network.
    - :meth:`set_cut_after_bytes` arms a byte budget for connections accepted afterwards: once
      ``n`` bytes have passed in either direction (client->server or server->client, counted
      separately), exactly those ``n`` bytes are delivered and the connection is cut.
    - ``record=True`` keeps every byte passed, per direction ("up": client to server, "down"),
      all connections together: :meth:`transcript` (to count what a server answered).
    """

    host: str
    port: int

    def __init__(self, target_host: str, target_port: int, port: int | None = None, *, record: bool = False) -> None:
        self.host = HOST
        self._record: dict[str, bytearray] | None = {"up": bytearray(), "down": bytearray()} if record else None
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, port or 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._cut_after: int | None = None
        self._stopping = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)

    @classmethod
    def start(cls, target_host: str, target_port: int, *, port: int | None = None, record: bool = False) -> TcpProxy:
        proxy = cls(target_host, target_port, port, record=record)
        proxy._thread.start()
        return proxy

    def set_cut_after_bytes(self, n: int | None) -> None:
        """Cut each connection accepted from now on after ``n`` bytes in one direction."""
        if n is not None and n < 0:
            raise ValueError("n must be >= 0 or None")
        self._cut_after = n

    def cut_all(self) -> int:
        """Reset every live connection; return how many were cut."""
        with self._lock:
            links, self._links = list(self._links), set()
        for link in links:
            link.cut()
        return len(links)

    def transcript(self, direction: str) -> bytes:
        """Every byte passed in ``direction`` ("up" or "down") so far (needs ``record=True``)."""
        if self._record is None:
            raise SandboxError("the proxy was started without record=True")
        with self._lock:
            return bytes(self._record[direction])

    @property
    def live_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    def stop(self) -> None:
        """Stop accepting, cut every connection and wait for the accept thread."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            link = _Link(client, upstream, self._cut_after)
            with self._lock:
                self._links.add(link)
                self.accepted += 1
            if link.cut_after == 0:
                self._drop(link)
                continue
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(
                    target=self._pump,
                    args=(link, src, dst, direction),
                    daemon=True,
                    name=f"proxy-{self.port}-{direction}",
                ).start()

    def _drop(self, link: _Link) -> None:
        link.cut()
        with self._lock:
            self._links.discard(link)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                budget = link.cut_after
                if budget is not None:
                    allowed = budget - link.sent[direction]
                    if len(data) >= allowed:
                        dst.sendall(data[:allowed])
                        break
                dst.sendall(data)
                link.sent[direction] += len(data)
                if self._record is not None:
                    with self._lock:
                        self._record[direction] += data
        except OSError:
            pass
        # One side ended (EOF, error or budget): end the whole connection, as a broken network
        # would. A clean EOF from a peer is passed on as a reset too; tests only need "gone".
        self._drop(link)


# --------------------------------------------------------------------------- seeding


def seed_messages(
    host: str,
    port: int,
    user: str,
    password: str,
    folder: str,
    messages: Sequence[bytes],
    *,
    flags: Sequence[str] = (),
    per_message_flags: Sequence[Sequence[str]] | None = None,
    internaldate: dt.datetime | None = None,
    internaldates: Sequence[dt.datetime | None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> list[int]:
    """APPEND ``messages`` byte for byte to ``folder`` (created if missing); return their UIDs.

    ``flags``/``internaldate`` apply to every message; ``per_message_flags``/``internaldates``
    (same length as ``messages``) override them one by one. Give aware datetimes: IMAPClient
    reads naive ones as local time. UIDs come from APPENDUID (UIDPLUS; both sandbox servers
    have it); an APPEND without APPENDUID contributes no UID.
    """
    from imapclient import IMAPClient

    for name, given in (("per_message_flags", per_message_flags), ("internaldates", internaldates)):
        if given is not None and len(given) != len(messages):
            raise ValueError(f"{name} has {len(given)} entries for {len(messages)} messages")
    client = IMAPClient(host, port, ssl=tls is not None, ssl_context=tls, timeout=30)
    uids: list[int] = []
    try:
        client.login(user, password)
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for i, message in enumerate(messages):
            msg_flags = per_message_flags[i] if per_message_flags is not None else flags
            when = internaldates[i] if internaldates is not None else internaldate
            response = client.append(folder, message, flags=tuple(msg_flags), msg_time=when)
            uid = _appenduid(response)
            if uid is not None:
                uids.append(uid)
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return uids


def _appenduid(response: object) -> int | None:
    """The UID from ``[APPENDUID <validity> <uid>] ...`` (RFC 4315), if present."""
    text = response.decode(errors="replace") if isinstance(response, bytes) else str(response)
    if not text.startswith("[APPENDUID "):
        return None
    parts = text[1:].split("]", 1)[0].split()
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return int(parts[2])
