"""What the engine learns of the keywords a target stores: tables and Hypothesis properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailferry.plan.keywords import KeywordLimits, is_keyword

K = KeywordLimits


def test_nothing_known_everything_is_sent() -> None:
    assert K().verdict("INBOX", "$" + "x" * 200) == "unknown"
    assert K().split("INBOX", ["\\Seen", "$A"]) == (("\\Seen", "$A"), ())
    assert K().refused_from is None


def test_a_refusal_longer_than_anything_stored_is_a_length_limit() -> None:
    k = K().learn("INBOX", stored=["$short", "\\Seen"]).learn("INBOX", refused=["$" + "x" * 59])
    assert k.refused_from == 60
    assert k.verdict("Other", "$" + "y" * 59) == "refused"  # the whole target, any folder
    assert k.verdict("Other", "$" + "y" * 58) == "unknown"
    assert k.verdict("INBOX", "$SHORT") == "stored"  # keywords compare case-insensitively
    keep, drop = k.split("Other", ["\\Seen", "$" + "y" * 70, "$ok"])
    assert keep == ("\\Seen", "$ok")
    assert drop == (("$" + "y" * 70, "the target refuses keywords of 60 bytes or more (learned in this run)"),)
    # A shorter refusal narrows it.
    assert k.learn("X", refused=["$" + "z" * 50]).refused_from == 51


def test_a_refusal_no_longer_than_something_stored_is_only_that_keyword_in_that_folder() -> None:
    k = K().learn("A", stored=["$" + "x" * 60]).learn("A", refused=["$no"])
    assert k.refused_from is None
    assert k.verdict("A", "$NO") == "refused" and k.verdict("B", "$no") == "unknown"
    assert k.split("A", ["$no"]) == ((), (("$no", "the target refused it in this folder earlier in this run"),))


def test_unknown_and_system_flags() -> None:
    k = K().learn("A", stored=["$a"])
    assert k.unknown("A", ["\\Seen", "$a", "$b"]) == ("$b",)
    assert is_keyword("$a") and not is_keyword("\\Flagged")
    assert k.learn("A", stored=["$a", "\\Seen"]) is k  # nothing new: the same value


LENGTHS = st.integers(min_value=1, max_value=80)
KEYWORDS = st.lists(st.tuples(st.sampled_from(["INBOX", "Sent"]), LENGTHS, st.sampled_from("abc")), max_size=40)


@given(KEYWORDS, st.integers(min_value=1, max_value=80))
def test_against_a_length_limit_a_storable_keyword_is_never_dropped_and_each_length_costs_one_try(
    seen: list[tuple[str, int, str]], limit: int
) -> None:
    """A target refusing keywords of ``limit`` bytes or more (Dovecot), met by the engine's rule:
    send what is not known refused, learn from the answer."""
    k = K()
    refused_tries: list[int] = []
    for folder, n, c in seen:
        kw = "$" + c * (n - 1) if n > 1 else "$"
        verdict = k.verdict(folder, kw)
        if verdict == "refused":
            assert len(kw) >= limit  # never drops what the target would store
            continue
        if len(kw) >= limit:
            refused_tries.append(len(kw))
            k = k.learn(folder, refused=[kw])
        else:
            k = k.learn(folder, stored=[kw])
    # Each try refused was shorter than every one before: at most one per length, whatever the count.
    assert refused_tries == sorted(set(refused_tries), reverse=True)


@given(st.lists(st.tuples(st.sampled_from(["A", "B"]), st.text("ab$", min_size=1, max_size=4), st.booleans())))
def test_what_the_target_showed_is_what_is_predicted(observed: list[tuple[str, str, bool]]) -> None:
    """For any target (not only a length limit), a keyword it stored in a folder is never predicted
    refused there unless it also refused it there; one it refused is predicted refused."""
    answers: dict[tuple[str, str], set[bool]] = {}
    k = K()
    for folder, kw, stored in observed:
        k = k.learn(folder, stored=[kw]) if stored else k.learn(folder, refused=[kw])
        answers.setdefault((folder, kw.casefold()), set()).add(stored)
    for (folder, kw), said in answers.items():
        if said == {True}:
            assert k.verdict(folder, kw) == "stored"
        elif False in said:
            assert k.verdict(folder, kw) == "refused"
