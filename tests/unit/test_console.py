"""The console in-process, without servers: login, cookie, CSRF, the listen rule, the Servers
form (references only, nothing half-saved), batches, the project file edited line by line, the
readiness verdict. Pages that talk to servers are tested in tests/e2e/test_console_app.py."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mailferry.config.load import load_project
from mailferry.console import projectfile
from mailferry.console.app import Console, container_tree, create_app, verdict
from mailferry.console.security import COOKIE, Sessions, check_listen
from mailferry.console.serve import serve
from mailferry.errors import ConfigError, UsageError

TOKEN = "t0k3n-for-tests-" + "x" * 20


def make_client(place: Path, *, secure: bool = False) -> tuple[TestClient, Console]:
    console = Console(place, sessions=Sessions(TOKEN), secure=secure)
    base = "https://127.0.0.1" if secure else "http://127.0.0.1"
    return TestClient(create_app(console), base_url=base, follow_redirects=False), console


def login(client: TestClient) -> None:
    r = client.get(f"/login?token={TOKEN}")
    assert r.status_code == 303


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def project_dir(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "accounts.csv").write_text("source_user,target_user\nalice,alice\nbob,bob\ncarol,carol\n")
    (tmp_path / "p.toml").write_text(
        '[project]\nname = "p"\n\n'
        '[source]\nhost = "127.0.0.1"\nport = 1143\nsecurity = "none"\n'
        '[source.admin]\nuser = "admin"\npassword = "env:MF_CONSOLE_SRC"\n\n'
        '[target]\nhost = "127.0.0.1"\nport = 2143\nsecurity = "none"\n'
        '[target.admin]\nuser = "admin"\npassword = "env:MF_CONSOLE_TGT"\n\n'
        '[accounts]\ncsv = "accounts.csv"\n' + extra
    )
    return tmp_path


# -- login and sessions ---------------------------------------------------------------------------


def test_every_page_needs_the_login(tmp_path: Path) -> None:
    client, _ = make_client(project_dir(tmp_path))
    for path in ("/servers", "/directory", "/people", "/plan", "/run", "/results", "/run/events?batch=x"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert "Log in" in r.text
    assert client.post("/servers", data={}).status_code == 401
    assert client.get("/login?token=wrong").status_code == 401
    assert client.get("/login").status_code == 401
    assert client.get("/static/console.js").status_code == 200  # no secret in there


def test_login_sets_a_strict_cookie_and_drops_the_token_from_the_url(tmp_path: Path) -> None:
    client, _ = make_client(project_dir(tmp_path))
    r = client.get(f"/login?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/servers"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie
    assert TOKEN not in cookie
    page = client.get("/servers")
    assert page.status_code == 200
    assert TOKEN not in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    client, _ = make_client(project_dir(tmp_path), secure=True)
    r = client.get(f"/login?token={TOKEN}")
    assert "Secure" in r.headers["set-cookie"]


def test_logout_ends_the_session(tmp_path: Path) -> None:
    client, _ = make_client(project_dir(tmp_path))
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 200
    assert client.get("/servers").status_code == 401


def test_every_post_needs_the_csrf_token(tmp_path: Path) -> None:
    client, _ = make_client(project_dir(tmp_path))
    login(client)
    before = (tmp_path / "p.toml").read_text()
    for path, data in (
        ("/servers", {"src_imap": "imap://127.0.0.1:9"}),
        ("/servers/test", {}),
        ("/batches", {"batch": "w", "account": "alice"}),
        ("/batches/delete", {"batch": "w"}),
        ("/directory", {}),
        ("/run/start", {"batch": "w"}),
        ("/run/cancel", {"batch": "w"}),
        ("/run/pause", {"batch": "w"}),
        ("/run/resume", {"batch": "w"}),
        ("/people/resolve", {"source": "x", "target": "create"}),
        ("/people/apply", {}),
        ("/results/approve", {"batch": "w", "approved_by": "me"}),
        ("/logout", {}),
    ):
        for csrf in (None, "forged"):
            form = dict(data) | ({"csrf": csrf} if csrf else {})
            r = client.post(path, data=form)
            assert r.status_code == 403, (path, csrf)
            assert "CSRF" in r.text
    assert (tmp_path / "p.toml").read_text() == before
    # another session's token is not this one's
    other, _ = make_client(tmp_path)
    login(other)
    theirs = csrf_of(other.get("/servers").text)
    mine = csrf_of(client.get("/servers").text)
    assert theirs != mine
    assert client.post("/batches", data={"csrf": theirs, "batch": "w", "account": "alice"}).status_code == 403


# -- listening ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_needs_no_tls(host: str) -> None:
    check_listen(host, None, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "console.example"])
def test_other_addresses_need_tls(host: str) -> None:
    with pytest.raises(UsageError, match="not a loopback address, and no TLS"):
        check_listen(host, None, None)
    check_listen(host, "cert.pem", "key.pem")
    with pytest.raises(UsageError, match="go together"):
        check_listen(host, "cert.pem", None)


def test_console_command_refuses_a_non_loopback_listen_without_tls(tmp_path: Path) -> None:
    from contextlib import redirect_stderr, redirect_stdout

    from mailferry.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["console", str(project_dir(tmp_path)), "--listen", "0.0.0.0", "--port", "0"])
    assert code == 64
    assert "not a loopback address, and no TLS" in err.getvalue()


def test_serve_prints_the_login_url_and_logs_no_token(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The real server (uvicorn, in a thread): the URL printed works; the access log, which
    would hold the token, is off."""
    import threading
    import time

    import httpx

    from mailferry.console import serve as serving

    out = io.StringIO()
    prepared: list[serving.Prepared] = []
    real_prepare = serving.prepare

    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    def keep(*args: object, **kw: object) -> serving.Prepared:
        p = real_prepare(*args, **kw)  # type: ignore[arg-type]
        # every level of uvicorn's loggers, whatever level the console chose: an access log line
        # (INFO) would reach its handlers (the output captured) and the one kept here
        for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        logging.getLogger("uvicorn.error").addHandler(handler)
        access = logging.getLogger("uvicorn.access")
        if access.handlers:  # uvicorn logs access only to a logger with handlers: see them all
            access.addHandler(handler)
        prepared.append(p)
        return p

    handler = Keep(logging.DEBUG)
    serving.prepare = keep  # type: ignore[assignment]
    try:
        t = threading.Thread(target=serve, args=(project_dir(tmp_path),), kwargs={"port": 0, "out": out}, daemon=True)
        t.start()
        for _ in range(100):
            if prepared and prepared[0].server.started:
                break
            time.sleep(0.05)
    finally:
        serving.prepare = real_prepare  # type: ignore[assignment]
    url = re.search(r"(http://127\.0\.0\.1:\d+/login\?token=\S+)", out.getvalue())
    assert url, out.getvalue()
    with httpx.Client() as h:
        r = h.get(url.group(1), follow_redirects=False)
        assert r.status_code == 303
        h.cookies = r.cookies
        page = h.get(url.group(1).split("/login")[0] + "/servers")
        assert page.status_code == 200 and "Servers" in page.text
    token = url.group(1).split("token=")[1]
    prepared[0].server.should_exit = True
    t.join(10)
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).removeHandler(handler)
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err
    logged = [r.getMessage() for r in records]
    assert any("Started server" in m or "Uvicorn running" in m or "Waiting" in m for m in logged), logged
    assert not [m for m in logged if token in m or "/login" in m], logged
    assert not [r for r in records if r.name == "uvicorn.access"]
    assert "it logs in one browser once" in out.getvalue()


