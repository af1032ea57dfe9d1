from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mailferry.model.mail import MessageMeta
from mailferry.state.ledger import MessageRecord
from mailferry.verify.compare import compare_folder

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def m(uid: int, key: str, size: int = 10, flags: tuple[str, ...] = (), when: datetime = T0) -> MessageMeta:
    return MessageMeta(uid=uid, size=size, internaldate=when, flags=flags, key=key, message_id=f"<{key}@x>")


def r(uid: int, key: str, tuid: int, state: str = "copied") -> MessageRecord:
    return MessageRecord(1, uid, key, 10, state, "copied", "T", 1, tuid, 0, ())


def cmp(source, target, records=(), **kw):
    return compare_folder(
        account="a", folder="F", target_folder="T", uidvalidity=1, source=source, target=target, records=records, **kw
    )


def kinds(v) -> list[tuple[str, int | None, int | None]]:
    return [(d.kind, d.source_uid, d.target_uid) for d in v.discrepancies]


def test_clean_when_every_message_is_there() -> None:
    v = cmp([m(1, "a"), m(2, "b")], [m(7, "a"), m(8, "b")], [r(1, "a", 7)])
    assert v.clean and kinds(v) == []


def test_missing_extra_altered_are_named_exactly() -> None:
    v = cmp([m(1, "a"), m(2, "b"), m(3, "c")], [m(7, "a", size=11), m(9, "z")], [r(1, "a", 7)])
    assert kinds(v) == [("altered", 1, 7), ("missing", 2, None), ("missing", 3, None), ("extra", None, 9)]
    assert not v.clean


def test_deep_hash_difference_is_altered() -> None:
    v = cmp([m(1, "a")], [m(7, "a")], [r(1, "a", 7)], source_hashes={1: "x"}, target_hashes={7: "y"})
    assert kinds(v) == [("altered", 1, 7)]


def test_internaldate_compared_as_instant() -> None:
    other_zone = T0.astimezone(timezone(timedelta(hours=2)))  # the same instant, written +0200
    assert other_zone.utcoffset() != T0.utcoffset()
    v = cmp([m(1, "a")], [m(7, "a", when=other_zone)], [r(1, "a", 7)])
    assert v.clean
    v = cmp([m(1, "a")], [m(7, "a", when=T0 + timedelta(seconds=1))], [r(1, "a", 7)])
    assert kinds(v) == [("date", 1, 7)]


def test_refused_and_excluded() -> None:
    v = cmp([m(1, "a"), m(2, "b")], [], [r(1, "a", 0, state="refused")], excluded=lambda x: x.uid == 2)
    assert kinds(v) == [("refused", 1, None)] and v.excluded == 1


def test_duplicates_need_two_copies() -> None:
    v = cmp([m(1, "a"), m(2, "a")], [m(7, "a")])
    assert kinds(v) == [("missing", 2, None)]
