"""The typed configuration of a migration project, and the pure value parsers it uses.

Values here are already checked: :func:`mailferry.config.load.load_project` builds them only when
the whole project file is valid. Paths are absolute (resolved against the project folder).
Regular expressions are kept as their source text; each has been compiled once to check it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from mailferry.config.secrets import SecretRef

Security = Literal["tls", "starttls", "none"]
AdminMethod = Literal["sasl-authzid", "dovecot-master"]

SECURITY_CHOICES: tuple[Security, ...] = ("tls", "starttls", "none")
ADMIN_METHODS: tuple[AdminMethod, ...] = ("sasl-authzid", "dovecot-master")


def default_port(security: Security) -> int:
    """993 for implicit TLS (RFC 8314), 143 for STARTTLS and for no encryption."""
    return 993 if security == "tls" else 143


class UrlProblem(ValueError):
    """What is wrong with a server URL. ``kind``: "port", "scheme", "login", "path", "host",
    "ipv6". The message never repeats the URL: a login and password may have been pasted in."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def split_server_url(
    url: str,
    schemes: Mapping[str, Security],
    default: Callable[[Security], int],
    *,
    show: Callable[[str], str] = repr,
) -> tuple[str, int, Security]:
    """``scheme://host[:port]`` -> (host, port, security), for IMAP and LDAP URLs alike.
    Raises :class:`UrlProblem`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        # urlsplit quotes what it could not read as a port: part of a password after "user:".
        raise UrlProblem("port", str(error) if "@" not in url else "not a URL (a bad port or [IPv6] address)") from None
    security = schemes.get(parts.scheme.lower())
    if security is None:
        raise UrlProblem("scheme", f"unknown scheme {show(parts.scheme)}" if parts.scheme else "no scheme")
    if "@" in parts.netloc:
        raise UrlProblem("login", "must not hold a login or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UrlProblem("path", "must be only scheme, host and port")
    host = parts.hostname or ""
    if host == "":
        raise UrlProblem("host", "no host")
    if ":" in host and "[" not in parts.netloc:
        example = f"{parts.scheme.lower()}://[::1]:{default(security)}"
        raise UrlProblem("ipv6", f"write an IPv6 address in brackets, e.g. {example}")
    if port == 0:
        raise UrlProblem("port", "port must be between 1 and 65535")
    return host, port if port is not None else default(security), security


def normalize_dav_url(url: str) -> str:
    """``http(s)://host[:port][/path]`` -> the same with a path ending in ``/``. A path is
    allowed (a DAV server often lives under one: ``/dav/``); a login, query or fragment is not.
    Raises :class:`UrlProblem` (never repeating the URL, which may hold a pasted password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UrlProblem("port", "not a URL (a bad port or [IPv6] address)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlProblem("scheme", "must start with https:// (or http:// to a loopback address)")
    if "@" in parts.netloc:
        raise UrlProblem("login", "must not hold a login or password: give the admin in [*.dav.admin]")
    if not parts.hostname:
        raise UrlProblem("host", "no host")
    if parts.query or parts.fragment:
        raise UrlProblem("path", "must not hold a query or fragment")
    if port == 0:
        raise UrlProblem("port", "port must be between 1 and 65535")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (also written ``[::1]`` or IPv4-mapped)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True, slots=True)
class AdminLogin:
    """One administrator login that opens every mailbox on a server.

    ``sasl-authzid``: AUTHENTICATE PLAIN with authorization identity = the user (RFC 4616;
    Dovecot master users and Cyrus admins). ``dovecot-master``: LOGIN ``user<sep>admin``.
    """

    user: str
    password: SecretRef
    method: AdminMethod = "sasl-authzid"
    master_separator: str = "*"


DavAdminMethod = Literal["path", "authorize-as"]
DAV_ADMIN_METHODS: tuple[DavAdminMethod, ...] = ("path", "authorize-as")
SchedulingMode = Literal["auto", "paused", "client"]
SCHEDULING_MODES: tuple[SchedulingMode, ...] = ("auto", "paused", "client")


@dataclass(frozen=True, slots=True)
class DavAdminLogin:
    """One administrator login that opens every account's calendars and address books.

    ``path``: the admin logs in as itself and opens each account's collections by their path
    (Radicale with a rights rule that grants it). ``authorize-as``: the admin logs in as itself and
    acts as the account (Cyrus httpd's ``Authorize-As`` header, for its admins).
    """

    user: str
    password: SecretRef
    method: DavAdminMethod = "path"


@dataclass(frozen=True, slots=True)
class DavServerConfig:
    """The CalDAV/CardDAV side of a server: ``url`` is the base URL discovery starts from
    (``https://dav.example/`` or, on loopback, ``http://``); RFC 6764 finds each account's homes."""

    url: str
    verify_certificates: bool = True
    ca_file: Path | None = None
    allow_plaintext_login: bool = False
    timeout: float = 60.0
    max_connections: int = 16
    admin: DavAdminLogin | None = None


@dataclass(frozen=True, slots=True)
class CalendarRules:
    """``[calendars]``: how calendars and contacts are carried.

    ``scheduling``: ``auto`` asks the target whether it schedules on import (RFC 6638
    ``calendar-auto-schedule``) and then marks imported meetings ``SCHEDULE-AGENT=CLIENT``;
    ``paused``: the admin has paused the target's scheduling for the migration window (Cyrus
    ``caldav_allowscheduling: off``), meetings are imported unchanged; ``client``: always mark.
    ``addresses``: old address -> new address, beside the identity map of ``directory apply``;
    ``domains``: old mail domain -> new mail domain, for people neither names.
    """

    scheduling: SchedulingMode = "auto"
    addresses: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, str] = field(default_factory=dict)
    propagate_deletions: bool = False
    sharing: bool = True
    batch_items: int = 100


