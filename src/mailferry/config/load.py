"""Load and check a project file: every problem reported at once, each with its file and line.

A problem reads ``"<file>:<line>: <key path>: <what is wrong>"``, e.g.
``project.toml:14: source.port: must be an integer between 1 and 65535, got "abc"``. Elements of
arrays of tables are numbered from 0: ``accounts.override[1].skip``. A key that is missing is
reported at the line of its table's header; a missing table has no line.

tomllib gives no positions, so :class:`LineIndex` finds them by reading the text again: table
headers (each ``[[array]]`` occurrence counted) and ``key =`` lines within them. It understands
what a hand-written project file holds (comments, dotted keys, quoted keys, multi-line arrays and
strings); for anything more exotic it falls back to the nearest enclosing key or header.

Secrets: the values of password keys are never repeated in a problem; the loader does not read
the secrets themselves (see :func:`check_secrets`, which does, for ``mailferry check``).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from string import Template
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from mailferry.config.accounts import read_accounts_csv
from mailferry.config.model import (
    ADMIN_METHODS,
    DATE_HELP,
    DAV_ADMIN_METHODS,
    DIRECTORY_RULES,
    LDAP_DIALECTS,
    SCHEDULING_MODES,
    SECURITY_CHOICES,
    SIEVE_SCHEMES,
    SIZE_HELP,
    SUBMISSION_SCHEMES,
    AccountConfig,
    AdminLogin,
    AdminMethod,
    CalendarRules,
    DavAdminLogin,
    DavAdminMethod,
    DavServerConfig,
    DirectoryConfig,
    DistributedConfig,
    FolderRename,
    FolderRules,
    LdapDialect,
    LdapServerConfig,
    MessageRules,
    OrganizationConfig,
    Performance,
    Project,
    PublicConfig,
    SchedulingMode,
    Security,
    ServerConfig,
    SieveServerConfig,
    SubmissionConfig,
    UrlProblem,
    default_port,
    is_loopback,
    normalize_dav_url,
    parse_date,
    parse_size,
    split_server_url,
)
from mailferry.config.secrets import REFERENCE_HELP, SecretRef, file_mode_warning, parse_secret_ref
from mailferry.errors import ConfigError
from mailferry.model.items import ITEM_TYPES

KeyPath = tuple[str | int, ...]

_SERVER_KEYS = (
    "host",
    "port",
    "security",
    "verify_certificates",
    "ca_file",
    "allow_plaintext_login",
    "timeout",
    "max_connections",
    "admin",
    "dav",
    "sieve",
    "submission",
)
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}\.?")
_SUBMISSION_KEYS = ("url", "verify_certificates", "ca_file", "timeout")
_ORGANIZATION_KEYS = (
    "domains",
    "resolver",
    "source_names",
    "target_names",
    "dkim_selectors",
    "delta_window_hours",
    "expiry_warning_days",
)
_SIEVE_KEYS = ("url", "security", "verify_certificates", "ca_file", "allow_plaintext_login", "timeout")
_ADMIN_KEYS = ("user", "password", "method", "master_separator")
_DAV_KEYS = ("url", "verify_certificates", "ca_file", "allow_plaintext_login", "timeout", "max_connections", "admin")
_DAV_ADMIN_KEYS = ("user", "password", "method")
_LDAP_KEYS = (
    "url",
    "bind_dn",
    "password",
    "dialect",
    "bases",
    "filter",
    "verify_certificates",
    "ca_file",
    "tls_server_name",
    "allow_plaintext_login",
    "timeout",
    "page_size",
    "attributes",
)

#: Every table of the project file and its keys (``[[...]]`` tables by their header name).
#: ``()``: a table whose keys are free (LDAP attribute names or logical names), values strings.
KNOWN_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "": (
            "project",
            "source",
            "target",
            "accounts",
            "folders",
            "messages",
            "calendars",
            "performance",
            "directory",
            "batches",
            "public",
            "permissions",
            "organization",
            "distributed",
        ),
        "organization": _ORGANIZATION_KEYS,
        "distributed": (
            "broker",
            "broker_password",
            "limits",
            "accounts_per_worker",
            "visibility_timeout",
            "lease_seconds",
            "rate_messages",
            "rate_bytes",
        ),
        "project": ("name", "ledger", "ledger_password", "reports", "items"),
        "public": (
            "source_prefix",
            "target_prefix",
            "source_user",
            "target_user",
            "source_password",
            "target_password",
            "per_user_seen",
            "subscriptions",
        ),
        "source": _SERVER_KEYS,
        "source.admin": _ADMIN_KEYS,
        "source.dav": _DAV_KEYS,
        "source.dav.admin": _DAV_ADMIN_KEYS,
        "source.sieve": _SIEVE_KEYS,
        "source.submission": _SUBMISSION_KEYS,
        "target": _SERVER_KEYS,
        "target.admin": _ADMIN_KEYS,
        "target.dav": _DAV_KEYS,
        "target.dav.admin": _DAV_ADMIN_KEYS,
        "target.sieve": _SIEVE_KEYS,
        "target.submission": _SUBMISSION_KEYS,
        "calendars": ("scheduling", "addresses", "domains", "propagate_deletions", "sharing", "batch_items"),
        "calendars.addresses": (),
        "permissions": ("groups",),
        "permissions.groups": (),
        "calendars.domains": (),
        "accounts": ("csv", "override"),
        "accounts.override": (
            "source_user",
            "target_user",
            "source_password",
            "target_password",
            "exclude_folders",
            "skip",
        ),
        "folders": ("include", "exclude", "separator_substitute", "subscriptions", "rename"),
        "folders.rename": ("pattern", "replacement"),
        "messages": ("since", "before", "max_size", "min_size", "propagate_deletions", "sync_flags"),
        "performance": (
            "accounts_in_parallel",
            "connections_per_account",
            "batch_messages",
            "batch_bytes",
            "retries",
        ),
        "directory": (
            "target_container",
            "rules",
            "custom_attribute",
            "include_contacts",
            "include_groups",
            "keep_old_addresses",
            "accounts_csv",
            "account_key",
            "confirm_mailboxes",
            "upn_suffix",
            "source",
            "target",
            "create",
            "mail_attributes",
            "lock",
            "resolve",
        ),
        "directory.source": _LDAP_KEYS,
        "directory.source.attributes": (),
        "directory.target": _LDAP_KEYS,
        "directory.target.attributes": (),
        "directory.create": (),
        "directory.mail_attributes": (),
        "directory.lock": (),
        "directory.resolve": ("source", "target"),
        "batches": (),
    }
)

#: The placeholders of ``[directory.create]`` and ``[directory.mail_attributes]`` values
#: (``string.Template`` syntax, as ``plan.directory`` renders them; ``$$`` is a dollar sign).
TEMPLATE_PLACEHOLDERS = ("login", "mail", "given", "sn", "primary_smtp")
#: The logical names an ``attributes`` table may map, as in ``connectors.ldap.DEFAULT_ATTRIBUTES``
#: (kept here so that configuration does not import the LDAP client; a test keeps them equal).
LDAP_LOGICAL_ATTRIBUTES = (
    "guid",
    "sid",
    "sid_history",
    "login",
    "upn",
    "mail",
    "proxy",
    "alias",
    "legacy_dn",
    "uac",
    "member",
)
# Rules that find a person created by an earlier apply again (``plan.directory.REFINDING_RULES``).
_REFINDING_RULES = ("x500", "smtp", "login")

_SECRET_HELP = f"must be a reference string ({REFERENCE_HELP.split(': ', 1)[1]})"


def load_project(path: Path) -> Project:
    """Read, check and type the project file at ``path`` and the accounts CSV it names.

    Raises :class:`ConfigError` holding every problem found. Touches no server and reads no secret.
    """
    path = Path(path).absolute()
    label = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{label}: the project file {path} does not exist"]) from None
    except OSError as error:
        raise ConfigError([f"{label}: cannot read the project file {path}: {error.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError([f"{label}:{line}: not UTF-8 text (TOML files are UTF-8)"]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(label, text, error)]) from None
    return _ProjectReader(path, label, text).read(document)


def _syntax_problem(label: str, text: str, error: tomllib.TOMLDecodeError) -> str:
    # tomllib's messages name the position and the kind of mistake, never the text itself.
    message = str(error)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        reason = message[: found.start()]
        return f"{label}:{found.group(1)}: TOML syntax error: {reason} (column {found.group(2)})"
    found = re.search(r"\s*\(at end of document\)$", message)
    reason = message[: found.start()] if found else message
    line = max(1, len(text.rstrip("\n").split("\n")))
    return f"{label}:{line}: TOML syntax error: {reason} (at the end of the file)"


def check_secrets(project: Project) -> tuple[list[str], list[str]]:
    """Resolve every secret reference of ``project``: (problems, warnings). Values are discarded.

    For ``mailferry check``: a problem for each reference that cannot be read, a warning for each
    secret file open to its group or others. Reads the environment and secret files.
    """
    problems: list[str] = []
    warnings: list[str] = []
    refs: list[SecretRef] = []
    if project.directory is not None:
        refs += [project.directory.source.password, project.directory.target.password]
    for server in (project.source, project.target):
        if server.admin is not None:
            refs.append(server.admin.password)
    for account in project.accounts:
        refs.extend(r for r in (account.source_password, account.target_password) if r is not None)
    if project.public is not None:
        refs.extend(r for r in (project.public.source_password, project.public.target_password) if r is not None)
    seen: set[SecretRef] = set()
    for ref in refs:
        if ref in seen:
            continue
        seen.add(ref)
        try:
            ref.resolve(project.base_dir)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        file_path = ref.file_path(project.base_dir)
        warning = file_mode_warning(file_path) if file_path is not None else None
        if warning:
            warnings.append(warning)
    return problems, warnings


# --- line numbers -------------------------------------------------------------------------------

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_LINE = re.compile(rf"\s*(\[\[|\[)\s*({_DOTTED})\s*(?:\]\]|\])\s*(?:#.*)?")
_KEY_LINE = re.compile(rf"\s*({_DOTTED})\s*=(.*)")


def _toml_lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.split("\n")]


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _scan_value(text: str, multiline: str | None, depth: int) -> tuple[str | None, int]:
    """Follow a TOML value across a line: (open multi-line string delimiter, bracket depth)."""
    i, n = 0, len(text)
    while i < n:
        if multiline:
            end = text.find(multiline, i)
            if end < 0:
                return multiline, depth
            i, multiline = end + 3, None
            continue
        char = text[i]
        if char == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            multiline = text[i : i + 3]
            i += 3
        elif char == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif char == "'":
            end = text.find("'", i + 1)
            i = n if end < 0 else end + 1
        else:
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            i += 1
    return multiline, max(depth, 0)


class LineIndex:
    """Where tables and keys of a TOML text are: 1-based line numbers, found by scanning."""

    def __init__(self, text: str) -> None:
        self._headers: dict[tuple[str, ...], list[int]] = {}
        self._keys: dict[tuple[tuple[str, ...], int, tuple[str, ...]], int] = {}
        table: tuple[str, ...] = ()
        occurrence = 0
        multiline: str | None = None
        depth = 0
        # TOML lines end at \n or \r\n only (str.splitlines() would also split at form feeds).
        for number, line in enumerate(_toml_lines(text), start=1):
            if multiline or depth:
                multiline, depth = _scan_value(line, multiline, depth)
                continue
            header = _HEADER_LINE.fullmatch(line)
            if header:
                table = _split_key(header.group(2))
                lines = self._headers.setdefault(table, [])
                lines.append(number)
                occurrence = len(lines) - 1 if header.group(1) == "[[" else 0
                continue
            key = _KEY_LINE.fullmatch(line)
            if key:
                self._keys.setdefault((table, occurrence, _split_key(key.group(1))), number)
                multiline, depth = _scan_value(key.group(2), None, 0)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the key at ``path`` (e.g. ``("accounts", "override", 1, "skip")``), else
        of the nearest enclosing key or table header that is written in the text; None if none."""
        for end in range(len(path), 0, -1):
            sub = path[:end]
            for split in range(end, -1, -1):
                table = tuple(p for p in sub[:split] if isinstance(p, str))
                occurrence = sub[split - 1] if split and isinstance(sub[split - 1], int) else 0
                assert isinstance(occurrence, int)
                key = tuple(p for p in sub[split:] if isinstance(p, str))
                if not key:
                    headers = self._headers.get(table, [])
                    if occurrence < len(headers) and split == end:
                        return headers[occurrence]
                    continue
                found = self._keys.get((table, occurrence, key))
                if found is not None:
                    return found
        return None


