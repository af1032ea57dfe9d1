"""The pure judge of the ``blockers`` area (mailferry.verify.blockers): facts of one account in,
checks out, one table of cases per source feature, and properties over names and sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.formats import mutf7
from mailferry.model.readiness import verdict
from mailferry.verify.blockers import (
    AccountFacts,
    AclItem,
    FolderName,
    Script,
    TargetNames,
    human,
    judge,
    name_problem,
    size_threshold,
)

CYRUS = TargetNames("Cyrus IMAP", "INBOX/", "/", "alice")
DOVECOT_SLASH = TargetNames("Dovecot", "", "/", "alice")
DOVECOT_DOTTED = TargetNames("Dovecot", "INBOX.", ".", "alice")
UNKNOWN = TargetNames("", "", "/", "alice")


def one(facts: AccountFacts) -> list:
    checks = judge(facts)
    assert all(c.area == "blockers" and c.account == facts.account for c in checks)
    assert all(c.fix for c in checks if c.status != "ok"), checks
    return checks


def statuses(facts: AccountFacts) -> list[str]:
    return [c.status for c in one(facts)]


# -- nothing to say -------------------------------------------------------------------------------


def test_a_clean_account_gets_one_ok_check_with_what_was_looked_at() -> None:
    f = AccountFacts("alice", sizes=[10, 20], appendlimit=100, keywords={"$Work"}, looked_at={"messages": 2})
    [c] = one(f)
    assert c.status == "ok" and c.subject == "source features" and "2 messages" in c.what and c.facts == {"messages": 2}


def test_nothing_looked_at_is_still_one_ok_check() -> None:
    assert statuses(AccountFacts("alice")) == ["ok"]


# -- message sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "limit", "max_size", "want"),
    [
        ([10, 20], 100, None, ["ok"]),
        ([10, 200], 100, None, ["warning"]),
        ([200, 300], 100, None, ["blocked"]),
        ([10, 200], None, 100, ["warning"]),  # the project's own rule
        ([10, 200, 50], 100, 40, ["warning", "warning"]),  # one over the limit, one over max_size only
        ([10, 200], 300, 100, ["warning"]),
        ([], 100, None, ["ok"]),
        ([100], 100, 100, ["ok"]),  # "over" means larger
    ],
)
def test_message_sizes(sizes: list[int], limit: int | None, max_size: int | None, want: list[str]) -> None:
    assert statuses(AccountFacts("a", sizes=sizes, appendlimit=limit, max_size=max_size)) == want


def test_a_message_over_the_limit_says_what_happens_and_the_fix() -> None:
    [c] = one(AccountFacts("a", sizes=[5, 12_000_000, 11_000_000, 3], appendlimit=10_000_000))
    assert c.what.startswith("2 messages over the target's limit of 10 MB") and "the largest 12 MB" in c.what
    assert "stay on the source" in c.what and "'refused'" in c.what
    assert "at least 12 MB" in c.fix and c.facts == {
        "over_limit": 2,
        "limit": 10_000_000,
        "largest": 12_000_000,
        "messages": 4,
    }


def test_messages_over_max_size_only_count_those_the_target_would_take() -> None:
    [a, b] = one(AccountFacts("a", sizes=[50, 150, 250], appendlimit=200, max_size=100))
    assert a.facts["over_limit"] == 1 and b.facts["over_max_size"] == 1 and "max_size" in b.fix


@pytest.mark.parametrize(
    ("n", "text"), [(900, "900 bytes"), (1000, "1 KB"), (1500, "1.5 KB"), (60_000, "60 KB"), (12_345_678, "12 MB")]
)
def test_human_sizes(n: int, text: str) -> None:
    assert human(n) == text


# -- keywords -------------------------------------------------------------------------------------

LONG = "$" + "k" * 59


@pytest.mark.parametrize(
    ("product", "perm", "kws", "want"),
    [
        ("Dovecot", None, {"$a", LONG}, ["warning"]),
        ("", None, {"$a", LONG}, ["warning"]),  # unknown product: Dovecot's default is likely
        ("Cyrus IMAP", None, {"$a", LONG}, ["ok"]),
        ("Dovecot", ["\\Seen", "\\*"], {"$a", "k" * 50}, ["ok"]),  # exactly 50 bytes is fine
        ("Dovecot", ["\\Seen", "$a"], {"$a", "$b"}, ["warning"]),  # no \* : $b can't be stored
        ("Dovecot", ["\\Seen", "$A"], {"$a"}, ["ok"]),  # keywords compare case-insensitively
    ],
)
def test_keywords(product: str, perm: list[str] | None, kws: set[str], want: list[str]) -> None:
    assert statuses(AccountFacts("a", keywords=kws, permanent_flags=perm, target_product=product)) == want


def test_a_long_keyword_names_the_setting_with_the_length_needed() -> None:
    [c] = one(AccountFacts("a", keywords={LONG, "$b" + "x" * 70}, target_product="Dovecot"))
    assert "mail_max_keyword_length = 72" in c.fix and LONG in c.what and c.facts["longest"] == 72


def test_a_multibyte_keyword_counts_bytes() -> None:
    kw = "$" + "é" * 30  # 61 bytes, 31 characters
    assert statuses(AccountFacts("a", keywords={kw}, target_product="Dovecot")) == ["warning"]


# -- folder names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "target", "status"),
    [
        (CYRUS, "INBOX/Projects/2024", None),
        (CYRUS, "INBOX", None),
        (CYRUS, "INBOX/" + "a" * 479, None),  # user.alice. + 479 = 490: the limit exactly
        (CYRUS, "INBOX/" + "a" * 480, "blocked"),
        (CYRUS, "INBOX/" + "/".join(["abc"] * 121), "blocked"),  # deep: the total counts, not the depth
        (CYRUS, "INBOX/Q&A; notes", "blocked"),
        (CYRUS, "INBOX/a|b", "blocked"),
        (CYRUS, "INBOX/ok.name_with-chars~*", None),
        (CYRUS, "INBOX/" + "é" * 178, None),  # &...- of 477 bytes (measured: "u0001" and 177 é accepted)
        (CYRUS, "INBOX/" + "é" * 180, "blocked"),
        (CYRUS, "INBOX/tab\there", "blocked"),
        (DOVECOT_SLASH, "a" * 255, "warning"),  # one level of 255: fine, but over Maildir++'s 254
        (DOVECOT_SLASH, "a" * 256, "blocked"),
        (DOVECOT_SLASH, "/".join(["a" * 200] * 3), "warning"),
        (DOVECOT_SLASH, "/".join(["a" * 200] * 25), "blocked"),  # over ~4000 bytes
        (DOVECOT_SLASH, "Q&A; notes", None),
        (DOVECOT_SLASH, "x" * 254, None),
        (DOVECOT_DOTTED, "INBOX." + "a" * 254, None),
        (DOVECOT_DOTTED, "INBOX." + "a" * 255, "blocked"),
        (DOVECOT_DOTTED, "INBOX." + ".".join(["abc"] * 70), "blocked"),
        (DOVECOT_SLASH, "ctl\x01", "blocked"),
        (UNKNOWN, "a" * 5000, None),  # no known limits
    ],
)
def test_name_limits(names: TargetNames, target: str, status: str | None) -> None:
    p = name_problem(target, names)
    assert (p.status if p else None) == status, p


def test_cyrus_counts_the_account_name() -> None:
    long_user = TargetNames("Cyrus IMAP", "INBOX/", "/", "a.very.long.account.name")
    assert name_problem("INBOX/" + "a" * 470, CYRUS) is None
    assert name_problem("INBOX/" + "a" * 470, long_user) is not None


def test_a_folder_the_target_refuses_blocks_the_account_and_says_why() -> None:
    f = AccountFacts(
        "a",
        folders=[FolderName("INBOX", "INBOX"), FolderName("Big", "INBOX/" + "b" * 600), FolderName("X", None)],
        names=CYRUS,
    )
    [c] = one(f)
    assert c.status == "blocked" and "fails the whole account" in c.what and c.facts == {"folders": ["Big"]}
    assert "[[folders.rename]]" in c.fix


def test_folders_not_carried_are_not_judged() -> None:
    f = AccountFacts("a", folders=[FolderName("Big", None)], names=CYRUS)
    assert statuses(f) == ["ok"]


def test_separator_substitution_is_a_warning() -> None:
    note = "component 'v1.2' contains the target separator '.': mapped to 'v1_2'"
    f = AccountFacts("a", folders=[FolderName("v1.2", "INBOX.v1_2", (note, "unrelated note"))], names=DOVECOT_DOTTED)
    [c] = one(f)
    assert c.status == "warning" and "'v1.2' → 'INBOX.v1_2'" in c.what and "unrelated" not in c.what


def test_many_folders_are_summed_up_and_all_listed_in_facts() -> None:
    folders = [FolderName(f"F{i}", "INBOX/" + f"{i}" * 500) for i in range(1, 9)]
    [c] = one(AccountFacts("a", folders=folders, names=CYRUS))
    assert "and 3 more" in c.what and len(c.facts["folders"]) == 8


# -- ACL ------------------------------------------------------------------------------------------


def test_acl_items_are_grouped_by_kind_each_with_its_fix() -> None:
    f = AccountFacts(
        "a",
        acl=[
            AclItem("acl-unmapped", "INBOX", "ghost", "lr"),
            AclItem("acl-unmapped", "Work", "spook", "lrs"),
            AclItem("acl-rights-unsupported", "Work", "carol", "lr1", left_out="1"),
        ],
    )
    unmapped, rights = one(f)
    assert unmapped.status == rights.status == "warning"
    assert unmapped.facts["kind"] == "acl-unmapped" and "ghost, spook" in unmapped.fix and "'lr'" in unmapped.what
    assert "can't grant '1'" in rights.what and rights.facts["entries"][0]["left_out"] == "1"


def test_an_empty_acl_list_is_fine() -> None:
    assert statuses(AccountFacts("a", acl=[])) == ["ok"]


# -- Sieve ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scripts", "want"),
    [
        ([Script("main", frozenset({"fileinto"}), True)], ["ok"]),
        ([Script("parts", frozenset({"foreverypart"}))], ["warning"]),
        ([Script("parts", frozenset({"foreverypart"}), True)], ["blocked"]),
        (
            [Script("a", frozenset({"editheader"})), Script("b", frozenset({"FOREVERYPART"}), True)],
            ["blocked", "warning"],
        ),
        ([], ["ok"]),
    ],
)
def test_sieve(scripts: list[Script], want: list[str]) -> None:
    f = AccountFacts("a", scripts=scripts, sieve_extensions=frozenset({"fileinto", "vacation"}))
    assert statuses(f) == want


def test_sieve_without_the_targets_extensions_says_nothing() -> None:
    assert statuses(AccountFacts("a", scripts=[Script("p", frozenset({"x"}), True)])) == ["ok"]


def test_sieve_fix_names_the_extension() -> None:
    [c] = one(
        AccountFacts("a", scripts=[Script("p", frozenset({"editheader"}))], sieve_extensions=frozenset({"fileinto"}))
    )
    assert "sieve_extensions = +editheader" in c.fix and c.facts == {
        "script": "p",
        "missing": ["editheader"],
        "active": False,
    }


# -- properties -----------------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=30), st.integers(min_value=1, max_value=10**9))
def test_size_verdict_follows_the_largest_message(sizes: list[int], limit: int) -> None:
    """ok when every message fits; blocked exactly when none does; the count is the number over."""
    checks = judge(AccountFacts("a", sizes=sizes, appendlimit=limit))
    over = [s for s in sizes if s > limit]
    if not over:
        assert [c.status for c in checks] == ["ok"]
    else:
        [c] = checks
        assert c.facts["over_limit"] == len(over) and c.facts["largest"] == max(over)
        assert c.status == ("blocked" if len(over) == len(sizes) else "warning")


@given(
    st.lists(st.integers(min_value=0, max_value=10**6), max_size=30),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
)
def test_the_sizes_over_the_threshold_judge_as_every_size(
    sizes: list[int], limit: int | None, max_size: int | None
) -> None:
    """check reads only the sizes over ``size_threshold`` (SEARCH LARGER) and the number of
    messages (STATUS): the judge says exactly what it says when given every message's size."""
    every = judge(AccountFacts("a", sizes=sizes, appendlimit=limit, max_size=max_size))
    t = size_threshold(limit, max_size)
    large = sorted((s for s in sizes if t is not None and s > t), reverse=True)
    few = judge(AccountFacts("a", sizes=large, messages=len(sizes), appendlimit=limit, max_size=max_size))
    assert [c.as_dict() for c in few] == [c.as_dict() for c in every]


