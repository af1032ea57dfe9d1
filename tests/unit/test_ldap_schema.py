"""The subschema parser and what it says an entry may hold, on descriptions as Samba AD and
OpenLDAP publish them (copied from their subschema entries, shortened)."""

from __future__ import annotations

import pytest

from mailferry.formats.ldap_schema import parse_schema

# Samba 4 (AD): SYNTAX quoted, MUST/MAY lists with a space before ")", content rules with AUX.
AD_ATTRIBUTES = [
    "( 2.5.4.3 NAME 'cn' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
    "( 1.2.840.113556.1.4.1 NAME 'name' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE NO-USER-MODIFICATION )",
    "( 1.2.840.113556.1.2.102 NAME 'memberOf' SYNTAX '1.3.6.1.4.1.1466.115.121.1.12' NO-USER-MODIFICATION )",
    "( 1.2.840.113556.1.2.81 NAME 'info' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
    "( 1.2.840.113556.1.2.464 NAME 'wWWHomePage' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
    "( 1.2.840.113556.1.2.210 NAME 'proxyAddresses' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' )",
    "( 2.5.4.4 NAME 'sn' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
    "( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
    "( 1.2.840.113556.1.4.265 NAME 'notes' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
    "( 0.9.2342.19200300.100.1.3 NAME 'mail' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
]
AD_CLASSES = [
    "( 2.5.6.0 NAME 'top' ABSTRACT MUST (objectClass ) MAY (wWWHomePage $ proxyAddresses $ name $ memberOf ) )",
    "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST (cn ) MAY (sn ) )",
    "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY (mail ) )",
    "( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL MAY (sAMAccountName ) )",
    "( 1.2.840.113556.1.5.15 NAME 'contact' SUP organizationalPerson STRUCTURAL MUST (cn ) MAY (notes ) )",
    "( 1.2.840.113556.1.3.46 NAME 'mailRecipient' SUP top AUXILIARY MUST (cn ) MAY (info ) )",
]
AD_RULES = [
    "( 1.2.840.113556.1.5.9 NAME 'user' AUX ( mailRecipient ) MUST (cn ) MAY (info ) )",
    "( 1.2.840.113556.1.5.15 NAME 'contact' AUX ( mailRecipient ) MUST (cn ) MAY (info ) )",
]

# OpenLDAP: descriptions with DESC, EQUALITY, length bounds, X- extensions, operational USAGE.
LDAP_ATTRIBUTES = [
    "( 2.5.4.41 NAME 'name' DESC 'RFC4519: common supertype of name attributes' EQUALITY caseIgnoreMatch "
    "SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{32768} )",
    "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s)' SUP name )",
    "( 2.5.4.4 NAME ( 'sn' 'surname' ) SUP name )",
    "( 0.9.2342.19200300.100.1.1 NAME ( 'uid' 'userid' ) EQUALITY caseIgnoreMatch SYNTAX "
    "1.3.6.1.4.1.1466.115.121.1.15{256} )",
    "( 2.16.840.1.113730.3.1.4 NAME 'employeeType' DESC 'RFC2798: type of employment' EQUALITY caseIgnoreMatch "
    "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
    "( 1.3.6.1.1.16.4 NAME 'entryUUID' DESC 'UUID of the entry' EQUALITY UUIDMatch ORDERING UUIDOrderingMatch "
    "SYNTAX 1.3.6.1.1.16.1 SINGLE-VALUE NO-USER-MODIFICATION USAGE directoryOperation )",
    "( 9.9.9.1 NAME 'mailAlternateAddress' SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 X-ORIGIN ( 'test' 'x' ) )",
    "( 9.9.9.2 NAME 'shadowOp' SUP entryUUID )",
]
LDAP_CLASSES = [
    "( 2.5.6.0 NAME 'top' DESC 'top of the superclass chain' ABSTRACT MUST objectClass )",
    "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) )",
    "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL )",
    "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL MAY ( uid $ employeeType ) )",
    "( 9.9.9.9 NAME 'mailAlternateRecipient' SUP top AUXILIARY MAY mailAlternateAddress )",
]


def test_ad_allowed_includes_superclasses_and_content_rule_auxiliaries() -> None:
    s = parse_schema(AD_ATTRIBUTES, AD_CLASSES, AD_RULES)
    user = s.allowed(["top", "person", "organizationalPerson", "user"])
    assert {"info", "wwwhomepage", "proxyaddresses", "samaccountname", "mail", "cn", "sn", "objectclass"} <= user
    assert "notes" not in user  # a contact's attribute, not a user's
    assert "notes" in s.allowed(["top", "person", "organizationalPerson", "contact"])
    assert "1.2.840.113556.1.2.81" in user  # the OID stands for info
    assert s.allowed(["user"]) == user  # the superclasses follow from the structural class


def test_system_only_and_operational_attributes_are_not_user_attributes() -> None:
    ad = parse_schema(AD_ATTRIBUTES, AD_CLASSES, AD_RULES)
    assert not ad.user_attribute("memberOf") and not ad.user_attribute("name")
    assert ad.user_attribute("INFO") and not ad.user_attribute("favouriteColour")
    ldap = parse_schema(LDAP_ATTRIBUTES, LDAP_CLASSES)
    assert not ldap.user_attribute("entryUUID")
    assert not ldap.user_attribute("shadowOp")  # usage inherited from its supertype
    assert ldap.user_attribute("employeeType")


def test_openldap_names_aliases_bounds_and_extensions() -> None:
    s = parse_schema(LDAP_ATTRIBUTES, LDAP_CLASSES)
    assert s.attribute("commonName") is s.attribute("cn")
    assert s.attribute("uid") is not None and s.attribute("uid").names == ("uid", "userid")  # type: ignore[union-attr]
    allowed = s.allowed(["inetOrgPerson", "mailAlternateRecipient"])
    assert {"uid", "userid", "employeetype", "mailalternateaddress", "sn", "surname", "cn", "commonname"} <= allowed
    assert "mailalternateaddress" not in s.allowed(["inetOrgPerson"])
    ip = s.object_class("inetorgperson")
    assert ip is not None and ip.kind == "STRUCTURAL" and ip.sup == ("organizationalPerson",)
    aux = s.object_class("mailAlternateRecipient")
    assert aux is not None and aux.kind == "AUXILIARY" and aux.may == ("mailAlternateAddress",)


@pytest.mark.parametrize("bad", ["", "no parentheses", "( 1.2.3 NAME 'x'", "( 1.2.3 NAME 'unterminated )"])
def test_a_description_that_does_not_parse_is_skipped_not_fatal(bad: str) -> None:
    s = parse_schema([bad, "( 1.2.4 NAME 'ok' )"], [bad, "( 1.2.5 NAME 'c' SUP top AUXILIARY MAY ok )"])
    assert s.attribute("ok") is not None and s.object_class("c") is not None
    assert "ok" in s.allowed(["c"])
