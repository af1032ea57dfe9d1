"""The mailbox guard: an id held by two target accounts blocks both, and stays recorded until
both are read again; nothing else is blocked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.engine.alive import MailboxGuard
from mailferry.errors import ExitCode, MailboxCollision
from mailferry.state.ledger import SqliteLedger


def test_shared_inbox_blocks_both_and_names_them() -> None:
    g = MailboxGuard()
    new = g.settle(
        {"bob": {"INBOX": "X", "Sent": "S2"}, "alice": {"INBOX": "X", "Sent": "S1"}, "carol": {"INBOX": "Y"}}
    )
    assert len(new) == 1
    c = new[0]
    assert (c.mailbox_id, c.accounts, c.folders) == ("X", ("alice", "bob"), ("INBOX", "INBOX"))
    assert c.exit_code == ExitCode.CONFIG and "alice (INBOX), bob (INBOX)" in c.message and "X" in c.message
    assert g.blocked("alice") is c and g.blocked("bob") is c and g.blocked("carol") is None
    assert g.known("carol") and not g.known("alice")


def test_inbox_collision_is_the_one_named_first() -> None:
    g = MailboxGuard()
    g.settle({"a": {"Drafts": "D", "INBOX": "I"}, "b": {"Drafts": "D", "INBOX": "I"}})
    hit = g.blocked("a")
    assert hit is not None and hit.mailbox_id == "I"


def test_two_folders_of_one_account_on_one_id_is_a_collision_too() -> None:
    g = MailboxGuard()
    g.settle({"a": {"INBOX": "I", "Drafts": "I"}})
    hit = g.blocked("a")
    assert hit is not None and hit.folders == ("Drafts", "INBOX")
    g2 = MailboxGuard([("I", "a", "INBOX")])
    with pytest.raises(MailboxCollision):
        g2.check("a", "Projects", "I", created=True)  # a folder just created on an existing id


def test_a_renamed_folder_keeps_its_id_without_a_collision() -> None:
    g = MailboxGuard([("P", "a", "Old")])
    g.check("a", "New", "P")  # RFC 8474: RENAME keeps MAILBOXID
    assert g.blocked("a") is None


def test_an_earlier_holder_collides_with_a_new_claim() -> None:
    g = MailboxGuard([("X", "alice", "INBOX")])
    assert g.known("alice")
    with pytest.raises(MailboxCollision) as e:
        g.check("bob", "INBOX", "X")
    assert e.value.accounts == ("alice", "bob")
    assert g.blocked("alice") is not None  # the earlier holder is not written to either
    g.check("carol", "INBOX", "Z")  # others go on


def test_a_recorded_collision_blocks_a_run_of_only_one_of_them(tmp_path) -> None:
    led = SqliteLedger(tmp_path / "l.sqlite")
    try:
        MailboxGuard.of(led, 1).settle({"r03": {"INBOX": "X"}, "r09": {"INBOX": "X"}})
        later = MailboxGuard.of(led, 2, accounts={"r03", "r09"})
        assert not later.known("r03") and not later.known("r09")  # to be read again
        later.settle({"r03": {"INBOX": "X"}})  # a run of r03 alone: r09's row still holds X
        assert later.blocked("r03") is not None
        repaired = MailboxGuard.of(led, 3, accounts={"r03", "r09"})
        repaired.settle({"r03": {"INBOX": "X"}, "r09": {"INBOX": "Y"}})  # r09 recreated on the server
        assert repaired.blocked("r03") is None and repaired.blocked("r09") is None
        assert MailboxGuard.of(led, 4).known("r03")  # its stale row is gone
    finally:
        led.close()


def test_rows_of_accounts_no_longer_in_the_project_are_ignored() -> None:
    g = MailboxGuard([("X", "alice", "INBOX")], accounts={"alice.smith"})  # renamed in the CSV
    g.check("alice.smith", "INBOX", "X")
    assert g.blocked("alice.smith") is None


def test_claims_are_recorded_in_the_ledger_and_read_only_commands_record_nothing(tmp_path) -> None:
    led = SqliteLedger(tmp_path / "l.sqlite")
    try:
        g = MailboxGuard.of(led, 7)
        g.settle({"alice": {"INBOX": "A1", "Sent": "A2"}, "bob": {"INBOX": "B1"}})
        assert led.mailbox_holders() == [("A1", "alice", "INBOX"), ("A2", "alice", "Sent"), ("B1", "bob", "INBOX")]
        g2 = MailboxGuard.of(led, 8)
        assert g2.known("alice")
        with pytest.raises(MailboxCollision):
            g2.check("carol", "INBOX", "B1")
        ro = MailboxGuard.of(led, record=False)
        ro.check("dave", "INBOX", "D")
        assert all(mid != "D" for mid, _u, _f in led.mailbox_holders())
    finally:
        led.close()


users = st.sampled_from(["a", "b", "c", "d"])
ids = st.sampled_from(["1", "2", "3", "4", "5"])


@given(st.dictionaries(users, st.dictionaries(st.sampled_from(["INBOX", "Sent", "Trash"]), ids, max_size=3)))
def test_blocked_exactly_the_accounts_sharing_an_id(claims: dict[str, dict[str, str]]) -> None:
    g = MailboxGuard()
    g.settle(claims)
    for u, mine in claims.items():
        shares = any(set(mine.values()) & set(other.values()) for v, other in claims.items() if v != u)
        own_repeat = len(set(mine.values())) < len(mine)
        assert (g.blocked(u) is not None) == (shares or own_repeat)


def test_a_guard_of_one_account_reads_only_its_ids_and_looks_up_the_others(tmp_path) -> None:
    """A distributed task's guard: the rows of the ids its account holds (the sharer's too),
    not the organization's; an id it meets that another account holds is looked up."""
    led = SqliteLedger(tmp_path / "l.sqlite")
    try:
        MailboxGuard.of(led, 1).settle(
            {"alice": {"INBOX": "A1"}, "bob": {"INBOX": "B1"}, "carol": {"INBOX": "X"}, "dave": {"INBOX": "X"}}
        )
        assert led.mailbox_holders(["carol"]) == [("X", "carol", "INBOX"), ("X", "dave", "INBOX")]
        assert led.mailbox_holders(["alice", "erin"]) == [("A1", "alice", "INBOX")]
        assert led.mailbox_holders_of(["B1", "nope"]) == [("B1", "bob", "INBOX")]
        everyone = {"alice", "bob", "carol", "dave", "erin"}
        g = MailboxGuard.of(led, 2, accounts=everyone, only={"alice"})
        assert g.known("alice")
        assert g._by_user.keys() == {"alice"}  # nobody else's rows were read
        with pytest.raises(MailboxCollision) as e:
            g.check("alice", "Shared", "B1")  # bob's, known to the ledger only
        assert e.value.accounts == ("alice", "bob")
        assert not MailboxGuard.of(led, 3, accounts=everyone, only={"carol"}).known("carol")
        with pytest.raises(MailboxCollision):
            MailboxGuard.of(led, 4, accounts=everyone, only={"erin"}).check("erin", "INBOX", "A1")
    finally:
        led.close()


claims = st.lists(st.tuples(st.sampled_from(["INBOX", "Sent", "New"]), st.sampled_from(["M1", "M2", "M3", "M4"])))


@given(
    st.lists(st.tuples(st.sampled_from(["M1", "M2", "M3", "M4"]), users, st.sampled_from(["INBOX", "Sent"]))),
    users,
    claims,
)
def test_a_narrowed_guard_judges_every_claim_as_the_whole_one(
    rows: list[tuple[str, str, str]], who: str, wanted: list[tuple[str, str]]
) -> None:
    """Whatever the ledger holds, one account's claims meet the same collisions through a guard
    that read only that account's ids as through one that read every row."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        led = SqliteLedger(Path(d) / "l.sqlite")
        try:
            for mid, user, folder in rows:
                led.record_mailboxes(user, {folder: mid}, 1)
            verdicts = []
            for only in (None, {who}):
                g = MailboxGuard.of(led, record=False, only=only)
                got = []
                for folder, mid in wanted:
                    try:
                        g.check(who, folder, mid)
                        got.append(None)
                    except MailboxCollision as c:
                        got.append(c.accounts)
                verdicts.append((got, g.known(who)))
            assert verdicts[0] == verdicts[1]
        finally:
            led.close()
