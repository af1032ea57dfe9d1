"""LDIF of one entry (RFC 2849) and RDN escaping (RFC 4514)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailferry.formats.ldif import LdifError, dn_key, entry_to_ldif, ldif_to_entry, rdn
from mailferry.formats.sid import sid_from_str

SID = sid_from_str("S-1-5-21-1004336348-1177238915-682003330-1105")


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def test_contact_entry_is_deterministic_and_readable() -> None:
    text = entry_to_ldif(
        "CN=Smith\\, John,OU=Contacts,DC=tgt,DC=test",
        {
            "sn": ["Smith"],
            "mail": ["john@old.example"],
            "objectClass": ["top", "person", "organizationalPerson", "contact"],
            "displayName": ["Zoë Smith"],
            "objectSid": [SID],
            "description": [" leading space", "trailing space ", ":colon", "<angle", ""],
        },
    )
    assert text == (
        "dn: CN=Smith\\, John,OU=Contacts,DC=tgt,DC=test\n"
        "objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: contact\n"
        f"description:: {b64(' leading space')}\n"
        f"description:: {b64('trailing space ')}\n"
        f"description:: {b64(':colon')}\n"
        f"description:: {b64('<angle')}\n"
        "description:\n"
        f"displayName:: {b64('Zoë Smith')}\n"
        "mail: john@old.example\n"
        f"objectSid:: {b64(SID)}\n"
        "sn: Smith\n\n"
    )
    dn, attrs = ldif_to_entry(text)
    assert dn == "CN=Smith\\, John,OU=Contacts,DC=tgt,DC=test"
    assert attrs["displayName"] == ["Zoë Smith".encode()]  # '::' comes back as bytes
    assert attrs["objectSid"] == [SID]
    assert attrs["description"][-1] == ""
    assert list(attrs)[0] == "objectClass"


@pytest.mark.parametrize("value", ["a:b", "a<b", "ends with colon:", "#hash", "tab\tinside", "x" * 200, "\x7f"])
def test_safe_values_stay_plain(value: str) -> None:
    text = entry_to_ldif("cn=x", {"description": [value]})
    assert "description:: " not in text
    assert ldif_to_entry(text)[1]["description"] == [value]


@pytest.mark.parametrize("value", ["\n", "a\rb", "nul\x00", "é", "😀", " ", "x "])
def test_unsafe_values_are_base64(value: str) -> None:
    text = entry_to_ldif("cn=x", {"description": [value]})
    assert f"description:: {b64(value)}" in text.replace("\n ", "")


def test_non_ascii_dn_is_base64() -> None:
    text = entry_to_ldif("CN=Zoë,DC=x", {"cn": ["Zoë"]})
    assert text.startswith("dn:: ")
    assert ldif_to_entry(text)[0] == "CN=Zoë,DC=x"


def test_long_lines_fold_at_76() -> None:
    text = entry_to_ldif("cn=x", {"description": ["y" * 300], "jpegPhoto": [bytes(range(256))]})
    lines = text.split("\n")
    assert max(map(len, lines)) == 76
    assert any(line.startswith(" ") for line in lines)
    assert ldif_to_entry(text)[1] == {"description": ["y" * 300], "jpegPhoto": [bytes(range(256))]}


def test_reader_accepts_what_servers_write() -> None:
    text = (
        "# a comment that is\n #  folded\nversion: 1\r\n\r\n"
        "dn: cn=Barbara Jensen, ou=Product Development, dc=airius, dc=com\r\n"
        "objectclass: top\nobjectclass: person\n"
        "cn: Barbara Jensen\ncn:   Babs Jensen\n"
        "description:: V2hhdCBhIGNhcmVmdWwgcmVhZGVyIHlvdSBhcmUhICBUaGlzIHZhbHVl\n"
        " IGlzIGJhc2UtNjQtZW5jb2RlZCBiZWNhdXNlIGl0IGhhcyBhIGNvbnRyb2wgY2hhcmFjdGVyIGlu\n"
        " IGl0IChhIENSKS4NICBCeSB0aGUgd2F5LCB5b3Ugc2hvdWxkIHJlYWxseSBnZXQgb3V0IG1vcmUu\n"
        "title;lang-en: Boss\n"
        "CN: third\n"
        "\n"
        "dn: cn=second entry\ncn: ignored\n"
    )
    dn, attrs = ldif_to_entry(text)
    assert dn == "cn=Barbara Jensen, ou=Product Development, dc=airius, dc=com"
    assert attrs["objectclass"] == ["top", "person"]
    assert attrs["cn"] == ["Barbara Jensen", "Babs Jensen", "third"]
    assert attrs["description"] == [
        b"What a careful reader you are!  This value is base-64-encoded because it has a control character "
        b"in it (a CR).\r  By the way, you should really get out more."
    ]
    assert attrs["title;lang-en"] == ["Boss"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no entry"),
        ("# only a comment\n", "no entry"),
        ("cn: x\n", "must start with 'dn:'"),
        ("dn: cn=x\nno colon here\n", "not 'attribute: value'"),
        ("dn: cn=x\ncn:: ***\n", "invalid base64"),
        ("dn: cn=x\njpegPhoto:< file:///etc/passwd\n", "by URL"),
        ("dn: cn=x\nchangetype: delete\n", "change record"),
        ("dn: cn=x\nbad name: v\n", "not an attribute name"),
        (" continuation\n", "follows nothing"),
        ("dn:: /w==\n", "not UTF-8"),
    ],
)
def test_reader_rejects(text: str, why: str) -> None:
    with pytest.raises(LdifError, match=why):
        ldif_to_entry(text)


@pytest.mark.parametrize("name", ["", "dn", "a b", "x:y", "-a", "a\nb"])
def test_writer_rejects_bad_attribute_names(name: str) -> None:
    with pytest.raises(LdifError, match="not an attribute name"):
        entry_to_ldif("cn=x", {name: ["v"]})


def test_writer_rejects_unencodable_text() -> None:
    with pytest.raises(LdifError, match="UTF-8"):
        entry_to_ldif("cn=x", {"cn": ["\ud800"]})


RDN_CASES = [
    ("Smith, John", "CN=Smith\\, John"),
    ("A+B", "CN=A\\+B"),
    ("#hash", "CN=\\#hash"),
    ("in#side", "CN=in#side"),
    ('"quoted"', 'CN=\\"quoted\\"'),
    ("Zoë", "CN=Zoë"),
    (" padded ", "CN=\\ padded\\ "),
    ("a;b<c>d\\e=f", "CN=a\\;b\\<c\\>d\\\\e\\=f"),
    ("nul\x00", "CN=nul\\00"),
    (" ", "CN=\\ "),
]


@pytest.mark.parametrize(("value", "expected"), RDN_CASES)
def test_rdn_escaping(value: str, expected: str) -> None:
    assert rdn("CN", value) == expected


def test_dn_key() -> None:
    assert dn_key(" CN=A,DC=X ") == dn_key("cn=a,dc=x")


attr_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,12}(;[a-z-]{1,5})?\Z").filter(lambda n: n.lower() != "dn")
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=100) | st.binary(max_size=100)
dns = st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20), min_size=1, max_size=4).map(
    lambda parts: ",".join(rdn("cn", p) for p in parts)
)


def as_bytes(v: str | bytes) -> bytes:
    return v.encode() if isinstance(v, str) else v


@given(dns, st.dictionaries(attr_names, st.lists(values, min_size=1, max_size=4), max_size=6))
def test_round_trip(dn: str, attrs: dict[str, list[str | bytes]]) -> None:
    # LDAP attribute names are case-insensitive: one spelling per name.
    unique = {k: v for k, v in attrs.items() if [a.lower() for a in attrs].count(k.lower()) == 1}
    text = entry_to_ldif(dn, unique)
    assert all(len(line) <= 76 for line in text.split("\n"))
    assert text.isascii()
    back_dn, back = ldif_to_entry(text)
    assert back_dn == dn
    assert {k: [as_bytes(v) for v in vs] for k, vs in back.items()} == {
        k: [as_bytes(v) for v in vs] for k, vs in unique.items()
    }
    assert entry_to_ldif(dn, unique) == text  # deterministic


def test_parent_dn_honours_escaped_commas() -> None:
    from mailferry.formats.ldif import parent_dn

    assert parent_dn(r"CN=Smith\, John,OU=Users,DC=x") == "OU=Users,DC=x"
    assert parent_dn("cn=a, ou=b") == "ou=b"
    assert parent_dn("dc=top") == ""
