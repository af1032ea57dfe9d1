"""Throw-away LDAP directories for tests, the demo and the benchmark: Samba AD DCs and OpenLDAP.

Terminology:

- *instance*: one directory server process with its own directory (``base_dir``). Several run
  side by side; nothing is shared with a system-wide server.
- *template* (Samba only): a provisioned, schema-extended, stopped domain kept in a cache
  directory. Provisioning takes seconds; an instance is a ``cp -a`` of the template, which
  starts in about a second. Every instance of one template has the same domain SID.
- *local write*: a change written straight into Samba's database file with ``ldbmodify``
  while Samba runs, for what AD refuses over LDAP (sIDHistory, a chosen objectSid).

Contracts:

- ``start()`` returns only when the LDAP port answers an anonymous bind; on failure it stops
  what it started and raises :class:`SandboxError` with the tail of the server log.
- ``stop()`` is idempotent and returns when the process is gone and the port is closed; the
  context manager's exit and interpreter exit (if forgotten) call it.
- Only 127.0.0.x addresses are used. Samba's LDAP ports are fixed (389/636), so each Samba DC
  needs its own address (127.0.0.11, 127.0.0.12, ...); slapd takes a free port on 127.0.0.1.

Like :mod:`mailferry.sandbox.servers`, this is test tooling that depends on the stdlib and the
server binaries only (``samba``, ``samba-tool``, ``ldbmodify``, ``slapd``, ``ldapadd``/
``ldapmodify`` from ldap-utils; see ``tests/servers/REQUIREMENTS.txt``), not on an LDAP library.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self

from mailferry.sandbox.servers import (
    HOST,
    STOP_TIMEOUT,
    LdapUserdb,
    Process,
    SandboxError,
    _check_free,
    _log_tail,
    _terminate,
    free_port,
    run_tool,
    wait_port_closed,
)

__all__ = [
    "SAMBA_CACHE_ENV",
    "LdapServer",
    "SambaDC",
    "Slapd",
    "find_samba",
    "find_slapd",
    "ldif_attr",
    "wait_ldap_ready",
]

LDAP_START_TIMEOUT = 30.0
SAMBA_CACHE_ENV = "MAILFERRY_SAMBA_CACHE"
_DEFAULT_SAMBA_CACHE = Path(tempfile.gettempdir()) / "mailferry-samba-cache"
_SLAPD_SCHEMA_DIR = Path("/etc/ldap/schema")
_SLAPD_MODULE_DIR = Path("/usr/lib/ldap")
# An anonymous simple bind, LDAPv3, message id 1 (RFC 4511 4.2): 30 0c 02 01 01 60 07 02 01 03 04 00 80 00
_ANON_BIND = bytes.fromhex("300c020101600702010304008000")


def _data_file(name: str) -> str:
    return resources.files("mailferry.sandbox").joinpath("data", name).read_text(encoding="utf-8")


def find_samba() -> str | None:
    """The ``samba`` binary if Samba AD DC and its tools are installed, else None."""
    samba = shutil.which("samba") or ("/usr/sbin/samba" if Path("/usr/sbin/samba").exists() else None)
    if samba is None or shutil.which("samba-tool") is None or shutil.which("ldbmodify") is None:
        return None
    if shutil.which("ldapmodify") is None:
        return None
    return samba


def find_slapd() -> str | None:
    """The ``slapd`` binary if OpenLDAP and ldap-utils are installed, else None."""
    slapd = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
    if slapd is None or shutil.which("ldapadd") is None:
        return None
    return slapd


def wait_ldap_ready(host: str, port: int, *, timeout: float = LDAP_START_TIMEOUT, alive: Process | None = None) -> None:
    """Wait until ``host:port`` answers an anonymous LDAP bind with resultCode success."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise SandboxError(f"server process exited with code {alive.returncode} during start")
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                sock.sendall(_ANON_BIND)
                reply = sock.recv(256)
        except OSError as exc:
            last = exc
        else:
            # BindResponse [APPLICATION 1] = 0x61, then resultCode ENUMERATED 0 = 0a 01 00.
            if b"\x61" in reply and b"\x0a\x01\x00" in reply:
                return
            last = reply
        time.sleep(0.05)
    raise SandboxError(f"LDAP on {host}:{port} not ready within {timeout:.0f} s (last: {last!r})")


