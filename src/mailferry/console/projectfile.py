"""The project file as the console changes it: found in PROJECT_DIR, changed key by key.

The file is the operator's (commented by ``mailferry init``, maybe edited by hand), so the
console never re-renders it: :func:`set_keys` replaces or inserts single lines under a table
header and keeps everything else as it is. :func:`save` writes a change only when the whole
resulting file loads (:func:`mailferry.config.load.load_project`): every problem is reported and
nothing is half-saved.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailferry.config.accounts import parse_accounts_csv
from mailferry.config.load import load_project, parse_ldap_url
from mailferry.config.model import SIEVE_SCHEMES, Project, UrlProblem, normalize_dav_url, split_server_url
from mailferry.config.secrets import parse_secret_ref
from mailferry.config.template import _toml, parse_server_url, render_project
from mailferry.errors import ConfigError, MailferryError, UsageError

NEW_PROJECT_NAME = "project.toml"

Value = str | int | bool | Sequence[str] | None


def find_project(place: Path) -> Path:
    """The project file: ``place`` itself when it is a file; else the one ``*.toml`` in the
    folder ``place``, or ``project.toml`` there when there is none yet (the Servers page writes
    it). Several ``*.toml`` files: a usage error (name the file instead)."""
    place = place.absolute()
    if place.is_file():
        return place
    if place.exists() and not place.is_dir():
        raise UsageError(f"{place} is neither a folder nor a project file")
    found = sorted(place.glob("*.toml")) if place.is_dir() else []
    if len(found) > 1:
        raise UsageError(
            f"{place} holds several project files ({', '.join(p.name for p in found)})",
            hint="name the one to use: mailferry console PATH/TO/PROJECT.toml",
        )
    return found[0] if found else place / NEW_PROJECT_NAME


def toml_value(v: str | int | bool | Sequence[str]) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml(v)
    return "[" + ", ".join(_toml(x) for x in v) + "]"


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml(k)


_HEADER = re.compile(r"""\s*\[\[?\s*[A-Za-z0-9_\-."' ]+?\s*\]\]?\s*(#.*)?$""")


def _header(line: str) -> str | None:
    """The table name of a ``[table]`` header line (not ``[[array]]``), else None."""
    m = re.match(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$", line)
    return m.group(1).replace(" ", "") if m else None


def _is_header(line: str) -> bool:
    """A ``[table]`` or ``[[array]]`` header line (a line of a multi-line array is not one)."""
    return _HEADER.fullmatch(line) is not None


def _key_path(line: str) -> tuple[str, ...] | None:
    """The key (as TOML reads it: bare, "basic" or 'literal', maybe dotted) a ``key = value``
    line sets, else None."""
    s = line.strip()
    if not s or s.startswith("#") or s.startswith("["):
        return None
    for m in re.finditer("=", s):
        try:
            doc: Any = tomllib.loads(s[: m.start()] + "= 0")
        except tomllib.TOMLDecodeError:
            continue
        path: list[str] = []
        while isinstance(doc, dict) and len(doc) == 1:
            k, doc = next(iter(doc.items()))
            path.append(k)
        return tuple(path) if doc == 0 else None
    return None


def _value_end(lines: list[str], i: int) -> int:
    """The index after the last line of the ``key = value`` starting on line ``i``: the shortest
    span of lines TOML reads as one (arrays and strings may span lines; a line in them may look
    like a table header); just line ``i`` when no span reads (the file does not load: saving it
    is refused anyway)."""
    for j in range(i + 1, len(lines) + 1):
        try:
            tomllib.loads("\n".join(lines[i:j]))
        except tomllib.TOMLDecodeError:
            continue
        return j
    return i + 1


def _table_end(lines: list[str], start: int) -> int:
    """The index of the first header after ``start`` that is not inside a value, or the end."""
    i = start + 1
    while i < len(lines):
        if _is_header(lines[i]):
            return i
        i = _value_end(lines, i) if _key_path(lines[i]) is not None else i + 1
    return len(lines)


def _node(doc: Any, table: str) -> Any:
    for part in table.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _check_editable(text: str, table: str) -> None:
    """Refuse to edit ``[table]`` line by line when the file defines it inline (``admin = {
    ... }``) or with dotted keys: a ``[table]`` header added beside it would declare it twice."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # the loader says what is wrong with the file when it is saved
    node = _node(doc, table)
    if node is None:
        return
    if not isinstance(node, dict) or (
        any(not isinstance(v, dict) for v in node.values())
        and not any(_header(line) == table for line in text.splitlines())
    ):
        raise ConfigError(
            [
                f"{table}: written as an inline table ({{ ... }}) or with dotted keys in the project file; "
                f"the console changes a table only when it has its own [{table}] header: "
                "rewrite it so, or edit the file by hand"
            ]
        )


def _same(a: Any, b: Value) -> bool:
    if isinstance(b, (list, tuple)):
        return isinstance(a, list) and a == list(b)
    return a == b and type(a) is type(b)


def set_keys(text: str, table: str, values: Mapping[str, Value]) -> str:
    """``text`` with each key of ``values`` set in ``[table]`` (None: removed). A key present
    is replaced in place; a missing one goes after the table's last key; a missing table is
    appended at the end of the file. Raises :class:`ConfigError` when the table is written in a
    way this can't edit (inline, dotted keys) or the result does not hold the values."""
    _check_editable(text, table)
    out = _set_keys(text, table, values)
    try:
        doc = tomllib.loads(out)
    except tomllib.TOMLDecodeError:
        return out  # the loader reports it when saving: nothing is saved
    node = _node(doc, table)
    node = node if isinstance(node, dict) else {}
    wrong = [k for k, v in values.items() if (k in node if v is None else not _same(node.get(k), v))]
    if wrong:
        raise ConfigError(
            [
                f"{table}: could not change {', '.join(wrong)} line by line in the project file "
                "(written in a form the console does not edit): edit the file by hand"
            ]
        )
    return out


def _set_keys(text: str, table: str, values: Mapping[str, Value]) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _header(line) == table), None)
    todo = dict(values)
    if start is None:
        block = [f"{toml_key(k)} = {toml_value(v)}" for k, v in todo.items() if v is not None]
        if not block:
            return text
        tail = "" if not lines or lines[-1].strip() == "" else "\n"
        return text.rstrip("\n") + "\n" + tail + f"[{table}]\n" + "\n".join(block) + "\n"
    end = _table_end(lines, start)
    out = lines[: start + 1]
    last_key = start
    i = start + 1
    while i < end:
        path = _key_path(lines[i])
        stop = min(_value_end(lines, i), end) if path is not None else i + 1
        k = path[0] if path is not None and len(path) == 1 else None
        if k is not None and k in todo:
            v = todo.pop(k)
            if v is not None:
                out.append(f"{toml_key(k)} = {toml_value(v)}")
                last_key = len(out) - 1
        else:
            out.extend(lines[i:stop])
            if path is not None:
                last_key = len(out) - 1
        i = stop
    new = [f"{toml_key(k)} = {toml_value(v)}" for k, v in todo.items() if v is not None]
    out[last_key + 1 : last_key + 1] = new
    out.extend(lines[end:])
    return "\n".join(out) + "\n"


def remove_tables(text: str, tables: Sequence[str]) -> str:
    """``text`` without the ``[table]`` blocks named (header and keys, up to the next header)."""
    for table in tables:
        _check_editable(text, table)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        if _header(lines[i]) in tables:
            i = _table_end(lines, i)
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out) + "\n"


