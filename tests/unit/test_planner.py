"""The planner's decision table, and its two properties (after vdirsyncer's sync tests):

- re-planning after a complete run copies nothing;
- interrupting the execution after any step (the append landed or not, the fact recorded or
  not) and resuming ends with exactly the source's messages on the target: no duplicates, no loss.

The executor here is a tiny model of the engine's write protocol: record intent (pending), append,
record fact (copied). A crash can fall between any two of those.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.model.mail import MessageMeta
from mailferry.plan.planner import (
    Adopt,
    Copy,
    Delete,
    Forget,
    Policy,
    Rebase,
    SetFlags,
    Skip,
    plan_folder,
    storable_flags,
)
from mailferry.state.ledger import MessageRecord

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def meta(uid: int, key: str, size: int = 100, flags: tuple[str, ...] = (), when: datetime = T0) -> MessageMeta:
    return MessageMeta(uid=uid, size=size, internaldate=when, flags=flags, key=key)


def rec(
    uid: int,
    key: str,
    state: str = "copied",
    tuid: int | None = None,
    v: int = 1,
    how: str = "copied",
    flags: tuple[str, ...] = (),
) -> MessageRecord:
    return MessageRecord(v, uid, key, 100, state, how, "T", 7, tuid if tuid is not None else uid, 0, flags)


def plan(source, records=(), target=(), **kw):
    return plan_folder(
        source_folder="F",
        target_folder="T",
        rule="test",
        uidvalidity=kw.pop("uidvalidity", 1),
        source=source,
        records=records,
        target_unclaimed=target,
        **kw,
    )


class TestDecisionTable:
    def test_new_message_is_copied(self) -> None:
        p = plan([meta(1, "a")])
        assert [type(a) for a in p.actions] == [Copy]

    def test_recorded_message_is_left_alone(self) -> None:
        assert plan([meta(1, "a")], [rec(1, "a")]).actions == []

    def test_message_already_on_target_is_adopted_not_copied(self) -> None:
        p = plan([meta(1, "a")], target=[meta(50, "a")])
        assert p.actions == [Adopt(meta(1, "a"), 50, "already on the target (same identity)")]

    def test_two_identical_source_messages_need_two_target_copies(self) -> None:
        p = plan([meta(1, "a"), meta(2, "a")], target=[meta(50, "a")])
        assert [type(a) for a in p.actions] == [Adopt, Copy]

    def test_pending_intent_found_on_target_is_adopted(self) -> None:
        p = plan([meta(5, "a")], [rec(5, "a", state="pending", tuid=None)], target=[meta(9, "a")])
        assert isinstance(p.actions[0], Adopt) and p.actions[0].target_uid == 9
        assert not p.copies

    def test_pending_intent_missing_on_target_is_forgotten_and_copied(self) -> None:
        p = plan([meta(5, "a")], [rec(5, "a", state="pending", tuid=None)])
        assert [type(a) for a in p.actions] == [Forget, Copy]

    def test_uidvalidity_change_rematches_by_identity(self) -> None:
        p = plan([meta(10, "a"), meta(11, "b")], [rec(1, "a", v=1)], uidvalidity=2)
        assert Rebase(1, 1, 10) in p.actions
        assert [c.meta.key for c in p.copies] == ["b"]

    def test_policy_skips_are_reported_with_reasons(self) -> None:
        p = plan([meta(1, "a", size=5000)], policy=Policy(max_size=1000))
        assert isinstance(p.actions[0], Skip) and "max_size" in p.actions[0].reason and not p.actions[0].finding

    def test_target_limit_skip_is_a_finding(self) -> None:
        p = plan([meta(1, "a", size=5000)], policy=Policy(target_size_limit=1000))
        assert isinstance(p.actions[0], Skip) and p.actions[0].finding

    def test_date_window(self) -> None:
        old = meta(1, "a", when=datetime(2010, 1, 1, tzinfo=UTC))
        p = plan([old, meta(2, "b")], policy=Policy(since=datetime(2020, 1, 1, tzinfo=UTC)))
        assert [type(a) for a in p.actions] == [Skip, Copy]

    def test_flag_change_is_carried(self) -> None:
        p = plan([], [rec(1, "a", flags=())], source_flags={1: ("\\Seen", "\\Recent")})
        assert p.actions == [SetFlags(1, 1, 1, ("\\Seen",))]

    def test_deletions_only_when_opted_in_and_only_ours(self) -> None:
        records = [rec(1, "a"), rec(2, "b", how="found")]
        assert plan([], records, source_uids=set()).actions == []
        p = plan([], records, source_uids=set(), policy=Policy(propagate_deletions=True))
        assert p.actions == [Delete(1, 1, 1)]

    def test_refused_message_is_retried(self) -> None:
        p = plan([meta(1, "a")], [rec(1, "a", state="refused", tuid=None)])
        assert [type(a) for a in p.actions] == [Copy]

    def test_refused_message_gone_from_the_source_is_no_longer_outstanding(self) -> None:
        p = plan([meta(2, "b")], [rec(1, "a", state="refused", tuid=None), rec(2, "b")])
        assert p.actions == [Forget(1, 1, "refused earlier, gone from the source since")]

    def test_refused_message_now_excluded_by_the_admin_is_forgotten(self) -> None:
        p = plan([meta(1, "a", size=5000)], [rec(1, "a", state="refused", tuid=None)], policy=Policy(max_size=1000))
        assert [type(a) for a in p.actions] == [Forget, Skip]
        assert isinstance(p.actions[1], Skip) and not p.actions[1].finding

    def test_refused_message_still_too_big_for_the_target_stays_a_finding(self) -> None:
        records = [rec(1, "a", state="refused", tuid=None)]
        p = plan([meta(1, "a", size=5000)], records, policy=Policy(target_size_limit=1000))
        assert len(p.actions) == 1 and isinstance(p.actions[0], Skip) and p.actions[0].finding

    def test_refused_message_of_an_older_uidvalidity_rematched_or_forgotten(self) -> None:
        records = [rec(1, "a", state="refused", tuid=None), rec(2, "b", state="refused", tuid=None)]
        p = plan([meta(10, "a")], records, uidvalidity=2)
        assert Rebase(1, 1, 10) in p.actions and Copy(meta(10, "a")) in p.actions
        assert Forget(1, 2, "refused earlier, gone from the source since") in p.actions

    def test_interrupted_append_adopted_with_other_flags_gets_the_source_flags(self) -> None:
        records = [rec(5, "a", state="pending", tuid=None)]
        p = plan([meta(5, "a", flags=("\\Seen", "$Long"))], records, target=[meta(9, "a", flags=("\\Seen",))])
        assert [type(a) for a in p.actions] == [Adopt, SetFlags]
        reason = "the interrupted copy on the target has other flags"
        assert p.actions[1] == SetFlags(1, 5, 9, ("$Long", "\\Seen"), reason)


class TestStorableFlags:
    def test_any_keyword(self) -> None:
        assert storable_flags(["\\Seen", "$X", "\\Recent"], ["\\Seen", "\\*"]) == (("$X", "\\Seen"), ())

    def test_keyword_not_storable_is_dropped_and_named(self) -> None:
        assert storable_flags(["\\Seen", "$X"], ["\\Seen"]) == (("\\Seen",), ("$X",))

    def test_unknown_permanent_flags_keep_everything(self) -> None:
        assert storable_flags(["$X"], None) == (("$X",), ())


# -- the properties --------------------------------------------------------------------------------


class World:
    """Source folder, target folder and ledger as plain data; executes plans step by step.
    The target refuses the keys in ``refuses`` (say, over quota), as the engine records it."""

    def __init__(self, keys: list[str], preexisting: list[str], refuses: frozenset[str] = frozenset()) -> None:
        self.source = [meta(i + 1, k) for i, k in enumerate(keys)]
        self.refuses = refuses
        self.target: dict[int, str] = {}
        self.next_tuid = 1
        for k in preexisting:
            self._append(k)
        self.records: dict[int, MessageRecord] = {}

    def _append(self, key: str) -> int:
        uid = self.next_tuid
        self.target[uid] = key
        self.next_tuid += 1
        return uid

    def unclaimed(self) -> list[MessageMeta]:
        claimed = {r.target_uid for r in self.records.values() if r.state == "copied"}
        return [meta(u, k) for u, k in self.target.items() if u not in claimed]

    def plan(self):
        return plan(self.source, list(self.records.values()), self.unclaimed())

    def steps(self, p) -> list:
        """Each action split into the engine's atomic steps."""
        out = []
        for a in p.actions:
            if isinstance(a, Copy):
                out += [("intent", a.meta), ("append", a.meta), ("fact", a.meta)]
            else:
                out.append(("other", a))
        return out

    def run(self, crash_after: int | None = None) -> None:
        appended: dict[int, int] = {}
        for i, (what, x) in enumerate(self.steps(self.plan())):
            if crash_after is not None and i >= crash_after:
                return
            if what == "intent":
                self.records[x.uid] = rec(x.uid, x.key, state="pending", tuid=None)
                self.records[x.uid] = replace(self.records[x.uid], target_uid=None)
            elif what == "append":
                if x.key in self.refuses:
                    appended[x.uid] = 0
                else:
                    appended[x.uid] = self._append(x.key)
            elif what == "fact":
                if appended[x.uid]:
                    self.records[x.uid] = rec(x.uid, x.key, tuid=appended[x.uid])
                else:
                    self.records[x.uid] = rec(x.uid, x.key, state="refused", tuid=None)
                    self.records[x.uid] = replace(self.records[x.uid], target_uid=None)
            elif isinstance(x, Adopt):
                self.records[x.meta.uid] = rec(x.meta.uid, x.meta.key, tuid=x.target_uid, how="found")
            elif isinstance(x, Forget):
                self.records.pop(x.uid, None)