# --- reading values -----------------------------------------------------------------------------


def dotted(path: Sequence[str | int]) -> str:
    """``("accounts", "override", 1, "skip")`` -> ``"accounts.override[1].skip"``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 80 else shown[:76] + '..."'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        return f"the date-time {value.isoformat()}"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__  # pragma: no cover - tomllib yields nothing else


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    return _show(value) if isinstance(value, bool | int | float) else _show(value).removeprefix("the ")


_MISSING = object()


class _Reader:
    """Typed reads of a parsed TOML document that record problems instead of raising."""

    def __init__(self, label: str, text: str) -> None:
        self.label = label
        self.index = LineIndex(text)
        self.problems: list[str] = []

    def problem(self, path: KeyPath, message: str) -> None:
        line = self.index.line_of(path)
        where = f"{self.label}:{line}" if line is not None else self.label
        self.problems.append(f"{where}: {dotted(path)}: {message}")

    def check_keys(self, table: Mapping[str, object], path: KeyPath, schema: str) -> None:
        allowed = KNOWN_KEYS[schema]
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                what = "unknown table" if isinstance(table[key], dict) or schema == "" else "unknown key"
                hint = f"; did you mean {_show(close[0])}?" if close else f"; known: {', '.join(allowed)}"
                self.problem((*path, key), what + hint)

    def table(
        self, parent: Mapping[str, object], path: KeyPath, key: str, schema: str, *, required: bool = False
    ) -> dict[str, object] | None:
        value = parent.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.problem((*path, key), f"missing table [{dotted((*path, key))}] (required)")
            return None
        if not isinstance(value, dict):
            # The kind only, not the value: `admin = "..."` may well be a password.
            self.problem((*path, key), f"must be a table [{dotted((*path, key))}], got {_kind(value)}")
            return None
        self.check_keys(value, (*path, key), schema)
        return value

    def tables(
        self, parent: Mapping[str, object], path: KeyPath, key: str, schema: str
    ) -> list[tuple[KeyPath, dict[str, object]]]:
        value = parent.get(key, _MISSING)
        if value is _MISSING:
            return []
        header = f"[[{dotted((*path, key))}]]"
        if not isinstance(value, list):
            self.problem((*path, key), f"must be an array of tables {header}, got {_kind(value)}")
            return []
        result: list[tuple[KeyPath, dict[str, object]]] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.problem((*path, key, i), f"must be a table {header}, got {_kind(item)}")
                continue
            self.check_keys(item, (*path, key, i), schema)
            result.append(((*path, key, i), item))
        return result

    def string(
        self,
        table: Mapping[str, object],
        path: KeyPath,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        empty_ok: bool = False,
    ) -> str | None:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.problem((*path, key), "missing (required)")
            return default
        if not isinstance(value, str):
            self.problem((*path, key), f"must be a string, got {_show(value)}")
            return None
        if not empty_ok and value.strip() == "":
            self.problem((*path, key), "must not be empty")
            return None
        return value

    def boolean(self, table: Mapping[str, object], path: KeyPath, key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.problem((*path, key), f"must be true or false, got {_show(value)}")
            return default
        return value

    def integer(
        self,
        table: Mapping[str, object],
        path: KeyPath,
        key: str,
        default: int,
        low: int,
        high: int | None = None,
    ) -> int | None:
        value = table.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= (high or value):
            return value
        if high is None:
            self.problem((*path, key), f"must be an integer of at least {low}, got {_show(value)}")
        else:
            self.problem((*path, key), f"must be an integer between {low} and {high}, got {_show(value)}")
        return None

    def number(self, table: Mapping[str, object], path: KeyPath, key: str, default: float) -> float | None:
        value = table.get(key, default)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
            return float(value)
        self.problem((*path, key), f"must be a number of seconds above 0, got {_show(value)}")
        return None

    def choice(
        self, table: Mapping[str, object], path: KeyPath, key: str, choices: Sequence[str], default: str
    ) -> str | None:
        value = table.get(key, default)
        if isinstance(value, str) and value in choices:
            return value
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f"; did you mean {_show(close[0])}?" if close else ""
        listed = ", ".join(_show(c) for c in choices)
        self.problem((*path, key), f"must be one of {listed}, got {_show(value)}{hint}")
        return None

    def regexes(self, table: Mapping[str, object], path: KeyPath, key: str) -> tuple[str, ...] | None:
        value = table.get(key, [])
        if not isinstance(value, list):
            self.problem((*path, key), f"must be an array of regular expressions, got {_show(value)}")
            return None
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem((*path, key, i), f"must be a string (a regular expression), got {_show(item)}")
                ok = False
            elif self.regex((*path, key, i), item) is None:
                ok = False
        return tuple(cast(list[str], value)) if ok else None

    def regex(self, path: KeyPath, pattern: str) -> re.Pattern[str] | None:
        try:
            return re.compile(pattern)
        except re.error as error:
            self.problem(path, f"invalid regular expression {_show(pattern)}: {error}")
            return None

    def size(self, table: Mapping[str, object], path: KeyPath, key: str, default: int | None) -> int | None:
        value = table.get(key, _MISSING)
        if value is _MISSING or value == "":
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            try:
                return parse_size(value)
            except ValueError:
                pass
        self.problem((*path, key), f"must be {SIZE_HELP}, got {_show(value)}")
        return default

    def day(self, table: Mapping[str, object], path: KeyPath, key: str) -> date | None:
        value = table.get(key, _MISSING)
        if value is _MISSING or value == "":
            return None
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return parse_date(value)
            except ValueError:
                pass
        self.problem((*path, key), f"must be {DATE_HELP}, got {_show(value)}")
        return None

    def secret(
        self, table: Mapping[str, object], path: KeyPath, key: str, *, required: bool = False
    ) -> SecretRef | None:
        """A password reference. The value is never shown: it may be a literal password."""
        value = table.get(key, _MISSING)
        if value is _MISSING:
            if required:
                self.problem((*path, key), f"missing (required): {REFERENCE_HELP}")
            return None
        if not isinstance(value, str):
            self.problem((*path, key), _SECRET_HELP)
            return None
        try:
            return parse_secret_ref(value)
        except ValueError as error:
            self.problem((*path, key), str(error))
            return None


# --- directory values ---------------------------------------------------------------------------

_LDAP_SCHEMES: Mapping[str, Security] = MappingProxyType({"ldaps": "tls", "ldap+starttls": "starttls", "ldap": "none"})
LDAP_URL_HELP = "ldaps://host[:port] (TLS), ldap+starttls://host[:port] or ldap://host[:port] (unencrypted)"


def ldap_default_port(security: Security) -> int:
    """636 for LDAPS, 389 for StartTLS (RFC 4513) and for no encryption."""
    return 636 if security == "tls" else 389


def parse_ldap_url(url: str) -> tuple[str, int, Security]:
    """``"ldaps://dc1.example"`` -> ``("dc1.example", 636, "tls")``; ``ldap+starttls://`` gives
    ``"starttls"`` and ``ldap://`` ``"none"`` (both 389). Raises ValueError; its message never
    repeats ``url`` (it may hold a login pasted into it)."""
    try:
        return split_server_url(url, _LDAP_SCHEMES, ldap_default_port, show=_show)
    except UrlProblem as problem:
        if problem.kind == "login":
            raise ValueError(f"{problem}; use bind_dn and password (a reference)") from None
        if problem.kind == "path":
            raise ValueError(f"{problem} (containers go in bases); use {LDAP_URL_HELP}") from None
        raise ValueError(f"{problem}; use {LDAP_URL_HELP}") from None


_DN_ATTRIBUTE_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+")
_DN_HELP = 'attribute=value pairs separated by commas, e.g. "OU=People,DC=example,DC=com" (a comma in a value: \\,)'


def dn_problem(dn: str) -> str | None:
    """What is wrong with the syntax of a distinguished name (RFC 4514, loosely), or None.

    Checks the structure only: ``type=value`` parts separated by ``,`` (or ``+`` within a
    multi-valued RDN), no empty part, types that are names or OIDs, no empty value, escapes that
    are ``\\`` before a special character or two hex digits. Whether the entry exists is the
    server's business.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(dn):
        char = dn[i]
        if char == "\\":
            if re.fullmatch(r"[0-9A-Fa-f]{2}", dn[i + 1 : i + 3]):
                current.append(dn[i : i + 3])
                i += 3
                continue
            following = dn[i + 1 : i + 2]
            if following == "":
                return "ends with a lone \\"
            if following not in ' "#+,;<=>\\':
                return (
                    f'has an unknown escape \\{following} (escape only , + " \\ < > ; = # and space, or two hex digits)'
                )
            current.append(dn[i : i + 2])
            i += 2
            continue
        if char in ",+":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    for part in parts:
        text = part.strip()
        if text == "":
            return "has an empty part (a comma at an end or two in a row)"
        attribute, equals, value = text.partition("=")
        if not equals:
            return f"part {_show(text)} is not attribute=value"
        if not _DN_ATTRIBUTE_TYPE.fullmatch(attribute.strip()):
            return f"part {_show(text)} has an invalid attribute type {_show(attribute.strip())}"
        if value.strip() == "":
            return f"part {_show(text)} has no value"
    return None