# Saves in this process one at a time: each reads the file, changes it and writes it back.
_SAVE_LOCK = threading.RLock()


def save(path: Path, text: str, files: Mapping[Path, str] | None = None) -> Project:
    """Write ``text`` to the project file at ``path`` (and ``files``, e.g. the accounts CSV) if,
    and only if, the result loads; return the project. Raises :class:`ConfigError` (every
    problem; every file as it was, also on any other failure)."""
    with _SAVE_LOCK:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.console-", suffix=".toml")
        tmp = Path(name)
        before = {p: (p.read_bytes() if p.exists() else None) for p in files or {}}
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
            for p, content in (files or {}).items():
                p.write_text(content, encoding="utf-8")
            try:
                load_project(tmp)
            except ConfigError as e:
                raise ConfigError([p.replace(tmp.name, path.name) for p in e.problems]) from None
            os.replace(tmp, path)
        except BaseException:
            for p, old in before.items():
                if old is None:
                    p.unlink(missing_ok=True)
                else:
                    p.write_bytes(old)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return load_project(path)


def accounts_csv_path(path: Path) -> Path:
    """Where the project's accounts CSV is (``[accounts] csv``, relative to the project)."""
    acc = raw(path).get("accounts")
    name = acc.get("csv") if isinstance(acc, dict) else None
    p = Path(name if isinstance(name, str) else "accounts.csv")
    return p if p.is_absolute() else path.parent / p


