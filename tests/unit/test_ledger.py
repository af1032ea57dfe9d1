from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from mailferry.errors import ExitCode, LockedError
from mailferry.state.ledger import SCHEMA_VERSION, Finding, FolderState, MessageRecord, SqliteLedger


def test_new_ledger_is_private_and_versioned(tmp_path: Path) -> None:
    led = SqliteLedger(tmp_path / "x.sqlite")
    assert stat.S_IMODE(os.stat(tmp_path / "x.sqlite").st_mode) == 0o600
    assert led.schema_version == SCHEMA_VERSION
    assert sqlite3.connect(tmp_path / "x.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    led.close()


def test_reopening_keeps_data_and_schema(tmp_path: Path) -> None:
    led = SqliteLedger(tmp_path / "x.sqlite")
    led.save_folder_state(FolderState("alice", "INBOX", "INBOX", 7, 10, 9, 33, 5))
    led.record_copied(
        "alice", "INBOX", [MessageRecord(7, 1, "k", 10, "copied", "copied", "INBOX", 5, 3, 0, ("\\Seen",))], 1
    )
    led.close()
    led = SqliteLedger(tmp_path / "x.sqlite")
    assert led.folder_state("alice", "INBOX") == FolderState("alice", "INBOX", "INBOX", 7, 10, 9, 33, 5)
    assert led.messages("alice", "INBOX")[0].flags == ("\\Seen",)
    led.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteLedger(tmp_path / "x.sqlite").close()
    db = sqlite3.connect(tmp_path / "x.sqlite")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LockedError, match="newer mailferry"):
        SqliteLedger(tmp_path / "x.sqlite")


def test_second_run_on_the_same_project_is_refused(tmp_path: Path) -> None:
    a = SqliteLedger(tmp_path / "x.sqlite")
    a.acquire("migrate")
    b = SqliteLedger(tmp_path / "x.sqlite")
    with pytest.raises(LockedError) as e:
        b.acquire("migrate")
    assert "another mailferry run" in str(e.value) and e.value.exit_code == ExitCode.TEMPFAIL
    a.close()
    b.acquire("migrate")  # released with the first
    b.close()


def test_findings_round_trip(tmp_path: Path) -> None:
    led = SqliteLedger(tmp_path / "x.sqlite")
    run = led.start_run("migrate", "now")
    led.add_finding(run, Finding("alice", "INBOX", 4, "refused", "too big", {"size": 9}))
    assert led.findings(run) == [Finding("alice", "INBOX", 4, "refused", "too big", {"size": 9}, run)]
    led.close()


def test_outstanding_lists_each_refusal_once_with_the_run_that_last_tried_it(tmp_path: Path) -> None:
    led = SqliteLedger(tmp_path / "x.sqlite")

    def refused(uid: int) -> MessageRecord:
        return MessageRecord(7, uid, f"k{uid}", 10, "refused", "", "T", None, None, 0, ())

    for run in (led.start_run("migrate", "1"), led.start_run("migrate", "2")):
        led.record_copied("alice", "INBOX", [refused(1), refused(2)], run)
        led.add_finding(run, Finding("alice", "INBOX", 1, "refused", f"over quota in run {run}", {"server": "q"}))
        led.add_finding(run, Finding("alice", "INBOX", 2, "refused", f"too big in run {run}", {}))
    led.record_copied("alice", "INBOX", [MessageRecord(7, 2, "k2", 10, "copied", "copied", "T", 1, 5, 0, ())], run)
    assert led.refused_folders("alice") == {"INBOX"} and led.refused_folders("bob") == set()
    assert led.outstanding() == [
        {
            "account": "alice",
            "folder": "INBOX",
            "uidvalidity": 7,
            "uid": 1,
            "size": 10,
            "target_folder": "T",
            "run": 2,
            "kind": "refused",
            "message": "over quota in run 2",
            "details": {"server": "q"},
        }
    ]
    assert led.outstanding("bob") == []
    led.close()


def test_a_version_1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    from mailferry.state.ledger import _MIGRATIONS, _split

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    for statement in _split(_MIGRATIONS[1]):
        db.execute(statement)
    db.execute("INSERT INTO runs (command, started_at) VALUES ('migrate', 'then')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    led = SqliteLedger(path)
    assert led.schema_version == SCHEMA_VERSION
    assert [r["command"] for r in led.runs()] == ["migrate"]
    led.save_identity(1, [{"source_dn": "cn=a", "target_dn": "cn=b", "how": "created", "kind": "user"}])
    assert led.identity()[0]["target_dn"] == "cn=b"
    led.close()


def test_settings_round_trip_replace_and_forget(tmp_path: Path) -> None:
    from mailferry.state.ledger import SettingRecord

    led = SqliteLedger(tmp_path / "x.sqlite")
    run = led.start_run("migrate", "1")
    acl = SettingRecord("alice", "acl", "INBOX\0bob", "lrs", "INBOX\0bob.t", "set", run)
    led.record_setting(acl)
    led.record_setting(SettingRecord("alice", "sieve", "main", "sha:1", "main", "refused", run))
    assert led.settings("alice", "acl") == {"INBOX\0bob": acl}
    assert list(led.settings("alice", "sieve")) == ["main"] and led.settings("bob", "acl") == {}
    newer = SettingRecord("alice", "acl", "INBOX\0bob", "lrsw", "INBOX\0bob.t", "set", run)
    led.record_setting(newer)
    assert led.settings("alice", "acl") == {"INBOX\0bob": newer}
    led.forget_setting("alice", "acl", "INBOX\0bob")
    assert led.settings("alice", "acl") == {}
    with pytest.raises(ValueError):
        led.record_setting(SettingRecord("alice", "acl", "k", "v", "t", "maybe", run))
    led.close()