# -- the Servers form ---------------------------------------------------------------------------


SERVERS = {
    "src_imap": "imap://127.0.0.1:1143",
    "src_admin": "admin",
    "src_admin_password": "env:MF_CONSOLE_SRC",
    "tgt_imap": "imap://127.0.0.1:2143",
    "tgt_admin": "admin",
    "tgt_admin_password": "file:secrets/target",
    "accounts": "source_user,target_user\nalice,alice\nbob,bob\ncarol,carol\n",
}


def test_servers_form_writes_a_new_project(tmp_path: Path) -> None:
    client, console = make_client(tmp_path)
    login(client)
    page = client.get("/servers")
    assert page.status_code == 200
    r = client.post("/servers", data=SERVERS | {"csrf": csrf_of(page.text)})
    assert r.status_code == 303, r.text
    p = load_project(console.path)
    assert (p.source.port, p.target.port) == (1143, 2143)
    assert p.target.admin is not None and p.target.admin.password.ref == "file:secrets/target"
    assert "# mailferry project file" in console.path.read_text()  # the init template, comments kept
    page = client.get("/servers?done=servers")
    assert "Saved to the project file." in page.text
    assert 'value="file:secrets/target"' in page.text  # a reference is shown, it is no secret


def test_servers_form_keeps_comments_and_other_keys(tmp_path: Path) -> None:
    place = project_dir(tmp_path, "\n# my own note\n[performance]\nretries = 3\n")
    client, console = make_client(place)
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    r = client.post(
        "/servers",
        data=SERVERS
        | {
            "csrf": csrf,
            "src_dav": "http://127.0.0.1:5232/",
            "tgt_dav": "http://127.0.0.1:5233/",
            "src_dav_admin": "admin",
            "src_dav_admin_password": "env:DAV1",
            "tgt_dav_admin": "admin",
            "tgt_dav_admin_password": "env:DAV2",
        },
    )
    assert r.status_code == 303, r.text
    text = console.path.read_text()
    assert "# my own note" in text and "retries = 3" in text
    p = load_project(console.path)
    assert p.performance.retries == 3
    assert p.source.dav is not None and p.source.dav.url == "http://127.0.0.1:5232/"
    assert p.items == ("mail", "calendars", "contacts", "permissions", "metadata")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("src_admin_password", "hunter2-secret", "a password is never written here"),
        ("tgt_admin_password", "s3cr3t pass", "a password is never written here"),
        ("src_imap", "imap://admin:hunter2-secret@127.0.0.1:1143", "must not hold a login or password"),
        ("tgt_imap", "imaps://u:hunter2-secret@host", "must not hold a login or password"),
        ("src_dav", "http://u:hunter2-secret@127.0.0.1:5232/", "must not hold a login or password"),
        ("src_imap", "pop3://127.0.0.1", "unknown scheme"),
    ],
)
def test_servers_form_refuses_secrets_next_to_the_field_and_saves_nothing(
    tmp_path: Path, field: str, value: str, words: str
) -> None:
    place = project_dir(tmp_path)
    client, console = make_client(place)
    login(client)
    before = console.path.read_text()
    csrf = csrf_of(client.get("/servers").text)
    data = SERVERS | {"csrf": csrf, field: value}
    if field == "src_dav":
        data |= {"tgt_dav": "http://127.0.0.1:5233/"}
    # the other fields changed too: nothing of it may land
    data["tgt_imap"] = "imap://127.0.0.1:3143" if field != "tgt_imap" else value
    r = client.post("/servers", data=data)
    assert r.status_code == 400
    assert console.path.read_text() == before
    m = re.search(rf'id="e-{field}"[^>]*>(.*?)</p>', r.text, re.S)
    assert m and words in m.group(1), r.text
    assert "hunter2-secret" not in r.text and "s3cr3t" not in r.text
    # the field itself points at its error, for screen readers
    tag = re.search(rf'<input id="f-{field}"[^>]*>', r.text)
    assert tag, r.text
    described = re.search(r'aria-describedby="([^"]*)"', tag.group(0))
    assert described and f"e-{field}" in described.group(1).split(), tag.group(0)
    assert 'aria-invalid="true"' in tag.group(0)


def test_servers_form_reports_every_problem_at_once(tmp_path: Path) -> None:
    client, console = make_client(tmp_path)
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    r = client.post("/servers", data={"csrf": csrf, "src_admin": "admin", "src_ldap": "ldap://127.0.0.1:389"})
    assert r.status_code == 400
    for f in (
        "src_imap",
        "tgt_imap",
        "src_admin_password",
        "src_bind_dn",
        "src_ldap_password",
        "tgt_ldap",
        "target_container",
    ):
        assert f'id="e-{f}"' in r.text, f
    assert not console.path.exists()
    assert not (tmp_path / "accounts.csv").exists()


def test_accounts_csv_with_broken_lines_is_refused_line_by_line(tmp_path: Path) -> None:
    place = project_dir(tmp_path)
    client, console = make_client(place)
    login(client)
    before = (place / "accounts.csv").read_text()
    page = client.get("/servers")
    assert "alice,alice" in page.text  # the CSV as it stands
    csrf = csrf_of(page.text)
    broken = 'source_user,target_user,source_password\nalice,alice,hunter2-literal\nbob\n"carol,carol\nalice,x,\n'
    r = client.post("/servers", data=SERVERS | {"csrf": csrf, "accounts": broken})
    assert r.status_code == 400
    m = re.search(r'id="e-accounts"(.*?)</div>', r.text, re.S)
    assert m
    problems = m.group(1)
    assert "accounts:2: source_password" in problems  # the literal password, by line, not by value
    assert "accounts:3: expected 3 fields" in problems
    assert "accounts:4:" in problems
    assert "accounts:5: source_user" in problems and "listed twice" in problems
    assert "hunter2-literal" not in r.text
    assert (place / "accounts.csv").read_text() == before
    # a good one replaces the file
    r = client.post("/servers", data=SERVERS | {"csrf": csrf, "accounts": "source_user,target_user\ndave,dave.t\n"})
    assert r.status_code == 303
    assert [a.target_user for a in load_project(console.path).accounts] == ["dave.t"]