def raw(path: Path) -> dict[str, Any]:
    """The project file as TOML data (for filling forms, also when it does not load), or {}."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


# -- the Servers form -----------------------------------------------------------------------------

ROLES = (("src", "source"), ("tgt", "target"))


@dataclass
class ServersForm:
    """The Servers page's fields (name -> value) and the problems found, by field ("" for the
    whole form). Values of password fields are references; a field whose value may be a secret
    (a literal password, a URL with a login in it) is emptied when refused, never shown again."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    #: what the accounts CSV's problems call it: "accounts" (the text field) or an uploaded file's name
    accounts_label: str = "accounts"

    def error(self, name: str, message: str, *, hide: bool = False) -> None:
        self.errors.setdefault(name, []).append(message)
        if hide:
            self.values[name] = ""

    def get(self, name: str) -> str:
        return self.values.get(name, "").strip()


FIELDS = tuple(
    f"{p}_{k}"
    for p, _ in ROLES
    for k in (
        "imap",
        "admin",
        "admin_password",
        "dav",
        "dav_admin",
        "dav_admin_password",
        "sieve",
        "sieve_security",
        "ldap",
        "bind_dn",
        "ldap_password",
        "dialect",
    )
) + ("target_container", "accounts", "public", "public_source_user", "public_target_user")
SIEVE_SECURITY = ("starttls", "tls", "none")
SECRET_FIELDS = frozenset(f for f in FIELDS if f.endswith("password"))


def form_from_project(path: Path) -> ServersForm:
    """The form filled from the project file as it stands (references only, never a secret)."""
    doc = raw(path)
    f = ServersForm()
    d = doc.get("directory") if isinstance(doc.get("directory"), dict) else {}
    assert isinstance(d, dict)
    for p, role in ROLES:
        s = doc.get(role) if isinstance(doc.get(role), dict) else {}
        assert isinstance(s, dict)
        if s.get("host"):
            scheme = {"tls": "imaps", "starttls": "imap+starttls", "none": "imap"}.get(str(s.get("security")), "imaps")
            port = f":{s['port']}" if s.get("port") else ""
            f.values[f"{p}_imap"] = f"{scheme}://{s['host']}{port}"
        adm = s.get("admin") if isinstance(s.get("admin"), dict) else {}
        assert isinstance(adm, dict)
        f.values[f"{p}_admin"] = str(adm.get("user", ""))
        f.values[f"{p}_admin_password"] = str(adm.get("password", ""))
        dav = s.get("dav") if isinstance(s.get("dav"), dict) else {}
        assert isinstance(dav, dict)
        f.values[f"{p}_dav"] = str(dav.get("url", ""))
        dadm = dav.get("admin") if isinstance(dav.get("admin"), dict) else {}
        assert isinstance(dadm, dict)
        f.values[f"{p}_dav_admin"] = str(dadm.get("user", ""))
        f.values[f"{p}_dav_admin_password"] = str(dadm.get("password", ""))
        sv = s.get("sieve") if isinstance(s.get("sieve"), dict) else {}
        assert isinstance(sv, dict)
        f.values[f"{p}_sieve"] = str(sv.get("url", ""))
        f.values[f"{p}_sieve_security"] = str(sv.get("security", "starttls"))
        ld = d.get(role) if isinstance(d.get(role), dict) else {}
        assert isinstance(ld, dict)
        f.values[f"{p}_ldap"] = str(ld.get("url", ""))
        f.values[f"{p}_bind_dn"] = str(ld.get("bind_dn", ""))
        f.values[f"{p}_ldap_password"] = str(ld.get("password", ""))
        f.values[f"{p}_dialect"] = str(ld.get("dialect", "ad"))
    f.values["target_container"] = str(d.get("target_container", ""))
    f.values["public"] = "1" if moves_public(doc) else ""
    pub = doc.get("public") if isinstance(doc.get("public"), dict) else {}
    assert isinstance(pub, dict)
    for role in ("source", "target"):
        f.values[f"public_{role}_user"] = str(pub.get(f"{role}_user", ""))
    csv_path = accounts_csv_path(path)
    try:
        csv_text = csv_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        csv_text = ""
    # Shown only when it holds no problem: a refused cell may be a literal password.
    f.values["accounts"] = csv_text if csv_text and not parse_accounts_csv(csv_text)[1] else ""
    for k, v in list(f.values.items()):  # a literal someone wrote into the file is not shown either
        if k in SECRET_FIELDS and v and not _is_reference(v):
            f.values[k] = ""
    return f