def filter_problem(text: str) -> str | None:
    """What is wrong with the parentheses of an LDAP filter (RFC 4515), or None.

    One filter in parentheses, balanced, not two side by side (combine those with ``(&...)``).
    A parenthesis inside a value is written ``\\28`` / ``\\29`` in LDAP filters, so counting
    them is exact.
    """
    filter_text = text.strip()
    if not filter_text.startswith("("):
        return 'must be an LDAP filter in parentheses, e.g. "(department=Sales)"'
    depth = 0
    for i, char in enumerate(filter_text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return f'has a ")" without its "(" (character {i + 1})'
            if depth == 0 and i != len(filter_text) - 1:
                return 'holds more than one filter: combine them, e.g. "(&(a=1)(b=2))"'
            if filter_text[i - 1] == "(":
                return f'has an empty "()" (character {i})'
    if depth:
        return f'has {depth} "(" not closed'
    return None


def template_problems(text: str) -> list[str]:
    """What is wrong with the placeholders of an attribute template, as ``string.Template``
    reads them: only ``${login} ${mail} ${given} ${sn} ${primary_smtp}`` (braces optional);
    ``$$`` is a dollar sign."""
    known = ", ".join("${" + name + "}" for name in TEMPLATE_PLACEHOLDERS)
    problems: list[str] = []
    for found in Template.pattern.finditer(text):
        name = found.group("named") or found.group("braced")
        if found.group("invalid") is not None:
            problems.append(
                f'the "$" at character {found.start() + 1} starts no placeholder; '
                f"use {known}, or write $$ for a dollar sign"
            )
        elif name is not None and name not in TEMPLATE_PLACEHOLDERS:
            close = difflib.get_close_matches(name, TEMPLATE_PLACEHOLDERS, n=1)
            hint = f"; did you mean ${{{close[0]}}}?" if close else f"; use {known}"
            problems.append(f"unknown placeholder ${{{name}}}{hint}")
    return problems


_LDAP_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)(?:;[A-Za-z0-9-]+)*")
_TLS_NAME = re.compile(r"[A-Za-z0-9*](?:[A-Za-z0-9.*-]*[A-Za-z0-9])?\.?")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})+")
_MAIL_DOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")  # "internal" too: Cyrus' default
_ADDRESS = re.compile(rf"[^@\s]+@{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


# --- the project --------------------------------------------------------------------------------


class _ProjectReader(_Reader):
    def __init__(self, path: Path, label: str, text: str) -> None:
        super().__init__(label, text)
        self.path = path
        self.base = path.parent
        self.accounts_csv: Path | None = None

    def local_path(self, text: str) -> Path:
        candidate = Path(text)
        return candidate if candidate.is_absolute() else self.base / candidate

    def read(self, document: dict[str, object]) -> Project:
        self.check_keys(document, (), "")
        project = self.table(document, (), "project", "project", required=True)
        name = self.string(project, ("project",), "name", required=True) if project is not None else None
        project = project or {}
        ledger = self.string(project, ("project",), "ledger", f"{self.path.stem}.ledger.sqlite")
        reports = self.string(project, ("project",), "reports", "reports")

        source = self.server(document, "source")
        target = self.server(document, "target")
        # `directory apply` writes the accounts CSV: with [directory], it need not exist yet.
        has_directory = isinstance(document.get("directory"), dict)
        accounts = self.accounts(document, source, target, pending_ok=has_directory)
        folders = self.folders(document)
        messages = self.messages(document)
        performance = self.performance(document, target)
        directory = self.directory(document)
        items = self.items(project, source, target, has_public=isinstance(document.get("public"), dict))
        public = self.public(document, source, target, items)
        calendars = self.calendar_rules(document)
        batches = self.batches(document)
        acl_groups = self.acl_groups(document)
        organization = self.organization(document)
        distributed = self.distributed(document)
        ledger_url, ledger_password = self.ledger_database(project, ledger)
        if items is not None and accounts and source is not None and target is not None:
            self.check_dav_logins(accounts, source, target, items)

        if self.problems:
            raise ConfigError(self.problems)
        assert name and ledger and reports and source and target and accounts is not None
        assert folders and messages and performance and items is not None and calendars is not None
        assert batches is not None and acl_groups is not None and organization is not None
        return Project(
            path=self.path,
            name=name,
            ledger_path=self.local_path(ledger if ledger_url is None else f"{self.path.stem}.ledger.sqlite"),
            ledger_url=ledger_url,
            ledger_password=ledger_password,
            distributed=distributed,
            reports_dir=self.local_path(reports),
            source=source,
            target=target,
            accounts=accounts,
            folders=folders,
            messages=messages,
            performance=performance,
            directory=directory,
            items=items,
            calendars=calendars,
            batches=batches,
            public=public,
            acl_groups=acl_groups,
            organization=organization,
        )

    def ledger_database(self, project: Mapping[str, object], ledger: str | None) -> tuple[str | None, SecretRef | None]:
        """``[project] ledger`` as a PostgreSQL URL (``postgresql://user@host:5432/db``) and its
        ``ledger_password`` reference; (None, None) for a SQLite file."""
        at: KeyPath = ("project",)
        password = self.secret(project, at, "ledger_password")
        if ledger is None or not ledger.startswith(("postgresql://", "postgres://")):
            if password is not None:
                self.problem((*at, "ledger_password"), "is for a PostgreSQL ledger (ledger = \"postgresql://...\")")
            return None, None
        parts = urlsplit(ledger)
        if parts.password is not None:
            self.problem(
                (*at, "ledger"), "must not hold a password: give it by reference in ledger_password (env:, file:)"
            )
            return None, None
        if not parts.hostname or not parts.path.strip("/"):
            self.problem((*at, "ledger"), 'must be "postgresql://user@host:5432/database"')
            return None, None
        return ledger, password

    def distributed(self, document: Mapping[str, object]) -> DistributedConfig | None:
        """``[distributed]``: the Celery broker and the cluster's limits (``migrate --distributed``)."""
        table = self.table(document, (), "distributed", "distributed")
        if table is None:
            return None
        at: KeyPath = ("distributed",)
        before = len(self.problems)
        broker = self.string(table, at, "broker", required=True)
        if broker is not None:
            parts = urlsplit(broker)
            if parts.scheme not in ("redis", "rediss", "amqp", "amqps"):
                self.problem((*at, "broker"), 'must be "redis://host:6379/0" (or amqp:// for RabbitMQ)')
            elif parts.password is not None:
                self.problem((*at, "broker"), "must not hold a password: give it in broker_password (env:, file:)")
        limits = self.string(table, at, "limits", "", empty_ok=True) or ""
        if broker is not None and not broker.startswith("redis") and not limits:
            self.problem((*at, "limits"), 'with a non-Redis broker: a Redis for the limits, "redis://host:6379/1"')
        password = self.secret(table, at, "broker_password")
        per_worker = self.integer(table, at, "accounts_per_worker", 2, 1, 256)
        visibility = self.integer(table, at, "visibility_timeout", 3600, 5)
        lease = self.integer(table, at, "lease_seconds", 30, 3, 3600)
        rates = {}
        for key in ("rate_messages", "rate_bytes"):
            value = table.get(key, 0)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                self.problem((*at, key), f"must be a number of at least 0 (0: no limit), got {_show(value)}")
                continue
            rates[key] = float(value)
        if len(self.problems) > before:
            return None
        assert broker and per_worker and visibility and lease
        return DistributedConfig(
            broker=broker,
            broker_password=password,
            limits=limits,
            accounts_per_worker=per_worker,
            visibility_timeout=visibility,
            lease_seconds=lease,
            rate_messages=rates["rate_messages"],
            rate_bytes=rates["rate_bytes"],
        )

    def organization(self, document: Mapping[str, object]) -> OrganizationConfig | None:
        """``[organization]``: the mail domains, host names and resolver of the readiness and cut-over checks."""
        table = self.table(document, (), "organization", "organization")
        if table is None:
            return OrganizationConfig() if "organization" not in document else None
        at: KeyPath = ("organization",)
        before = len(self.problems)
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("domains", "source_names", "target_names", "dkim_selectors"):
            value = table.get(key, [])
            names = value if isinstance(value, list) else [None]
            if not all(isinstance(v, str) and _HOST_NAME.fullmatch(v.strip()) for v in names):
                self.problem((*at, key), f'must be an array of names like "example.org", got {_show(value)}')
                continue
            lists[key] = tuple(dict.fromkeys(str(v).strip().rstrip(".").lower() for v in names))
        resolver: tuple[str, int] | None = None
        text = self.string(table, at, "resolver", "", empty_ok=True)
        if text:
            text = text.strip()
            if text.startswith("["):  # [2001:db8::53]:5353
                host, _, port = text[1:].partition("]")
                port = port.removeprefix(":") or "53"
            elif text.count(":") == 1:
                host, _, port = text.partition(":")
            else:
                host, port = text, "53"
            try:
                ipaddress.ip_address(host)
                number = int(port)
                if not 0 < number < 65536:
                    raise ValueError(port)
                resolver = (host, number)
            except ValueError:
                self.problem(
                    (*at, "resolver"),
                    f'must be a DNS server\'s address, "192.0.2.53" or "192.0.2.53:5353", got {_show(text)}',
                )
        window = self.number(table, at, "delta_window_hours", 24.0)
        days = self.integer(table, at, "expiry_warning_days", 21, 0, 3650)
        if len(self.problems) > before:
            return None
        assert window is not None and days is not None
        return OrganizationConfig(
            domains=lists["domains"],
            resolver=resolver,
            source_names=lists["source_names"],
            target_names=lists["target_names"],
            dkim_selectors=lists["dkim_selectors"],
            delta_window_hours=window,
            expiry_warning_days=days,
        )

    def submission(self, server: Mapping[str, object], role: str) -> SubmissionConfig | None:
        """``[role.submission]``: the SMTP submission service (RFC 6409) that ``check`` probes."""
        table = self.table(server, (role,), "submission", f"{role}.submission")
        if table is None:
            return None
        at: KeyPath = (role, "submission")
        before = len(self.problems)
        url = self.string(table, at, "url", required=True)
        verify = self.boolean(table, at, "verify_certificates", True)
        ca_file = self.ca_file(table, at)
        timeout = self.number(table, at, "timeout", 30.0)
        host, port, security = None, 587, "starttls"
        if url is not None:
            try:
                host, port, security = split_server_url(url, SUBMISSION_SCHEMES, lambda s: 465 if s == "tls" else 587)
            except UrlProblem as problem:
                self.problem(
                    (*at, "url"), f'{problem} (write it as "submission://host:587" or "submissions://host:465")'
                )
        if len(self.problems) > before or host is None:
            return None
        assert timeout
        return SubmissionConfig(
            host=host,
            port=port,
            security=cast(Security, security),
            verify_certificates=verify,
            ca_file=ca_file,
            timeout=timeout,
        )

    def acl_groups(self, document: Mapping[str, object]) -> Mapping[str, str] | None:
        """``[permissions.groups]``: a group named in source ACLs -> its name on the target.
        A group not listed keeps its name (only the form changes: Dovecot ``$g``, Cyrus ``group:g``)."""
        perms = self.free_table(document, (), "permissions")
        if perms is None:
            return None
        table = self.free_table(perms, ("permissions",), "groups")
        if table is None:
            return None
        out: dict[str, str] = {}
        for old, new in table.items():
            if not isinstance(new, str) or not new.strip() or any(c in new for c in " \t\r\n"):
                self.problem(("permissions", "groups", old), "must be a group name (text without spaces)")
            else:
                out[old] = new
        return MappingProxyType(out) if len(out) == len(table) else None

    def batches(self, document: Mapping[str, object]) -> Mapping[str, tuple[str, ...]] | None:
        """``[batches]``: a name -> the source accounts migrated and approved together (a wave).
        Written by the console; which accounts exist is checked where a batch is used (the
        accounts CSV may be written later, by ``directory apply``)."""
        table = self.free_table(document, (), "batches")
        if table is None:
            return None
        out: dict[str, tuple[str, ...]] = {}
        for name, value in table.items():
            path: KeyPath = ("batches", name)
            if not name.strip():
                self.problem(path, "a batch needs a name")
            elif not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                self.problem(path, f"must be a list of account names, got {_kind(value)}")
            elif not value:
                self.problem(path, "an empty batch: give it at least one account")
            elif len(set(value)) != len(value):
                self.problem(path, "names an account twice")
            else:
                out[name] = tuple(value)
        return MappingProxyType(out) if len(out) == len(table) else None

    def items(
        self,
        project: Mapping[str, object],
        source: ServerConfig | None,
        target: ServerConfig | None,
        *,
        has_public: bool = False,
    ) -> tuple[str, ...] | None:
        """``[project] items``: what to move. Default: mail, permissions and metadata (folder ACLs
        and comments: carried where both servers have them, see :mod:`mailferry.engine.acl` and
        :mod:`mailferry.engine.metadata`), calendars and contacts when both sides have a ``dav``
        table, filters when both have a ``sieve`` table, public folders when the project has a
        ``[public]`` table."""
        at: KeyPath = ("project",)
        has_dav = source is not None and target is not None and source.dav is not None and target.dav is not None
        has_sieve = source is not None and target is not None and source.sieve is not None and target.sieve is not None
        value = project.get("items", _MISSING)
        if value is _MISSING:
            wanted = {"mail", "permissions", "metadata"} | ({"calendars", "contacts"} if has_dav else set())
            wanted |= {"filters"} if has_sieve else set()
            wanted |= {"public"} if has_public else set()
            return tuple(t for t in ITEM_TYPES if t in wanted)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.problem((*at, "items"), f"must be a non-empty array of {', '.join(map(_show, ITEM_TYPES))}")
            return None
        unknown = [v for v in value if v not in ITEM_TYPES]
        if unknown:
            self.problem((*at, "items"), f"unknown item type {_show(unknown[0])}; known: {', '.join(ITEM_TYPES)}")
            return None
        if not has_dav and any(v in ("calendars", "contacts") for v in value) and source and target:
            missing = " and ".join(r for r, s in (("source", source), ("target", target)) if s.dav is None)
            self.problem(
                (*at, "items"),
                f"calendars and contacts need the DAV side of both servers: add [{missing}.dav] with its url",
            )
            return None
        if not has_sieve and "filters" in value and source and target:
            missing = " and ".join(r for r, s in (("source", source), ("target", target)) if s.sieve is None)
            self.problem(
                (*at, "items"),
                f"filters need the ManageSieve side of both servers: add [{missing}.sieve] with its url "
                '(e.g. url = "sieve://mail.example:4190")',
            )
            return None
        return tuple(t for t in ITEM_TYPES if t in value)

    def public(
        self,
        document: Mapping[str, object],
        source: ServerConfig | None,
        target: ServerConfig | None,
        items: Sequence[str] | None,
    ) -> PublicConfig | None:
        """``[public]``: the public folders' unit (see :class:`PublicConfig`)."""
        table = self.table(document, (), "public", "public")
        at: KeyPath = ("public",)
        if table is None and (items is None or "public" not in items):
            return None
        table = table or {}
        before = len(self.problems)
        values: dict[str, Any] = {}
        for role, server in (("source", source), ("target", target)):
            prefix = self.string(table, at, f"{role}_prefix", None, empty_ok=True)
            user = self.string(table, at, f"{role}_user", None)
            password = self.secret(table, at, f"{role}_password")
            if password is not None and user is None:
                self.problem((*at, f"{role}_password"), f"needs {role}_user: whose password it is")
            if server is not None and password is None:
                if server.admin is None:
                    self.problem(
                        (*at, f"{role}_user" if user else f"{role}_password"),
                        f"the public folders' {role} login needs a password or the {role}'s admin: "
                        f"set {role}_user and {role}_password, or add [{role}.admin]",
                    )
                elif user is None and server.admin.method == "dovecot-master":
                    self.problem(
                        (*at, f"{role}_user"),
                        f"a Dovecot master user logs in only as another user: name the account the "
                        f"public folders are read {'from' if role == 'source' else 'into'} with {role}_user",
                    )
            values |= {f"{role}_prefix": prefix, f"{role}_user": user, f"{role}_password": password}
        seen = self.boolean(table, at, "per_user_seen", True)
        subscriptions = self.boolean(table, at, "subscriptions", True)
        if len(self.problems) > before:
            return None
        return PublicConfig(**values, per_user_seen=bool(seen), subscriptions=bool(subscriptions))

    def sieve(self, server: Mapping[str, object], role: str) -> SieveServerConfig | None:
        """``[role.sieve]``: the ManageSieve endpoint (logins are the IMAP side's)."""
        table = self.table(server, (role,), "sieve", f"{role}.sieve")
        if table is None:
            return None
        at: KeyPath = (role, "sieve")
        before = len(self.problems)
        url = self.string(table, at, "url", required=True)
        security = cast(Security | None, self.choice(table, at, "security", SECURITY_CHOICES, "starttls"))
        verify = self.boolean(table, at, "verify_certificates", True)
        ca_file = self.ca_file(table, at)
        allow_plaintext = self.boolean(table, at, "allow_plaintext_login", False)
        timeout = self.number(table, at, "timeout", 60.0)
        host, port = None, 4190
        if url is not None:
            try:
                host, port, _ = split_server_url(url, SIEVE_SCHEMES, lambda _s: 4190)
            except UrlProblem as problem:
                self.problem((*at, "url"), f'{problem} (write it as "sieve://host:4190")')
        if security == "none" and host is not None and not is_loopback(host) and not allow_plaintext:
            self.problem(
                (*at, "security"),
                f'"none" would send passwords unencrypted to {host}, which is not a loopback address; '
                'use "starttls" or "tls", or set allow_plaintext_login = true',
            )
        if len(self.problems) > before or host is None:
            return None
        assert security and timeout
        return SieveServerConfig(
            host=host,
            port=port,
            security=security,
            verify_certificates=verify,
            ca_file=ca_file,
            allow_plaintext_login=allow_plaintext,
            timeout=timeout,
        )

    def dav(self, server: Mapping[str, object], role: str) -> DavServerConfig | None:
        table = self.table(server, (role,), "dav", f"{role}.dav")
        if table is None:
            return None
        at: KeyPath = (role, "dav")
        before = len(self.problems)
        url = self.string(table, at, "url", required=True)
        verify = self.boolean(table, at, "verify_certificates", True)
        ca_file = self.ca_file(table, at)
        allow_plaintext = self.boolean(table, at, "allow_plaintext_login", False)
        timeout = self.number(table, at, "timeout", 60.0)
        max_connections = self.integer(table, at, "max_connections", 16, 1, 1000)
        admin_table = self.table(table, at, "admin", f"{role}.dav.admin")
        admin: DavAdminLogin | None = None
        if admin_table is not None:
            aat: KeyPath = (*at, "admin")
            user = self.string(admin_table, aat, "user", required=True)
            password = self.secret(admin_table, aat, "password", required=True)
            method = cast(DavAdminMethod | None, self.choice(admin_table, aat, "method", DAV_ADMIN_METHODS, "path"))
            if user and password and method:
                admin = DavAdminLogin(user=user, password=password, method=method)
        if url is not None:
            try:
                url = normalize_dav_url(url)
            except UrlProblem as problem:
                self.problem((*at, "url"), str(problem))
                url = None
        if url is not None and url.startswith("http://") and not allow_plaintext:
            host = urlsplit(url).hostname or ""
            if not is_loopback(host):
                self.problem(
                    (*at, "url"),
                    f"http:// would send passwords unencrypted to {host}, which is not a loopback address; "
                    "use https://, or set allow_plaintext_login = true",
                )
        if len(self.problems) > before or url is None:
            return None
        assert timeout and max_connections
        return DavServerConfig(
            url=url,
            verify_certificates=verify,
            ca_file=ca_file,
            allow_plaintext_login=allow_plaintext,
            timeout=timeout,
            max_connections=max_connections,
            admin=admin,
        )

    def check_dav_logins(
        self, accounts: Sequence[AccountConfig], source: ServerConfig, target: ServerConfig, items: Sequence[str]
    ) -> None:
        """Every account can log in to both DAV sides: its own password reference, or a DAV admin.
        (The IMAP admin's SASL authorization identity has no HTTP Basic equivalent.)"""
        if not any(t in items for t in ("calendars", "contacts")):
            return
        for role, server in (("source", source), ("target", target)):
            if server.dav is None or server.dav.admin is not None:
                continue
            lacking = [a.source_user for a in accounts if getattr(a, f"{role}_password") is None]
            if lacking:
                shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
                self.problem(
                    (role, "dav"),
                    f"accounts {shown} have no {role} password reference, and [{role}.dav] has no admin: "
                    f"add [{role}.dav.admin] (see the README on each server's admin route) or give each "
                    f"account a {role}_password",
                )

    def calendar_rules(self, document: Mapping[str, object]) -> CalendarRules | None:
        table = self.table(document, (), "calendars", "calendars") or {}
        at: KeyPath = ("calendars",)
        before = len(self.problems)
        scheduling = self.choice(table, at, "scheduling", SCHEDULING_MODES, "auto")
        addresses = self.address_map(table, at, "addresses", domains=False)
        domains = self.address_map(table, at, "domains", domains=True)
        propagate = self.boolean(table, at, "propagate_deletions", False)
        sharing = self.boolean(table, at, "sharing", True)
        batch = self.integer(table, at, "batch_items", 100, 1, 10_000)
        if len(self.problems) > before:
            return None
        assert scheduling and batch
        return CalendarRules(
            scheduling=cast(SchedulingMode, scheduling),
            addresses=addresses,
            domains=domains,
            propagate_deletions=propagate,
            sharing=sharing,
            batch_items=batch,
        )

    def address_map(self, table: Mapping[str, object], at: KeyPath, key: str, *, domains: bool) -> dict[str, str]:
        sub = self.free_table(table, at, key) or {}
        out: dict[str, str] = {}
        what = "a mail domain such as new.example" if domains else "an address such as ann@new.example"
        for old, new in sub.items():
            ok_old = _MAIL_DOMAIN.fullmatch(old) if domains else _ADDRESS.fullmatch(old)
            if not ok_old:
                self.problem((*at, key, old), f"the key must be {what.replace('new.', 'old.')}")
            elif not isinstance(new, str) or not (_MAIL_DOMAIN.fullmatch(new) if domains else _ADDRESS.fullmatch(new)):
                self.problem((*at, key, old), f"must be {what}, got {_show(new)}")
            else:
                out[old.lower()] = new
        return out

    def server(self, document: Mapping[str, object], role: str) -> ServerConfig | None:
        table = self.table(document, (), role, role, required=True)
        if table is None:
            return None
        at: KeyPath = (role,)
        before = len(self.problems)
        host = self.host(table, at)
        security = cast(Security | None, self.choice(table, at, "security", SECURITY_CHOICES, "tls"))
        port = self.integer(table, at, "port", default_port(security or "tls"), 1, 65535)
        verify = self.boolean(table, at, "verify_certificates", True)
        ca_file = self.ca_file(table, at)
        allow_plaintext = self.boolean(table, at, "allow_plaintext_login", False)
        timeout = self.number(table, at, "timeout", 60.0)
        max_connections = self.integer(table, at, "max_connections", 24, 1, 1000)
        admin = self.admin(table, at)
        dav = self.dav(table, role)
        sieve = self.sieve(table, role)
        submission = self.submission(table, role)

        if security == "none" and host is not None and not is_loopback(host) and not allow_plaintext:
            self.problem(
                (*at, "security"),
                f'"none" would send passwords unencrypted to {host}, which is not a loopback address; '
                'use "tls" or "starttls", or set allow_plaintext_login = true',
            )
        if len(self.problems) > before:
            return None
        assert host and security and port and timeout and max_connections
        return ServerConfig(
            host=host,
            port=port,
            security=security,
            verify_certificates=verify,
            ca_file=ca_file,
            allow_plaintext_login=allow_plaintext,
            timeout=timeout,
            max_connections=max_connections,
            admin=admin,
            dav=dav,
            sieve=sieve,
            submission=submission,
        )

    def ca_file(self, table: Mapping[str, object], at: KeyPath) -> Path | None:
        ca_text = self.string(table, at, "ca_file", "", empty_ok=True)
        ca_file = self.local_path(ca_text) if ca_text else None
        if ca_file is not None and not ca_file.is_file():
            self.problem((*at, "ca_file"), f"no such file: {ca_file}")
        return ca_file

    def host(self, table: Mapping[str, object], at: KeyPath) -> str | None:
        host = self.string(table, at, "host", required=True)
        if host is None:
            return None
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        bad = any(c.isspace() or c in "/@" for c in host)
        if not bad and ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                bad = True
        if bad:
            self.problem(
                (*at, "host"),
                f"must be a host name or IP address (no scheme, port or login), got {_show(host)}",
            )
            return None
        return host

    def admin(self, server: Mapping[str, object], at: KeyPath) -> AdminLogin | None:
        role = str(at[0])
        table = self.table(server, at, "admin", f"{role}.admin")
        if table is None:
            return None
        at = (*at, "admin")
        user = self.string(table, at, "user", required=True)
        password = self.secret(table, at, "password", required=True)
        method = cast(AdminMethod | None, self.choice(table, at, "method", ADMIN_METHODS, "sasl-authzid"))
        separator = self.string(table, at, "master_separator", "*")
        if user is None or password is None or method is None or separator is None:
            return None
        return AdminLogin(user=user, password=password, method=method, master_separator=separator)

    def accounts(
        self,
        document: Mapping[str, object],
        source: ServerConfig | None,
        target: ServerConfig | None,
        *,
        pending_ok: bool = False,
    ) -> tuple[AccountConfig, ...] | None:
        """The accounts of the CSV, overrides applied. ``pending_ok``: a CSV that does not exist
        yet gives no accounts (``directory apply`` will write it); overrides are then only typed."""
        table = self.table(document, (), "accounts", "accounts", required=True)
        if table is None:
            return None
        csv_name = self.string(table, ("accounts",), "csv", required=True)
        overrides = self.tables(table, ("accounts",), "override", "accounts.override")
        if csv_name is None:
            return None
        csv_path = self.local_path(csv_name)
        self.accounts_csv = csv_path
        if pending_ok and not csv_path.exists():
            self.apply_overrides([], overrides, csv_path.name, pending=True)
            return ()
        if not csv_path.is_file():
            self.problem(("accounts", "csv"), f"no such file: {csv_path}")
            return None
        rows, problems = read_accounts_csv(csv_path)
        self.problems.extend(problems)
        accounts = self.apply_overrides(rows, overrides, csv_path.name)
        self.check_logins(accounts, document, csv_path.name)
        return tuple(a for a, skip in accounts if not skip)

    def apply_overrides(
        self,
        rows: list[AccountConfig],
        overrides: list[tuple[KeyPath, dict[str, object]]],
        csv_label: str,
        *,
        pending: bool = False,
    ) -> list[tuple[AccountConfig, bool]]:
        by_user = {row.source_user.casefold(): i for i, row in enumerate(rows)}
        result: list[tuple[AccountConfig, bool]] = [(row, False) for row in rows]
        overridden: dict[int, KeyPath] = {}
        for at, table in overrides:
            user = self.string(table, at, "source_user", required=True)
            target_user = self.string(table, at, "target_user")
            source_password = self.secret(table, at, "source_password")
            target_password = self.secret(table, at, "target_password")
            exclude = self.regexes(table, at, "exclude_folders")
            skip = self.boolean(table, at, "skip", False)
            if user is None:
                continue
            index = by_user.get(user.casefold())
            if index is None and pending:
                continue
            if index is None:
                self.problem((*at, "source_user"), f"no account {_show(user)} in {csv_label}")
                continue
            if index in overridden:
                first = self.index.line_of(overridden[index])
                self.problem((*at, "source_user"), f"{_show(user)} has another override (line {first})")
                continue
            overridden[index] = at
            row = result[index][0]
            result[index] = (
                replace(
                    row,
                    target_user=target_user or row.target_user,
                    source_password=source_password or row.source_password,
                    target_password=target_password or row.target_password,
                    exclude_folders=exclude or (),
                ),
                skip,
            )
        # An override may give two accounts the same target: report it at the override.
        first_target: dict[str, int] = {}
        for index, (account, skip) in enumerate(result):
            if skip:
                continue
            key = account.target_user.casefold()
            if key in first_target and (index in overridden or first_target[key] in overridden):
                at = overridden.get(index) or overridden[first_target[key]]
                self.problem(
                    (*at, "target_user"),
                    f"{_show(account.target_user)} would be the target of two accounts",
                )
            first_target.setdefault(key, index)
        return result

    def check_logins(
        self, accounts: list[tuple[AccountConfig, bool]], document: Mapping[str, object], csv_label: str
    ) -> None:
        """Each account needs, on each side, its own password reference or the side's admin login."""
        for role in ("source", "target"):
            server = document.get(role)
            if isinstance(server, dict) and "admin" in server:
                continue
            column = f"{role}_password"
            lacking = [a for a, skip in accounts if not skip and getattr(a, column) is None]
            active = [a for a, skip in accounts if not skip]
            if lacking and len(lacking) == len(active) and len(lacking) > 3:
                self.problem(
                    (role, "admin"),
                    f"none of the {len(lacking)} accounts in {csv_label} has a {column} reference and "
                    f"there is no [{role}.admin] login: give one or the other",
                )
                continue
            for account in lacking:
                self.problems.append(
                    f"{csv_label}:{account.line}: {column}: account {_show(account.source_user)} has no "
                    f"{role} password reference and there is no [{role}.admin] login"
                )

    def folders(self, document: Mapping[str, object]) -> FolderRules | None:
        table = self.table(document, (), "folders", "folders") or {}
        at: KeyPath = ("folders",)
        before = len(self.problems)
        include = self.regexes(table, at, "include")
        exclude = self.regexes(table, at, "exclude")
        substitute = self.string(table, at, "separator_substitute", "_")
        if substitute is not None and any(c in substitute for c in "/."):
            self.problem((*at, "separator_substitute"), f'must not hold "/" or ".", got {_show(substitute)}')
        subscriptions = self.boolean(table, at, "subscriptions", True)
        renames: list[FolderRename] = []
        for rename_at, rename in self.tables(table, at, "rename", "folders.rename"):
            pattern = self.string(rename, rename_at, "pattern", required=True)
            replacement = self.string(rename, rename_at, "replacement", required=True, empty_ok=True)
            compiled = self.regex((*rename_at, "pattern"), pattern) if pattern is not None else None
            if compiled is not None and replacement is not None:
                self.check_replacement(compiled, replacement, (*rename_at, "replacement"))
                renames.append(FolderRename(compiled.pattern, replacement))
        if len(self.problems) > before:
            return None
        assert include is not None and exclude is not None and substitute is not None
        return FolderRules(
            include=include,
            exclude=exclude,
            separator_substitute=substitute,
            subscriptions=subscriptions,
            renames=tuple(renames),
        )

    def check_replacement(self, pattern: re.Pattern[str], replacement: str, at: KeyPath) -> None:
        for ref in re.finditer(r"\\(?:g<([^>]*)>|(\d+))", replacement):
            group = ref.group(1) if ref.group(1) is not None else ref.group(2)
            known = int(group) <= pattern.groups if group.isdigit() else group in pattern.groupindex
            if not known:
                self.problem(at, f"refers to group {_show(group)}, which the pattern does not have")

    def messages(self, document: Mapping[str, object]) -> MessageRules | None:
        table = self.table(document, (), "messages", "messages") or {}
        at: KeyPath = ("messages",)
        before = len(self.problems)
        since = self.day(table, at, "since")
        until = self.day(table, at, "before")
        max_size = self.size(table, at, "max_size", None)
        min_size = self.size(table, at, "min_size", None)
        propagate = self.boolean(table, at, "propagate_deletions", False)
        sync_flags = self.boolean(table, at, "sync_flags", True)
        if since and until and since >= until:
            self.problem((*at, "before"), f"must be after since ({since.isoformat()}), got {until.isoformat()}")
        if max_size is not None and min_size is not None and min_size > max_size:
            self.problem((*at, "min_size"), f"must not be above max_size ({max_size} bytes), got {min_size}")
        if len(self.problems) > before:
            return None
        return MessageRules(
            since=since,
            before=until,
            max_size=max_size,
            min_size=min_size,
            propagate_deletions=propagate,
            sync_flags=sync_flags,
        )

    def performance(self, document: Mapping[str, object], target: ServerConfig | None) -> Performance | None:
        table = self.table(document, (), "performance", "performance") or {}
        at: KeyPath = ("performance",)
        before = len(self.problems)
        accounts = self.integer(table, at, "accounts_in_parallel", 4, 1, 1000)
        per_account = self.integer(table, at, "connections_per_account", 2, 1, 100)
        batch = self.integer(table, at, "batch_messages", 100, 1, 100_000)
        batch_bytes = self.size(table, at, "batch_bytes", 16_000_000)
        retries = self.integer(table, at, "retries", 5, 0, 100)
        if batch_bytes is not None and batch_bytes < 1:
            self.problem((*at, "batch_bytes"), "must be at least 1 byte")
        if per_account is not None and target is not None and per_account > target.max_connections:
            self.problem(
                (*at, "connections_per_account"),
                f"must not be above target.max_connections ({target.max_connections}), got {per_account}",
            )
        if len(self.problems) > before:
            return None
        assert accounts and per_account and batch and batch_bytes and retries is not None
        return Performance(
            accounts_in_parallel=accounts,
            connections_per_account=per_account,
            batch_messages=batch,
            batch_bytes=batch_bytes,
            retries=retries,
        )

    # --- [directory] ----------------------------------------------------------------------------

    def directory(self, document: Mapping[str, object]) -> DirectoryConfig | None:
        table = self.table(document, (), "directory", "directory")
        if table is None:
            return None
        at: KeyPath = ("directory",)
        before = len(self.problems)
        source = self.ldap_server(table, "source")
        target = self.ldap_server(table, "target")
        container = self.dn(table, at, "target_container", required=True)
        rules = self.rules(table, at)
        custom = self.string(table, at, "custom_attribute", "", empty_ok=True)
        if custom is not None:
            custom = custom.strip()
            if rules is not None and "custom" in rules and not custom:
                self.problem(
                    (*at, "custom_attribute"),
                    'missing: the "custom" rule needs the attribute it compares, e.g. "employeeID"',
                )
            elif rules is not None and custom and "custom" not in rules:
                self.problem(
                    (*at, "custom_attribute"),
                    'is set but rules does not hold "custom": add "custom" to rules or leave this empty',
                )
            elif custom and not _LDAP_ATTRIBUTE.fullmatch(custom):
                self.problem((*at, "custom_attribute"), f"must be an LDAP attribute name, got {_show(custom)}")
        include_contacts = self.boolean(table, at, "include_contacts", False)
        include_groups = self.boolean(table, at, "include_groups", False)
        keep_old = self.boolean(table, at, "keep_old_addresses", True)
        csv_text = self.string(table, at, "accounts_csv", "", empty_ok=True)
        accounts_csv = self.local_path(csv_text.strip()) if csv_text and csv_text.strip() else self.accounts_csv
        account_key = self.choice(table, at, "account_key", ("login", "mail"), "login")
        confirm = self.boolean(table, at, "confirm_mailboxes", True)
        create = self.attribute_values(table, at, "create", templates=True)
        mail_attributes = self.attribute_values(table, at, "mail_attributes", templates=True)
        lock = self.attribute_values(table, at, "lock", templates=False)
        upn_suffix = self.string(table, at, "upn_suffix", "", empty_ok=True)
        if upn_suffix and not _DNS_NAME.fullmatch(upn_suffix.strip()):
            self.problem((*at, "upn_suffix"), f"must be a DNS name such as new.example, got {_show(upn_suffix)}")
        resolve = self.resolutions(table, at)
        if target is not None and target.dialect == "generic" and lock == {}:
            self.problem(
                (*at, "lock"),
                "missing: the generic dialect needs [directory.lock], the attributes that keep a created "
                'user from logging in (e.g. pwdAccountLockedTime = "000001010000Z" with the ppolicy overlay)',
            )
        if len(self.problems) > before:
            return None
        assert source and target and container and rules and custom is not None and account_key
        assert create is not None and mail_attributes is not None and lock is not None
        assert upn_suffix is not None and resolve is not None
        return DirectoryConfig(
            source=source,
            target=target,
            target_container=container,
            rules=rules,
            custom_attribute=custom,
            include_contacts=include_contacts,
            include_groups=include_groups,
            keep_old_addresses=keep_old,
            accounts_csv=accounts_csv,
            account_key=cast(Literal["login", "mail"], account_key),
            create=create,
            mail_attributes=mail_attributes,
            lock=lock,
            confirm_mailboxes=confirm,
            upn_suffix=upn_suffix.strip().lower(),
            resolve=resolve,
        )

    def resolutions(self, directory: Mapping[str, object], at: KeyPath) -> Mapping[str, str] | None:
        """``[[directory.resolve]]``: the admin's decision for a person the rules can't place,
        ``source`` (a source DN) -> ``target`` (a target DN, or "create"). Each source once; each
        target DN once (two people can't be one entry)."""
        result: dict[str, str] = {}
        sources: dict[str, int] = {}
        targets: dict[str, int] = {}
        ok = True
        for path, item in self.tables(directory, at, "resolve", "directory.resolve"):
            index = int(path[-1])
            source = self.dn(item, path, "source", required=True)
            target_text = self.string(item, path, "target", required=True)
            target: str | None = None
            if target_text is not None:
                target_text = target_text.strip()
                if target_text.lower() == "create":
                    target = "create"
                else:
                    checked = dn_problem(target_text)
                    if checked is None:
                        target = target_text
                    else:
                        self.problem(
                            (*path, "target"), f'must be a target DN or "create" ({_show(target_text)}: {checked})'
                        )
            if source is None or target is None:
                ok = False
                continue
            key = source.lower()
            if key in sources:
                self.problem((*path, "source"), f"{_show(source)} is resolved already in resolve[{sources[key]}]")
                ok = False
                continue
            sources[key] = index
            if target != "create":
                if target.lower() in targets:
                    self.problem(
                        (*path, "target"),
                        f"{_show(target)} is resolve[{targets[target.lower()]}]'s target already: two people can't "
                        "be one entry",
                    )
                    ok = False
                    continue
                targets[target.lower()] = index
            result[source] = target
        return MappingProxyType(result) if ok else None

    def ldap_server(self, directory: Mapping[str, object], role: str) -> LdapServerConfig | None:
        table = self.table(directory, ("directory",), role, f"directory.{role}", required=True)
        if table is None:
            return None
        at: KeyPath = ("directory", role)
        before = len(self.problems)
        endpoint = self.ldap_url(table, at)
        bind_dn = self.dn(table, at, "bind_dn", required=True)
        password = self.secret(table, at, "password", required=True)
        dialect = cast(LdapDialect | None, self.choice(table, at, "dialect", LDAP_DIALECTS, "ad"))
        bases = self.dns(table, at, "bases")
        filter_text = self.string(table, at, "filter", "", empty_ok=True)
        if filter_text and filter_text.strip():
            filter_text = filter_text.strip()
            wrong = filter_problem(filter_text)
            if wrong:
                self.problem((*at, "filter"), wrong)
        verify = self.boolean(table, at, "verify_certificates", True)
        ca_file = self.ca_file(table, at)
        tls_name = self.string(table, at, "tls_server_name", "", empty_ok=True)
        if tls_name and not _TLS_NAME.fullmatch(tls_name.strip()):
            self.problem((*at, "tls_server_name"), f"must be a host name, got {_show(tls_name)}")
        allow_plaintext = self.boolean(table, at, "allow_plaintext_login", False)
        timeout = self.number(table, at, "timeout", 30.0)
        page_size = self.integer(table, at, "page_size", 1000, 1, 100_000)
        attributes = self.attribute_map(table, at)
        if endpoint is not None and endpoint[2] == "none" and not is_loopback(endpoint[0]) and not allow_plaintext:
            self.problem(
                (*at, "url"),
                f"ldap:// would send the bind password unencrypted to {endpoint[0]}, which is not a loopback "
                "address; use ldaps:// or ldap+starttls://, or set allow_plaintext_login = true",
            )
        if len(self.problems) > before:
            return None
        assert endpoint and bind_dn and password and dialect and bases is not None and filter_text is not None
        assert tls_name is not None and timeout and page_size and attributes is not None
        host, port, security = endpoint
        return LdapServerConfig(
            host=host,
            port=port,
            security=security,
            bind_dn=bind_dn,
            password=password,
            dialect=dialect,
            bases=bases,
            filter=filter_text,
            verify_certificates=verify,
            ca_file=ca_file,
            tls_server_name=tls_name.strip(),
            allow_plaintext_login=allow_plaintext,
            timeout=timeout,
            page_size=page_size,
            attributes=attributes,
        )

    def ldap_url(self, table: Mapping[str, object], at: KeyPath) -> tuple[str, int, Security] | None:
        url = self.string(table, at, "url", required=True)
        if url is None:
            return None
        try:
            return parse_ldap_url(url)
        except ValueError as error:
            # Shown only when it cannot hold a login and password (user:secret@host).
            shown = f" (got {_show(url)})" if "@" not in url else ""
            self.problem((*at, "url"), f"{error}{shown}")
            return None

    def dn(self, table: Mapping[str, object], at: KeyPath, key: str, *, required: bool = False) -> str | None:
        text = self.string(table, at, key, required=required)
        if text is None:
            return None
        return self.check_dn((*at, key), text.strip())

    def check_dn(self, path: KeyPath, text: str) -> str | None:
        wrong = dn_problem(text)
        if wrong is None:
            return text
        self.problem(path, f"not a DN ({_show(text)}): {wrong}; write {_DN_HELP}")
        return None

    def dns(self, table: Mapping[str, object], at: KeyPath, key: str) -> tuple[str, ...] | None:
        value = table.get(key, [])
        if not isinstance(value, list):
            self.problem((*at, key), f"must be an array of DNs, got {_show(value)}")
            return None
        result: list[str] = []
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or item.strip() == "":
                shown = "an empty string" if isinstance(item, str) else _show(item)
                self.problem((*at, key, i), f"must be a DN (a string), got {shown}")
                ok = False
                continue
            checked = self.check_dn((*at, key, i), item.strip())
            if checked is None:
                ok = False
            else:
                result.append(checked)
        return tuple(result) if ok else None

    def rules(self, table: Mapping[str, object], at: KeyPath) -> tuple[str, ...] | None:
        value = table.get("rules", ["sid", "x500", "smtp", "login"])
        known = ", ".join(_show(r) for r in DIRECTORY_RULES)
        if not isinstance(value, list):
            self.problem((*at, "rules"), f"must be an array of rule names ({known}), got {_show(value)}")
            return None
        if not value:
            self.problem((*at, "rules"), f"must name at least one rule of {known}")
            return None
        rules: list[str] = []
        first: dict[str, int] = {}
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or item not in DIRECTORY_RULES:
                close = difflib.get_close_matches(item, DIRECTORY_RULES, n=1) if isinstance(item, str) else []
                hint = f"; did you mean {_show(close[0])}?" if close else ""
                self.problem((*at, "rules", i), f"must be one of {known}, got {_show(item)}{hint}")
                ok = False
            elif item in first:
                self.problem((*at, "rules", i), f"{_show(item)} is already rules[{first[item]}]")
                ok = False
            else:
                first[item] = i
                rules.append(item)
        if ok and not set(rules) & set(_REFINDING_RULES):
            # plan.directory refuses such rules: a user created by an earlier apply would not be
            # found again (sIDHistory is not writable over LDAP) and would be created twice.
            self.problem(
                (*at, "rules"),
                'must hold "x500", "smtp" or "login": people created by an earlier apply are found again '
                "by those, and would otherwise be created twice",
            )
            ok = False
        return tuple(rules) if ok else None

    def free_table(self, parent: Mapping[str, object], at: KeyPath, key: str) -> dict[str, object] | None:
        value = parent.get(key, _MISSING)
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem((*at, key), f"must be a table [{dotted((*at, key))}], got {_kind(value)}")
            return None
        return value

    def attribute_map(self, server: Mapping[str, object], at: KeyPath) -> Mapping[str, str] | None:
        """``attributes``: logical name -> LDAP attribute name, over the dialect's defaults."""
        table = self.free_table(server, at, "attributes")
        if table is None:
            return None
        result: dict[str, str] = {}
        for name, value in table.items():
            path = (*at, "attributes", name)
            if name not in LDAP_LOGICAL_ATTRIBUTES:
                close = difflib.get_close_matches(name, LDAP_LOGICAL_ATTRIBUTES, n=1)
                hint = (
                    f"; did you mean {_show(close[0])}?" if close else f"; known: {', '.join(LDAP_LOGICAL_ATTRIBUTES)}"
                )
                self.problem(path, "unknown logical attribute" + hint)
            elif not isinstance(value, str) or not _LDAP_ATTRIBUTE.fullmatch(value.strip()):
                self.problem(path, f"must be an LDAP attribute name, got {_show(value)}")
            else:
                result[name] = value.strip()
        return MappingProxyType(result) if len(result) == len(table) else None

    def attribute_values(
        self, directory: Mapping[str, object], at: KeyPath, key: str, *, templates: bool
    ) -> Mapping[str, str] | None:
        """A table of LDAP attribute name -> value (a template when ``templates``)."""
        table = self.free_table(directory, at, key)
        if table is None:
            return None
        result: dict[str, str] = {}
        seen: dict[str, str] = {}
        ok = True
        for name in table:
            path = (*at, key, name)
            if not _LDAP_ATTRIBUTE.fullmatch(name):
                self.problem(path, "must be an LDAP attribute name (letters, digits and -, starting with a letter)")
                ok = False
                continue
            if name.casefold() in seen:
                self.problem(path, f"the same attribute as {_show(seen[name.casefold()])} (names ignore case)")
                ok = False
                continue
            seen[name.casefold()] = name
            text = self.string(table, (*at, key), name)
            if text is None:
                ok = False
                continue
            wrong = template_problems(text) if templates else []
            for message in wrong:
                self.problem(path, message)
            ok = ok and not wrong
            result[name] = text
        return MappingProxyType(result) if ok else None
