"""Folder-name translation: tables of cases and Hypothesis properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailferry.formats.folders import (
    OUTSIDE,
    FolderMapping,
    Rules,
    RulesError,
    Side,
    canonical_path,
    canonical_use,
    guess_special_use,
    join_path,
    map_all,
    map_folder,
    parse_canonical_path,
    split_path,
)

CYRUS = Side("INBOX.", ".")  # Cyrus / Courier: personal namespace under INBOX.
DOVECOT = Side("", "/")  # Dovecot with the default layout (LAYOUT=fs)
DOVECOT_DOT = Side("", ".")  # Dovecot maildir++ without a prefix
SHARED = Side("", "/", outside=("Shared/", "Other Users/"))
FLAT = Side("", "")  # LIST answered NIL as delimiter

SIDES = [CYRUS, DOVECOT, DOVECOT_DOT, Side("INBOX/", "/"), Side("Mail/", "/"), FLAT]


# --------------------------------------------------------------------------- split / join


SPLIT = [
    (CYRUS, "INBOX", ["INBOX"]),
    (CYRUS, "inbox", ["INBOX"]),
    (CYRUS, "INBOX.Projects.2024", ["Projects", "2024"]),
    (CYRUS, "Inbox.Projects", ["Projects"]),  # INBOX. prefix is case-insensitive
    (CYRUS, "INBOX.a/b", ["a/b"]),
    (CYRUS, "user.bob.Sent", [OUTSIDE, "user", "bob", "Sent"]),  # other users' namespace
    (CYRUS, "shared.news", [OUTSIDE, "shared", "news"]),
    (DOVECOT, "INBOX", ["INBOX"]),
    (DOVECOT, "InBox", ["INBOX"]),
    (DOVECOT, "INBOX/x", ["INBOX", "x"]),
    (DOVECOT, "Projects/2024", ["Projects", "2024"]),
    (DOVECOT, "a.b", ["a.b"]),
    (DOVECOT_DOT, "a/b.c", ["a/b", "c"]),
    (SHARED, "Shared/team/x", [OUTSIDE, "Shared", "team", "x"]),
    (SHARED, "Other Users/bob", [OUTSIDE, "Other Users", "bob"]),
    (SHARED, "Sharedx/y", ["Sharedx", "y"]),
    (Side("Mail/", "/"), "Mail/x", ["x"]),
    (Side("Mail/", "/"), "mail/x", [OUTSIDE, "mail", "x"]),  # only an INBOX prefix ignores case
    (FLAT, "a/b.c", ["a/b.c"]),
]


@pytest.mark.parametrize(("side", "name", "components"), SPLIT)
def test_split_path(side: Side, name: str, components: list[str]) -> None:
    assert split_path(name, side) == components


JOIN = [
    (CYRUS, ["INBOX"], "INBOX"),
    (CYRUS, ["inbox"], "INBOX"),
    (CYRUS, ["Projects", "2024"], "INBOX.Projects.2024"),
    (CYRUS, ["INBOX", "x"], "INBOX.x"),  # a child of INBOX on a prefix-less source: collides with ["x"]
    (CYRUS, ["x"], "INBOX.x"),
    (CYRUS, [OUTSIDE, "user", "bob"], "user.bob"),
    (DOVECOT, ["INBOX", "x"], "INBOX/x"),
    (DOVECOT, ["Projects", "2024"], "Projects/2024"),
    (Side("Mail/", "/"), ["x", "y"], "Mail/x/y"),
    (FLAT, ["x"], "x"),
]


@pytest.mark.parametrize(("side", "components", "name"), JOIN)
def test_join_path(side: Side, components: list[str], name: str) -> None:
    assert join_path(components, side) == name


@pytest.mark.parametrize(("side", "components"), [(DOVECOT, []), (FLAT, ["a", "b"])])
def test_join_path_refuses(side: Side, components: list[str]) -> None:
    with pytest.raises(ValueError):
        join_path(components, side)


def test_canonical_path() -> None:
    assert canonical_path(["Projects", "2024"]) == "Projects/2024"
    assert canonical_path([OUTSIDE, "user", "bob"]) == "/user/bob"
    assert parse_canonical_path("/user/bob") == [OUTSIDE, "user", "bob"]
    assert parse_canonical_path("Projects/2024") == ["Projects", "2024"]


def component(delimiter: str) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=8).filter(
        lambda c: (not delimiter or delimiter not in c) and OUTSIDE not in c and c.upper() != "INBOX"
    )


@st.composite
def side_and_components(draw: st.DrawFn) -> tuple[Side, list[str]]:
    side = draw(st.sampled_from(SIDES))
    size = 1 if not side.delimiter else draw(st.integers(1, 4))
    return side, draw(st.lists(component(side.delimiter), min_size=size, max_size=size))


@given(side_and_components())
def test_split_join_round_trip(case: tuple[Side, list[str]]) -> None:
    side, comps = case
    name = join_path(comps, side)
    assert split_path(name, side) == comps
    assert join_path(split_path(name, side), side) == name


@given(st.sampled_from(SIDES), st.text().filter(lambda t: "\x00" not in t))  # NUL: never in IMAP names
def test_join_split_round_trip_on_any_name(side: Side, name: str) -> None:
    comps = split_path(name, side)
    # Known, documented exceptions: INBOX in another case; on an INBOX. side, the prefix in
    # another case and a first component INBOX (INBOX.INBOX.x).
    assume(name.upper() != "INBOX" or name == "INBOX")
    if side.delimiter and side.prefix.upper() == ("INBOX" + side.delimiter).upper():
        head = name[: len(side.prefix)]
        assume(head == side.prefix or head.upper() != side.prefix.upper())
        assume(comps[0].upper() != "INBOX")
    assert join_path(comps, side) == name


@given(
    st.lists(
        component("/").filter(lambda c: "." not in c and guess_special_use(c) is None and c.isprintable()),
        min_size=1,
    )
)
def test_translation_there_and_back(comps: list[str]) -> None:
    name = "INBOX." + ".".join(comps)
    there = map_folder(name, None, CYRUS, DOVECOT)
    assert there.target == "/".join(comps)
    back = map_folder(there.target, None, DOVECOT, CYRUS)
    assert back.target == name
    assert there.notes == back.notes == ()


def test_translation_example() -> None:
    there = map_folder("INBOX.Projects.2024", None, CYRUS, DOVECOT)
    assert there == FolderMapping(
        "INBOX.Projects.2024", "Projects/2024", "namespace translation INBOX. → (none), '.' → '/'", ()
    )
    assert map_folder("Projects/2024", None, DOVECOT, CYRUS).target == "INBOX.Projects.2024"


@given(
    st.lists(st.text(st.sampled_from("ab./_ "), min_size=1, max_size=5), min_size=1, max_size=4),
    st.sampled_from([(CYRUS, DOVECOT), (DOVECOT, CYRUS), (DOVECOT_DOT, DOVECOT), (DOVECOT, DOVECOT_DOT)]),
)
def test_target_separator_never_splits(raw: list[str], sides: tuple[Side, Side]) -> None:
    src, dst = sides
    comps = [c.replace(src.delimiter, "") or "x" for c in raw]
    assume(not any(c.strip().casefold() in {"inbox"} for c in comps))
    assume(guess_special_use(comps[0]) is None)
    m = map_folder(join_path(comps, src), None, src, dst)
    assert m.target is not None
    assert len(split_path(m.target, dst)) == len(comps)
    if any(dst.delimiter in c for c in comps):
        assert any("contains the target separator" in n for n in m.notes)


# --------------------------------------------------------------------------- notes and rules


def test_separator_note_text() -> None:
    m = map_folder("INBOX.a/b", None, CYRUS, DOVECOT)
    assert m.target == "a_b"
    assert m.notes == ("component 'a/b' contains the target separator '/': mapped to 'a_b'",)


def test_separator_substitute_is_configurable() -> None:
    assert map_folder("INBOX.a/b", None, CYRUS, DOVECOT, Rules(separator_substitute="·")).target == "a·b"


def test_substitute_holding_the_delimiter_falls_back() -> None:
    m = map_folder("INBOX.a/b", None, CYRUS, DOVECOT, Rules(separator_substitute="/"))
    assert m.target == "a_b"


def test_excluded_folder_has_no_target_and_names_the_rule() -> None:
    rules = Rules(exclude=(r"^Junk$", r"^Archive/"))
    m = map_folder("INBOX.Junk", "\\Junk", CYRUS, DOVECOT, rules)
    assert m.target is None
    assert m.rule == "excluded by rule: ^Junk$"
    assert map_folder("INBOX.Archive.2020", None, CYRUS, DOVECOT, rules).rule == "excluded by rule: ^Archive/"
    assert map_folder("INBOX.Archives", None, CYRUS, DOVECOT, rules).target == "Archive"


def test_include_rules() -> None:
    rules = Rules(include=(r"^INBOX$", r"^Projects(/|$)"))
    assert map_folder("INBOX", None, CYRUS, DOVECOT, rules).target == "INBOX"
    assert map_folder("INBOX.Projects.x", None, CYRUS, DOVECOT, rules).target == "Projects/x"
    skipped = map_folder("INBOX.Other", None, CYRUS, DOVECOT, rules)
    assert skipped.target is None
    assert "include" in skipped.rule


def test_rules_see_the_path_after_separator_substitution() -> None:
    m = map_folder("INBOX.a/b", None, CYRUS, DOVECOT, Rules(exclude=("^a_b$",)))
    assert m.target is None


def test_rename_first_match_wins_with_groups() -> None:
    rules = Rules(rename=((r"Old/(.*)", r"Archive/\1"), (r"Old/x", "Never"), (r"(?P<y>\d{4})", r"Years/\g<y>")))
    m = map_folder("INBOX.Old.x.y", None, CYRUS, DOVECOT, rules)
    assert (m.target, m.rule) == ("Archive/x/y", "rename rule 1: Old/(.*)")
    assert map_folder("2024", None, DOVECOT, CYRUS, rules).target == "INBOX.Years.2024"


def test_rename_uses_fullmatch() -> None:
    rules = Rules(rename=(("Old", "New"),))
    assert map_folder("Old", None, DOVECOT, DOVECOT, rules).target == "New"
    assert map_folder("Older", None, DOVECOT, DOVECOT, rules).target == "Older"


def test_rename_result_gets_separator_substitution() -> None:
    rules = Rules(rename=(("x", "a.b/c"),))
    m = map_folder("x", None, DOVECOT, CYRUS, rules)
    assert m.target == "INBOX.a_b.c"
    assert any("'a.b'" in n for n in m.notes)


def test_rename_to_empty_level_is_ignored_with_a_note() -> None:
    rules = Rules(rename=(("x", ""), ("x", "a//b"), ("x", "y")))
    m = map_folder("x", None, DOVECOT, DOVECOT, rules)
    assert (m.target, m.rule) == ("y", "rename rule 3: x")
    assert len(m.notes) == 2


def test_rules_report_every_problem_at_once() -> None:
    with pytest.raises(RulesError) as info:
        Rules(include=("(",), exclude=("[",), rename=(("a", r"\2"), ("(?P<n>a)", r"\g<m>")))
    assert len(info.value.problems) == 4
    assert isinstance(info.value, ValueError)


def test_rules_and_sides_are_values() -> None:
    assert Rules(exclude=("a",)) == Rules(exclude=("a",))
    assert hash(Rules()) == hash(Rules())
    special = {"\\sent": "Sent"}
    side = Side("", "/", special)
    special["\\trash"] = "Trash"
    assert dict(side.special) == {"\\Sent": "Sent"}  # canonical case, not aliased
    assert side == Side("", "/", {"\\SENT": "Sent"})
    assert hash(side) == hash(Side("", "/"))


# --------------------------------------------------------------------------- special use


@pytest.mark.parametrize(
    ("attr", "use"),
    [
        ("\\Sent", "\\Sent"),
        ("\\sent", "\\Sent"),
        ("\\SENT", "\\Sent"),
        ("\\drafts", "\\Drafts"),
        ("\\trash", "\\Trash"),
        ("\\junk", "\\Junk"),
        ("\\archive", "\\Archive"),
        ("\\all", "\\All"),
        ("\\flagged", "\\Flagged"),
        (" \\Sent ", "\\Sent"),
        ("\\HasChildren", None),
        ("\\Noselect", None),
        ("Sent", None),
        ("", None),
    ],
)
def test_canonical_use(attr: str, use: str | None) -> None:
    assert canonical_use(attr) == use


GUESSES = {
    "\\Sent": [
        "Sent",
        "Sent Items",
        "Sent Messages",
        "Sent Mail",
        "Gesendet",
        "Gesendete Elemente",
        "Gesendete Objekte",
        "Envoyés",
        "Éléments envoyés",
        "Messages envoyés",
        "Enviados",
        "Elementos enviados",
        "Posta inviata",
        "Inviata",
        "Verzonden items",
        "Verzonden",
        "Itens enviados",
    ],
    "\\Drafts": ["Drafts", "Entwürfe", "Brouillons", "Borradores", "Bozze", "Concepten", "Rascunhos"],
    "\\Trash": [
        "Trash",
        "Deleted Items",
        "Deleted Messages",
        "Papierkorb",
        "Gelöschte Elemente",
        "Gelöschte Objekte",
        "Corbeille",
        "Éléments supprimés",
        "Papelera",
        "Elementos eliminados",
        "Cestino",
        "Posta eliminata",
        "Prullenbak",
        "Verwijderde items",
        "Lixeira",
        "Lixo",
        "Itens excluídos",
    ],
    "\\Junk": [
        "Junk",
        "Junk E-mail",
        "Junk Email",
        "Spam",
        "Bulk Mail",
        "Junk-E-Mail",
        "Courrier indésirable",
        "Pourriel",
        "Correo no deseado",
        "Posta indesiderata",
        "Ongewenste e-mail",
        "Lixo eletrônico",
    ],
    "\\Archive": ["Archive", "Archives", "Archiv"],
}


@pytest.mark.parametrize(("name", "use"), [(n, u) for u, names in GUESSES.items() for n in names])
def test_guess_special_use(name: str, use: str) -> None:
    assert guess_special_use(name) == use
    assert guess_special_use(name.upper()) == use
    assert guess_special_use(name.lower()) == use
    assert guess_special_use(f"  {name} ") == use


@pytest.mark.parametrize("name", ["INBOX", "Projects", "Sent 2023", "Sentx", "", "Junk/Old"])
def test_guess_special_use_unknown(name: str) -> None:
    assert guess_special_use(name) is None


def test_guess_special_use_ignores_unicode_normalisation() -> None:
    assert guess_special_use("Entwu\u0308rfe") == "\\Drafts"  # NFD, as macOS sends it
    assert guess_special_use("GELÖSCHTE OBJEKTE") == "\\Trash"


@pytest.mark.parametrize("attr", ["\\Sent", "\\sent", "\\SENT"])
def test_declared_special_use_is_case_insensitive(attr: str) -> None:
    dst = Side("", "/", {"\\Sent": "Sent Items"})
    m = map_folder("INBOX.Outbox-Copies", attr, CYRUS, dst)
    assert m.target == "Sent Items"
    assert m.rule == "special-use \\Sent → target's Sent Items"


def test_special_use_default_name_under_target_prefix() -> None:
    m = map_folder("Sent Items", None, DOVECOT, CYRUS)
    assert m.target == "INBOX.Sent"
    assert m.rule == "special-use \\Sent guessed from the name 'Sent Items' → target default INBOX.Sent"


def test_declared_use_beats_guess_and_works_at_any_depth() -> None:
    assert map_folder("Projects/Drafts", "\\Trash", DOVECOT, DOVECOT).target == "Trash"


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("Projects/Sent", "INBOX.Projects.Sent"),  # not top level: not guessed
        ("INBOX/Sent", "INBOX.Sent"),  # a direct child of INBOX: guessed
        ("INBOX/x/Sent", "INBOX.x.Sent"),
        ("Papierkorb", "INBOX.Trash"),
    ],
)
def test_guessing_only_at_the_top(name: str, target: str) -> None:
    assert map_folder(name, None, DOVECOT, CYRUS).target == target


def test_unknown_declared_use_is_noted_and_name_still_guessed() -> None:
    m = map_folder("Sent", "\\Important", DOVECOT, DOVECOT)
    assert m.target == "Sent"
    assert any("\\Important" in n for n in m.notes)


def test_virtual_uses_are_not_redirected() -> None:
    dst = Side("", "/", {"\\All": "Virtual/All"})
    m = map_folder("[Gmail]/All Mail", "\\All", DOVECOT, dst)
    assert m.target == "[Gmail]/All Mail"
    assert any("virtual" in n for n in m.notes)


def test_special_use_ignored_outside_personal_namespace() -> None:
    m = map_folder("user.bob.Sent", "\\Sent", CYRUS, DOVECOT)
    assert m.target == "user/bob/Sent"
    assert len(m.notes) == 2


def test_inbox_child_collision_is_noted() -> None:
    m = map_folder("INBOX/x", None, DOVECOT, CYRUS)
    assert m.target == "INBOX.x"
    assert any("child of INBOX" in n for n in m.notes)


def test_inbox_maps_to_inbox() -> None:
    for src in SIDES:
        for dst in SIDES:
            assert map_folder("inbox", None, src, dst).target == "INBOX"


def test_flat_target_flattens_with_a_note() -> None:
    m = map_folder("a/b", None, DOVECOT, FLAT)
    assert m.target == "a_b"
    assert m.notes


ANY_SIDE = st.builds(
    Side,
    prefix=st.sampled_from(["", "INBOX.", "INBOX/", "inbox.", "Mail/", "#mh/", "."]),
    delimiter=st.sampled_from(["", "/", ".", "_", "\\", " ", "2"]),
    special=st.dictionaries(st.sampled_from(["\\Sent", "\\junk", "\\All", "\\Nope"]), st.text(max_size=6)),
    outside=st.lists(st.sampled_from(["", "Shared/", "user.", "#"]), max_size=2).map(tuple),
    case_sensitive=st.sampled_from([None, True, False]),
)
ANY_RULES = st.sampled_from(
    [
        Rules(),
        Rules(separator_substitute=""),
        Rules(separator_substitute="/"),
        Rules(exclude=("^J",), rename=(("(.*)", r"\1"), ("(.*)/(.*)", r"\2/\1"), ("x", "/y"))),
        Rules(rename=(("(.*)", "/"), ("(.*)", r"/\1"))),
    ]
)
USES = st.one_of(st.none(), st.sampled_from(["\\Sent", "\\sent", "\\All", "\\Junk", "\\Drafts", "junk", ""]))


@given(st.text(), USES, ANY_SIDE, ANY_SIDE, ANY_RULES)
def test_map_folder_is_total(name: str, use: str | None, src: Side, dst: Side, rules: Rules) -> None:
    m = map_folder(name, use, src, dst, rules)
    assert m.source == name
    assert m.rule
    assert m.target is None or isinstance(m.target, str)


# --------------------------------------------------------------------------- map_all


def test_map_all_sent_and_sent_items() -> None:
    result = map_all([("Sent Items", None), ("Sent", None), ("INBOX", None)], DOVECOT, CYRUS)
    assert [(m.source, m.target) for m in result] == [
        ("INBOX", "INBOX"),
        ("Sent", "INBOX.Sent"),  # the exact default name takes the role
        ("Sent Items", "INBOX.Sent Items"),  # the other keeps its own name, not "Sent (2)"
    ]
    assert result[1].special_use == "\\Sent" and result[2].special_use is None
    assert result[2].notes == (
        "special use \\Sent went to 'Sent' (its name matches exactly): "
        "kept as a plain folder under its own name 'INBOX.Sent Items'",
    )


def test_map_all_exact_name_takes_the_role_even_against_a_declared_use() -> None:
    # "Sent" keeping "Sent" and "Sent Items" keeping "Sent Items" renames nothing; giving the role
    # to the declared folder would leave "Sent" only "Sent (2)".
    result = map_all([("Sent", None), ("Sent Items", "\\Sent")], DOVECOT, DOVECOT)
    assert {m.source: (m.target, m.special_use) for m in result} == {
        "Sent": ("Sent", "\\Sent"),
        "Sent Items": ("Sent Items", None),
    }


def test_map_all_declared_use_wins_where_no_name_matches() -> None:
    result = map_all([("Sent Messages", None), ("Sent Items", "\\Sent")], DOVECOT, DOVECOT)
    assert {m.source: m.target for m in result} == {"Sent Items": "Sent", "Sent Messages": "Sent Messages"}


def test_map_all_substitute_collision_prefers_the_unchanged_name() -> None:
    result = map_all([("a.b", None), ("a_b", None), ("a_b (2)", None)], DOVECOT, CYRUS)
    assert {m.source: m.target for m in result} == {
        "a_b": "INBOX.a_b",
        "a_b (2)": "INBOX.a_b (2)",
        "a.b": "INBOX.a_b (3)",
    }


def test_map_all_inbox_child_against_top_level() -> None:
    result = map_all([("INBOX/x", None), ("x", None)], DOVECOT, CYRUS)
    assert {m.source: m.target for m in result} == {"x": "INBOX.x", "INBOX/x": "INBOX.x (2)"}


CASE_SENSITIVE = Side("", "/", case_sensitive=True)
CASE_INSENSITIVE = Side("", "/", case_sensitive=False)


@pytest.mark.parametrize("pair", [("Archive", "archive"), ("Sent", "sent"), ("Trash", "TRASH")])
def test_map_all_names_differing_in_case_on_a_target_that_holds_them_apart(pair: tuple[str, str]) -> None:
    exact, other = pair
    result = {m.source: m for m in map_all([(other, None), (exact, None)], DOVECOT, CASE_SENSITIVE)}
    assert result[exact].target == exact and result[exact].special_use is not None  # the exact name: the role
    assert result[other].target == other and result[other].special_use is None  # its own name, no counter
    assert any("went to" in n for n in result[other].notes)  # visible: it lost the role


def test_map_all_names_differing_in_case_on_a_target_that_ignores_case() -> None:
    result = {m.source: m for m in map_all([("archive", None), ("Archive", None)], DOVECOT, CASE_INSENSITIVE)}
    assert result["Archive"].target == "Archive"
    assert result["archive"].target == "archive (2)"  # its own name with a counter, never "Archive (2)"
    assert "it ignores case in folder names" in result["archive"].notes[-1]


def test_map_all_names_differing_in_case_when_the_target_is_not_known() -> None:
    result = {m.source: m for m in map_all([("Sent", None), ("sent", None)], DOVECOT, DOVECOT)}
    assert result["Sent"].target == "Sent"
    assert result["sent"].target == "sent (2)"  # the safe choice, and the note says why
    assert "only in case, and whether the target can hold both is not known" in result["sent"].notes[-1]


def test_map_all_plain_names_differing_in_case() -> None:
    folders = [("Projects", None), ("projects", None)]
    assert {m.target for m in map_all(folders, DOVECOT, CASE_SENSITIVE)} == {"Projects", "projects"}
    assert {m.target for m in map_all(folders, DOVECOT, CASE_INSENSITIVE)} == {"Projects", "projects (2)"}


def test_map_all_keeps_excluded_and_collapses_repeats() -> None:
    folders = [("Junk", None), ("a", None), ("a", "\\Archive"), ("a", "\\All"), ("a", "\\Nope")]
    result = map_all(folders, DOVECOT, DOVECOT, Rules(exclude=("^Junk$",)))
    assert [(m.source, m.target) for m in result] == [("Junk", None), ("a", "Archive")]


FOLDER_NAMES = st.text(st.sampled_from("ab./_ I"), min_size=0, max_size=6) | st.sampled_from(
    ["INBOX", "inbox", "INBOX.Sent", "INBOX/Sent", "Sent", "Sent Items", "Papierkorb", "Trash", "a_b", "a.b"]
)
FOLDER_SETS = st.lists(st.tuples(FOLDER_NAMES, USES), max_size=12)


@given(FOLDER_SETS, ANY_SIDE, ANY_SIDE, ANY_RULES)
def test_map_all_gives_distinct_targets(
    folders: list[tuple[str, str | None]], src: Side, dst: Side, rules: Rules
) -> None:
    result = map_all(folders, src, dst, rules)
    assert sorted(m.source for m in result) == sorted({name for name, _ in folders})
    targets = [m.target if dst.case_sensitive else m.target.casefold() for m in result if m.target is not None]
    assert len(targets) == len(set(targets))
    roles = [m.special_use for m in result if m.special_use is not None]
    assert len(roles) == len(set(roles))  # one folder per special-use role


@given(
    FOLDER_SETS,
    st.sampled_from(SIDES),
    st.sampled_from(SIDES),
    st.sampled_from([None, True, False]),
    st.sampled_from([Rules(), Rules(rename=(("x(.*)", r"Sent\1"),))]),
)
def test_map_all_never_puts_a_counter_on_a_name_the_folder_did_not_have(
    folders: list[tuple[str, str | None]], src: Side, dst: Side, case_sensitive: bool | None, rules: Rules
) -> None:
    """A folder without a special-use role lands under its own name, or its own name with a
    counter: never under another folder's special name with a counter ("Archive (2)")."""
    dst = Side(dst.prefix, dst.delimiter, dst.special, dst.outside, case_sensitive)
    uses = dict(sorted(folders, key=lambda f: (f[1] is None, f[1] or "")))
    for m in map_all(folders, src, dst, rules):
        if m.target is None or m.special_use is not None:
            continue
        own = map_folder(m.source, uses[m.source], src, dst, rules, roles=False).target
        assert own is not None
        assert m.target == own or split_path(m.target, dst)[-1].startswith(split_path(own, dst)[-1]), (m, own)
        if m.target != own:
            assert any("instead" in n for n in m.notes)


