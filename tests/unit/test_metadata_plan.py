"""Folder METADATA (RFC 5464): the plan (plan/metadata.py) and its verification."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailferry.plan.acl import Recorded
from mailferry.plan.metadata import ENTRIES, MetadataSkip, SetMetadata, digest, metadata_key, plan_metadata
from mailferry.verify.metadata import compare_metadata

FOLDERS: dict[str, str | None] = {"INBOX": "INBOX", "Team": "INBOX/Team", "Junk": None}


def apply(actions: list, recorded: dict[str, Recorded]) -> dict[str, Recorded]:
    out = dict(recorded)
    for a in actions:
        if isinstance(a, SetMetadata):
            if a.value is None:
                out.pop(a.key, None)
            else:
                out[a.key] = Recorded(digest(a.value), a.target, "set")
    return out


def test_set_change_remove_and_nothing_twice() -> None:
    source = {
        "Team": {"/shared/comment": "Équipe".encode(), "/private/comment": None},
        "Junk": {"/shared/comment": b"x"},
    }
    first = plan_metadata(source, FOLDERS, {}, target_supported=True)
    assert [(a.target_folder, a.entry, a.value) for a in first] == [
        ("INBOX/Team", "/shared/comment", "Équipe".encode())
    ]
    recorded = apply(first, {})
    assert plan_metadata(source, FOLDERS, recorded, target_supported=True) == []
    removed = {"Team": {"/shared/comment": None, "/private/comment": None}}
    (a,) = plan_metadata(removed, FOLDERS, recorded, target_supported=True)
    assert isinstance(a, SetMetadata) and a.value is None
    refused = {
        metadata_key("Team", "/private/comment"): Recorded(digest(b"p"), "INBOX/Team\0/private/comment", "refused")
    }
    assert plan_metadata({"Team": {"/private/comment": None}}, FOLDERS, refused, target_supported=True) == []


def test_target_without_metadata_is_a_finding() -> None:
    (a,) = plan_metadata({"INBOX": {"/shared/comment": b"c"}}, FOLDERS, {}, target_supported=False)
    assert isinstance(a, MetadataSkip) and a.finding == "metadata-unsupported"


values = st.none() | st.binary(min_size=1, max_size=8)
source_st = st.dictionaries(
    st.sampled_from(["INBOX", "Team", "Junk"]), st.fixed_dictionaries({e: values for e in ENTRIES})
)


@given(source_st, source_st)
def test_replanning_after_a_pass_writes_nothing(before: dict, after: dict) -> None:
    recorded = apply(plan_metadata(before, FOLDERS, {}, target_supported=True), {})
    recorded = apply(plan_metadata(after, FOLDERS, recorded, target_supported=True), recorded)
    assert plan_metadata(after, FOLDERS, recorded, target_supported=True) == []


def test_compare_names_each_difference() -> None:
    source = {"Team": {"/shared/comment": b"a", "/private/comment": None}, "Junk": {"/shared/comment": b"j"}}
    target = {"INBOX/Team": {"/shared/comment": b"b", "/private/comment": b"p"}}
    diffs = [(d.entry, d.source_value, d.target_value) for d in compare_metadata(source, target, FOLDERS)]
    assert diffs == [("/private/comment", "", "p"), ("/shared/comment", "a", "b")]
    assert compare_metadata(source, {"INBOX/Team": {"/shared/comment": b"a"}}, FOLDERS) == []