def moves_public(doc: Mapping[str, Any]) -> bool:
    """Whether the project moves the public folders: a ``[public]`` table, or "public" in an
    explicit ``[project] items``."""
    items = _node(doc, "project.items")
    return isinstance(doc.get("public"), dict) or (isinstance(items, list) and "public" in items)


def _is_reference(text: str) -> bool:
    try:
        parse_secret_ref(text)
    except ValueError:
        return False
    return True


_LITERAL = "a password is never written here: give a reference, env:NAME (an environment variable) or file:PATH"


def _check_reference(f: ServersForm, name: str, *, required: bool) -> str | None:
    value = f.get(name)
    if not value:
        if required:
            f.error(name, "required: a reference env:NAME or file:PATH")
        return None
    try:
        return parse_secret_ref(value).ref
    except ValueError:
        f.error(name, _LITERAL, hide=True)
        return None


def _url_error(f: ServersForm, name: str, message: str) -> None:
    # A URL with a login may hold a password: refused and not shown again.
    hide = "@" in f.get(name)
    f.error(
        name, message if not hide else "must not hold a login or password: give the login in its own field", hide=hide
    )


def apply_servers(path: Path, f: ServersForm) -> Project | None:
    """Check the form and, when it holds no problem, write it into the project file (creating the
    file and an empty accounts CSV for a new project). Returns the project, or None with
    ``f.errors`` filled and the file untouched."""
    imap: dict[str, tuple[str, int, str]] = {}
    for p, role in ROLES:
        url = f.get(f"{p}_imap")
        if not url:
            f.error(f"{p}_imap", f"required: the {role} IMAP server, e.g. imaps://imap.example")
        else:
            try:
                imap[p] = parse_server_url(url)
            except UsageError as e:
                _url_error(f, f"{p}_imap", e.message)
        admin = f.get(f"{p}_admin")
        ref = _check_reference(f, f"{p}_admin_password", required=bool(admin))
        if ref and not admin:
            f.error(f"{p}_admin", "the admin login for this password reference")
        if f.get(f"{p}_dav"):
            try:
                normalize_dav_url(f.get(f"{p}_dav"))
            except UrlProblem as e:
                _url_error(f, f"{p}_dav", str(e))
            _check_reference(f, f"{p}_dav_admin_password", required=bool(f.get(f"{p}_dav_admin")))
        if f.get(f"{p}_sieve"):
            try:
                split_server_url(f.get(f"{p}_sieve"), SIEVE_SCHEMES, lambda _s: 4190)
            except UrlProblem as e:
                _url_error(f, f"{p}_sieve", f"{e} (write it as sieve://host:4190)")
            if f.get(f"{p}_sieve_security") not in SIEVE_SECURITY:
                f.error(f"{p}_sieve_security", 'must be "starttls", "tls" or "none"')
        if f.get(f"{p}_ldap"):
            try:
                parse_ldap_url(f.get(f"{p}_ldap"))
            except ValueError as e:
                _url_error(f, f"{p}_ldap", str(e))
            if not f.get(f"{p}_bind_dn"):
                f.error(f"{p}_bind_dn", "required with an LDAP server: the DN to bind as")
            _check_reference(f, f"{p}_ldap_password", required=True)
            if f.get(f"{p}_dialect") not in ("ad", "generic"):
                f.error(f"{p}_dialect", 'must be "ad" or "generic"')
    if bool(f.get("src_dav")) != bool(f.get("tgt_dav")):
        f.error("tgt_dav" if f.get("src_dav") else "src_dav", "give both DAV servers, or neither")
    for role in ("source", "target"):
        if f.get(f"public_{role}_user") and not f.get("public"):
            f.error(f"public_{role}_user", 'tick "Move the public folders" to use this login, or empty it')
    if bool(f.get("src_sieve")) != bool(f.get("tgt_sieve")):
        f.error("tgt_sieve" if f.get("src_sieve") else "src_sieve", "give both ManageSieve servers, or neither")
    ldap = bool(f.get("src_ldap")) or bool(f.get("tgt_ldap"))
    if bool(f.get("src_ldap")) != bool(f.get("tgt_ldap")):
        f.error("tgt_ldap" if f.get("src_ldap") else "src_ldap", "give both directories, or neither")
    if ldap and not f.get("target_container"):
        f.error("target_container", "required with directories: where new users are created (a container DN)")
    csv_text = f.values.get("accounts", "").replace("\r\n", "\n")
    if f.errors.get("accounts"):
        pass  # an upload that could not be read: said already
    elif csv_text.strip():
        for problem in parse_accounts_csv(csv_text, label=f.accounts_label)[1]:
            f.error("accounts", problem)
    elif not ldap:
        f.error("accounts", "required without directories: the header source_user,target_user and one line per account")
    for name in sorted(SECRET_FIELDS):  # checked whatever else the form holds; a literal is never shown again
        value = f.get(name)
        if value and not _is_reference(value):
            if name not in f.errors:
                f.error(name, _LITERAL)
            f.values[name] = ""
    with _SAVE_LOCK:  # read, change, write: one save at a time
        doc = raw(path) if path.exists() else {}
        for p, role in ROLES:
            if f.get(f"{p}_ldap") or f.get("src_ldap") or f.get("tgt_ldap"):
                continue
            if isinstance(_node(doc, f"directory.{role}"), dict):
                f.error(
                    f"{p}_ldap",
                    "the project file has this directory: emptying the field does not remove it "
                    "(it holds your decisions too); remove the [directory] tables from the file by hand",
                )
        if f.errors:
            if f.errors.get("accounts"):
                f.values["accounts"] = ""  # a refused cell may be a literal password: not shown again
            return None
        try:
            return _write_servers(path, f, imap, ldap, csv_text)
        except ConfigError as e:
            for problem in e.problems:
                f.error(_field_of(problem), problem)
            return None


