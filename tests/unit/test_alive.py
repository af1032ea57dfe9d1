"""The mailbox guard: an id held by two target accounts blocks both; nothing else is blocked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.engine.alive import MailboxGuard
from mailferry.errors import ExitCode, MailboxCollision
from mailferry.state.ledger import SqliteLedger


def test_shared_inbox_blocks_both_and_names_them() -> None:
    g = MailboxGuard({})
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
    g = MailboxGuard({})
    g.settle({"a": {"Drafts": "D", "INBOX": "I"}, "b": {"Drafts": "D", "INBOX": "I"}})
    hit = g.blocked("a")
    assert hit is not None and hit.mailbox_id == "I"


def test_an_earlier_owner_collides_with_a_new_claim() -> None:
    g = MailboxGuard({"X": ("alice", "INBOX")})
    assert g.known("alice")
    with pytest.raises(MailboxCollision) as e:
        g.check("bob", {"INBOX": "X"})
    assert e.value.accounts == ("alice", "bob")
    assert g.blocked("alice") is not None  # the earlier holder is not written to either
    g.check("carol", {"INBOX": "Z"})  # others go on


def test_same_account_again_is_not_a_collision() -> None:
    g = MailboxGuard({"X": ("alice", "INBOX")})
    g.check("alice", {"INBOX": "X"})
    g.check("alice", {"Sent": "S"})
    assert g.blocked("alice") is None


def test_claims_are_recorded_once_in_the_ledger(tmp_path) -> None:
    led = SqliteLedger(tmp_path / "l.sqlite")
    try:
        g = MailboxGuard.of(led, 7)
        g.settle(
            {"alice": {"INBOX": "A1", "Sent": "A2"}, "bob": {"INBOX": "B1"}, "x": {"INBOX": "C"}, "y": {"INBOX": "C"}}
        )
        assert led.mailbox_owners() == {"A1": ("alice", "INBOX"), "A2": ("alice", "Sent"), "B1": ("bob", "INBOX")}
        g2 = MailboxGuard.of(led, 8)
        assert g2.known("alice") and not g2.known("x")
        with pytest.raises(MailboxCollision):
            g2.check("carol", {"INBOX": "B1"})
        ro = MailboxGuard.of(led, record=False)
        ro.check("dave", {"INBOX": "D"})
        assert "D" not in led.mailbox_owners()  # read-only commands record nothing
    finally:
        led.close()


users = st.sampled_from(["a", "b", "c", "d"])
ids = st.sampled_from(["1", "2", "3", "4", "5"])


@given(st.dictionaries(users, st.dictionaries(st.sampled_from(["INBOX", "Sent", "Trash"]), ids, max_size=3)))
def test_blocked_exactly_the_accounts_sharing_an_id(claims: dict[str, dict[str, str]]) -> None:
    g = MailboxGuard({})
    g.settle(claims)
    for u, mine in claims.items():
        shares = any(set(mine.values()) & set(other.values()) for v, other in claims.items() if v != u)
        assert (g.blocked(u) is not None) == shares