def test_every_message_over_the_limit_counts_the_messages_not_the_sizes_given() -> None:
    """Two large sizes of three messages: a warning, not 'every message' (the third fits)."""
    [c] = judge(AccountFacts("a", sizes=[900, 800], messages=3, appendlimit=500))
    assert c.status == "warning" and c.facts["messages"] == 3 and c.facts["over_limit"] == 2, c
    [c] = judge(AccountFacts("a", sizes=[900, 800], messages=2, appendlimit=500))
    assert c.status == "blocked" and "every message" in c.what, c


_COMPONENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=40
)


@given(st.lists(_COMPONENT, min_size=1, max_size=20))
def test_cyrus_name_verdict_is_the_measured_rule(levels: list[str]) -> None:
    """Cyrus refuses exactly the names whose internal name is over 490 bytes or that hold one of
    its refused characters; nothing else."""
    path = "/".join(levels)
    p = name_problem("INBOX/" + path, CYRUS)
    too_long = len("user.alice.") + len(mutf7.encode(path)) > 490
    bad = any(ch in '!"%;<>\\^`{|}' for ch in path)
    assert (p is not None) == (too_long or bad)
    assert p is None or p.status == "blocked"


@given(st.lists(_COMPONENT, min_size=1, max_size=12), st.sampled_from([CYRUS, DOVECOT_SLASH, DOVECOT_DOTTED]))
def test_a_name_that_fits_stays_fitting_when_shortened(levels: list[str], names: TargetNames) -> None:
    """Dropping a level never makes a name worse: the limits are monotone in the name."""
    rank = {None: 0, "warning": 1, "blocked": 2}
    full = names.prefix + names.delimiter.join(levels)
    short = names.prefix + names.delimiter.join(levels[:-1] or levels)
    if any(names.delimiter in lv for lv in levels):
        return
    p, q = name_problem(full, names), name_problem(short, names)
    assert rank[q.status if q else None] <= rank[p.status if p else None]


