"""formats/sieve.py: tokens, roles of strings, rewriting that keeps every other byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.formats.sieve import diff, requires, rewrite_script, tokenize

AMAP = {"alice@old.example": "alice.t@new.example", "bob@old.example": "bob@new.example"}
FMAP = {"Lists/Python": "INBOX.Lists.Python", "INBOX": "INBOX", "a.b": "INBOX.a_b"}


def addresses(a: str) -> str | None:
    return AMAP.get(a.lower())


def folders(f: str) -> str | None:
    return FMAP.get(f)


SCRIPT = b"""require ["fileinto", "vacation", "envelope", "copy"]; # alice@old.example "Lists/Python"
/* block "alice@old.example"
   fileinto "Lists/Python"; */
if address :is "from" "bob@old.example" { fileinto :copy "Lists/Python"; }
elsif header :contains "subject" "alice@old.example" { redirect "alice@old.example"; }
elsif header :is ["From", "cc"] "Alice@old.example" { stop; }
elsif envelope :domain :is "from" "old.example" { keep; }
elsif address :matches "to" "*@old.example" { discard; }
vacation :days 3 :from "Alice <alice@old.example>" :addresses ["alice@old.example", "a@ext.org"]
  :subject "alice@old.example" text:
I am away; write to alice@old.example
..and "Lists/Python"
.
;
"""


def test_rewrites_exactly_the_roles_and_nothing_else() -> None:
    r = rewrite_script(SCRIPT, addresses, folders)
    assert not r.error
    got = {(w.command, w.old, w.new) for w in r.rewrites}
    assert got == {
        ("address", "bob@old.example", "bob@new.example"),
        ("fileinto", "Lists/Python", "INBOX.Lists.Python"),
        ("redirect", "alice@old.example", "alice.t@new.example"),
        ("header", "Alice@old.example", "alice.t@new.example"),
        ("vacation :from", "Alice <alice@old.example>", "Alice <alice.t@new.example>"),
        ("vacation :addresses", "alice@old.example", "alice.t@new.example"),
    }
    text = r.content.decode()
    # comments, the subject (not an address role), the header :contains on Subject, the
    # :domain comparison, the wildcard and the text: block are untouched
    assert '# alice@old.example "Lists/Python"' in text
    assert 'fileinto "Lists/Python"; */' in text
    assert ':subject "alice@old.example"' in text
    assert 'header :contains "subject" "alice@old.example"' in text
    assert '"*@old.example"' in text
    assert 'write to alice@old.example\n..and "Lists/Python"\n.\n' in text
    assert r.requires == ("fileinto", "vacation", "envelope", "copy")


def test_diff_shows_each_rewritten_line() -> None:
    r = rewrite_script(SCRIPT, addresses, folders)
    d = diff("main", SCRIPT, r.content)
    assert d.startswith("--- source/main\n+++ target/main\n")
    assert '+if address :is "from" "bob@new.example" { fileinto :copy "INBOX.Lists.Python"; }' in d
    assert diff("main", SCRIPT, SCRIPT) == ""


def test_unmapped_folder_is_reported_and_kept() -> None:
    r = rewrite_script(b'require "fileinto";\r\nfileinto "Gone/Away";\r\n', addresses, folders)
    assert [(u.command, u.value, u.line) for u in r.unmapped] == [("fileinto", "Gone/Away", 2)]
    assert r.content == b'require "fileinto";\r\nfileinto "Gone/Away";\r\n' and not r.changed


def test_crlf_and_invalid_utf8_survive() -> None:
    src = b'require "fileinto";\r\n# caf\xe9 \xff\r\nfileinto "a.b";\r\n'
    r = rewrite_script(src, addresses, folders)
    assert r.content == b'require "fileinto";\r\n# caf\xe9 \xff\r\nfileinto "INBOX.a_b";\r\n'


def test_tagged_values_are_not_positional() -> None:
    src = b'require ["imap4flags","fileinto"]; fileinto :flags "alice@old.example" "Lists/Python";'
    r = rewrite_script(src, addresses, folders)
    assert [w.old for w in r.rewrites] == ["Lists/Python"]
    assert b':flags "alice@old.example"' in r.content


def test_escapes_in_rewritten_strings() -> None:
    r = rewrite_script(b'fileinto "Lists/Python";', addresses, lambda f: 'we "quote" \\ it')
    assert r.content == b'fileinto "we \\"quote\\" \\\\ it";'


@pytest.mark.parametrize(
    "broken",
    [b"if true { keep;", b'fileinto "unterminated;', b"keep", b'require ["a" "b"];', b"if anyof (true, { keep; }"],
)
def test_syntax_error_leaves_script_unchanged(broken: bytes) -> None:
    r = rewrite_script(broken, addresses, folders)
    assert r.error and r.content == broken and not r.rewrites


def test_requires() -> None:
    assert requires(b'require "vacation"; require ["fileinto", "foreverypart"];') == (
        "vacation",
        "fileinto",
        "foreverypart",
    )
    assert requires(b"if {") == ()


def test_tokens_join_back() -> None:
    assert "".join(t.raw for t in tokenize(SCRIPT.decode())) == SCRIPT.decode()


# -- properties -------------------------------------------------------------------------------

_ATOMS = [
    'require ["fileinto", "vacation"];',
    'fileinto "Lists/Python";',
    'redirect "alice@old.example";',
    'if address :is "from" "bob@old.example" { keep; }',
    'vacation :from "x <alice@old.example>" "gone";',
    '# a comment fileinto "Lists/Python" alice@old.example\n',
    '/* fileinto "Lists/Python"; redirect "alice@old.example"; */',
    'vacation text:\nredirect "alice@old.example";\n..\n.\n;',
    "\r\n",
    "  ",
    "\n",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_ATOMS), max_size=12))
def test_identity_map_is_a_no_op(parts: list[str]) -> None:
    src = "".join(parts).encode()
    r = rewrite_script(src, lambda a: a, lambda f: f)
    assert r.content == src and not r.rewrites


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_ATOMS), max_size=12))
def test_comments_and_text_blocks_are_never_touched(parts: list[str]) -> None:
    src = "".join(parts).encode()
    r = rewrite_script(src, addresses, folders)
    before = [t.raw for t in tokenize(src.decode()) if t.kind in ("comment", "text")]
    after = [t.raw for t in tokenize(r.content.decode()) if t.kind in ("comment", "text")]
    assert before == after
    # and rewriting is idempotent over its own output's addresses (new ones are not mapped again)
    assert rewrite_script(r.content, addresses, lambda f: f if f in FMAP.values() else folders(f)).rewrites == ()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('abf:"\\#/*{}[](),; \n\r.tx@1') + ["text:", "fileinto", "\n.\n"])))
def test_any_text_either_parses_or_is_left_alone(parts: list[str]) -> None:
    text = "".join(parts)
    src = text.encode()
    r = rewrite_script(src, addresses, folders)
    if r.error:
        assert r.content == src and not r.rewrites
    else:
        assert "".join(t.raw for t in tokenize(text)) == text
        assert rewrite_script(src, lambda a: a, lambda f: f).content == src


def test_notify_mailto_and_from() -> None:
    src = b'require ["enotify"];\nnotify :from "alice@old.example" :message "x" "mailto:bob@old.example?subject=hi";\n'
    r = rewrite_script(src, addresses, folders)
    assert r.content == (
        b'require ["enotify"];\nnotify :from "alice.t@new.example" :message "x" "mailto:bob@new.example?subject=hi";\n'
    )
    same = b'notify "xmpp:bob@old.example";'
    assert rewrite_script(same, addresses, folders).content == same