def test_accounts_csv_uploaded_as_a_file(tmp_path: Path) -> None:
    place = project_dir(tmp_path)
    client, console = make_client(place)
    login(client)
    page = client.get("/servers")
    assert 'enctype="multipart/form-data"' in page.text
    field = re.search(r'<input id="f-accounts_file"[^>]*>', page.text)
    assert field and 'type="file"' in field.group(0) and 'accept=".csv,text/csv"' in field.group(0)
    assert '<label for="f-accounts_file">' in page.text
    csrf = csrf_of(page.text)
    before = (place / "accounts.csv").read_text()
    data = SERVERS | {"csrf": csrf, "accounts": "source_user,target_user\ndave,dave\n"}
    # broken lines: named by the file's name and line, next to the field; the file wins over the
    # (good) text field, and nothing is saved
    broken = b'source_user,target_user,source_password\nalice,alice,hunter2-literal\nbob\n"carol,carol\nalice,x,\n'
    r = client.post("/servers", data=data, files={"accounts_file": ("wave.csv", broken, "text/csv")})
    assert r.status_code == 400
    m = re.search(r'id="e-accounts"(.*?)</div>', r.text, re.S)
    assert m
    problems = m.group(1)
    assert "wave.csv:2: source_password" in problems
    assert "wave.csv:3: expected 3 fields" in problems
    assert "wave.csv:4:" in problems
    assert "wave.csv:5: source_user" in problems and "listed twice" in problems
    assert "hunter2-literal" not in r.text
    assert 'aria-describedby="h-accounts_file e-accounts"' in r.text
    assert (place / "accounts.csv").read_text() == before
    # not UTF-8: refused by line, nothing saved
    latin1 = b"source_user,target_user\nj\xf6rg,j\n"
    r = client.post("/servers", data=data, files={"accounts_file": ("x.csv", latin1, "text/csv")})
    assert r.status_code == 400 and "x.csv:2: not UTF-8 text" in r.text
    assert (place / "accounts.csv").read_text() == before
    # a good file (with a byte order mark, as spreadsheets save it) is saved, over the text field
    good = "\ufeffsource_user,target_user\r\nerin,erin.t\r\nfrank,frank.t\r\n".encode()
    r = client.post("/servers", data=data, files={"accounts_file": ("good.csv", good, "text/csv")})
    assert r.status_code == 303, r.text
    assert [a.target_user for a in load_project(console.path).accounts] == ["erin.t", "frank.t"]
    # no file chosen (a browser still sends the empty part): the text field counts
    r = client.post("/servers", data=data, files={"accounts_file": ("", b"", "application/octet-stream")})
    assert r.status_code == 303, r.text
    assert [a.source_user for a in load_project(console.path).accounts] == ["dave"]


def test_a_literal_password_in_the_file_is_not_shown(tmp_path: Path) -> None:
    place = project_dir(tmp_path)
    p = place / "p.toml"
    p.write_text(p.read_text().replace('"env:MF_CONSOLE_SRC"', '"hunter2-literal"'))
    client, _ = make_client(place)
    login(client)
    page = client.get("/servers")
    assert "hunter2-literal" not in page.text
    assert "Problem:" in page.text  # the loader's own message about it is shown, without the value


# -- batches ------------------------------------------------------------------------------------


def test_batches_are_saved_in_the_project_file(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path))
    login(client)
    page = client.get("/people")
    assert page.status_code == 200
    assert "alice" in page.text and "in accounts CSV" in page.text
    csrf = csrf_of(page.text)
    r = client.post("/batches", data={"csrf": csrf, "batch": "wave 1", "account": ["alice", "bob"]})
    assert r.status_code == 303, r.text
    assert load_project(console.path).batches == {"wave 1": ("alice", "bob")}
    assert '"wave 1" = ["alice", "bob"]' in console.path.read_text()
    # replaced under the same name, a second one beside it
    client.post("/batches", data={"csrf": csrf, "batch": "wave 1", "account": ["carol"]})
    client.post("/batches", data={"csrf": csrf, "batch": "wave 2", "account": ["alice"]})
    assert dict(load_project(console.path).batches) == {"wave 1": ("carol",), "wave 2": ("alice",)}
    r = client.post("/batches/delete", data={"csrf": csrf, "batch": "wave 1"})
    assert r.status_code == 303
    assert dict(load_project(console.path).batches) == {"wave 2": ("alice",)}


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"batch": "empty"}, "account", "an empty batch is refused"),
        ({"batch": "", "account": "alice"}, "batch", "give the batch a name"),
        ({"batch": "w", "account": ["alice", "mallory"]}, "account", "unknown account(s): mallory"),
    ],
)
def test_bad_batches_are_refused_next_to_the_field(
    tmp_path: Path, data: dict[str, object], field: str, words: str
) -> None:
    client, console = make_client(project_dir(tmp_path))
    login(client)
    before = console.path.read_text()
    csrf = csrf_of(client.get("/people").text)
    r = client.post("/batches", data={"csrf": csrf, **data})
    assert r.status_code == 400
    m = re.search(rf'id="e-{field}"[^>]*>(.*?)</p>', r.text, re.S)
    assert m and words in m.group(1)
    assert console.path.read_text() == before


def test_the_cli_refuses_an_empty_batch_written_by_hand(tmp_path: Path) -> None:
    from mailferry.errors import ConfigError

    place = project_dir(tmp_path, '\n[batches]\n"w" = []\n')
    with pytest.raises(ConfigError, match="an empty batch"):
        load_project(place / "p.toml")


# -- the project file, line by line ---------------------------------------------------------------


def test_set_keys_replaces_inserts_and_appends() -> None:
    text = '# head\n[a]\n# about x\nx = 1\nlist = [\n  "p",\n  "q",\n]\n\n[b]\ny = "z"\n'
    out = projectfile.set_keys(text, "a", {"x": 2, "list": ["r"], "new": True})
    assert out == '# head\n[a]\n# about x\nx = 2\nlist = ["r"]\nnew = true\n\n[b]\ny = "z"\n'
    out = projectfile.set_keys(out, "c.d", {"k": 'va"l'})
    assert out.endswith('[c.d]\nk = "va\\"l"\n')
    out = projectfile.set_keys(out, "a", {"x": None})
    assert "x = " not in out.split("[b]")[0]
    out = projectfile.set_keys(out, "batches", {"wave 1": ["a"]})
    out = projectfile.set_keys(out, "batches", {"wave 1": None, "w2": ["b"]})
    assert '"wave 1"' not in out and 'w2 = ["b"]' in out


def test_find_project(tmp_path: Path) -> None:
    assert projectfile.find_project(tmp_path) == tmp_path / "project.toml"
    (tmp_path / "a.toml").write_text("")
    assert projectfile.find_project(tmp_path) == tmp_path / "a.toml"
    (tmp_path / "b.toml").write_text("")
    with pytest.raises(UsageError, match="several project files"):
        projectfile.find_project(tmp_path)
    assert projectfile.find_project(tmp_path / "b.toml") == tmp_path / "b.toml"


# -- pure parts of the pages --------------------------------------------------------------------------


def test_container_tree_nests_under_the_nearest_container() -> None:
    cs = [
        {"dn": "OU=Staff,DC=x", "users": 1, "contacts": 0, "groups": 0},
        {"dn": "OU=Sales,OU=Staff,DC=x", "users": 2, "contacts": 0, "groups": 0},
        {"dn": "OU=Deep,OU=Gone,OU=Staff,DC=x", "users": 3, "contacts": 0, "groups": 0},
        {"dn": "CN=Users,DC=x", "users": 4, "contacts": 0, "groups": 1},
    ]
    roots = container_tree(cs, "DC=x")
    assert [r["name"] for r in roots] == ["CN=Users", "OU=Staff"]
    staff = roots[1]
    assert sorted(c["name"] for c in staff["children"]) == ["OU=Deep", "OU=Sales"]


