"""The pure DAV planner: each source item is copied once, changes are carried with If-Match,
deletions only when asked, and re-planning after a faithful execution plans nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.model.dav import Collection
from mailferry.plan.dav import (
    Copy,
    DavPolicy,
    Keep,
    Remove,
    Update,
    address_map,
    collection_target_href,
    place,
    plan_collection,
    resource_name,
    target_href_of,
)
from mailferry.state.ledger import DavItemRecord

SRC = Collection(href="/dav/calendars/user/alice/Work/", kind="calendar", name="Work")
TGT = "/alice/Work/"


def rec(href: str, etag: str, *, state: str = "copied", target: str | None = None, uid: str = "u") -> DavItemRecord:
    return DavItemRecord(href, etag, uid, state, "copied", target or target_href_of(TGT, href), '"t"')


def plan(members, records, target, *, propagate=False):
    return plan_collection(
        SRC,
        TGT,
        create=False,
        members=members,
        records=records,
        target_members=target,
        policy=DavPolicy(propagate_deletions=propagate),
    )


def test_new_items_are_copied_under_their_own_name():
    p = plan({"/dav/calendars/user/alice/Work/a.ics": '"1"'}, {}, {})
    assert p.actions == [Copy("/dav/calendars/user/alice/Work/a.ics", '"1"', "/alice/Work/a.ics", "new")]


def test_unchanged_is_kept_changed_is_updated_with_the_target_etag():
    a, b = SRC.href + "a.ics", SRC.href + "b.ics"
    records = {a: rec(a, '"1"'), b: rec(b, '"1"', uid="ub")}
    target = {TGT + "a.ics": '"ta"', TGT + "b.ics": '"tb"'}
    p = plan({a: '"1"', b: '"2"'}, records, target)
    assert isinstance(p.actions[0], Keep)
    # If-Match the version mailferry wrote (recorded), so a copy changed on the target is a conflict
    assert p.actions[1] == Update(b, '"2"', TGT + "b.ics", '"t"', "ub")
    blind = {b: DavItemRecord(b, '"1"', "ub", "copied", "copied", TGT + "b.ics", None)}
    assert plan({b: '"2"'}, blind, target).actions[0] == Update(b, '"2"', TGT + "b.ics", '"tb"', "ub")


def test_pending_is_resolved_and_refused_retried():
    a, b = SRC.href + "a.ics", SRC.href + "b.ics"
    records = {a: rec(a, '"1"', state="pending"), b: rec(b, '"1"', state="refused")}
    p = plan({a: '"1"', b: '"1"'}, records, {})
    assert [type(x) for x in p.actions] == [Copy, Copy]
    assert p.actions[0].resolve and p.actions[1].retry  # type: ignore[union-attr]


def test_a_refused_update_replaces_the_older_copy_in_place():
    """The target refused a change but still holds the copy mailferry wrote before (its ETag is
    recorded): the retry is an If-Match update of that copy, not a second copy beside it."""
    b = SRC.href + "b.ics"
    refused_update = {b: rec(b, '"2"', state="refused", uid="ub")}
    assert plan({b: '"3"'}, refused_update, {TGT + "b.ics": '"t"'}).actions == [
        Update(b, '"3"', TGT + "b.ics", '"t"', "ub")
    ]
    gone_meanwhile = plan({b: '"3"'}, refused_update, {})  # the older copy is gone: copied anew
    assert isinstance(gone_meanwhile.actions[0], Copy) and gone_meanwhile.actions[0].retry


def test_deletions_only_when_asked():
    a = SRC.href + "a.ics"
    records = {a: rec(a, '"1"')}
    target = {TGT + "a.ics": '"t"'}
    assert isinstance(plan({}, records, target).actions[0], Keep)
    assert plan({}, records, target, propagate=True).actions == [Remove(a, TGT + "a.ics", '"t"')]


def test_copied_but_gone_from_the_target_is_copied_again():
    a = SRC.href + "a.ics"
    p = plan({a: '"1"'}, {a: rec(a, '"1"')}, {})
    assert isinstance(p.actions[0], Copy) and "gone from the target" in p.actions[0].reason


def test_names_are_kept_and_quoted():
    assert resource_name("/a/b/x%20y.ics") == "x y.ics"
    assert target_href_of("/t/", "/a/x%20y.ics") == "/t/x%20y.ics"
    assert collection_target_href("/dav/calendars/user/bob", "Team Room") == "/dav/calendars/user/bob/Team%20Room/"


def test_place_adopts_a_uid_the_target_holds_and_renames_around_a_taken_href():
    assert place("u1", "/t/a.ics", {"u1": "/t/zz.ics"}) == ("/t/zz.ics", True)
    assert place("u2", "/t/a.ics", {}, {"/t/a.ics"}) == ("/t/a-2.ics", False)
    assert place("u2", "/t/a.ics", {}, {"/t/a.ics", "/t/a-2.ics"}) == ("/t/a-3.ics", False)
    assert place("u3", "/t/a.ics", {}, set()) == ("/t/a.ics", False)


def test_address_map_order_case_and_domains():
    identity = [{"source_mail": "Ann@Old.example", "target_mail": "ann.smith@new.example"}]
    f = address_map(identity, {"bob@old.example": "robert@new.example"}, {"old.example": "new.example"})
    assert f("ANN@old.example") == "ann.smith@new.example"
    assert f("bob@old.example") == "robert@new.example"
    assert f("Carol@old.example") == "Carol@new.example"
    assert f("ext@elsewhere.example") is None


names = st.text(alphabet="abcxyz", min_size=1, max_size=3).map(lambda s: SRC.href + s + ".ics")
etags = st.sampled_from(['"1"', '"2"', '"3"'])


@settings(max_examples=200, deadline=None)
@given(
    first=st.dictionaries(names, etags, max_size=8),
    second=st.dictionaries(names, etags, max_size=8),
    propagate=st.booleans(),
)
def test_replanning_after_a_faithful_execution_plans_nothing(first, second, propagate):
    """Two passes over a changing source, each executed faithfully, then a third with nothing
    new: only Keep, and every source item is on the target exactly once."""
    records: dict[str, DavItemRecord] = {}
    target: dict[str, str | None] = {}
    n = 0
    for members in (first, second):
        p = plan(members, records, target, propagate=propagate)
        for a in p.actions:
            n += 1
            if isinstance(a, Copy):
                target[a.target_href] = f'"t{n}"'
                records[a.source_href] = DavItemRecord(
                    a.source_href, a.etag, a.source_href, "copied", "", a.target_href, target[a.target_href]
                )
            elif isinstance(a, Update):
                target[a.target_href] = f'"t{n}"'
                records[a.source_href] = DavItemRecord(
                    a.source_href, a.etag, a.uid, "copied", "", a.target_href, target[a.target_href]
                )
            elif isinstance(a, Remove):
                del target[a.target_href]
                del records[a.source_href]
        again = plan(members, records, target, propagate=propagate)
        assert all(isinstance(a, Keep) for a in again.actions)
        for href in members:
            assert records[href].target_href in target
        assert len(target) == len({r.target_href for r in records.values() if r.target_href in target})