@dataclass(frozen=True, slots=True)
class SieveServerConfig:
    """The ManageSieve side of a server (RFC 5804): ``sieve://host[:4190]``. Logins are the IMAP
    side's: each account's password reference, else the ``[*.admin]`` login (SASL PLAIN with the
    account as authorization identity, or Dovecot's ``user*admin``). ``security``: ``starttls``
    (the RFC's default), ``tls`` (implicit) or ``none`` (loopback, or ``allow_plaintext_login``)."""

    host: str
    port: int = 4190
    security: Security = "starttls"
    verify_certificates: bool = True
    ca_file: Path | None = None
    allow_plaintext_login: bool = False
    timeout: float = 60.0


SIEVE_SCHEMES: Mapping[str, Security] = MappingProxyType({"sieve": "starttls"})


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """The mail submission service of a server (RFC 6409), which ``check`` probes (EHLO, STARTTLS,
    AUTH mechanisms) and ``cutover check`` names: ``submission://host[:587]`` (STARTTLS) or
    ``submissions://host[:465]`` (implicit TLS, RFC 8314). mailferry never sends mail through it."""

    host: str
    port: int = 587
    security: Security = "starttls"
    verify_certificates: bool = True
    ca_file: Path | None = None
    timeout: float = 30.0


SUBMISSION_SCHEMES: Mapping[str, Security] = MappingProxyType({"submission": "starttls", "submissions": "tls"})


@dataclass(frozen=True, slots=True)
class DistributedConfig:
    """``[distributed]``: runs spread over Celery workers (``migrate --distributed``).

    ``broker``: the Celery broker's URL without a password (``redis://host:6379/0``; RabbitMQ's
    ``amqp://`` works too), ``broker_password`` its password by reference; the same Redis keeps the
    cluster's connection slots and rates (with RabbitMQ, ``limits`` names a Redis for them).
    ``accounts_per_worker``: accounts one worker moves at once. ``visibility_timeout``: seconds
    after which a task a dead worker had taken is given to another (longer than the longest
    account takes). ``lease_seconds``: a dead worker's connection slots come back after this.
    ``rate_messages`` / ``rate_bytes``: per second, across every worker (0: no limit).
    """

    broker: str
    broker_password: SecretRef | None = None
    limits: str = ""
    accounts_per_worker: int = 2
    visibility_timeout: int = 3600
    lease_seconds: int = 30
    rate_messages: float = 0.0
    rate_bytes: float = 0.0