def _report(
    runs: list[tuple[int, str]],
    findings: list[tuple[int, str]] = (),
    outstanding: list[str] = (),
    *,
    kind: str = "flags",
    commands: dict[int, str] | None = None,
) -> dict:
    return {
        "runs": [{"run": r, "command": (commands or {}).get(r, "migrate")} for r in sorted({r for r, _ in runs})],
        "accounts": [{"run": r, "account": a} for r, a in runs],
        "findings": [{"run": r, "account": a, "kind": kind} for r, a in findings],
        "outstanding": [{"account": a} for a in outstanding],
        "calendars_outstanding": [],
    }


def test_verdict() -> None:
    clean = {"accounts": [{"account": "a", "clean": True}, {"account": "b", "clean": True}]}
    assert verdict(["a", "b"], clean, _report([(1, "a"), (1, "b")]))["state"] == "ready"
    v = verdict(["a", "b"], clean, _report([(1, "a")]))
    assert v["state"] == "not-ready" and "not migrated yet: b" in v["reasons"][0]
    dirty = {"accounts": [{"account": "a", "clean": False}, {"account": "b", "clean": True}]}
    assert verdict(["a", "b"], dirty, _report([(1, "a"), (1, "b")]))["state"] == "not-ready"
    # a finding of an earlier run stays open after a later run (a re-run that copies nothing does
    # not make it go away) until the batch is approved after it
    v = verdict(["a", "b"], clean, _report([(1, "a"), (2, "a"), (1, "b")], findings=[(1, "a")]))
    assert v["state"] == "acknowledge" and v["open_findings"] == 1
    v = verdict(["a", "b"], clean, _report([(1, "a"), (2, "a"), (1, "b")], findings=[(1, "a")]), since=1)
    assert v["state"] == "ready"
    v = verdict(["a", "b"], clean, _report([(1, "a"), (2, "a"), (3, "b")], findings=[(1, "a"), (3, "b")]), since=2)
    assert v["state"] == "acknowledge" and v["open_findings"] == 1
    # a refusal is open while it is outstanding, and counted once
    v = verdict(["a", "b"], clean, _report([(1, "a"), (1, "b")], findings=[(1, "a")], kind="refused"))
    assert v["state"] == "ready"
    v = verdict(
        ["a", "b"], clean, _report([(1, "a"), (1, "b")], findings=[(1, "b")], outstanding=["b"], kind="refused")
    )
    assert v["state"] == "acknowledge" and v["open_findings"] == 1
    v = verdict(["a", "b"], clean, _report([(1, "a"), (2, "a"), (1, "b")], findings=[(2, "a")], outstanding=["b"]))
    assert v["state"] == "acknowledge" and v["open_findings"] == 2
    # findings of other commands (directory apply) are not the batch's
    v = verdict(["a"], clean, _report([(1, "a"), (2, "a")], findings=[(2, "a")], commands={2: "directory apply"}))
    assert v["state"] == "ready"
    # accounts outside the batch do not count
    v = verdict(["a"], clean, _report([(1, "a"), (1, "z")], findings=[(1, "z")]))
    assert v["state"] == "ready"
    # an account migrated but not verified (verify did not cover it) is not ready
    v = verdict(["a", "b"], {"accounts": [{"account": "a", "clean": True}]}, _report([(1, "a"), (1, "b")]))
    assert v["state"] == "not-ready" and "not verified: b" in v["reasons"] and not v["verified_clean"]


def test_csv_download_cells_are_never_formulas() -> None:
    from mailferry.console.app import ITEM_COLUMNS, items_csv

    evil = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tcmd", "\rcmd"]
    items = [{"account": "a", "type": "mail", "subject": e, "detail": e, "where": "INBOX"} for e in evil]
    rows = list(csv.reader(io.StringIO(items_csv(items))))
    assert tuple(rows[0]) == ITEM_COLUMNS
    subjects = [r[ITEM_COLUMNS.index("subject")] for r in rows[1:]]
    assert subjects == ["'" + e for e in evil]
    assert rows[1][ITEM_COLUMNS.index("where")] == "INBOX"  # other cells as they are


def test_no_secret_reaches_the_environment_of_pages(tmp_path: Path) -> None:
    """Pages show references, never what they resolve to: also the pages that resolve them to
    talk to the servers (a batch's plan and results, the Servers page's check), here told by
    the servers' refusal to connect."""
    secrets = {"MF_CONSOLE_SRC": "resolved-secret-value-1", "MF_CONSOLE_TGT": "resolved-secret-value-2"}
    os.environ.update(secrets)
    try:
        client, _ = make_client(project_dir(tmp_path, '\n[batches]\nw = ["alice", "bob"]\n'))
        login(client)
        csrf = csrf_of(client.get("/servers").text)
        pages = [
            client.get(path)
            for path in (
                "/servers",
                "/people",
                "/plan",
                "/plan?batch=w",
                "/run",
                "/results",
                "/results?batch=w",
                "/results?batch=w&deep=1",
                "/results/download?batch=w&format=json",
                "/directory",
            )
        ]
        pages.append(client.post("/servers/test", data={"csrf": csrf, "account": "alice"}))
        pages.append(client.post("/results/approve", data={"csrf": csrf, "batch": "w", "approved_by": "Ada"}))
        checked = [r for r in pages if "?batch=w" in str(r.url) or r.request.method == "POST"]
        assert all(("refused" in r.text.lower() or "could not" in r.text.lower()) for r in checked), [
            (str(r.url), r.text[:300]) for r in checked if "refused" not in r.text.lower()
        ]
        for r in pages:
            for value in secrets.values():
                assert value not in r.text, r.url
    finally:
        for name in secrets:
            del os.environ[name]


def test_approvals_in_the_ledger_schema_5(tmp_path: Path) -> None:
    import sqlite3

    from mailferry.state.ledger import SCHEMA_VERSION, SqliteLedger

    assert SCHEMA_VERSION >= 5
    path = tmp_path / "l.sqlite"
    led = SqliteLedger(path)
    led.record_approval("w", ["a", "b"], "Ada", "2026-01-01T00:00:00Z", {"state": "ready"}, last_run=3)
    led.close()
    ro = SqliteLedger(path, readonly=True)
    assert [(a["batch"], a["accounts"], a["approved_by"], a["last_run"]) for a in ro.approvals()] == [
        ("w", ["a", "b"], "Ada", 3)
    ]
    assert ro.approvals("other") == []
    ro.close()
    # a ledger of schema 4 read without migrating it (report, the console's Results): no approvals yet
    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    ro = SqliteLedger(old, readonly=True)
    assert ro.approvals() == []
    ro.close()


