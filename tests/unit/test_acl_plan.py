"""ACL rights and identifiers (formats/acl.py), the permissions plan (plan/acl.py) and its
verification (verify/acl.py): tables of cases and Hypothesis properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.formats.acl import (
    ORDER,
    RFC2086,
    STANDARD,
    Identifier,
    TargetRights,
    format_identifier,
    parse_identifier,
    parse_listrights,
    parse_myrights,
    parse_rights,
    rights_text,
    target_rights,
    to_target,
    words,
)
from mailferry.plan.acl import AclContext, AclSkip, DeleteAcl, Recorded, SetAcl, acl_key, needs_target, plan_acl
from mailferry.verify.acl import compare_acl

CYRUS = TargetRights(True, frozenset("lrswipkxtean0123456789"))
DOVECOT = TargetRights(True, frozenset("lrwstipekxa"))


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("lrs", "lrs"),
        ("lrswipkxtecdan", "lrswipkxtean"),  # Cyrus: c and d echo k x t e
        ("lrwstipekxacd", "lrswipkxtea"),  # Dovecot's owner
        ("lrc", "lrkx"),  # RFC 2086 create: k and x (Cyrus stores 'lrc' as 'lrkxc')
        ("lrd", "lrte"),  # RFC 2086 delete: t and e
        ("lrkc", "lrk"),  # a new letter is there: c is only an echo
        ("", ""),
        ("lrq", "lrq"),  # unknown letters are kept, to be named
    ],
)
def test_parse_rights(raw: str, want: str) -> None:
    assert rights_text(parse_rights(raw)) == want


@pytest.mark.parametrize(
    ("rights", "target", "sent", "left"),
    [
        ("lrswite", DOVECOT, "lrswite", ""),
        ("lrswipkxtean1", DOVECOT, "lrswipkxtea", "n1"),  # Dovecot has no n and no site rights
        ("lrte", RFC2086, "lrd", ""),
        ("lrt", RFC2086, "lr", "t"),  # d would grant e too: left out, never widened
        ("lrkx", RFC2086, "lrc", ""),
        ("lrk", RFC2086, "lr", "k"),
        ("lrk", TargetRights(True, frozenset("lrkx"), (frozenset("kx"),)), "lr", "k"),  # k only with x
        ("lrkx", TargetRights(True, frozenset("lrkx"), (frozenset("kx"),)), "lrkx", ""),
    ],
)
def test_to_target(rights: str, target: TargetRights, sent: str, left: str) -> None:
    assert to_target(parse_rights(rights), target) == (sent, frozenset(left))


def test_target_rights_from_servers() -> None:
    dovecot = target_rights(["IMAP4rev1", "ACL", "RIGHTS=texk"], ["", *"lrwstpiekxacd"])
    assert dovecot.rfc4314 and dovecot.known == frozenset(STANDARD) and not dovecot.tied
    cyrus = target_rights(["ACL", "RIGHTS=kxten"], ["", *"lrswipkxtecdan0123456789"])
    assert cyrus.known == frozenset(ORDER)
    owner = target_rights(["ACL", "RIGHTS=kxten"], ["lkxca", "r", "s"])  # what the owner always has
    assert owner.tied == () and {"k", "x"} <= owner.known
    tied = target_rights(["ACL"], ["", "l", "r", "kx", "te"])
    assert tied.rfc4314 and tied.tied == (frozenset("kx"), frozenset("te"))
    assert target_rights(["ACL"], None) == RFC2086


def test_response_parsing_on_raw_bytes() -> None:
    assert parse_listrights(b'Calendar bob "" l r w s t p i e k x a c d') == (
        "Calendar",
        "bob",
        ["", *"lrwstpiekxacd"],
    )
    assert parse_listrights(b'"Team \\"A\\"" $team lkxca r') == ('Team "A"', "$team", ["lkxca", "r"])
    assert parse_myrights(b"INBOX/Calendar lrswitde") == ("INBOX/Calendar", "lrswitde")
    assert words(b'"a b" c') == ["a b", "c"]
    with pytest.raises(ValueError):
        parse_listrights(b"INBOX")
    with pytest.raises(ValueError):
        parse_myrights(b"INBOX")


@pytest.mark.parametrize(
    ("raw", "ident", "dovecot", "cyrus"),
    [
        ("bob", Identifier("user", "bob"), "bob", "bob"),
        ("-bob", Identifier("user", "bob", True), "-bob", "-bob"),
        ("anyone", Identifier("anyone"), "anyone", "anyone"),
        ("Authenticated", Identifier("authenticated"), "authenticated", "authenticated"),
        ("$team", Identifier("group", "team"), "$team", "group:team"),
        ("group:team", Identifier("group", "team"), "$team", "group:team"),
        ("group=team", Identifier("group", "team"), "$team", "group:team"),
        ("-$team", Identifier("group", "team", True), "-$team", "-group:team"),
    ],
)
def test_identifiers(raw: str, ident: Identifier, dovecot: str, cyrus: str) -> None:
    assert parse_identifier(raw) == ident
    assert format_identifier(ident, "dovecot") == dovecot
    assert format_identifier(ident, "cyrus") == cyrus
    assert (format_identifier(ident, "rfc") is None) == (ident.kind == "group")


rights_st = st.frozensets(st.sampled_from(ORDER + "cdq"))
target_st = st.builds(
    TargetRights,
    st.booleans(),
    st.frozensets(st.sampled_from(ORDER + "cd")),
    st.lists(st.frozensets(st.sampled_from(ORDER), min_size=2, max_size=3), max_size=2).map(tuple),
)


@given(rights_st, target_st)
def test_translation_never_widens(raw: frozenset[str], target: TargetRights) -> None:
    rights = parse_rights("".join(raw))
    sent, left = to_target(rights, target)
    granted = parse_rights(sent)
    assert granted <= rights  # never more than the source had
    assert granted | left == rights and not granted & left  # all accounted for
    for group in target.tied if target.rfc4314 else ():
        assert not (granted & group) or group <= rights  # a tie is granted only when all of it was asked


@given(rights_st)
def test_rights_round_trip(raw: frozenset[str]) -> None:
    rights = parse_rights("".join(raw))
    assert parse_rights(rights_text(rights)) == rights


@given(
    st.sampled_from(["user", "group", "anyone", "authenticated", "anonymous"]),
    st.from_regex(r"[a-z][a-z0-9.]{0,8}", fullmatch=True),
    st.booleans(),
)
def test_identifier_round_trip(kind: str, name: str, negative: bool) -> None:
    ident = Identifier(kind, name if kind in ("user", "group") else "", negative)  # type: ignore[arg-type]
    if kind == "user" and name in ("anyone", "authenticated", "anonymous"):
        return
    for dialect in ("dovecot", "cyrus"):
        assert parse_identifier(format_identifier(ident, dialect) or "") == ident  # type: ignore[arg-type]


# -- the plan -------------------------------------------------------------------------------------

ACCOUNTS = {"alice": "alice", "bob": "bob.t", "carol": "carol"}


def ctx(target: TargetRights | None = CYRUS, folders: dict[str, str | None] | None = None) -> AclContext:
    return AclContext(
        owner="alice",
        target_owner="alice",
        folders=folders if folders is not None else {"INBOX": "INBOX", "Calendar": "INBOX/Calendar", "Junk": None},
        principals=ACCOUNTS.get,
        groups=lambda g: g,
        target=target,
        dialect="cyrus",
    )


SOURCE = {
    "INBOX": {"alice": "lrwstipekxacd", "bob": "lrs"},
    "Calendar": {"alice": "lrwstipekxacd", "carol": "lrwstied", "$team": "lrswi", "-bob": "w", "ghost": "lr"},
    "Junk": {"carol": "lr"},
}


def writes(actions: list) -> list:
    return [a for a in actions if isinstance(a, SetAcl | DeleteAcl)]


def apply(actions: list, recorded: dict[str, Recorded]) -> dict[str, Recorded]:
    """The ledger after the engine did ``actions``."""
    out = dict(recorded)
    for a in actions:
        if isinstance(a, SetAcl):
            out[a.key] = Recorded(a.source_rights, a.target, "set")
        elif isinstance(a, DeleteAcl):
            out.pop(a.key, None)
    return out


def test_plan_translates_and_skips_with_reasons() -> None:
    actions = plan_acl(SOURCE, ctx(), {})
    sets = {(a.target_folder, a.identifier, a.rights) for a in actions if isinstance(a, SetAcl)}
    assert sets == {
        ("INBOX", "bob.t", "lrs"),
        ("INBOX/Calendar", "carol", "lrswite"),
        ("INBOX/Calendar", "group:team", "lrswi"),
        ("INBOX/Calendar", "-bob.t", "w"),
    }
    skips = {(a.source_folder, a.source_identifier): a.finding for a in actions if isinstance(a, AclSkip)}
    assert skips == {("Calendar", "ghost"): "acl-unmapped", ("Junk", "carol"): None}  # the owner's default: no action


def test_target_without_acl_and_unsupported_rights_are_findings() -> None:
    none = plan_acl(SOURCE, ctx(target=None), {})
    assert not writes(none)
    assert {a.finding for a in none if isinstance(a, AclSkip) and a.source_folder != "Junk"} == {"acl-unsupported"}
    nothing = TargetRights(True, frozenset("a"))
    only = plan_acl({"INBOX": {"bob": "lrs"}}, ctx(target=nothing), {})
    assert [(type(a), a.finding) for a in only if isinstance(a, AclSkip)] == [(AclSkip, "acl-rights-unsupported")]
    partial = plan_acl({"INBOX": {"bob": "lrs1"}}, ctx(target=DOVECOT), {})
    assert [(a.rights, a.left_out) for a in partial if isinstance(a, SetAcl)] == [("lrs", "1")]


def test_an_entry_of_the_servers_global_acl_is_a_finding_not_a_user() -> None:
    """Dovecot shows the entries of its global ACL file as '#id': configuration no SETACL can
    make, not a user named '#publisher' missing from the identity map."""
    actions = plan_acl({"INBOX": {"#publisher": "lrswipkxtea", "bob": "lr"}}, ctx(), {})
    skips = [(a.source_identifier, a.finding) for a in actions if isinstance(a, AclSkip)]
    assert skips == [("#publisher", "acl-global")]
    assert [(a.identifier, a.rights) for a in writes(actions)] == [("bob.t", "lr")]


def test_owner_with_fewer_rights_is_carried() -> None:
    (a,) = plan_acl({"INBOX": {"alice": "lrs"}}, ctx(), {})
    assert isinstance(a, SetAcl) and (a.identifier, a.rights) == ("alice", "lrs")


def test_second_plan_writes_nothing_and_changes_are_carried() -> None:
    first = plan_acl(SOURCE, ctx(), {})
    recorded = apply(first, {})
    assert writes(plan_acl(SOURCE, ctx(), recorded)) == []
    assert not needs_target(SOURCE, ctx(target=None), recorded)
    changed = {**SOURCE, "INBOX": {"alice": "lrwstipekxacd"}, "Calendar": {**SOURCE["Calendar"], "carol": "lrs"}}
    delta = writes(plan_acl(changed, ctx(), recorded))
    assert needs_target(changed, ctx(target=None), recorded)
    assert [(type(a).__name__, a.identifier) for a in delta] == [("SetAcl", "carol"), ("DeleteAcl", "bob.t")]


def test_only_what_mailferry_set_is_deleted() -> None:
    recorded = apply(plan_acl(SOURCE, ctx(), {}), {})
    refused = {acl_key("INBOX", "dave"): Recorded("lr", "INBOX\0dave\0lr", "refused")}
    gone = {"INBOX": {}, "Calendar": {}, "Junk": {}}
    deletes = [a for a in plan_acl(gone, ctx(), recorded | refused) if isinstance(a, DeleteAcl)]
    assert {a.identifier for a in deletes} == {"bob.t", "carol", "group:team", "-bob.t"}  # never dave: refused
    # A folder whose ACL could not be read this pass keeps its entries.
    unread = plan_acl({"INBOX": {}}, ctx(), recorded, unreadable=frozenset({"Calendar"}))
    assert {a.identifier for a in unread if isinstance(a, DeleteAcl)} == {"bob.t"}


def test_identity_change_deletes_the_old_entry_first() -> None:
    recorded = apply(plan_acl({"INBOX": {"bob": "lrs"}}, ctx(), {}), {})
    moved = AclContext(
        owner="alice",
        target_owner="alice",
        folders={"INBOX": "INBOX"},
        principals={"bob": "robert"}.get,
        groups=lambda g: g,
        target=CYRUS,
        dialect="cyrus",
    )
    actions = writes(plan_acl({"INBOX": {"bob": "lrs"}}, moved, recorded))
    assert [(type(a).__name__, a.identifier) for a in actions] == [("DeleteAcl", "bob.t"), ("SetAcl", "robert")]


acl_st = st.dictionaries(
    st.sampled_from(["INBOX", "Calendar", "Junk"]),
    st.dictionaries(
        st.sampled_from(["alice", "bob", "-bob", "carol", "$team", "ghost", "anyone"]), rights_st.map("".join)
    ),
)


@given(acl_st, acl_st, target_st)
def test_replanning_after_a_pass_writes_nothing(before: dict, after: dict, target: TargetRights) -> None:
    """Whatever the source held before and holds now: after one pass carried the change, the
    next plan has nothing to write; and no plan ever sets rights beyond the source's."""
    c = ctx(target=target)
    recorded = apply(plan_acl(before, c, {}), {})
    actions = plan_acl(after, c, recorded)
    for a in actions:
        if isinstance(a, SetAcl):
            source = after[a.source_folder][a.source_identifier]
            assert parse_rights(a.rights) <= parse_rights(source)
    assert writes(plan_acl(after, c, apply(actions, recorded))) == []