def _write_servers(
    path: Path, f: ServersForm, imap: Mapping[str, tuple[str, int, str]], ldap: bool, csv_text: str
) -> Project:
    existed = path.exists()
    text = path.read_text(encoding="utf-8") if existed else _new_project(path, f)
    gone: list[str] = []  # tables whose fields were emptied
    for p, role in ROLES:
        host, port, security = imap[p]
        text = set_keys(text, role, {"host": host, "port": port, "security": security})
        if f.get(f"{p}_admin"):
            text = set_keys(
                text, f"{role}.admin", {"user": f.get(f"{p}_admin"), "password": f.get(f"{p}_admin_password")}
            )
        else:
            gone.append(f"{role}.admin")
        if f.get(f"{p}_dav"):
            text = set_keys(text, f"{role}.dav", {"url": normalize_dav_url(f.get(f"{p}_dav"))})
            if f.get(f"{p}_dav_admin"):
                text = set_keys(
                    text,
                    f"{role}.dav.admin",
                    {"user": f.get(f"{p}_dav_admin"), "password": f.get(f"{p}_dav_admin_password")},
                )
            else:
                gone.append(f"{role}.dav.admin")
        else:
            gone += [f"{role}.dav.admin", f"{role}.dav"]
        if f.get(f"{p}_sieve"):  # other keys (ca_file, timeout, ...) are left as the file has them
            text = set_keys(
                text, f"{role}.sieve", {"url": f.get(f"{p}_sieve"), "security": f.get(f"{p}_sieve_security")}
            )
        else:
            gone.append(f"{role}.sieve")
        if f.get(f"{p}_ldap"):
            text = set_keys(
                text,
                f"directory.{role}",
                {
                    "url": f.get(f"{p}_ldap"),
                    "bind_dn": f.get(f"{p}_bind_dn"),
                    "password": f.get(f"{p}_ldap_password"),
                    "dialect": f.get(f"{p}_dialect"),
                },
            )
    if ldap:
        text = set_keys(text, "directory", {"target_container": f.get("target_container")})
    text = _set_public(
        text, bool(f.get("public")), gone, f.get("public_source_user") or None, f.get("public_target_user") or None
    )
    text = remove_tables(text, gone)
    doc = tomllib.loads(text)
    still = [t for t in gone if _node(doc, t) is not None]
    if still:
        raise ConfigError(
            [f"{t}: could not remove it from the project file line by line: edit the file by hand" for t in still]
        )
    files = {}
    if csv_text.strip():
        files[path.parent / "accounts.csv" if not existed else accounts_csv_path(path)] = csv_text
    return save(path, text, files)


