"""The console's pages in-process (HTTP client against the app) with real Dovecot servers: plan
writes nothing, a batch runs in a worker process with progress as server-sent events, a second
start is refused with the CLI's words, cancel, results with CSV/JSON, approval in the ledger;
and a run from the console equals a run of ``mailferry migrate`` in ledger and report."""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cli, holdings, seed_sample, write_project
from starlette.testclient import TestClient

from mailferry.config.load import load_project
from mailferry.console.app import Console, create_app
from mailferry.console.security import Sessions
from mailferry.errors import ExitCode
from mailferry.state.ledger import run_lock_holder

TOKEN = "console-e2e-token-" + "y" * 16
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


def client_for(place: Path) -> tuple[TestClient, Console]:
    console = Console(place, sessions=Sessions(TOKEN))
    client = TestClient(create_app(console), base_url="http://127.0.0.1", follow_redirects=False)
    assert client.get(f"/login?token={TOKEN}").status_code == 303
    return client, console


def csrf(client: TestClient, page: str = "/people") -> str:
    import re

    m = re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)
    assert m
    return m.group(1)


def events(client: TestClient, batch: str) -> list[dict[str, Any]]:
    r = client.get("/run/events", params={"batch": batch})
    assert r.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def servers(dovecot_factory):
    src = dovecot_factory(users=USERS)
    for u, pw in USERS.items():
        seed_sample(src, u, pw, messages=8)
    return src