@dataclass(frozen=True, slots=True)
class OrganizationConfig:
    """``[organization]``: what ``check`` and ``cutover check`` look at beyond the mailboxes.

    ``domains``: the mail domains whose DNS is checked (MX, SRV, autoconfig, SPF, DKIM, DMARC).
    ``resolver``: ``(host, port)`` of the DNS server to ask; None: the system resolver.
    ``source_names`` / ``target_names``: the host names clients and DNS know each side's servers
    by (``mail.old.example``); the ``host`` of ``[source]``/``[target]`` counts too when it is a
    name. ``dkim_selectors``: the target's DKIM selectors (``<selector>._domainkey.<domain>``).
    ``delta_window_hours``: a pass older than this is stale for ``cutover check`` (the source kept
    changing since). ``expiry_warning_days``: a certificate that expires sooner is a warning.
    """

    domains: tuple[str, ...] = ()
    resolver: tuple[str, int] | None = None
    source_names: tuple[str, ...] = ()
    target_names: tuple[str, ...] = ()
    dkim_selectors: tuple[str, ...] = ()
    delta_window_hours: float = 24.0
    expiry_warning_days: int = 21


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    security: Security
    verify_certificates: bool = True
    ca_file: Path | None = None
    allow_plaintext_login: bool = False
    timeout: float = 60.0
    max_connections: int = 24
    admin: AdminLogin | None = None
    dav: DavServerConfig | None = None
    sieve: SieveServerConfig | None = None
    submission: SubmissionConfig | None = None


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One account to migrate. ``line`` is its line in the accounts CSV (0 when not from one).

    A password reference, when present, is used instead of the side's admin login.
    """

    source_user: str
    target_user: str
    source_password: SecretRef | None = None
    target_password: SecretRef | None = None
    exclude_folders: tuple[str, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class FolderRename:
    """``re.sub(pattern, replacement, path)`` on a canonical folder path."""

    pattern: str
    replacement: str


@dataclass(frozen=True, slots=True)
class FolderRules:
    """Rules on canonical folder paths ("/" between levels, e.g. ``Projects/2024``).

    ``include``/``exclude`` are searched (``re.search``); empty ``include`` means every folder.
    ``renames`` apply in order and the first whose pattern matches wins.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    separator_substitute: str = "_"
    subscriptions: bool = True
    renames: tuple[FolderRename, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageRules:
    """``since`` is inclusive, ``before`` exclusive (INTERNALDATE); sizes in bytes, inclusive."""

    since: date | None = None
    before: date | None = None
    max_size: int | None = None
    min_size: int | None = None
    propagate_deletions: bool = False
    sync_flags: bool = True


@dataclass(frozen=True, slots=True)
class Performance:
    accounts_in_parallel: int = 4
    connections_per_account: int = 2
    batch_messages: int = 100
    batch_bytes: int = 16_000_000
    retries: int = 5


LdapDialect = Literal["ad", "generic"]
LDAP_DIALECTS: tuple[LdapDialect, ...] = ("ad", "generic")
DIRECTORY_RULES: tuple[str, ...] = ("sid", "x500", "smtp", "login", "custom")


@dataclass(frozen=True, slots=True)
class LdapServerConfig:
    """One directory server. ``url``: ``ldaps://host[:636]``, ``ldap+starttls://host[:389]`` or
    ``ldap://host[:389]``. ``tls_server_name``: the name to verify in its certificate when the
    host is given as an address (Samba's certificate names the DC, not the IP)."""

    host: str
    port: int
    security: Security
    bind_dn: str
    password: SecretRef
    dialect: LdapDialect = "ad"
    bases: tuple[str, ...] = ()  # containers to read; empty: the whole naming context
    filter: str = ""  # extra LDAP filter, ANDed with the kind filters
    verify_certificates: bool = True
    ca_file: Path | None = None
    tls_server_name: str = ""
    allow_plaintext_login: bool = False
    timeout: float = 30.0
    page_size: int = 1000
    attributes: Mapping[str, str] = field(default_factory=dict)  # logical name -> LDAP attribute


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """``[directory]``: match people of the source directory to the target's, create and merge.

    ``rules``: match rules in the order tried (``sid``, ``x500``, ``smtp``, ``login``,
    ``custom``); ``custom_attribute``: the attribute compared by ``custom``.
    ``target_container``: where users are created (a DN in the target).
    ``accounts_csv``: where ``directory apply`` writes the identity map as the accounts list that
    ``migrate`` reads; ``account_key``: what names an account on each IMAP server (``login``:
    sAMAccountName/uid, ``mail``: the primary address).
    ``create``: attribute templates for created users (``${login}``, ``${mail}``, ``${given}``,
    ``${sn}``, ``${primary_smtp}``); ``mail_attributes``: set on every matched/created user to
    activate its mailbox; ``lock``: generic dialect, attributes that mark a created user locked.
    ``upn_suffix`` (AD): of created users' userPrincipalName (empty: the target's DNS domain).
    ``resolve``: the admin's decisions, source DN -> target DN or ``"create"``.
    """

    source: LdapServerConfig
    target: LdapServerConfig
    target_container: str
    rules: tuple[str, ...] = ("sid", "x500", "smtp", "login")
    custom_attribute: str = ""
    include_contacts: bool = False
    include_groups: bool = False
    keep_old_addresses: bool = True
    accounts_csv: Path | None = None
    account_key: Literal["login", "mail"] = "login"
    create: Mapping[str, str] = field(default_factory=dict)
    mail_attributes: Mapping[str, str] = field(default_factory=dict)
    lock: Mapping[str, str] = field(default_factory=dict)
    confirm_mailboxes: bool = True
    upn_suffix: str = ""
    resolve: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublicConfig:
    """``[public]``: the public (shared) folders as their own unit (item type ``public``).

    A prefix None is the side's first shared namespace, as its NAMESPACE answer names it (Dovecot:
    ``Public/``; Cyrus: the empty prefix, shared mailboxes at the top). The unit logs in on each
    side as ``*_user`` (with ``*_password``, else through the side's ``[admin]``), or, with no
    user, as the side's admin itself (Cyrus' ``admins:``; a Dovecot master user can't).
    ``per_user_seen`` and ``subscriptions``: carry each account's own ``\\Seen`` on, and
    subscriptions to, the public folders to its target account."""

    source_prefix: str | None = None
    target_prefix: str | None = None
    source_user: str | None = None
    target_user: str | None = None
    source_password: SecretRef | None = None
    target_password: SecretRef | None = None
    per_user_seen: bool = True
    subscriptions: bool = True


@dataclass(frozen=True, slots=True)
class Project:
    """A whole, valid project. ``accounts`` excludes those an override marks ``skip``."""

    path: Path
    name: str
    ledger_path: Path
    reports_dir: Path
    source: ServerConfig
    target: ServerConfig
    accounts: tuple[AccountConfig, ...]
    folders: FolderRules
    messages: MessageRules
    performance: Performance
    directory: DirectoryConfig | None = None
    items: tuple[str, ...] = ("mail", "permissions", "metadata")  # of mailferry.model.items.ITEM_TYPES, in that order
    calendars: CalendarRules = field(default_factory=CalendarRules)
    # Named sets of source accounts (waves), as the console groups them: name -> accounts.
    batches: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # The public unit's settings; used when "public" is among ``items`` (all defaults if None).
    public: PublicConfig | None = None
    # [permissions] groups: a source ACL group -> its name on the target (others keep theirs).
    acl_groups: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    organization: OrganizationConfig = field(default_factory=OrganizationConfig)
    # A PostgreSQL ledger (``[project] ledger = "postgresql://..."``) and its password by
    # reference; None: the SQLite file at ``ledger_path``.
    ledger_url: str | None = None
    ledger_password: SecretRef | None = None
    distributed: DistributedConfig | None = None

    @property
    def base_dir(self) -> Path:
        """The project folder: relative paths and ``file:`` references start here."""
        return self.path.parent

    def service_addresses(self, role: Role) -> list[ServiceAddress]:
        """Every service of ``role``'s servers the project names, in the project file's order:
        IMAP, then DAV, ManageSieve, submission and the directory's LDAP where configured."""
        server = self.source if role == "source" else self.target
        out = [ServiceAddress(role, "imap", server.host, server.port, server.security, server.ca_file, f"[{role}]")]
        if server.dav is not None:
            parts = urlsplit(server.dav.url)
            tls = parts.scheme.lower() == "https"
            out.append(
                ServiceAddress(
                    role,
                    "dav",
                    parts.hostname or "",
                    parts.port or (443 if tls else 80),
                    "tls" if tls else "none",
                    server.dav.ca_file,
                    f"[{role}.dav]",
                )
            )
        if (sv := server.sieve) is not None:
            out.append(ServiceAddress(role, "sieve", sv.host, sv.port, sv.security, sv.ca_file, f"[{role}.sieve]"))
        if (sm := server.submission) is not None:
            out.append(
                ServiceAddress(role, "submission", sm.host, sm.port, sm.security, sm.ca_file, f"[{role}.submission]")
            )
        if self.directory is not None:
            d = self.directory.source if role == "source" else self.directory.target
            at = f"[directory.{role}]"
            out.append(ServiceAddress(role, "ldap", d.host, d.port, d.security, d.ca_file, at, d.tls_server_name))
        return out


ServiceName = Literal["imap", "dav", "sieve", "submission", "ldap"]
Role = Literal["source", "target"]


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """Where clients (and mailferry) reach one service of one side: ``config`` names the table of
    the project file that sets it (for fixes); ``server_name`` the TLS name, when not ``host``."""

    role: str
    service: ServiceName
    host: str
    port: int
    security: Security
    ca_file: Path | None
    config: str
    server_name: str = ""


_SIZE_UNITS: Mapping[str, int] = MappingProxyType(
    {
        "": 1,
        "b": 1,
        "kb": 1000,
        "mb": 1000**2,
        "gb": 1000**3,
        "tb": 1000**4,
        "kib": 1024,
        "mib": 1024**2,
        "gib": 1024**3,
        "tib": 1024**4,
    }
)
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
SIZE_HELP = 'a size like "50 MB" (units B, KB, MB, GB: 1000-based; KiB, MiB, GiB: 1024-based)'
DATE_HELP = 'a date like "2015-01-01"'


def parse_size(text: str) -> int:
    """``"50 MB"`` -> 50_000_000, ``"1.5 KiB"`` -> 1536, ``"100"`` -> 100 (bytes).

    Units are case-insensitive; fractions of a byte are dropped. Raises ValueError.
    """
    match = _SIZE.fullmatch(text)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"must be {SIZE_HELP}")
    try:
        amount = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal numbers
        raise ValueError(f"must be {SIZE_HELP}") from None
    return int(amount * _SIZE_UNITS[match.group(2).lower()])


def parse_date(text: str) -> date:
    """``"2015-01-01"`` -> date(2015, 1, 1). Only the ISO calendar form YYYY-MM-DD."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise ValueError(f"must be {DATE_HELP}")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"must be {DATE_HELP}") from None
