"""The distributed run's parts against real servers: the PostgreSQL ledger behind the same
interface as the SQLite one (the same operations leave the same records), its locks, moving a
ledger between the two; the cluster's connection slots, rates and pauses in a real Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.errors import LockedError
from mailferry.state.ledger import (
    DavCollectionState,
    DavItemRecord,
    Finding,
    FolderState,
    MessageRecord,
    SettingRecord,
    SqliteLedger,
)
from mailferry.state.pgledger import PostgresLedger, _escape, _unescape, translate


@pytest.fixture
def pg(postgres_server: Any) -> Any:
    postgres_server.reset()
    return postgres_server


def pg_ledger(pg: Any) -> PostgresLedger:
    return PostgresLedger(pg.url, pg.password)


def exercise(led: SqliteLedger) -> dict[str, Any]:
    """The same operations on any ledger; what its read methods answer afterwards."""
    run = led.start_run("migrate", "2026-11-28T10:00:00Z")
    led.save_folder_state(FolderState("alice", "INBOX", "INBOX", 7, 10, 9, 2**40, 2**32 - 1))
    led.save_folder_state(FolderState("alice", "INBOX", "INBOX", 7, 11, 10, 2**40 + 1, 2**32 - 1))
    led.save_folder_state(FolderState("alice", "Zürich/ä", "Zürich.ä", 8, 2, 1, None, None))
    rows = [
        MessageRecord(7, u, f"k{u}", 100 * u, "pending", "", "INBOX", None, None, 0, ("\\Seen",)) for u in (1, 2, 3)
    ]
    led.record_pending("alice", "INBOX", rows, run)
    copied = MessageRecord(7, 1, "k1", 100, "copied", "appended", "INBOX", 5, 1, 0, ("\\Seen", "$x"))
    led.record_copied("alice", "INBOX", [copied], run)
    led.record_copied(
        "alice", "INBOX", [MessageRecord(7, 2, "k2", 200, "refused", "", "INBOX", None, None, 0, ())], run
    )
    led.forget("alice", "INBOX", [(7, 3)])
    led.update_flags("alice", "INBOX", [(7, 1, ("\\Seen", "\\Flagged"))])
    led.add_finding(run, Finding("alice", "INBOX", 2, "refused", "too big", {"server": "NO [TOOBIG]"}))
    led.record_setting(SettingRecord("alice", "acl", "INBOX\x00bob", "lr", "INBOX\x00bob.t", "set", run))
    led.record_setting(SettingRecord("alice", "acl", "INBOX\x00bob", "lrs", "INBOX\x00bob.t", "set", run))
    led.record_setting(SettingRecord("alice", "acl", "A\x01B\x00c", "l", "t", "refused", run))
    led.record_mailboxes("alice", {"INBOX": "id-1", "Sent": "id-2"}, run)
    led.record_mailboxes("alice", {"INBOX": "id-3"}, run)
    led.save_dav_collection(DavCollectionState("alice", "/c/a/", "calendar", "Cal", "/t/a/", "tok", None, True), run)
    item = DavItemRecord("/c/a/1.ics", '"e1"', "u1", "copied", "put", "/t/a/1.ics", '"t1"')
    led.record_dav_items("alice", "/c/a/", [item], run)
    led.begin_merge(run, "cn=c", "cn=u", "ldif-1", ["g"])
    led.begin_merge(run, "cn=c", "cn=u2", "ldif-2", ["g", "h"])
    led.record_account_run(run, "alice", "alice", {"status": "ok", "copied": 1, "bytes": 100, "seconds": 0.5})
    led.record_account_run(run, "alice", "alice", {"status": "ok", "copied": 2, "bytes": 300, "seconds": 0.75})
    led.finish_run(run, "2026-11-28T10:01:00Z", 1, {"copied": 2})
    return {
        "runs": led.runs(),
        "account_runs": led.account_runs(run),
        "folders": led.folder_states("alice"),
        "messages": led.messages("alice", "INBOX"),
        "pending": led.has_pending("alice"),
        "refused": led.refused_folders("alice"),
        "outstanding": led.outstanding("alice"),
        "findings": led.findings(run),
        "settings": led.settings("alice", "acl"),
        "holders": led.mailbox_holders(),
        "dav": (led.dav_collections("alice"), led.dav_items("alice", "/c/a/")),
        "merges": led.merges(),
        "counts": led.counts(),
    }


def records(led: SqliteLedger) -> dict[str, Any]:
    return {table: (cols, sorted(rows, key=repr)) for table, cols, rows in led.dump()}


def test_the_postgresql_ledger_answers_as_the_sqlite_one(pg: Any, tmp_path: Path) -> None:
    lite = SqliteLedger(tmp_path / "x.sqlite")
    post = pg_ledger(pg)
    try:
        assert exercise(post) == exercise(lite)
        assert post.schema_version == lite.schema_version
        # The records themselves, table by table, are the same too.
        assert records(post) == records(lite)
    finally:
        lite.close()
        post.close()


def test_schema_is_migrated_once_by_workers_starting_together(pg: Any) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            pg_ledger(pg).close()
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    led = pg_ledger(pg)
    assert led.schema_version == 6
    led.close()


def test_run_lock_refuses_a_second_run_and_goes_with_the_holder(pg: Any) -> None:
    a, b = pg_ledger(pg), pg_ledger(pg)
    a.acquire("migrate")
    with pytest.raises(LockedError, match="another mailferry run"):
        b.acquire("migrate")
    a.close()  # the holder's connection ends (a process killed ends it the same way)
    b.acquire("migrate")
    b.close()


def test_account_lock_keeps_a_second_delivery_waiting(pg: Any) -> None:
    a, b = pg_ledger(pg), pg_ledger(pg)
    order: list[str] = []
    with a.account_lock("alice"):
        t = threading.Thread(target=lambda: [b.account_lock("alice").__enter__(), order.append("second")])
        t.start()
        time.sleep(0.5)
        order.append("first done")
    t.join(timeout=10)
    assert order == ["first done", "second"]
    with a.account_lock("bob"):  # another account is not held up
        pass
    a.close()
    b.close()


def cli(*args: Any) -> Any:
    import io
    import json
    from contextlib import redirect_stdout
    from types import SimpleNamespace

    from mailferry.cli.main import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main([str(a) for a in args])
    return SimpleNamespace(code=code, out=out.getvalue(), json=lambda: json.loads(out.getvalue()))


def test_ledger_export_and_import_move_a_project_between_sqlite_and_postgresql(pg: Any, tmp_path: Path) -> None:
    lite = SqliteLedger(tmp_path / "old.sqlite")
    before = exercise(lite)
    lite.close()
    import os

    os.environ["MF_CLUSTER_TEST_PG"] = pg.password
    (tmp_path / "accounts.csv").write_text("source_user,target_user\nalice,alice\n")
    project = tmp_path / "p.toml"
    project.write_text(
        f'[project]\nname = "t"\nledger = "{pg.url}"\nledger_password = "env:MF_CLUSTER_TEST_PG"\n'
        '[accounts]\ncsv = "accounts.csv"\n'
        '[source]\nhost = "127.0.0.1"\nport = 1143\nsecurity = "none"\n'
        '[source.admin]\nuser = "admin"\npassword = "env:MF_CLUSTER_TEST_PG"\n'
        '[target]\nhost = "127.0.0.1"\nport = 2143\nsecurity = "none"\n'
        '[target.admin]\nuser = "admin"\npassword = "env:MF_CLUSTER_TEST_PG"\n'
    )
    r = cli("ledger", "import", project, "--from", tmp_path / "old.sqlite", "--json")
    assert r.code == 0, r.out
    assert r.json()["rows"]["messages"] == 2 and r.json()["rows"]["settings"] == 2
    again = cli("ledger", "import", project, "--from", tmp_path / "old.sqlite", "--json")
    assert again.code != 0 and "already holds records" in again.out
    post = pg_ledger(pg)
    try:
        assert post.runs() == before["runs"] and post.settings("alice", "acl") == before["settings"]
        assert post.start_run("migrate", "later") == 2  # ids go on after the imported ones
    finally:
        post.close()
    r = cli("ledger", "export", project, "--to", tmp_path / "back.sqlite", "--json")
    assert r.code == 0, r.out
    back = SqliteLedger(tmp_path / "back.sqlite")
    try:
        assert back.messages("alice", "INBOX") == before["messages"] and len(back.runs()) == 2
    finally:
        back.close()


def test_unreachable_database_is_a_temporary_failure_naming_no_password(pg: Any) -> None:
    from mailferry.errors import ExitCode, LedgerUnavailable

    with pytest.raises(LedgerUnavailable, match="ledger database is unreachable") as caught:
        PostgresLedger(pg.url.replace(str(pg.port), "1"), pg.password)
    assert caught.value.exit_code == ExitCode.TEMPFAIL  # a temporary failure: workers wait for it
    assert pg.password not in str(caught.value)


def test_translation_of_the_ledger_sql() -> None:
    assert translate("SELECT a FROM t WHERE x=? AND y=?") == "SELECT a FROM t WHERE x=%s AND y=%s"
    up = translate("INSERT OR REPLACE INTO settings (account, kind, key, value) VALUES (?, ?, ?, ?)")
    assert up.endswith("ON CONFLICT (account, kind, key) DO UPDATE SET value = EXCLUDED.value")
    assert translate("INSERT INTO runs (command) VALUES (?)").endswith("RETURNING id")
    ddl = translate("CREATE TABLE x (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, s TEXT, r REAL)")
    assert ddl == 'CREATE TABLE x (id BIGSERIAL PRIMARY KEY, n BIGINT, s TEXT COLLATE "C", r DOUBLE PRECISION)'


@given(st.text())
def test_text_escaping_round_trips_and_keeps_no_nul(s: str) -> None:
    e = _escape(s)
    assert "\x00" not in e and _unescape(e) == s


@given(st.text(), st.text())
def test_text_escaping_is_injective(a: str, b: str) -> None:
    assert (_escape(a) == _escape(b)) == (a == b)


# -- the cluster's limits in Redis ----------------------------------------------------------------


@pytest.fixture
def limits(redis_server: Any) -> Any:
    import redis

    from mailferry.distributed.limits import ClusterLimits

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    client.flushall()
    made: list[ClusterLimits] = []

    def make(lease: int = 30) -> ClusterLimits:
        made.append(ClusterLimits(client, "t", lease_seconds=lease))
        return made[-1]

    yield make
    for m in made:
        m.close()


def test_slots_never_exceed_the_limit_across_holders(limits: Any) -> None:
    holders = [limits() for _ in range(3)]  # three workers
    inside, peak = 0, 0
    lock = threading.Lock()

    def account(i: int) -> None:
        nonlocal inside, peak
        with holders[i % 3].slots([("imap:t", 5, 2), ("imap:s", 4, 1)], poll=0.01):
            with lock:
                inside += 2
                peak = max(peak, inside)
            time.sleep(0.05)
            with lock:
                inside -= 2

    threads = [threading.Thread(target=account, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 4  # two accounts of two slots each fit in five, never three
    assert holders[0].in_use("imap:t") == 0


def test_a_dead_holders_slots_come_back_after_the_lease(limits: Any) -> None:
    dead, alive = limits(lease=3), limits(lease=3)
    taken = dead._take(keys=["mailferry:t:slots:imap:t"], args=["dead-worker", 3000, 2, 2])  # never renewed
    assert taken == 1 and alive.in_use("imap:t") == 2
    t0 = time.monotonic()
    with alive.slots([("imap:t", 2, 1)], poll=0.05):
        waited = time.monotonic() - t0
    assert waited >= 2.0  # it waited for the lease to run out


def test_held_slots_are_renewed_past_their_lease(limits: Any) -> None:
    a, b = limits(lease=3), limits(lease=3)
    with a.slots([("imap:t", 1, 1)]):
        time.sleep(4.5)  # longer than the lease: the renewer keeps it
        assert b.in_use("imap:t") == 1
    assert b.in_use("imap:t") == 0


def test_rate_and_pause_hold_back_every_worker(limits: Any) -> None:
    a, b = limits(), limits()
    t0 = time.monotonic()
    a.pace("t", messages=20, nbytes=0, rate_messages=20, rate_bytes=0)  # the burst: a second's worth
    b.pace("t", messages=10, nbytes=0, rate_messages=20, rate_bytes=0)  # another worker waits ~0.5 s
    assert time.monotonic() - t0 >= 0.4
    a.slow_down("t", 0.6)
    t1 = time.monotonic()
    b.pace("t", messages=1, nbytes=0, rate_messages=0, rate_bytes=0)
    assert time.monotonic() - t1 >= 0.5


def test_an_accounts_calendars_hold_dav_slots_that_make_others_wait(
    redis_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distributed task's DAV step holds its connections on both DAV servers in the cluster's
    slots (2 to the source, its writers to the target): with 5 allowed on the target, one
    account a worker takes all 5 as writers, and a second account's DAV step waits for the
    first's; a throttled DAV
    server pauses another worker's requests there."""
    import redis

    from mailferry.config.load import load_project
    from mailferry.distributed.app import ClusterPacing, dav_key, dav_slots_of
    from mailferry.distributed.limits import ClusterLimits

    monkeypatch.setenv("MF_T_PW", "not-used")
    (tmp_path / "accounts.csv").write_text("source_user,target_user\nalice,alice\nbob,bob\n")
    (tmp_path / "project.toml").write_text(
        '[project]\nname = "t"\nledger = "postgresql://mf@127.0.0.1:5432/mf"\nledger_password = "env:MF_T_PW"\n'
        '[source]\nhost = "127.0.0.1"\nport = 1143\nsecurity = "none"\n'
        '[source.admin]\nuser = "a"\npassword = "env:MF_T_PW"\n'
        '[source.dav]\nurl = "http://127.0.0.1:5232/"\nmax_connections = 4\n'
        '[source.dav.admin]\nuser = "a"\npassword = "env:MF_T_PW"\n'
        '[target]\nhost = "127.0.0.1"\nport = 2143\nsecurity = "none"\n'
        '[target.admin]\nuser = "a"\npassword = "env:MF_T_PW"\n'
        '[target.dav]\nurl = "http://127.0.0.1:8008/"\nmax_connections = 5\n'
        '[target.dav.admin]\nuser = "a"\npassword = "env:MF_T_PW"\n'
        '[accounts]\ncsv = "accounts.csv"\n'
        f'[distributed]\nbroker = "redis://127.0.0.1:{redis_server.port}/0"\naccounts_per_worker = 1\n'
    )
    project = load_project(tmp_path / "project.toml")
    src, tgt = dav_key("http://127.0.0.1:5232/"), dav_key("http://127.0.0.1:8008/")
    assert dav_slots_of(project) == [(src, 4, 2), (tgt, 5, 5)]
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    client.flushall()
    one, two = ClusterLimits(client, "t"), ClusterLimits(client, "t")
    try:
        first, second = ClusterPacing(project, one), ClusterPacing(project, two)
        entered = threading.Event()

        def other_account() -> None:
            with second.dav_connections():
                entered.set()

        with first.dav_connections():
            assert one.in_use(src) == 2 and one.in_use(tgt) == 5
            waiting = threading.Thread(target=other_account)
            waiting.start()
            assert not entered.wait(1.0)  # 5 + 5 > 5: it waits
        assert entered.wait(5.0)
        waiting.join()
        assert one.in_use(tgt) == 0
        first.dav_throttled("target", 0.8)
        t0 = time.monotonic()
        second.pace_dav("target", 1, 100)
        assert time.monotonic() - t0 >= 0.6
        t1 = time.monotonic()
        second.pace_dav("source", 0, 0)  # the source was not throttled
        assert time.monotonic() - t1 < 0.3
    finally:
        one.close()
        two.close()