def test_the_cli_takes_a_batch_by_name(tmp_path: Path) -> None:
    from contextlib import redirect_stderr, redirect_stdout

    from mailferry.cli.main import _accounts, main

    place = project_dir(tmp_path, '\n[batches]\n"wave 1" = ["bob", "alice"]\n')
    p = load_project(place / "p.toml")
    assert _accounts(p, None, "wave 1") == ["bob", "alice"]
    assert _accounts(p, ["carol", "bob"], "wave 1") == ["bob", "alice", "carol"]
    assert _accounts(p, ["carol"], None) == ["carol"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["plan", str(place / "p.toml"), "--batch", "wave 2", "--json"])
    assert code == 64
    assert "no batch 'wave 2' in the project file" in err.getvalue() and "'wave 1'" in err.getvalue()


def test_a_server_or_reference_problem_is_a_message_not_a_500(tmp_path: Path) -> None:
    directory = (
        '\n[directory]\ntarget_container = "ou=Users,dc=tgt,dc=test"\n'
        '[directory.source]\nurl = "ldap://127.0.0.1:1"\nbind_dn = "cn=admin,dc=src,dc=test"\n'
        'password = "env:MF_CONSOLE_NOT_SET"\ndialect = "generic"\n'
        '[directory.target]\nurl = "ldap://127.0.0.1:1"\nbind_dn = "cn=admin,dc=tgt,dc=test"\n'
        'password = "env:MF_CONSOLE_NOT_SET"\ndialect = "generic"\n'
        '[directory.lock]\nemployeeType = "locked"\n'
    )
    client, _ = make_client(project_dir(tmp_path, directory))
    login(client)
    page = client.get("/directory")
    assert page.status_code == 200 and "Could not read the directories" in page.text
    assert "MF_CONSOLE_NOT_SET" in page.text  # the reference is named, it holds no secret
    csrf = csrf_of(page.text)
    for path, data in (
        ("/directory", {"target_container": "ou=Users,dc=tgt,dc=test", "rules": "smtp"}),
        ("/batches", {"batch": "w", "account": "alice"}),
        ("/people/resolve", {"source": "cn=x", "target": "create"}),
    ):
        r = client.post(path, data={"csrf": csrf, **data})
        assert r.status_code in (400, 409, 503), (path, r.status_code)
        assert "MF_CONSOLE_NOT_SET" in r.text, path


# -- review fixes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["src_dav_admin_password", "tgt_dav_admin_password", "src_ldap_password", "tgt_ldap_password"]
)
def test_a_literal_secret_in_any_password_field_is_refused_and_never_shown(tmp_path: Path, field: str) -> None:
    """Also without the DAV or LDAP URL it goes with, and whatever else the form refuses."""
    client, console = make_client(project_dir(tmp_path))
    login(client)
    before = console.path.read_text()
    csrf = csrf_of(client.get("/servers").text)
    for other in ({}, {"tgt_imap": ""}):  # alone, and beside another problem
        r = client.post("/servers", data=SERVERS | {"csrf": csrf, field: "hunter2-literal"} | other)
        assert r.status_code == 400
        assert "hunter2-literal" not in r.text
        m = re.search(rf'id="e-{field}"[^>]*>(.*?)</p>', r.text, re.S)
        assert m and "a password is never written here" in m.group(1)
        assert console.path.read_text() == before


def test_set_keys_reads_values_as_toml_does() -> None:
    text = (
        "[directory.source]\n"
        'url = "ldap://x"\n'
        "bases = ['OU=Team #2,DC=corp']  # literal string with a hash\n"
        'dialect = "generic"\n'
        'nested = [\n  [\'a]\', "b["],\n  ["c"]\n]\n'
        "note = '''\nx = 1\n  [not, a, table]\n'''\n"
        'last = "kept"\n'
        "\n[directory.target]\n"
        'url = "ldap://y"\n'
    )
    out = projectfile.set_keys(text, "directory.source", {"bases": ["OU=A,DC=corp"]})
    import tomllib

    doc = tomllib.loads(out)["directory"]
    assert doc["source"] == {
        "url": "ldap://x",
        "bases": ["OU=A,DC=corp"],
        "dialect": "generic",
        "nested": [["a]", "b["], ["c"]],
        "note": "x = 1\n  [not, a, table]\n",
        "last": "kept",
    }
    assert doc["target"] == {"url": "ldap://y"}
    out = projectfile.set_keys(text, "directory.source", {"nested": None, "last": "new"})
    doc = tomllib.loads(out)["directory"]
    assert "nested" not in doc["source"] and doc["source"]["last"] == "new" and doc["source"]["dialect"] == "generic"
    # a value that never closes is not read past the table's end
    broken = "[a]\nx = [1,\ny = 2\n[b]\nz = 3\n"
    assert projectfile.set_keys(broken, "a", {"y": 5}).endswith("[b]\nz = 3\n")