def _set_public(
    text: str, wanted: bool, gone: list[str], source_user: str | None = None, target_user: str | None = None
) -> str:
    """The public folders moved (a ``[public]`` table with the logins given, an empty login
    removed; the operator's other keys kept) or not (the table goes, into ``gone``); an explicit
    ``[project] items`` gains or loses "public" so that it says the same."""
    doc = tomllib.loads(text)
    if wanted:
        if not isinstance(doc.get("public"), dict):
            _check_editable(text, "public")
            text = text.rstrip("\n") + "\n\n[public]\n"
        text = set_keys(text, "public", {"source_user": source_user, "target_user": target_user})
    else:
        gone.append("public")
    items = _node(doc, "project.items")
    if isinstance(items, list) and wanted != ("public" in items):
        new = [*items, "public"] if wanted else [t for t in items if t != "public"]
        text = set_keys(text, "project", {"items": [str(t) for t in new]})
    return text


def _new_project(path: Path, f: ServersForm) -> str:
    """A new project file as ``mailferry init`` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return render_project(
        name=path.parent.name or "migration",
        source_url=f.get("src_imap"),
        target_url=f.get("tgt_imap"),
        accounts_csv="accounts.csv",
        source_admin=f.get("src_admin") or None,
        source_admin_password=f.get("src_admin_password") or None,
        target_admin=f.get("tgt_admin") or None,
        target_admin_password=f.get("tgt_admin_password") or None,
        ledger=None,
        source_dav=f.get("src_dav") or None,
        target_dav=f.get("tgt_dav") or None,
    )


_PROBLEM_FIELDS = (
    ("source.dav.admin", "src_dav_admin_password"),
    ("target.dav.admin", "tgt_dav_admin_password"),
    ("source.dav", "src_dav"),
    ("target.dav", "tgt_dav"),
    ("source.sieve.security", "src_sieve_security"),
    ("target.sieve.security", "tgt_sieve_security"),
    ("source.sieve", "src_sieve"),
    ("target.sieve", "tgt_sieve"),
    ("public.source_user", "public_source_user"),
    ("public.target_user", "public_target_user"),
    ("public", "public"),
    ("source.admin.user", "src_admin"),
    ("target.admin.user", "tgt_admin"),
    ("source.admin", "src_admin_password"),
    ("target.admin", "tgt_admin_password"),
    ("directory.source.bind_dn", "src_bind_dn"),
    ("directory.target.bind_dn", "tgt_bind_dn"),
    ("directory.source.password", "src_ldap_password"),
    ("directory.target.password", "tgt_ldap_password"),
    ("directory.source", "src_ldap"),
    ("directory.target", "tgt_ldap"),
    ("directory.target_container", "target_container"),
    ("source", "src_imap"),
    ("target", "tgt_imap"),
)


def _field_of(problem: str) -> str:
    """The form field a loader problem ("file:line: key.path: message") is about, or ""."""
    m = re.match(r"[^:]*:(?:\d+:)?\s*([\w.\[\]\"-]+)", problem)
    key = m.group(1) if m else ""
    if key.startswith("accounts"):
        return "accounts"
    for prefix, name in _PROBLEM_FIELDS:
        if key == prefix or key.startswith(prefix + "."):
            return name
    return ""


def set_batch(path: Path, name: str, accounts: Sequence[str] | None) -> Project:
    """Save (or, with None, remove) the batch ``name`` in the project file's ``[batches]``."""
    with _SAVE_LOCK:
        text = path.read_text(encoding="utf-8")
        return save(path, set_keys(text, "batches", {name: list(accounts) if accounts is not None else None}))


def add_resolution(path: Path, source: str, target: str) -> Project:
    """Append a ``[[directory.resolve]]`` decision (source person DN -> target DN or "create")."""
    with _SAVE_LOCK:
        text = path.read_text(encoding="utf-8").rstrip("\n") + "\n"
        text += f"\n[[directory.resolve]]\nsource = {_toml(source)}\ntarget = {_toml(target)}\n"
        return save(path, text)


def set_directory(path: Path, bases: Sequence[str], target_container: str, rules: Sequence[str]) -> Project:
    with _SAVE_LOCK:
        text = path.read_text(encoding="utf-8")
        text = set_keys(text, "directory.source", {"bases": list(bases)})
        text = set_keys(text, "directory", {"target_container": target_container, "rules": list(rules)})
        return save(path, text)


def load(path: Path) -> tuple[Project | None, list[str]]:
    """The project, or None and its problems (a missing file is "no project yet": no problem)."""
    if not path.exists():
        return None, []
    try:
        return load_project(path), []
    except ConfigError as e:
        return None, e.problems
    except MailferryError as e:
        return None, [str(e)]
