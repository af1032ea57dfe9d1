"""plan/sieve.py decision table, compare_scripts, and the ManageSieve response parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailferry.connectors.sieve import parse_capabilities, parse_response, quote
from mailferry.formats.sieve import rewrite_script
from mailferry.plan.sieve import SourceScript, compare_scripts, digest, plan_scripts


def rw(scripts):
    return {s.name: rewrite_script(s.content, lambda a: None, lambda f: f) for s in scripts}


A = SourceScript("a", b"keep;", True)
B = SourceScript("b", b"discard;", False)


def test_new_scripts_are_put_and_active_activated() -> None:
    p = plan_scripts([A, B], rw([A, B]), {}, None, {})
    assert [(s.name, s.action) for s in p.scripts] == [("a", "put"), ("b", "put")]
    assert p.activate == "a"


def test_equal_on_target_is_unchanged_and_recorded_only_when_missing() -> None:
    p = plan_scripts([A], rw([A]), {"a": b"keep;"}, "a", {})
    assert p.scripts[0].action == "unchanged" and p.scripts[0].record and p.activate is None
    p = plan_scripts([A], rw([A]), {"a": b"keep;"}, "a", {"a": digest(b"keep;")})
    assert not p.scripts[0].record


def test_changed_on_target_after_carrying_is_kept() -> None:
    p = plan_scripts([A], rw([A]), {"a": b"stop;"}, "a", {"a": digest(b"keep;")})
    assert p.scripts[0].action == "kept"


def test_changed_on_source_is_put_again() -> None:
    p = plan_scripts([A], rw([A]), {"a": b"stop;"}, "a", {"a": digest(b"stop;")})
    assert p.scripts[0].action == "put"


def test_no_active_on_source_leaves_target_activation() -> None:
    p = plan_scripts([B], rw([B]), {}, "x", {})
    assert p.activate is None


@given(st.lists(st.sampled_from([b"keep;", b"stop;", b"discard;"]), min_size=1, max_size=4), st.integers(0, 3))
def test_replanning_after_success_puts_nothing(contents: list[bytes], active: int) -> None:
    source = [SourceScript(f"s{i}", c, i == active) for i, c in enumerate(contents)]
    first = plan_scripts(source, rw(source), {}, None, {})
    target = {s.name: s.content for s in first.puts}
    recorded = {s.name: s.digest for s in first.puts}
    again = plan_scripts(source, rw(source), target, first.activate, recorded)
    assert not again.puts and again.activate is None
    assert compare_scripts(source, rw(source), target, first.activate) == []


def test_compare_names_each_difference() -> None:
    diffs = compare_scripts([A, B], rw([A, B]), {"a": b"stop;"}, None)
    assert {(d.script, d.what) for d in diffs} == {("a", "content"), ("b", "missing"), ("a", "active")}


def test_parse_response_and_capabilities() -> None:
    greeting = [
        (b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n', []),
        (b'"SIEVE" "fileinto vacation"\r\n', []),
        (b'"STARTTLS"\r\n', []),
        (b'OK "ready"\r\n', []),
    ]
    r = parse_response(greeting)
    assert r.status == "OK" and r.text == "ready"
    caps = parse_capabilities(r.lines)
    assert caps["SIEVE"] == "fileinto vacation" and "STARTTLS" in caps
    no = parse_response([(b"NO (NONEXISTENT) {22}\r\n\r\n", [b"line 2: syntax error\r\n"])])
    assert no.status == "NO" and no.code == "NONEXISTENT" and no.text == "line 2: syntax error"
    got = parse_response([(b"{5}\r\n\r\n", [b"keep;"]), (b"OK\r\n", [])])
    assert got.lines == ((b"keep;",),)
    listed = parse_response([(b'"a \\"b\\"" ACTIVE\r\n', []), (b'"c"\r\n', []), (b"OK\r\n", [])])
    assert listed.lines == (('a "b"', "ACTIVE"), ("c",))


def test_quote() -> None:
    assert quote('a "b" \\') == b'"a \\"b\\" \\\\"'
    assert quote("two\nlines") == b"{9+}\r\ntwo\nlines"


def test_folder_lookup_with_and_without_prefix() -> None:
    from mailferry.engine.sieve import folder_lookup
    from mailferry.formats.folders import FolderMapping

    maps = [
        FolderMapping("INBOX.Lists.Python", "Lists/Python", "namespace", ()),
        FolderMapping("INBOX.old", None, "excluded", ()),
    ]
    look = folder_lookup(maps, "INBOX.")
    assert look("INBOX.Lists.Python") == "Lists/Python" and look("Lists.Python") == "Lists/Python"
    assert look("inbox") == "INBOX" and look("INBOX.old") is None and look("Nope") is None


def test_activation_changed_on_target_after_carrying_is_left_alone() -> None:
    target = {"a": b"keep;", "mine": b"stop;"}
    recorded = {"a": digest(b"keep;")}
    p = plan_scripts([A], rw([A]), target, "mine", recorded, recorded_active="a")
    assert p.activate is None and p.notes
    p = plan_scripts([A], rw([A]), target, "mine", recorded, recorded_active=None)
    assert p.activate == "a"