def test_console_batch_plan_run_results_approve(servers, dovecot_factory, tmp_path: Path) -> None:
    tgt = dovecot_factory(users=USERS)
    project = write_project(tmp_path / "p", servers, tgt, list(USERS))
    client, console = client_for(project.parent)
    token = csrf(client)
    assert (
        client.post("/batches", data={"csrf": token, "batch": "wave 1", "account": ["alice", "bob"]}).status_code == 303
    )

    # Plan: per account folders and counts; nothing written (no ledger, nothing on the target).
    plan = client.get("/plan", params={"batch": "wave 1"})
    assert plan.status_code == 200
    assert "alice → alice" in plan.text and "bob → bob" in plan.text and "carol →" not in plan.text
    assert "messages to copy" in plan.text and "Folders of alice" in plan.text
    assert not load_project(project).ledger_path.exists()
    assert sum(len(v) for v in holdings(tgt, "alice", "alicepw").values()) == 0

    # Run: a worker process; the page gets progress as server-sent events, from the first event.
    r = client.post("/run/start", data={"csrf": token, "batch": "wave 1"})
    assert r.status_code == 303, r.text
    st = console.runs.wait("wave 1", 90)
    assert st["state"] == "finished" and st["exit_code"] == 0, st
    ev = events(client, "wave 1")
    kinds = [e["t"] for e in ev]
    assert kinds[0] == "queued" and kinds[-1] == "end"
    assert {e["account"] for e in ev if e["t"] == "account_started"} == {"alice", "bob"}
    copied = sum(e["messages"] for e in ev if e["t"] == "copied")
    assert copied == sum(e["messages"] for e in ev if e["t"] == "planned") > 0
    assert ev[-1]["exit_code"] == 0 and ev[-1]["run"] == 1
    page = client.get("/run")
    assert "finished, exit code 0" in page.text and 'data-state="finished"' in page.text

    # Results: verified clean, ready; downloads; approval recorded in the ledger.
    res = client.get("/results", params={"batch": "wave 1"})
    assert res.status_code == 200
    assert 'data-verdict="ready"' in res.text and "ready for cut-over" in res.text
    c = client.get("/results/download", params={"batch": "wave 1", "format": "csv"})
    assert c.headers["content-disposition"] == 'attachment; filename="results-wave_1.csv"'
    rows = list(csv.reader(io.StringIO(c.text)))
    assert rows[0][:4] == ["account", "type", "where", "kind"] and len(rows) == 1
    j = client.get("/results/download", params={"batch": "wave 1", "format": "json"}).json()
    assert j["verdict"]["state"] == "ready" and {a["account"] for a in j["verify"]["accounts"]} == {"alice", "bob"}
    bad = client.post("/results/approve", data={"csrf": token, "batch": "wave 1", "approved_by": ""})
    assert bad.status_code == 400 and 'id="e-approved_by"' in bad.text
    ok = client.post("/results/approve", data={"csrf": token, "batch": "wave 1", "approved_by": "Ada Admin"})
    assert ok.status_code == 303, ok.text
    db = sqlite3.connect(load_project(project).ledger_path)
    (by, at, accounts, last_run) = db.execute(
        "SELECT approved_by, approved_at, accounts, last_run FROM approvals"
    ).fetchone()
    assert by == "Ada Admin" and at.endswith("Z") and json.loads(accounts) == ["alice", "bob"] and last_run == 1
    assert "approved" in client.get("/results", params={"batch": "wave 1"}).text
    deep = client.get("/results", params={"batch": "wave 1", "deep": "1", "fresh": "1"})
    assert 'data-verdict="ready"' in deep.text and ", deep." in deep.text and 'name="deep" value="1"' in deep.text
    # The CLI sees the approval too (report, checked against its JSON Schema).
    rep = cli("report", project, "--json").json()
    assert [(a["batch"], a["approved_by"], a["accounts"]) for a in rep["approvals"]] == [
        ("wave 1", "Ada Admin", ["alice", "bob"])
    ]
    assert "batches approved for cut-over" in cli("report", project).out

    # Results follow the batch: with other accounts they are verified afresh, not taken from before.
    assert client.post("/batches", data={"csrf": token, "batch": "wave 1", "account": ["alice"]}).status_code == 303
    j = client.get("/results/download", params={"batch": "wave 1", "format": "json"}).json()
    assert {a["account"] for a in j["verify"]["accounts"]} == {"alice"} and j["accounts"] == ["alice"]

    # The pages that log in with the admin's password (its reference resolved) never show it.
    check = client.post("/servers/test", data={"csrf": token, "account": "alice"})
    assert check.status_code == 200
    for page in (plan, res, check, c):
        assert "adminpw" not in page.text

    # A batch whose accounts were never migrated is not ready, and can't be approved.
    client.post("/batches", data={"csrf": token, "batch": "late", "account": ["carol"]})
    res = client.get("/results", params={"batch": "late"})
    assert 'data-verdict="not-ready"' in res.text and "not migrated yet: carol" in res.text
    no = client.post("/results/approve", data={"csrf": token, "batch": "late", "approved_by": "Ada"})
    assert no.status_code == 400 and "not ready for cut-over" in no.text
    assert db.execute("SELECT count(*) FROM approvals").fetchone()[0] == 1


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("seconds", "started_at", "finished_at", "target", "id")}