keys = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8)


@settings(max_examples=200, deadline=None)
@given(keys, keys)
def test_replanning_after_a_complete_run_copies_nothing(src: list[str], pre: list[str]) -> None:
    w = World(src, pre)
    w.run()
    again = w.plan()
    assert again.actions == []


@settings(max_examples=300, deadline=None)
@given(keys, keys, st.lists(st.integers(min_value=0, max_value=30), max_size=3))
def test_interrupt_anywhere_then_resume_ends_exactly_like_the_source(
    src: list[str], pre: list[str], crashes: list[int]
) -> None:
    w = World(src, pre)
    for c in crashes:
        w.run(crash_after=c)
    w.run()
    assert w.plan().copies == []
    # Every source message has exactly one target copy it owns, and nothing was doubled:
    owned = Counter(w.target[r.target_uid] for r in w.records.values() if r.target_uid is not None)
    assert owned == Counter(src)
    # The target holds what was there before plus exactly the messages it lacked.
    assert Counter(w.target.values()) == Counter(pre) + (Counter(src) - Counter(pre))


@settings(max_examples=200, deadline=None)
@given(keys, keys, st.frozensets(st.sampled_from(["a", "b", "c", "d"])), st.integers(min_value=0, max_value=30))
def test_refused_messages_stay_outstanding_until_the_target_takes_them(
    src: list[str], pre: list[str], refuses: frozenset[str], crash: int
) -> None:
    w = World(src, pre, refuses)
    w.run()
    outstanding = {u for u, r in w.records.items() if r.state == "refused"}
    # Every pass tries each of them again, and only them.
    assert {c.meta.uid for c in w.plan().copies} == outstanding
    w.run()
    assert {u for u, r in w.records.items() if r.state == "refused"} == outstanding
    # The target takes them now; an interrupted pass then a whole one: each once, nothing else.
    w.refuses = frozenset()
    w.run(crash_after=crash)
    w.run()
    assert w.plan().actions == []
    assert not [r for r in w.records.values() if r.state != "copied"]
    owned = Counter(w.target[r.target_uid] for r in w.records.values() if r.target_uid is not None)
    assert owned == Counter(src)