def test_concurrent_saves_lose_nothing(tmp_path: Path) -> None:
    place = project_dir(tmp_path)
    path = place / "p.toml"
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            projectfile.set_batch(path, f"b{i}", ["alice"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(load_project(path).batches) == sorted(f"b{i}" for i in range(12))
    assert [p.name for p in place.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_failed_save_restores_the_accounts_csv_whatever_the_failure(tmp_path: Path) -> None:
    place = project_dir(tmp_path)
    path, csv_path = place / "p.toml", place / "accounts.csv"
    before, text = csv_path.read_text(), path.read_text()
    # the second file can't be written (not a ConfigError): the first is put back
    files = {csv_path: "source_user,target_user\nzed,zed\n", place / "missing" / "x.csv": "x"}
    with pytest.raises(FileNotFoundError):
        projectfile.save(path, text.replace("1143", "1144"), files)
    assert csv_path.read_text() == before and path.read_text() == text
    with pytest.raises(ConfigError):
        projectfile.save(path, text.replace("1143", "x1143"), {csv_path: "source_user,target_user\nzed,zed\n"})
    assert csv_path.read_text() == before and path.read_text() == text


def test_a_literal_quoted_batch_name_is_removed(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path, '\n[batches]\n\'wave 1\' = ["alice"]\nw2 = ["bob"]\n'))
    login(client)
    csrf = csrf_of(client.get("/people").text)
    r = client.post("/batches/delete", data={"csrf": csrf, "batch": "wave 1"})
    assert r.status_code == 303
    assert dict(load_project(console.path).batches) == {"w2": ("bob",)}
    r = client.post("/batches", data={"csrf": csrf, "batch": "w2", "account": ["carol"]})
    assert r.status_code == 303
    assert dict(load_project(console.path).batches) == {"w2": ("carol",)}


def test_an_inline_table_is_refused_with_words_not_broken(tmp_path: Path) -> None:
    place = project_dir(tmp_path)
    p = place / "p.toml"
    p.write_text(
        p.read_text().replace(
            '[source.admin]\nuser = "admin"\npassword = "env:MF_CONSOLE_SRC"\n',
            'admin = { user = "admin", password = "env:MF_CONSOLE_SRC" }\n',
        )
    )
    assert load_project(p).source.admin is not None
    client, console = make_client(place)
    login(client)
    before = p.read_text()
    csrf = csrf_of(client.get("/servers").text)
    r = client.post("/servers", data=SERVERS | {"csrf": csrf})
    assert r.status_code == 400
    assert "inline table" in r.text and "Cannot declare" not in r.text
    assert "Saved to the project file" not in r.text
    assert p.read_text() == before
    # a batch table written with dotted keys: refused, not half-changed
    p.write_text('batches.w = ["alice"]\n' + before)
    with pytest.raises(Exception, match="dotted keys"):
        projectfile.set_batch(p, "w", None)


def test_run_lock_holder_never_makes_acquire_fail(tmp_path: Path) -> None:
    from mailferry.state.ledger import SqliteLedger, run_lock_holder

    path = tmp_path / "l.sqlite"
    SqliteLedger(path).close()
    stop = threading.Event()

    def look() -> None:
        while not stop.is_set():
            run_lock_holder(path)

    lookers = [threading.Thread(target=look, daemon=True) for _ in range(2)]
    for t in lookers:
        t.start()
    try:
        for _ in range(300):
            led = SqliteLedger(path)
            try:
                led.acquire("migrate")
            finally:
                led.close()
    finally:
        stop.set()
        for t in lookers:
            t.join()


def test_cancel_does_not_stop_other_requests(tmp_path: Path) -> None:
    """Waiting for the cancelled worker happens off the event loop: other pages are served."""
    import httpx

    console = Console(project_dir(tmp_path), sessions=Sessions(TOKEN))
    console.runs.cancel = lambda batch: True  # type: ignore[method-assign]
    console.runs.wait = lambda batch, timeout: time.sleep(1.5) or {}  # type: ignore[method-assign]

    async def go() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=create_app(console))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            assert (await c.get(f"/login?token={TOKEN}")).status_code == 303
            token = csrf_of((await c.get("/servers")).text)
            t0 = time.monotonic()
            cancel = asyncio.create_task(c.post("/run/cancel", data={"csrf": token, "batch": "w"}))
            await asyncio.sleep(0.2)
            assert (await c.get("/static/console.js")).status_code == 200
            other = time.monotonic() - t0
            assert (await cancel).status_code == 303
            return other, time.monotonic() - t0

    other, cancelled = asyncio.run(go())
    assert cancelled >= 1.5
    assert other < 1.0, other


class _Acknowledge(Console):
    """Results with two open findings (as verify and report would give them with servers)."""

    def _results(self, project: object, batch: str, deep: bool, fresh: bool) -> dict[str, object]:
        v = {"state": "acknowledge", "reasons": [], "open_findings": self.open, "findings": [], "outstanding": [],
             "last_run": 1, "verified_clean": True}  # fmt: skip
        return {"accounts": ["alice"], "verify": {"accounts": []}, "verdict": v, "items": [], "runs": [],
                "account_runs": [], "approvals": []}  # fmt: skip

    open = 2


def test_approval_acknowledges_the_count_shown(tmp_path: Path) -> None:
    import sqlite3

    place = project_dir(tmp_path, '\n[batches]\nw = ["alice"]\n')
    console = _Acknowledge(place, sessions=Sessions(TOKEN))
    client = TestClient(create_app(console), base_url="http://127.0.0.1", follow_redirects=False)
    login(client)
    page = client.get("/results", params={"batch": "w"})
    assert 'name="open_findings" value="2"' in page.text
    csrf = csrf_of(page.text)
    console.open = 3  # a finding more since the page was shown
    form = {"csrf": csrf, "batch": "w", "approved_by": "Ada", "acknowledge": "yes", "open_findings": "2"}
    r = client.post("/results/approve", data=form)
    assert r.status_code == 400 and "3 open findings now" in r.text
    assert not load_project(console.path).ledger_path.exists()
    r = client.post("/results/approve", data=form | {"open_findings": "3"})
    assert r.status_code == 303
    db = sqlite3.connect(load_project(console.path).ledger_path)
    assert db.execute("SELECT acknowledged FROM approvals").fetchall() == [(3,)]
    db.close()


def test_the_login_token_works_once(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path))
    login(client)
    assert client.get("/servers").status_code == 200
    other = TestClient(create_app(console), base_url="http://127.0.0.1", follow_redirects=False)
    r = other.get(f"/login?token={TOKEN}")
    assert r.status_code == 401 and "restart the console" in r.text.lower()
    assert COOKIE not in r.headers.get("set-cookie", "")
    assert client.get("/servers").status_code == 200  # the session it opened goes on


def test_emptied_dav_and_admin_fields_remove_them(tmp_path: Path) -> None:
    dav = (
        '\n[source.dav]\nurl = "http://127.0.0.1:5232/"\n[source.dav.admin]\nuser = "admin"\npassword = "env:D1"\n'
        '\n[target.dav]\nurl = "http://127.0.0.1:5233/"\n[target.dav.admin]\nuser = "admin"\npassword = "env:D2"\n'
    )
    place = project_dir(tmp_path, dav)
    assert load_project(place / "p.toml").source.dav is not None
    client, console = make_client(place)
    login(client)
    page = client.get("/servers")
    assert 'value="http://127.0.0.1:5232/"' in page.text
    csrf = csrf_of(page.text)
    # the DAV admin emptied: its table is taken out, which the loader refuses here (the accounts
    # have no passwords of their own): said, and not "Saved"
    before = console.path.read_text()
    form = SERVERS | {
        "csrf": csrf,
        "src_dav": "http://127.0.0.1:5232/",
        "tgt_dav": "http://127.0.0.1:5233/",
        "tgt_dav_admin": "admin",
        "tgt_dav_admin_password": "env:D2",
    }
    r = client.post("/servers", data=form)
    assert r.status_code == 400 and "[source.dav] has no admin" in r.text.replace("&#39;", "'")
    assert "Saved to the project file" not in r.text
    assert console.path.read_text() == before
    # the DAV servers emptied: they go
    assert client.post("/servers", data=SERVERS | {"csrf": csrf}).status_code == 303
    p = load_project(console.path)
    assert p.source.dav is None and p.target.dav is None
    assert "[source.dav" not in console.path.read_text()
    # the target admin emptied: its table goes (the accounts then need their own passwords: said so)
    r = client.post("/servers", data=SERVERS | {"csrf": csrf, "tgt_admin": "", "tgt_admin_password": ""})
    text = console.path.read_text()
    if r.status_code == 303:
        assert load_project(console.path).target.admin is None and "[target.admin]" not in text
    else:
        assert r.status_code == 400 and "Saved to the project file" not in r.text
        assert "[target.admin]" in text


def test_emptied_directory_fields_are_refused_not_ignored(tmp_path: Path) -> None:
    directory = (
        '\n[directory]\ntarget_container = "ou=Users,dc=tgt,dc=test"\n'
        '[directory.source]\nurl = "ldap://127.0.0.1:1"\nbind_dn = "cn=a"\npassword = "env:L1"\ndialect = "generic"\n'
        '[directory.target]\nurl = "ldap://127.0.0.1:1"\nbind_dn = "cn=b"\npassword = "env:L2"\ndialect = "generic"\n'
    )
    client, console = make_client(project_dir(tmp_path, directory))
    login(client)
    before = console.path.read_text()
    csrf = csrf_of(client.get("/servers").text)
    r = client.post("/servers", data=SERVERS | {"csrf": csrf})
    assert r.status_code == 400 and "does not remove it" in r.text
    assert console.path.read_text() == before