def test_a_console_run_equals_a_cli_run_in_ledger_and_report(servers, dovecot_factory, tmp_path: Path) -> None:
    t1, t2 = dovecot_factory(users=USERS), dovecot_factory(users=USERS)
    by_console = write_project(tmp_path / "console", servers, t1, list(USERS))
    by_cli = write_project(tmp_path / "cli", servers, t2, list(USERS))
    client, console = client_for(by_console.parent)
    token = csrf(client)
    client.post("/batches", data={"csrf": token, "batch": "w", "account": ["alice", "bob"]})
    client.post("/run/start", data={"csrf": token, "batch": "w"})
    assert console.runs.wait("w", 90)["exit_code"] == 0
    from mailferry.console.projectfile import set_batch

    set_batch(by_cli, "w", ["alice", "bob"])  # the CLI runs the same batch by name
    assert cli("migrate", by_cli, "--batch", "w", "--json").code == 0

    def ledger(project: Path) -> dict[str, Any]:
        db = sqlite3.connect(load_project(project).ledger_path)
        db.row_factory = sqlite3.Row
        runs = [_strip(dict(r)) for r in db.execute("SELECT * FROM runs")]
        for r in runs:
            r["summary"] = _strip(json.loads(r["summary"]))
            r["summary"]["accounts"] = [_strip(a) for a in r["summary"]["accounts"]]
        return {
            "runs": runs,
            "account_runs": [_strip(dict(r)) for r in db.execute("SELECT * FROM account_runs ORDER BY account")],
            "messages": [
                (r["account"], r["source_folder"], r["uid"], r["key"], r["state"], r["how"], r["target_folder"])
                for r in db.execute("SELECT * FROM messages ORDER BY account, source_folder, uid")
            ],
            "findings": [_strip(dict(r)) for r in db.execute("SELECT * FROM findings")],
        }

    assert ledger(by_console) == ledger(by_cli)
    reports = [sorted(p.name for p in (x.parent / "reports").iterdir()) for x in (by_console, by_cli)]
    assert reports[0] == reports[1] == ["migrate-1.json"]
    r1, r2 = (json.loads((x.parent / "reports" / "migrate-1.json").read_text()) for x in (by_console, by_cli))
    assert _strip(r1).keys() == _strip(r2).keys()
    assert [_strip(a) for a in r1["accounts"]] == [_strip(a) for a in r2["accounts"]]
    rep1 = cli("report", by_console, "--json").json()
    rep2 = cli("report", by_cli, "--json").json()
    assert [_strip(a) for a in rep1["accounts"]] == [_strip(a) for a in rep2["accounts"]]