@given(FOLDER_SETS, st.sampled_from(SIDES), st.sampled_from(SIDES))
def test_map_all_on_a_case_sensitive_target_renames_no_more_than_on_others(
    folders: list[tuple[str, str | None]], src: Side, dst: Side
) -> None:
    def counted(case_sensitive: bool | None) -> int:
        side = Side(dst.prefix, dst.delimiter, dst.special, dst.outside, case_sensitive)
        return sum(1 for m in map_all(folders, src, side) if any(n.endswith("instead") for n in m.notes))

    assert counted(True) <= counted(False) == counted(None)


@given(FOLDER_SETS, st.randoms(use_true_random=False), st.sampled_from(SIDES), st.sampled_from(SIDES))
def test_map_all_is_deterministic(
    folders: list[tuple[str, str | None]], rnd: random.Random, src: Side, dst: Side
) -> None:
    shuffled = list(folders)
    rnd.shuffle(shuffled)
    assert map_all(folders, src, dst) == map_all(shuffled, src, dst)


@given(st.lists(st.tuples(FOLDER_NAMES, USES), max_size=8), st.sampled_from(SIDES), st.sampled_from(SIDES))
def test_map_all_agrees_with_map_folder_without_collisions(
    folders: list[tuple[str, str | None]], src: Side, dst: Side
) -> None:
    for m in map_all(folders, src, dst):
        if not any(n.endswith("instead") or " went to " in n for n in m.notes):
            uses = {u for n, u in folders if n == m.source}
            assert m in {map_folder(m.source, use, src, dst) for use in uses}