def test_progress_counts_items_not_only_messages() -> None:
    """The engine's planned/copied ``messages`` count calendar items and contacts too: the Run page
    says items; bytes and ETA stay the mail's."""
    here = Path(__file__).resolve().parents[2] / "src" / "mailferry" / "console"
    page = (here / "templates" / "run.html").read_text()
    js = (here / "static" / "console.js").read_text()
    assert '<th scope="col">Items' in page and '<th scope="col">Messages</th>' not in page
    assert "items copied" in js and "messages copied" not in js
    readme = (here.parents[2] / "README.md").read_text()
    console_section = readme[readme.index("## The console") :]
    assert "items: messages, calendar items and contacts" in console_section


# -- ManageSieve, public folders, folder settings (issue 9) ---------------------------------------

SIEVE = {"src_sieve": "sieve://127.0.0.1:4190", "tgt_sieve": "sieve://127.0.0.1:4191"}


def test_sieve_fields_write_keep_and_remove_the_sieve_tables(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path))
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    form = SERVERS | SIEVE | {"csrf": csrf, "src_sieve_security": "none", "tgt_sieve_security": "none"}
    r = client.post("/servers", data=form)
    assert r.status_code == 303, r.text
    p = load_project(console.path)
    assert p.source.sieve is not None and (p.source.sieve.port, p.source.sieve.security) == (4190, "none")
    assert p.target.sieve is not None and p.target.sieve.port == 4191
    assert "filters" in p.items  # both sides have one: filters move by default
    page = client.get("/servers").text
    assert 'value="sieve://127.0.0.1:4191"' in page
    assert re.search(r'id="f-tgt_sieve_security".*?<option value="none" selected>', page, re.S)
    # a key the form does not show stays as the operator wrote it
    console.path.write_text(console.path.read_text().replace("[target.sieve]\n", "[target.sieve]\ntimeout = 7\n"))
    assert client.post("/servers", data=form | {"tgt_sieve_security": "tls"}).status_code == 303
    p = load_project(console.path)
    assert p.target.sieve is not None and (p.target.sieve.timeout, p.target.sieve.security) == (7, "tls")
    # emptied: both tables go, and filters with them
    assert client.post("/servers", data=SERVERS | {"csrf": csrf}).status_code == 303
    p = load_project(console.path)
    assert p.source.sieve is None and p.target.sieve is None and "filters" not in p.items
    assert "sieve]" not in console.path.read_text().replace("# [source.sieve]", "").replace("# [target.sieve]", "")


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"src_sieve": "sieve://127.0.0.1:4190"}, "tgt_sieve", "give both ManageSieve servers, or neither"),
        (SIEVE | {"src_sieve": "imap://127.0.0.1:4190"}, "src_sieve", "sieve://host:4190"),
        (SIEVE | {"tgt_sieve": "sieve://u:hunter2-secret@127.0.0.1"}, "tgt_sieve", "must not hold a login or password"),
        (SIEVE | {"src_sieve_security": "plain"}, "src_sieve_security", '"starttls", "tls" or "none"'),
        # the loader's refusal, shown next to the field it is about
        (
            SIEVE | {"tgt_sieve": "sieve://mail.example", "tgt_sieve_security": "none"},
            "tgt_sieve_security",
            "would send passwords unencrypted",
        ),
    ],
)
def test_bad_sieve_fields_are_refused_next_to_the_field(
    tmp_path: Path, data: dict[str, str], field: str, words: str
) -> None:
    client, console = make_client(project_dir(tmp_path))
    login(client)
    before = console.path.read_text()
    csrf = csrf_of(client.get("/servers").text)
    form = SERVERS | {"csrf": csrf, "src_sieve_security": "starttls", "tgt_sieve_security": "starttls"} | data
    r = client.post("/servers", data=form)
    assert r.status_code == 400
    m = re.search(rf'id="e-{field}"[^>]*>(.*?)</p>', r.text, re.S)
    assert m and words in m.group(1).replace("&#34;", '"'), r.text
    assert console.path.read_text() == before
    assert "hunter2-secret" not in r.text


def test_public_checkbox_writes_and_removes_the_public_table(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path, '\n[public]\nsource_prefix = "Shared/"\n'))
    login(client)
    page = client.get("/servers").text
    assert re.search(r'id="f-public"[^>]*checked', page)
    csrf = csrf_of(page)
    # ticked and there: the operator's keys are kept
    assert client.post("/servers", data=SERVERS | {"csrf": csrf, "public": "1"}).status_code == 303
    p = load_project(console.path)
    assert "public" in p.items and p.public is not None and p.public.source_prefix == "Shared/"
    # the public unit can be put in a batch, and is offered to the connection test
    people = client.get("/people").text
    assert 'value="#public"' in people and "public folders" in people
    assert (
        client.post("/batches", data={"csrf": csrf, "batch": "pub", "account": ["#public", "alice"]}).status_code == 303
    )
    assert load_project(console.path).batches == {"pub": ("alice", "#public")}
    assert '<option value="#public"' in client.get("/servers").text
    # unticked: the table goes, the unit with it
    assert client.post("/servers", data=SERVERS | {"csrf": csrf}).status_code == 303
    p = load_project(console.path)
    assert "public" not in p.items and p.public is None and "\n[public]" not in console.path.read_text()
    assert not re.search(r'id="f-public"[^>]*checked', client.get("/servers").text)
    assert 'value="#public"' not in client.get("/people").text
    # ticked again: an empty table, every default
    assert client.post("/servers", data=SERVERS | {"csrf": csrf, "public": "1"}).status_code == 303
    p = load_project(console.path)
    assert "public" in p.items and p.public is not None and p.public.source_prefix is None
    assert "\n[public]\n" in console.path.read_text()


def test_public_checkbox_keeps_an_explicit_items_list_in_step(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path, '\n[batches]\nw = ["alice"]\n'))
    text = console.path.read_text().replace('name = "p"\n', 'name = "p"\nitems = ["mail", "metadata"]\n')
    console.path.write_text(text)
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    assert client.post("/servers", data=SERVERS | {"csrf": csrf, "public": "1"}).status_code == 303
    assert load_project(console.path).items == ("mail", "public", "metadata")
    assert client.post("/servers", data=SERVERS | {"csrf": csrf}).status_code == 303
    assert load_project(console.path).items == ("mail", "metadata")
    assert "[public]" not in console.path.read_text()


def test_public_folders_without_a_login_are_refused_next_to_the_checkbox(tmp_path: Path) -> None:
    client, console = make_client(tmp_path)
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    own = "source_user,target_user,source_password,target_password\nalice,alice,env:A1,env:A2\n"
    form = SERVERS | {"csrf": csrf, "tgt_admin": "", "tgt_admin_password": "", "accounts": own}
    assert client.post("/servers", data=form).status_code == 303
    before = console.path.read_text()
    r = client.post("/servers", data=form | {"public": "1"})
    assert r.status_code == 400
    m = re.search(r'id="e-public"[^>]*>(.*?)</p>', r.text, re.S)
    assert m and "the public folders&#39; target login needs a password or the target&#39;s admin" in m.group(1)
    assert console.path.read_text() == before


