"""vCard resources: inspect, meaning, 2.1 -> 3.0 (formats/vcard)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailferry.formats import vcard
from mailferry.formats.vcard import BadItem


def card(*body: str, version: str = "3.0", eol: str = "\r\n") -> bytes:
    return eol.join(("BEGIN:VCARD", f"VERSION:{version}", *body, "END:VCARD", "")).encode()


V4 = card(
    "UID:urn:uuid:1", "FN:Zoë Smith", "N:Smith;Zoë;;;", "KIND:group", "MEMBER:urn:uuid:2",
    "EMAIL;TYPE=work;PREF=1:Zoe@Example.org", "TEL;VALUE=uri;TYPE=cell:tel:+1-555-0100",
    "ADR;TYPE=home:;;1 Main St;Town;;12345;", "ORG:Acme;Sales", "CATEGORIES:a,b",
    "PHOTO:data:image/png;base64,aGVsbG8=", "BDAY:19850412", version="4.0",
)  # fmt: skip
V3 = card(
    "item1.EMAIL;TYPE=INTERNET,WORK,pref:zoe@example.org", "FN:Zoë Smith", "N:Smith;Zoë",
    "X-ADDRESSBOOKSERVER-KIND:group", "X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:2", "TEL;TYPE=CELL:+1-555-0100",
    "ADR;TYPE=HOME:;;1 Main St;Town;;12345;", "ORG:Acme;Sales;", "CATEGORIES:b", "CATEGORIES:a",
    "PHOTO;ENCODING=b;TYPE=PNG:aGVsbG8=", "BDAY:1985-04-12", "UID:urn:uuid:1", "PRODID:-//Cyrus//EN",
)  # fmt: skip


def test_inspect() -> None:
    assert vcard.inspect(V4) == vcard.Card("urn:uuid:1", "4.0", "Zoë Smith", "group", ())
    assert vcard.inspect(V3).kind == "group"
    assert vcard.inspect(card("UID:1")).problems == ("no FN",)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "no BEGIN:VCARD"),
        (card("UID:1", "FN:x") * 2, "two vCards in one resource"),
        (card("FN:x"), "no UID"),
        (b"BEGIN:VCARD\r\nUID:1\r\nFN:x\r\nEND:VCARD\r\n", "no VERSION"),
        (card("UID:1", version="5.0"), "VERSION 5.0 is not 2.1, 3.0 or 4.0"),
        (card("UID:1", "FN:caf\xe9").replace("é".encode(), b"\xe9"), "not UTF-8 (byte 0xE9 at offset 39)"),
        (card("UID:1", "FN:x", "this is not a line"), "bad content line 5"),
    ],
)
def test_malformed_is_a_bad_item(data: bytes, reason: str) -> None:
    with pytest.raises(BadItem) as err:
        vcard.inspect(data)
    assert err.value.reason == reason


def test_a_4_0_card_served_as_3_0_means_the_same() -> None:
    assert vcard.differences(V4, V3) == []


def test_differences_name_the_property() -> None:
    changed = V3.replace(b"+1-555-0100", b"+1-555-0199")
    assert vcard.differences(V4, changed) == [
        "urn:uuid:1: TEL differs: source TEL;TYPE=cell:+1-555-0100, target TEL;TYPE=cell:+1-555-0199"
    ]
    assert vcard.differences(V4, V3.replace(b"aGVsbG8=", b"d29ybGQ=")) != []
    assert vcard.differences(V4, V3.replace(b"CATEGORIES:a\r\n", b"")) != []


V21 = (
    b"BEGIN:VCARD\r\nVERSION:2.1\r\nUID:x1\r\n"
    b"N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=E9=BB=84;=E4=B8=96=E5=8B=87;;;\r\n"
    b"FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=E9=BB=84=E4=B8=96=\r\n=E5=8B=87\r\n"
    b"TEL;CELL;PREF:15810139237\r\nEMAIL;INTERNET:a@b.example\r\nEND:VCARD\r\n"
)


def test_v21_to_v30_keeps_the_meaning() -> None:
    assert vcard.is_v21(V21) and not vcard.is_v21(V3)
    out = vcard.to_v30(V21)
    assert not vcard.is_v21(out)
    assert b"QUOTED-PRINTABLE" not in out and b"CHARSET" not in out
    assert "FN:黄世勇" in out.decode()
    assert "TEL;TYPE=CELL,PREF:15810139237" in out.decode()
    assert vcard.differences(V21, out) == []
    assert vcard.to_v30(V3) is V3


_props = st.lists(
    st.tuples(st.sampled_from(["NOTE", "TITLE", "X-THING", "EMAIL", "NICKNAME"]),
              st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)),
    max_size=6,
)  # fmt: skip


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")


@settings(max_examples=60, deadline=None)
@given(_props, st.randoms(use_true_random=False), st.sampled_from(["\r\n", "\n"]))
def test_normalize_is_idempotent_and_blind_to_order_and_case(
    props: list[tuple[str, str]], rnd: object, eol: str
) -> None:
    lines = ["UID:1", "FN:x"] + [f"{name}:{_escape(value)}" for name, value in props]
    a = card(*lines)
    rnd.shuffle(lines)  # type: ignore[attr-defined]
    b = card(*[line.split(":", 1)[0].lower() + ":" + line.split(":", 1)[1] for line in lines], eol=eol)
    assert vcard.normalize(a) == vcard.normalize(b)
    assert vcard.normalize(vcard.normalize(a).encode()) == vcard.normalize(a)
    assert vcard.differences(a, b) == []
