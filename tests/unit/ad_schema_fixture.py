"""A small AD-like target schema for the planner's unit tests (the shape Samba publishes)."""

from __future__ import annotations

from mailferry.formats.ldap_schema import Schema, parse_schema


def _attr(oid: str, name: str, extra: str = "") -> str:
    return f"( {oid} NAME '{name}' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' {extra})"


ATTRIBUTES = [
    _attr("2.5.4.3", "cn"),
    _attr("2.5.4.4", "sn"),
    _attr("2.5.4.42", "givenName"),
    _attr("2.5.4.20", "telephoneNumber"),
    _attr("2.5.4.12", "title"),
    _attr("1.1.1", "displayName"),
    _attr("1.1.2", "mail"),
    _attr("1.1.3", "proxyAddresses"),
    _attr("1.1.4", "info"),
    _attr("1.1.5", "wWWHomePage"),
    _attr("1.1.6", "notes"),
    _attr("1.1.7", "targetAddress"),
    _attr("1.1.8", "thumbnailPhoto"),
    _attr("1.1.9", "sAMAccountName"),
    _attr("1.1.10", "userAccountControl"),
    _attr("1.1.11", "userPrincipalName"),
    _attr("1.1.12", "manager"),
    _attr("1.1.13", "legacyExchangeDN"),
    _attr("1.1.14", "mailNickname"),
    _attr("1.1.15", "objectGUID", "NO-USER-MODIFICATION "),
    _attr("1.1.16", "whenCreated", "NO-USER-MODIFICATION "),
    _attr("1.1.17", "member"),
]
CLASSES = [
    "( 2.5.6.0 NAME 'top' ABSTRACT MUST (objectClass ) MAY (proxyAddresses $ wWWHomePage $ displayName $ "
    "objectGUID $ whenCreated ) )",
    "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST (cn ) MAY (sn $ telephoneNumber ) )",
    "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY (givenName $ title $ mail $ manager $ "
    "thumbnailPhoto ) )",
    "( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL MAY (sAMAccountName $ "
    "userAccountControl $ userPrincipalName ) )",
    "( 1.2.840.113556.1.5.15 NAME 'contact' SUP organizationalPerson STRUCTURAL MAY (notes ) )",
    "( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL MAY (member ) )",
    "( 1.2.840.113556.1.3.46 NAME 'mailRecipient' SUP top AUXILIARY MAY (info $ targetAddress $ legacyExchangeDN $ "
    "mailNickname ) )",
]
RULES = [
    "( 1.2.840.113556.1.5.9 NAME 'user' AUX ( mailRecipient ) )",
    "( 1.2.840.113556.1.5.15 NAME 'contact' AUX ( mailRecipient ) )",
]


def ad_schema() -> Schema:
    return parse_schema(ATTRIBUTES, CLASSES, RULES)