# -- verify ---------------------------------------------------------------------------------------


def test_compare_names_every_difference() -> None:
    target = {
        "INBOX": {"alice": "lrswipkxtecdan", "bob.t": "lrs"},
        "INBOX/Calendar": {"alice": "lrswipkxtecdan", "carol": "lrs", "dave": "lr", "-bob.t": "w"},
    }
    diffs = {(d.target_folder, d.identifier, d.kind) for d in compare_acl(SOURCE, target, ctx())}
    assert diffs == {
        ("INBOX/Calendar", "carol", "rights"),
        ("INBOX/Calendar", "group:team", "missing"),
        ("INBOX/Calendar", "dave", "extra"),
    }
    exact = {
        "INBOX": {"alice": "lrswipkxtecdan", "bob.t": "lrs"},
        "INBOX/Calendar": {"alice": "lrswipkxtecdan", "carol": "lrswitde", "group:team": "lrswi", "-bob.t": "w"},
    }
    assert compare_acl(SOURCE, exact, ctx()) == []
    weak_owner = {**exact, "INBOX": {"alice": "lrs", "bob.t": "lrs"}}
    assert [(d.identifier, d.kind) for d in compare_acl(SOURCE, weak_owner, ctx())] == [("alice", "owner")]


# -- the project file -----------------------------------------------------------------------------