def test_a_public_unit_in_a_batch_is_no_unknown_account_to_run(tmp_path: Path) -> None:
    from mailferry.console import app as console_app

    client, console = make_client(project_dir(tmp_path, '\n[public]\n\n[batches]\npub = ["#public"]\n'))
    login(client)
    started: list[list[str]] = []
    console.runs.start = lambda project, batch, accounts: started.append(list(accounts)) or {}  # type: ignore[method-assign]
    r = client.post("/run/start", data={"csrf": csrf_of(client.get("/run").text), "batch": "pub"})
    assert r.status_code == 303, r.text
    assert started == [["#public"]]
    assert console_app.account_names(load_project(console.path))[-1] == "#public"


def test_plan_and_check_pages_show_filters_permissions_and_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailferry import api

    client, console = make_client(project_dir(tmp_path, '\n[batches]\nw = ["alice"]\n'))
    login(client)
    row = {
        "account": "alice",
        "target_account": "alice",
        "messages": 0,
        "bytes": 0,
        "folders": [],
        "filters": {
            "scripts": 1,
            "findings": 1,
            "plan": [{"script": "vacation", "action": "put", "reason": "not on the target"}],
        },
        "permissions": {
            "set": 1,
            "deleted": 0,
            "findings": 1,
            "note": "",
            "setacl": [
                {
                    "source_folder": "Shared",
                    "target_folder": "Shared",
                    "source_identifier": "bob",
                    "source_rights": "lrs",
                    "identifier": "bob.t",
                    "rights": "lrs",
                    "left_out": "",
                    "reason": "bob is bob.t",
                }
            ],
            "deleteacl": [],
            "skip": [
                {
                    "source_folder": "Shared",
                    "source_identifier": "ghost",
                    "source_rights": "lr",
                    "reason": "unmapped ghost",
                    "finding": "acl-unmapped",
                }
            ],
        },
        "metadata": {
            "set": 1,
            "removed": 0,
            "findings": 0,
            "note": "",
            "changes": [
                {
                    "source_folder": "Lists",
                    "target_folder": "Lists",
                    "entry": "/private/comment",
                    "action": "set",
                    "reason": "new",
                }
            ],
        },
    }
    monkeypatch.setattr(
        api, "plan", lambda project, names: api.Result({"accounts": [row], "copy": 0, "exit_code": 1}, 1)
    )
    page = client.get("/plan", params={"batch": "w"}).text
    for words in (
        "Mail filters of alice",
        "vacation",
        "Folder permissions of alice",
        "bob.t lrs",
        "unmapped ghost",
        "Folder metadata of alice",
        "/private/comment",
    ):
        assert words in page, words
    check = {
        "account": "alice",
        "target_account": "alice",
        "ready": False,
        "problems": [],
        "warnings": [],
        "source": {"ok": True},
        "target": {"ok": True},
        "filters": {
            "problems": ["alice (target, ManageSieve): login refused"],
            "warnings": ["the source's scripts require Sieve extensions the target lacks: foreverypart"],
            "source": {
                "ok": True,
                "implementation": "Dovecot Pigeonhole",
                "extensions": ["fileinto"],
                "scripts": 2,
                "active": "main",
            },
            "target": {"ok": False, "error": "login refused"},
        },
    }
    monkeypatch.setattr(api, "check", lambda project, names: api.Result({"accounts": [check], "target": {}}, 1))
    page = client.post("/servers/test", data={"csrf": csrf_of(client.get("/servers").text), "account": "alice"}).text
    for words in ("Mail filters (ManageSieve)", "Dovecot Pigeonhole", "2 (main)", "login refused", "foreverypart"):
        assert words in page, words


def test_results_list_filter_and_folder_setting_differences_and_their_findings() -> None:
    from mailferry.console.app import result_items

    ver = {
        "accounts": [
            {
                "account": "a",
                "clean": False,
                "folders": [],
                "filters": {
                    "clean": False,
                    "differences": [{"script": "main", "what": "missing", "message": "not on the target"}],
                },
                "permissions": {
                    "clean": False,
                    "differences": [
                        {
                            "source_folder": "S",
                            "target_folder": "S",
                            "identifier": "bob",
                            "kind": "missing",
                            "source_rights": "lr",
                            "target_rights": "",
                        }
                    ],
                },
                "metadata": {"clean": False, "error": "METADATA refused"},
            }
        ]
    }
    items = result_items(ver, {"outstanding": []})
    got = {(i["type"], i["kind"], i.get("where")) for i in items}
    assert got == {("filters", "missing", "main"), ("permissions", "missing", "S"), ("metadata", "error", None)}
    assert "bob: rights lr expected, none on the target" in next(
        i["detail"] for i in items if i["type"] == "permissions"
    )
    # findings of the new kinds are a batch's open findings like any other; the public unit's too
    clean = {"accounts": [{"account": "a", "clean": True}, {"account": "#public", "clean": True}]}
    for kind in ("acl-unmapped", "sieve-refused", "public-unreadable"):
        v = verdict(
            ["a", "#public"], clean, _report([(1, "a"), (1, "#public")], findings=[(1, "#public"), (1, "a")], kind=kind)
        )
        assert v["state"] == "acknowledge" and v["open_findings"] == 2 and {f["kind"] for f in v["findings"]} == {kind}


def test_public_logins_are_written_removed_and_need_the_checkbox(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path))
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    form = SERVERS | {"csrf": csrf, "public": "1", "public_source_user": "publisher"}
    assert client.post("/servers", data=form).status_code == 303
    p = load_project(console.path)
    assert p.public is not None and (p.public.source_user, p.public.target_user) == ("publisher", None)
    assert 'value="publisher"' in client.get("/servers").text
    form |= {"public_source_user": "", "public_target_user": "pub2"}
    assert client.post("/servers", data=form).status_code == 303
    p = load_project(console.path)
    assert p.public is not None and (p.public.source_user, p.public.target_user) == (None, "pub2")
    assert "source_user" not in console.path.read_text().split("\n[public]\n")[1]
    # a login without the checkbox is said, not dropped in silence
    before = console.path.read_text()
    r = client.post("/servers", data=SERVERS | {"csrf": csrf, "public_target_user": "pub2"})
    assert r.status_code == 400 and 'id="e-public_target_user"' in r.text
    assert console.path.read_text() == before


def test_a_dovecot_master_user_needs_a_public_login_said_next_to_the_field(tmp_path: Path) -> None:
    client, console = make_client(project_dir(tmp_path))
    console.path.write_text(
        console.path.read_text().replace(
            'password = "env:MF_CONSOLE_SRC"\n', 'password = "env:MF_CONSOLE_SRC"\nmethod = "dovecot-master"\n'
        )
    )
    login(client)
    csrf = csrf_of(client.get("/servers").text)
    r = client.post("/servers", data=SERVERS | {"csrf": csrf, "public": "1"})
    assert r.status_code == 400
    m = re.search(r'id="e-public_source_user"[^>]*>(.*?)</p>', r.text, re.S)
    assert m and "a Dovecot master user logs in only as another user" in m.group(1)