@given(
    st.lists(st.integers(min_value=0, max_value=1000), max_size=5),
    st.sets(st.text(min_size=1, max_size=70).map(lambda t: "$" + t), max_size=5),
    st.lists(st.tuples(st.sampled_from(["x", "fileinto", "editheader"]), st.booleans()), max_size=3),
)
def test_ok_is_said_alone_or_not_at_all(sizes: list[int], kws: set[str], scripts: list[tuple[str, bool]]) -> None:
    """An account gets either its one ok check or only the blockers found, and its verdict is
    blocked exactly when a blocked check is among them."""
    f = AccountFacts(
        "a",
        sizes=sizes,
        appendlimit=500,
        keywords=kws,
        target_product="Dovecot",
        scripts=[Script(f"s{i}", frozenset({r}), a) for i, (r, a) in enumerate(scripts)],
        sieve_extensions=frozenset({"fileinto"}),
    )
    got = [c.status for c in judge(f)]
    assert got == ["ok"] or "ok" not in got
    active_missing = any(a and r != "fileinto" for r, a in scripts)
    every_over = bool(sizes) and all(s > 500 for s in sizes)
    assert (verdict(got) == "blocked") == (active_missing or every_over)


def test_a_folder_landing_in_the_targets_shared_namespace_is_a_warning() -> None:
    rule = "lands in the target's shared namespace 'Public/' as 'Public/x'"
    f = AccountFacts("a", folders=[FolderName("Public/x", None, (), rule), FolderName("Other", None, (), "excluded")])
    [c] = one(f)
    assert c.status == "warning" and c.facts == {"folders": ["Public/x"]} and "folder-in-shared-namespace" in c.what