def test_project_file_renames_groups(tmp_path: Path) -> None:
    from mailferry.config import load_project
    from mailferry.errors import ConfigError

    (tmp_path / "accounts.csv").write_text(
        "source_user,target_user,source_password,target_password\nalice,alice,env:A,env:B\n"
    )
    base = (
        '[project]\nname = "x"\n[accounts]\ncsv = "accounts.csv"\n'
        '[source]\nhost = "127.0.0.1"\nsecurity = "none"\n[target]\nhost = "127.0.0.1"\nsecurity = "none"\n'
    )
    path = tmp_path / "p.toml"
    path.write_text(base + '[permissions.groups]\n"staff" = "team"\n')
    assert dict(load_project(path).acl_groups) == {"staff": "team"}
    path.write_text(base)
    assert dict(load_project(path).acl_groups) == {}
    path.write_text(base + '[permissions.groups]\n"staff" = 3\n')
    with pytest.raises(ConfigError, match="group name"):
        load_project(path)


@given(acl_st, acl_st, st.integers(min_value=0, max_value=30))
def test_an_interrupted_pass_ends_as_an_uninterrupted_one(before: dict, after: dict, cut: int) -> None:
    """The engine writes, then records: killed after any action, the next pass re-plans from
    the records and ends with the same records as a pass that was never interrupted."""
    c = ctx(target=CYRUS)
    recorded = apply(plan_acl(before, c, {}), {})
    actions = plan_acl(after, c, recorded)
    whole = apply(actions, recorded)
    resumed = apply(actions[:cut], recorded)
    resumed = apply(plan_acl(after, c, resumed), resumed)
    assert resumed == whole


def test_a_denial_the_target_cant_carry_whole_keeps_the_folders_grants_back() -> None:
    """`authenticated` may do everything but bob may not delete the folder (-bob x). On an RFC
    2086 target `x` alone has no letter: the denial can't be carried, and the grant alone would
    let bob delete it. No grant of that folder is set; the owner's and other folders' are."""
    rfc2086 = TargetRights(False, frozenset("lrswipcda"))
    source = {"INBOX": {"authenticated": "lrswipkxte", "-bob": "x", "carol": "lr"}, "Other": {"carol": "lr"}}
    actions = plan_acl(source, ctx(target=rfc2086, folders={"INBOX": "INBOX", "Other": "Other"}), {})
    assert [(a.target_folder, a.identifier) for a in writes(actions)] == [("Other", "carol")]
    findings = {a.source_identifier: a.finding for a in actions if isinstance(a, AclSkip)}
    assert findings["authenticated"] == findings["carol"] == "acl-negative-uncarried"


def test_negative_entries_are_written_before_the_grants_they_narrow() -> None:
    actions = plan_acl({"INBOX": {"$team": "lrs", "-bob": "s", "anyone": "l"}}, ctx(), {})
    assert [a.identifier for a in writes(actions)][0] == "-bob.t"