class BlackHole:
    """A TCP port that accepts connections and never answers: a run against it hangs until cancelled."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_second_start_is_refused_with_the_clis_message_and_cancel_ends_the_run(servers, tmp_path: Path) -> None:
    hole = BlackHole()
    try:
        project = write_project(tmp_path / "p", servers, servers, list(USERS), target_port=hole.port)
        client, console = client_for(project.parent)
        token = csrf(client)
        client.post("/batches", data={"csrf": token, "batch": "a", "account": ["alice"]})
        client.post("/batches", data={"csrf": token, "batch": "b", "account": ["bob"]})
        assert client.post("/run/start", data={"csrf": token, "batch": "a"}).status_code == 303
        pid = console.runs.status("a")["pid"]
        # At once, before the worker holds the lock, and later while it holds it: the same words.
        again = client.post("/run/start", data={"csrf": token, "batch": "a"})
        assert again.status_code == 409
        assert f"another mailferry run is using this project (migrate, pid {pid})" in again.text
        ledger_path = load_project(project).ledger_path
        for _ in range(100):
            if run_lock_holder(ledger_path):
                break
            time.sleep(0.1)
        assert run_lock_holder(ledger_path) == f"migrate, pid {pid}"
        other = client.post("/run/start", data={"csrf": token, "batch": "b"})  # one run per project
        assert other.status_code == 409
        r = cli("migrate", project)
        assert r.code == ExitCode.TEMPFAIL
        message = r.err.splitlines()[0].removeprefix("mailferry: ")
        hint = r.err.splitlines()[1].removeprefix("next step: ")
        assert message == f"another mailferry run is using this project (migrate, pid {pid})"
        assert message in other.text and hint in other.text
        # The run goes on without any page open; a reload shows it running; pause stops the
        # worker where it is, resume lets it go on; cancel (also of a paused run) ends it.
        page = client.get("/run")
        assert page.text.count('data-state="running"') == 1

        def proc_state(want_stopped: bool) -> bool:
            """Whether the worker is stopped as wanted (a signal takes a moment to land)."""
            for _ in range(50):
                stopped = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
                if stopped == want_stopped:
                    return True
                time.sleep(0.05)
            return False

        assert client.post("/run/resume", data={"csrf": token, "batch": "a"}).status_code == 409
        assert client.post("/run/pause", data={"csrf": token, "batch": "a"}).status_code == 303
        assert console.runs.status("a")["state"] == "paused" and proc_state(True)
        assert 'data-state="paused"' in client.get("/run").text
        assert client.post("/run/start", data={"csrf": token, "batch": "a"}).status_code == 409  # still holds it
        assert client.post("/run/resume", data={"csrf": token, "batch": "a"}).status_code == 303
        assert console.runs.status("a")["state"] == "running" and proc_state(False)
        assert client.post("/run/pause", data={"csrf": token, "batch": "a"}).status_code == 303
        assert client.post("/run/cancel", data={"csrf": token, "batch": "a"}).status_code == 303
        st = console.runs.status("a")
        assert st["state"] == "cancelled", st
        assert run_lock_holder(ledger_path) is None
        ev = events(client, "a")
        assert ev[-1]["t"] == "end" and ev[-1]["cancelled"] is True
        assert "start the batch again to resume" in client.get("/run").text
        assert client.post("/run/cancel", data={"csrf": token, "batch": "a"}).status_code == 409
    finally:
        hole.close()


def test_directory_pages_with_two_openldap_servers(slapd_factory, dovecot_factory, tmp_path: Path) -> None:
    """Directory (containers as a tree, unknown container refused), People (outcomes with
    reasons; an ambiguous person decided and saved as [[directory.resolve]]), directory apply
    writing the accounts CSV the batches run from."""
    from helpers import dir_project
    from test_directory_ldap import block, person

    src = slapd_factory(suffix="dc=src,dc=test", root_pw="srcpw")
    tgt = slapd_factory(suffix="dc=tgt,dc=test", root_pw="tgtpw")
    s, t = src.users_dn, tgt.users_dn
    src.add_ldif(
        "\n".join(
            [
                person(s, "Alice Ant", "alice", "alice@src.test"),
                person(s, "Bob Bee", "bob", "bob@src.test"),
                person(s, "Frank Fox", "frank", "frank@src.test"),
            ]
        )
    )
    tgt.add_ldif(
        person(t, "Alice T", "alice.t", "alice.t@tgt.test", ["alice@src.test"])
        + "\n"
        + person(t, "Frank One", "frank1", "frank1@tgt.test", ["frank@src.test"])
        + "\n"
        + person(t, "Frank Two", "frank2", "frank2@tgt.test", ["frank@src.test"])
    )
    imap = dovecot_factory(users=USERS)
    extra = 'account_key = "login"\nconfirm_mailboxes = false'
    project = dir_project(tmp_path / "p", imap, imap, block(src, tgt, extra=extra))
    client, _console = client_for(project.parent)
    token = csrf(client, "/directory")

    page = client.get("/directory")
    assert page.status_code == 200
    assert "3 users, 0 contacts, 0 groups" in page.text and f'value="{t}"' in page.text
    bad = client.post("/directory", data={"csrf": token, "bases": "ou=Nowhere,dc=src,dc=test", "target_container": t,
                                          "rules": "smtp, login"})  # fmt: skip
    assert bad.status_code == 400 and 'id="e-bases"' in bad.text and "unknown container" in bad.text
    ok = client.post("/directory", data={"csrf": token, "bases": s, "target_container": t, "rules": "smtp, login"})
    assert ok.status_code == 303
    assert load_project(project).directory.source.bases == (s,)  # type: ignore[union-attr]

    people = client.get("/people")
    assert "ambiguous" in people.text and "rule smtp finds 2 target entries" in people.text
    assert "Your decision for frank" in people.text
    frank = f"cn=Frank Fox,{s}"
    wrong = client.post("/people/resolve", data={"csrf": token, "source": frank, "target": f"cn=Alice T,{t}"})
    assert wrong.status_code == 400 and "choose one of the target entries" in wrong.text
    assert "[[directory.resolve]]" not in project.read_text()
    one = f"cn=Frank One,{t}"
    assert client.post("/people/resolve", data={"csrf": token, "source": frank, "target": one}).status_code == 303
    assert dict(load_project(project).directory.resolve) == {frank: one}  # type: ignore[union-attr]
    assert "ambiguous" not in client.get("/people").text

    applied = client.post("/people/apply", data={"csrf": token})
    assert applied.status_code == 200 and 'id="applied"' in applied.text, applied.text
    accounts = {a.source_user: a.target_user for a in load_project(project).accounts}
    assert accounts == {"alice": "alice.t", "bob": "bob", "frank": "frank1"}
    assert "no account yet" not in client.get("/people").text


def test_console_over_tls_beyond_loopback(tmp_path: Path) -> None:
    """--listen 0.0.0.0 with a certificate: served over TLS only, the session cookie Secure."""
    import httpx

    from mailferry.console.serve import prepare
    from mailferry.sandbox.servers import _make_tls_files

    ca, cert, key = _make_tls_files(tmp_path / "tls", "localhost")
    (tmp_path / "p").mkdir()
    p = prepare(tmp_path / "p", host="0.0.0.0", port=0, certificate=cert, key=key)
    assert p.url.startswith("https://0.0.0.0:")
    t = threading.Thread(target=p.run, daemon=True)
    t.start()
    try:
        for _ in range(100):
            if p.server.started:
                break
            time.sleep(0.05)
        url = p.url.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(verify=str(ca)) as h:
            r = h.get(url, follow_redirects=False)
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie
            h.cookies = r.cookies
            assert h.get(url.split("/login")[0] + "/servers").status_code == 200
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
            httpx.get(url.replace("https://", "http://"), timeout=5)
    finally:
        p.server.should_exit = True
        t.join(10)


# -- filters (ManageSieve) and public folders set on the Servers page (issue 9) -------------------


def _servers_form(client: TestClient, console: Console, **changes: str) -> dict[str, str]:
    """The Servers form as the page shows it for the project file, with ``changes``."""
    from mailferry.console.projectfile import form_from_project

    return form_from_project(console.path).values | {"csrf": csrf(client, "/servers")} | changes


def _table(page: str, caption: str) -> str:
    import re

    m = re.search(rf"<caption>{re.escape(caption)}</caption>.*?</table>", page, re.S)
    assert m, f"no table {caption!r} in the page"
    return m.group(0)


def test_filters_set_on_the_servers_page_are_tested_planned_moved_and_verified(dovecot_factory, tmp_path: Path) -> None:
    from mailferry.connectors.sieve import SieveEndpoint, SieveLogin, SieveStore

    users = {"alice": "alicepw", "bob": "bobpw"}
    src = dovecot_factory(users=users, sieve=True)
    tgt = dovecot_factory(users=users, sieve=True)

    def store(server: Any, *, readonly: bool = True) -> SieveStore:
        return SieveStore(
            SieveEndpoint("127.0.0.1", server.sieve_port, "none", timeout=20),
            SieveLogin("alice", "adminpw", admin="admin"),
            readonly=readonly,
        )

    put = store(src, readonly=False)
    try:
        put.put("away", b'require "vacation";\nvacation :days 1 :subject "Away" "Back on Monday.";\n')
        put.set_active("away")
    finally:
        put.close()
    project = write_project(tmp_path / "p", src, tgt, list(users))
    client, console = client_for(project.parent)
    form = _servers_form(
        client,
        console,
        src_sieve=f"sieve://127.0.0.1:{src.sieve_port}",
        src_sieve_security="none",
        tgt_sieve=f"sieve://127.0.0.1:{tgt.sieve_port}",
        tgt_sieve_security="none",
    )
    assert client.post("/servers", data=form).status_code == 303
    assert "filters" in load_project(project).items

    # Test connection: both ManageSieve logins (the IMAP admin's), the source's active script.
    token = csrf(client, "/servers")
    page = client.post("/servers/test", data={"csrf": token, "account": "alice"}).text
    table = _table(page, "Mail filters (ManageSieve)")
    assert "failed" not in table and table.count("badge ok") == 2, table
    assert "1 (away)" in table and "vacation" in table

    # A target ManageSieve that does not answer: said on the page, next to the table.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    bad = form | {"csrf": token, "tgt_sieve": f"sieve://127.0.0.1:{closed}"}
    assert client.post("/servers", data=bad).status_code == 303
    page = client.post("/servers/test", data={"csrf": token, "account": "alice"}).text
    assert "failed" in _table(page, "Mail filters (ManageSieve)") and "not ready" in page
    assert client.post("/servers", data=form | {"csrf": token}).status_code == 303

    # Plan, run, results: the script is planned, put and active on the target, verified clean.
    assert client.post("/batches", data={"csrf": token, "batch": "w", "account": ["alice", "bob"]}).status_code == 303
    plan = client.get("/plan", params={"batch": "w"}).text
    assert "away" in _table(plan, "Mail filters of alice (Sieve scripts: 1, 0 findings)")
    assert client.post("/run/start", data={"csrf": token, "batch": "w"}).status_code == 303
    st = console.runs.wait("w", 90)
    assert st["state"] == "finished" and st["exit_code"] == 0, st
    on_target = store(tgt)
    try:
        assert on_target.list_scripts() == [("away", True)]
    finally:
        on_target.close()
    res = client.get("/results", params={"batch": "w"}).text
    assert 'data-verdict="ready"' in res and "filters clean" in res


def test_public_folders_ticked_on_the_servers_page_move_as_a_batch(dovecot_factory, tmp_path: Path) -> None:
    from imapclient import IMAPClient

    users = {"alice": "alicepw", "publisher": "publisherpw"}
    src = dovecot_factory(users=users, public="Public")
    tgt = dovecot_factory(users=users, public="Public")
    c = IMAPClient(src.host, src.port, ssl=False, timeout=20)
    c.login("publisher*admin", "adminpw")
    try:
        c.create_folder("Public/Team")
        for i in range(3):
            c.append("Public/Team", f"Subject: notice {i}\r\nMessage-ID: <n{i}@pub>\r\n\r\nnotice {i}\r\n".encode())
    finally:
        c.logout()
    project = write_project(tmp_path / "p", src, tgt, ["alice"])
    client, console = client_for(project.parent)
    token = csrf(client, "/servers")
    # A Dovecot master user reads and writes them as an account: the publisher's.
    form = _servers_form(client, console, public="1", public_source_user="publisher", public_target_user="publisher")
    assert client.post("/servers", data=form).status_code == 303
    assert "public" in load_project(project).items
    check = client.post("/servers/test", data={"csrf": token, "account": "#public"}).text
    assert "account <strong>#public</strong>" in check and "prefix “Public/”" in check

    assert "#public" in client.get("/people").text
    assert client.post("/batches", data={"csrf": token, "batch": "pub", "account": ["#public"]}).status_code == 303
    plan = client.get("/plan", params={"batch": "pub"}).text
    assert "#public → #public" in plan and "Public/Team" in _table(plan, "Folders of #public")
    assert client.post("/run/start", data={"csrf": token, "batch": "pub"}).status_code == 303
    st = console.runs.wait("pub", 90)
    assert st["state"] == "finished", st
    t = IMAPClient(tgt.host, tgt.port, ssl=False, timeout=20)
    t.login("publisher*admin", "adminpw")
    try:
        t.select_folder("Public/Team", readonly=True)
        assert len(t.search("ALL")) == 3
    finally:
        t.logout()
    # The unit's run, verify and report make the batch's verdict, as an account's do.
    assert st["exit_code"] == 0, st
    res = client.get("/results", params={"batch": "pub"}).text
    assert "#public → #public" in res and 'data-verdict="ready"' in res, res
    rep = cli("report", project, "--json").json()
    assert [a["account"] for a in rep["accounts"]] == ["#public"] and not rep["findings"]