def ldif_attr(name: str, value: str | bytes) -> str:
    """One ``name: value`` LDIF line, base64 (``name:: ...``) when RFC 2849 requires it."""
    raw = value.encode() if isinstance(value, str) else value
    safe = (
        bool(raw)
        and raw[0:1] not in (b" ", b":", b"<")
        and not raw.endswith(b" ")
        and all(0x01 <= b <= 0x7F and b not in (0x0A, 0x0D) for b in raw)
    )
    if safe:
        return f"{name}: {raw.decode()}\n"
    return f"{name}:: {base64.b64encode(raw).decode()}\n"


class LdapServer:
    """What both sandbox directories share: an address, an admin bind, LDIF helpers, stop."""

    host: str
    port: int
    base_dn: str
    admin_dn: str
    admin_password: str
    base_dir: Path
    log_path: Path
    start_seconds: float

    def __init__(self) -> None:
        self._proc: Process | None = None

    @property
    def uri(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def add_ldif(self, ldif: str) -> None:
        """Add the entries of ``ldif`` (records without ``changetype``) as the admin, in one
        ``ldapadd`` run: about 1,000 entries a second on slapd, so bulk fixtures stay fast."""
        self._ldap_tool("ldapadd", ldif)

    def modify_ldif(self, ldif: str) -> None:
        """Apply ``ldif`` change records (``changetype: modify/add/delete/modrdn``) over LDAP."""
        self._ldap_tool("ldapmodify", ldif)

    def _ldap_tool(self, tool: str, ldif: str) -> None:
        run_tool(
            [tool, "-x", "-H", self.uri, "-D", self.admin_dn, "-w", self.admin_password, "-o", "nettimeout=10"],
            input_=ldif,
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        was_running = proc.poll() is None
        _terminate(proc, grace=self._stop_grace)
        if was_running:
            wait_port_closed(self.port, host=self.host, timeout=STOP_TIMEOUT)

    _stop_grace = 3.0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- Samba AD DC


class SambaDC(LdapServer):
    """A Samba 4 Active Directory domain controller serving LDAP only, on its own 127.0.0.x.

    Decisions (why):

    - ``samba-tool domain provision --dns-backend=NONE --use-rfc2307`` once per (realm, domain,
      ip, host, admin password, Samba version) into a template under ``$MAILFERRY_SAMBA_CACHE``
      (default ``/tmp/mailferry-samba-cache``; a file lock serialises parallel provisioning).
      The template is started once to apply the Exchange schema extension (targetAddress,
      mailNickname, msExchRecipientTypeDetails; proxyAddresses and legacyExchangeDN are in
      Samba's base schema) and to let Samba create its self-signed TLS files, then stopped.
      Each instance is a ``cp -a`` of it (fresh data every time, ~1 s to start).
    - Our own smb.conf: ``server services = ldap`` (no smbd, KDC, DNS, RPC), ``interfaces =
      IP/8`` (``IP`` alone listens nowhere), ``bind interfaces only``, ``ldap server require
      strong auth = no`` (simple binds over plain ``ldap://``, only on loopback here), and every
      private/state/lock/cache/pid directory under ``base_dir``.
    - ``samba -i -M single``: one foreground process (~50 MB) that is our child.
    - LDAPS on 636 uses Samba's self-signed certificate; ``ca_file`` (``private/tls/ca.pem``)
      verifies it (its names are the DC's DNS name, not the IP: connect by IP with hostname
      checking off, or map ``dns_name`` to the IP).
    """

    ip: str
    realm: str
    domain: str
    host_name: str
    ldaps_port: int | None
    ca_file: Path | None
    sam_path: Path
    config_path: Path

    def __init__(self, base_dir: Path, *, ip: str, realm: str, domain: str, admin_password: str, host: str) -> None:
        super().__init__()
        if not ip.startswith("127.") or len(ip.split(".")) != 4:
            raise ValueError(f"SambaDC only runs on a 127.0.0.x address, not {ip!r}")
        self.ip = self.host = ip
        self.port = 389
        self.ldaps_port = 636
        self.realm = realm.upper()
        self.domain = domain.upper()
        self.host_name = host
        self.admin_password = admin_password
        self.base_dir = base_dir.resolve()
        self.base_dn = ",".join(f"DC={part}" for part in self.realm.lower().split("."))
        self.admin_dn = f"CN=Administrator,CN=Users,{self.base_dn}"
        self.sam_path = self.base_dir / "private" / "sam.ldb"
        self.config_path = self.base_dir / "etc" / "smb.conf"
        self.log_path = self.base_dir / "log" / "stdout.log"
        self.ca_file = None
        self.start_seconds = 0.0

    _stop_grace = 2.0

    @property
    def dns_name(self) -> str:
        """The DC's DNS name, e.g. ``dc.src.test`` (the name in its TLS certificate)."""
        return f"{self.host_name}.{self.realm}".lower()

    @property
    def admin_upn(self) -> str:
        """``Administrator@src.test``: AD also accepts this as a simple-bind name."""
        return f"Administrator@{self.realm.lower()}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        ip: str,
        realm: str,
        domain: str,
        admin_password: str,
        host: str = "dc",
        cache_dir: Path | None = None,
    ) -> SambaDC:
        """Copy the (cached) provisioned domain into ``base_dir`` (must be empty or absent),
        start Samba on ``ip`` and wait for LDAP.

        The admin password must pass AD's default complexity rules (3 of upper, lower, digit,
        symbol; >= 7 chars). The first call for a domain provisions it (~6-10 s).
        """
        samba = find_samba()
        if samba is None:
            raise SandboxError(
                "Samba AD DC not found (apt-get install samba-ad-dc samba-ad-provision ldb-tools ldap-utils)"
            )
        t0 = time.monotonic()
        base_dir = Path(base_dir)
        if base_dir.exists() and any(base_dir.iterdir()):
            raise SandboxError(f"{base_dir} is not empty; a SambaDC needs a fresh directory")
        server = cls(base_dir, ip=ip, realm=realm, domain=domain, admin_password=admin_password, host=host)
        template = _samba_template(
            samba,
            cache_dir or Path(os.environ.get(SAMBA_CACHE_ENV) or _DEFAULT_SAMBA_CACHE),
            ip=ip,
            realm=server.realm,
            domain=server.domain,
            admin_password=admin_password,
            host=host,
        )
        _check_ldap_port_free(ip, server.port)
        server.base_dir.mkdir(parents=True, exist_ok=True)
        run_tool(["cp", "-a", f"{template}/.", str(server.base_dir)])
        ca = server.base_dir / "private" / "tls" / "ca.pem"
        server.ca_file = ca if ca.exists() else None
        _write_smb_conf(server.base_dir, ip=ip, realm=server.realm, domain=server.domain, host=host)
        try:
            server._proc = _launch_samba(samba, server.base_dir)
            atexit.register(server.stop)
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        server.start_seconds = time.monotonic() - t0
        return server

    def _wait_ready(self) -> None:
        try:
            wait_ldap_ready(self.ip, self.port, alive=self._proc)
        except SandboxError as exc:
            with contextlib.suppress(Exception):
                self.stop()
            raise SandboxError(
                f"Samba in {self.base_dir} did not start: {exc}\n--- {self.log_path}\n{_log_tail(self.log_path)}"
            ) from None

    # ---- local writes (what AD refuses over LDAP)

    def ldb_modify(self, ldif: str) -> None:
        """Apply change records straight to ``sam.ldb`` (``ldbmodify``, as root, while Samba
        runs; Samba sees the change at once). Bypasses AD's LDAP-side checks: use it only for
        what a real migration tool gets from elsewhere (sIDHistory from ADMT/DsAddSidHistory)."""
        self._ldb("ldbmodify", ldif)

    def ldb_add(self, ldif: str) -> None:
        """Add entries straight into ``sam.ldb`` in one transaction (``ldbadd --nosync``): Samba's
        modules still fill in objectSid, objectGUID, whenCreated... About 1,100 contacts a
        second, where ``add_ldif`` over LDAP manages ~150 (one synced transaction per entry)."""
        self._ldb("ldbadd", ldif)

    def _ldb(self, tool: str, ldif: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".ldif", dir=self.base_dir, delete=False) as fh:
            fh.write(ldif)
        try:
            run_tool([tool, "-H", str(self.sam_path), "--nosync", fh.name], timeout=300)
        finally:
            os.unlink(fh.name)

    def set_sid_history(self, dn: str, sids: Sequence[str]) -> None:
        """Replace the sIDHistory of ``dn`` with ``sids`` (``S-1-5-21-...`` strings; empty
        removes it). Over LDAP Samba answers unwillingToPerform 00002035, as real AD does."""
        for sid in sids:
            _check_sid(sid)
        ldif = ldif_attr("dn", dn) + "changetype: modify\nreplace: sIDHistory\n"
        ldif += "".join(ldif_attr("sIDHistory", sid) for sid in sids) + "-\n"
        self.ldb_modify(ldif)

    def domain_sid(self) -> str:
        """The domain SID (``S-1-5-21-a-b-c``), read from the local database."""
        out = run_tool(["ldbsearch", "-H", str(self.sam_path), "-s", "base", "-b", self.base_dn, "objectSid"])
        for line in out.splitlines():
            if line.startswith("objectSid: "):
                return line.split(": ", 1)[1].strip()
        raise SandboxError(f"no objectSid on {self.base_dn}")

    def dovecot_userdb(self, *, user_filter: str | None = None) -> LdapUserdb:
        """Settings for a sandbox Dovecot that finds users here by sAMAccountName or mail and
        checks passwords by binding as them (enabled users with a unicodePwd only)."""
        flt = user_filter or (
            "(&(objectClass=user)(!(objectClass=computer))(|(sAMAccountName=%u)(mail=%u)(userPrincipalName=%u)))"
        )
        return LdapUserdb(
            uri=self.uri,
            base=self.base_dn,
            bind_dn=self.admin_dn,
            bind_password=self.admin_password,
            user_filter=flt,
            login_attr="sAMAccountName",
            iterate_filter="(&(objectClass=user)(!(objectClass=computer))(mail=*))",
        )


def _check_ldap_port_free(ip: str, port: int) -> None:
    """Samba can't move off 389: fail clearly when another DC (or slapd) holds ``ip``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as exc:
            raise SandboxError(f"{ip}:{port} is taken ({exc.strerror}); each SambaDC needs its own 127.0.0.x") from None


def _check_sid(sid: str) -> None:
    parts = sid.split("-")
    if len(parts) < 4 or parts[0] != "S" or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"not a SID string (S-1-5-21-...): {sid!r}")


def _write_smb_conf(d: Path, *, ip: str, realm: str, domain: str, host: str) -> None:
    for sub in ("log", "run", "ntp_signd", "winbindd", "cache", "state", "etc"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "etc" / "smb.conf").write_text(
        f"""# Generated by mailferry.sandbox.ldap_servers; throw-away test DC. Do not edit.
[global]
	netbios name = {host.upper()}
	realm = {realm}
	workgroup = {domain}
	server role = active directory domain controller
	server services = ldap
	interfaces = {ip}/8
	bind interfaces only = yes
	ldap server require strong auth = no
	dsdb:schema update allowed = yes
	private dir = {d}/private
	lock directory = {d}
	state directory = {d}/state
	cache directory = {d}/cache
	pid directory = {d}/run
	binddns dir = {d}/bind-dns
	ntp signd socket directory = {d}/ntp_signd
	winbindd socket directory = {d}/winbindd
	log file = {d}/log/log.%m
	logging = file
	log level = 1
	idmap_ldb:use rfc2307 = yes
"""
    )


def _launch_samba(samba: str, d: Path) -> Process:
    (d / "log").mkdir(parents=True, exist_ok=True)
    with (d / "log" / "stdout.log").open("ab") as log:
        return subprocess.Popen(
            [samba, "-i", "-M", "single", "-s", str(d / "etc" / "smb.conf")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def _samba_version(samba: str) -> str:
    return run_tool([samba, "-V"]).strip()


def _samba_template(
    samba: str, cache: Path, *, ip: str, realm: str, domain: str, admin_password: str, host: str
) -> Path:
    """The cached, provisioned, schema-extended template for these settings (made if missing)."""
    schema_ext = _data_file("samba-exchange-schema-ext.ldif")
    key_src = "\0".join([_samba_version(samba), ip, realm, domain, admin_password, host, schema_ext])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o700)  # the templates hold secrets (admin password, keys)
    template = cache / f"{domain}-{ip}-{key}"
    with _locked(cache / f".{template.name}.lock"):
        if (template / ".ready").exists():
            return template
        shutil.rmtree(template, ignore_errors=True)
        work = cache / f".build-{template.name}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            _provision(samba, work, ip=ip, realm=realm, domain=domain, admin_password=admin_password, host=host)
            _extend_schema(samba, work, ip=ip, realm=realm, domain=domain, admin_password=admin_password, host=host)
            (work / ".ready").write_text("provisioned by mailferry.sandbox.ldap_servers\n")
            work.rename(template)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return template


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _provision(samba: str, d: Path, *, ip: str, realm: str, domain: str, admin_password: str, host: str) -> None:
    d.mkdir(parents=True)
    try:
        run_tool(
            [
                "samba-tool",
                "domain",
                "provision",
                f"--targetdir={d}",
                f"--realm={realm}",
                f"--domain={domain}",
                "--server-role=dc",
                "--dns-backend=NONE",
                "--use-rfc2307",
                f"--adminpass={admin_password}",
                f"--host-name={host}",
                f"--host-ip={ip}",
                f"--option=interfaces={ip}/8",
                "--option=bind interfaces only=yes",
            ],
            timeout=300,
        )
    except SandboxError as exc:
        raise SandboxError(f"samba-tool domain provision for {realm} failed: {exc}") from None
    (d / "etc" / "smb.conf").rename(d / "etc" / "smb.conf.provision")


def _extend_schema(samba: str, d: Path, *, ip: str, realm: str, domain: str, admin_password: str, host: str) -> None:
    """Start the fresh domain once: apply the Exchange schema extension over LDAP (schema
    updates are refused by ldbmodify on the file) and let Samba write its TLS files."""
    _write_smb_conf(d, ip=ip, realm=realm, domain=domain, host=host)
    proc = _launch_samba(samba, d)
    try:
        try:
            wait_ldap_ready(ip, 389, alive=proc, timeout=120)
        except SandboxError as exc:
            raise SandboxError(f"{exc}\n--- {d}/log/stdout.log\n{_log_tail(d / 'log' / 'stdout.log')}") from None
        base_dn = ",".join(f"DC={part}" for part in realm.lower().split("."))
        ldif = _data_file("samba-exchange-schema-ext.ldif").replace("@BASE_DN@", base_dn)
        run_tool(
            [
                "ldapmodify",
                "-x",
                "-H",
                f"ldap://{ip}",
                "-D",
                f"CN=Administrator,CN=Users,{base_dn}",
                "-w",
                admin_password,
            ],
            input_=ldif,
        )
        deadline = time.monotonic() + 60
        while not (d / "private" / "tls" / "ca.pem").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        _terminate(proc, grace=5.0)
        with contextlib.suppress(SandboxError):
            wait_port_closed(389, host=ip)
    # Logs and pid files of the template run are not part of the template.
    for sub in ("log", "run"):
        shutil.rmtree(d / sub, ignore_errors=True)


# --------------------------------------------------------------------------- OpenLDAP slapd


class Slapd(LdapServer):
    """An OpenLDAP 2.5 slapd with one mdb database, on 127.0.0.1 and a free (or given) port.

    Decisions (why):

    - Plain ``slapd.conf`` (``-f``), not cn=config: one file to read, nothing to bootstrap.
    - Schemas: core, cosine, inetorgperson, nis, misc (mailLocalAddress), plus our AD
      look-alike (``mailferry-ad.schema``: objectSid, sIDHistory, objectGUID, sAMAccountName,
      proxyAddresses, legacyExchangeDN, userAccountControl, classes user/contact/group) and
      ``mailferry-mail.schema`` (mailAlternateAddress, aux class mailAlternateRecipient).
    - ``sizelimit unlimited`` (global and for the database, for everyone); paged results
      (RFC 2696) are built into slapd. Everyone may read (``access to * by * read``); the root
      DN ``cn=admin,<suffix>`` writes. Entries may carry ``userPassword`` (``{SSHA}`` or plain),
      and a simple bind as the entry checks it (what Dovecot's ``auth_bind`` uses).
    - The suffix entry (dcObject + organization) is created at start, with ``ou=Users``
      unless ``users_ou=False``.
    - ``slapd -d 0`` stays in the foreground as our child; SIGTERM stops it in ~1 s.
    """

    suffix: str
    root_dn: str
    root_pw: str
    config_path: Path

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None,
        suffix: str,
        root_pw: str,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> None:
        super().__init__()
        self.tls_files = tls_files
        self.host = HOST
        self.port = port or free_port()
        self.suffix = self.base_dn = suffix
        self.root_dn = self.admin_dn = f"cn=admin,{suffix}"
        self.root_pw = self.admin_password = root_pw
        self.base_dir = base_dir.resolve()
        self.config_path = self.base_dir / "slapd.conf"
        self.log_path = self.base_dir / "slapd.log"
        self.start_seconds = 0.0

    @classmethod
    def start(
        cls,
        base_dir: Path,
        *,
        port: int | None = None,
        suffix: str,
        root_pw: str,
        users_ou: bool = True,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> Slapd:
        """Write slapd.conf under ``base_dir``, start slapd, create the suffix entry.
        ``tls_files=(ca, cert, key)``: offer StartTLS with that certificate (e.g. one of
        :mod:`mailferry.sandbox.certs`); the tests' own LDAP clients stay on plain LDAP."""
        slapd = find_slapd()
        if slapd is None:
            raise SandboxError("slapd not found (apt-get install slapd ldap-utils)")
        if "\n" in root_pw or not root_pw:
            raise ValueError("root_pw must be a non-empty single line")
        t0 = time.monotonic()
        server = cls(Path(base_dir), port=port, suffix=suffix, root_pw=root_pw, tls_files=tls_files)
        server._prepare()
        try:
            server._launch(slapd)
            atexit.register(server.stop)
            server._create_suffix(users_ou)
        except BaseException:
            server.stop()
            raise
        server.start_seconds = time.monotonic() - t0
        return server

    def _prepare(self) -> None:
        d = self.base_dir
        (d / "data").mkdir(parents=True, exist_ok=True)
        for name in ("mailferry-ad.schema", "mailferry-mail.schema"):
            (d / name).write_text(_data_file(name))
        includes = "".join(
            f"include         {_SLAPD_SCHEMA_DIR / name}.schema\n"
            for name in ("core", "cosine", "inetorgperson", "nis", "misc")
        )
        quoted_pw = self.root_pw.replace("\\", "\\\\").replace('"', '\\"')
        tls = ""
        if self.tls_files is not None:
            ca, cert, key = self.tls_files
            tls = f"TLSCACertificateFile {ca}\nTLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
        self.config_path.write_text(
            f"""# Generated by mailferry.sandbox.ldap_servers; throw-away test server. Do not edit.
{includes}include         {d / "mailferry-ad.schema"}
include         {d / "mailferry-mail.schema"}
pidfile         {d / "slapd.pid"}
argsfile        {d / "slapd.args"}
{tls}modulepath      {_SLAPD_MODULE_DIR}
moduleload      back_mdb
sizelimit       unlimited
timelimit       unlimited

database        mdb
maxsize         1073741824
suffix          "{self.suffix}"
rootdn          "{self.root_dn}"
rootpw          "{quoted_pw}"
directory       {d / "data"}
# Throw-away data: no fsync per write (1,100 adds: ~8 s synced, well under 1 s without).
dbnosync
limits          * size=unlimited time=unlimited
index           objectClass eq
index           entryUUID eq
index           uid,mail,cn eq,sub
index           mailAlternateAddress,mailLocalAddress eq
index           objectSid,sIDHistory,objectGUID eq
index           sAMAccountName,userPrincipalName,proxyAddresses,legacyExchangeDN eq,sub
# Anonymous and user binds may read everything (passwords only for binding); the root DN writes.
access to attrs=userPassword
        by anonymous auth
        by self read
        by * none
access to * by * read
"""
        )
        self.config_path.chmod(0o600)

    def _launch(self, slapd: str) -> None:
        _check_free(self.port)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [slapd, "-d", "0", "-h", f"ldap://{self.host}:{self.port}/", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_ldap_ready(self.host, self.port, alive=self._proc, timeout=10.0)
        except SandboxError as exc:
            with contextlib.suppress(Exception):
                self.stop()
            raise SandboxError(
                f"slapd in {self.base_dir} did not start: {exc}\n--- {self.log_path}\n{_log_tail(self.log_path)}"
            ) from None

    def _create_suffix(self, users_ou: bool) -> None:
        first = self.suffix.split(",", 1)[0]
        attr, _, value = first.partition("=")
        if attr.strip().lower() == "dc":
            ldif = ldif_attr("dn", self.suffix) + "objectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
            ldif += ldif_attr("o", value) + ldif_attr("dc", value)
        elif attr.strip().lower() == "o":
            ldif = ldif_attr("dn", self.suffix) + "objectClass: top\nobjectClass: organization\n"
            ldif += ldif_attr("o", value)
        else:
            raise SandboxError(f"suffix must start with dc= or o=: {self.suffix!r}")
        if users_ou:
            ldif += "\n" + ldif_attr("dn", f"ou=Users,{self.suffix}") + "objectClass: organizationalUnit\nou: Users\n"
        self.add_ldif(ldif)

    @property
    def users_dn(self) -> str:
        return f"ou=Users,{self.suffix}"

    def dovecot_userdb(self, *, user_filter: str | None = None) -> LdapUserdb:
        """Settings for a sandbox Dovecot that finds inetOrgPerson users here by uid or mail and
        checks their userPassword by binding as them."""
        return LdapUserdb(
            uri=self.uri,
            base=self.suffix,
            bind_dn=self.root_dn,
            bind_password=self.root_pw,
            user_filter=user_filter or "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))",
            login_attr="uid",
            iterate_filter="(&(objectClass=inetOrgPerson)(uid=*))",
        )