def test_the_shared_namespace_rule_is_the_mail_engines_words() -> None:
    from mailferry.engine.migrate import SHARED_CLASH as ENGINE
    from mailferry.verify.blockers import SHARED_CLASH

    assert SHARED_CLASH == ENGINE


@pytest.mark.parametrize(
    ("product", "counts", "want"),
    [
        ("Cyrus IMAP", {"INBOX": 129, "Work": 3}, ["warning"]),
        ("Cyrus IMAP", {"INBOX": 128, "Work": 128}, ["ok"]),  # per folder, not per account
        ("Dovecot", {"INBOX": 500}, ["ok"]),
    ],
)
def test_cyrus_holds_128_keywords_a_folder(product: str, counts: dict[str, int], want: list[str]) -> None:
    f = AccountFacts("a", keywords={"$a"}, folder_keywords=counts, target_product=product)
    checks = one(f)
    assert [c.status for c in checks] == want
    if want == ["warning"]:
        assert checks[0].facts == {"folders": ["INBOX"], "most": 129, "limit": 128}


def test_calendar_components_outside_the_targets_set() -> None:
    from mailferry.verify.blockers import calendar_components

    assert calendar_components("ann", "Work", (), {"VTODO": 3}) == []  # no set declared: takes all
    assert calendar_components("ann", "Work", ("VEVENT", "VTODO"), {"VEVENT": 2, "VTODO": 1}) == []
    [c] = calendar_components("ann", "Work", ("VEVENT",), {"VEVENT": 2, "VTODO": 2, "VJOURNAL": 1})
    assert "1 journal entry, 2 tasks would go into" in c.what and c.facts["outside"] == {"VJOURNAL": 1, "VTODO": 2}
