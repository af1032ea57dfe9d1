"""Public folders: the [public] table, the folder map of a public tree, the guard against a
personal folder landing in a shared namespace, and the \\Seen ledger value."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_config import CSV, GOOD, problems_of, write

from mailferry.config import load_project
from mailferry.connectors.imap import uid_ranges
from mailferry.engine.migrate import SHARED_CLASH, _keep_out_of, scope_prefix
from mailferry.engine.public import _uids
from mailferry.errors import ConfigError
from mailferry.formats.folders import FolderMapping, Side, in_namespace, map_all

# GOOD's target admin is a Dovecot master user; its source admin logs in with SASL authzid.
PUBLIC = '\n[public]\nsource_prefix = ""\ntarget_prefix = "Public/"\ntarget_user = "publisher"\n'


def test_public_table_turns_the_unit_on_with_its_settings(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD + PUBLIC))
    assert "public" in project.items
    assert project.public is not None
    assert (project.public.source_prefix, project.public.target_prefix) == ("", "Public/")
    assert (project.public.source_user, project.public.target_user) == (None, "publisher")
    assert project.public.per_user_seen and project.public.subscriptions


def test_without_public_table_no_public_item(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD))
    assert "public" not in project.items
    assert project.public is None


def test_public_item_without_table_uses_defaults_but_needs_a_login(tmp_path: Path) -> None:
    text = GOOD.replace('ledger = "acme.ledger.sqlite"', 'ledger = "acme.ledger.sqlite"\nitems = ["mail", "public"]')
    problems = problems_of(tmp_path, text)
    # A Dovecot master user can't log in as itself: the target's public login needs a user.
    assert len(problems) == 1 and "public.target_user" in problems[0] and "master user" in problems[0], problems


def test_every_public_problem_at_once(tmp_path: Path) -> None:
    text = GOOD + '\n[public]\nsource_password = "env:X"\nper_user_seen = "yes"\nsubscription = true\n'
    problems = problems_of(tmp_path, text, CSV)
    joined = "\n".join(problems)
    assert "public.source_password" in joined and "needs source_user" in joined
    assert "public.per_user_seen" in joined
    assert "subscription" in joined  # the misspelt key
    assert "public.target_user" in joined
    assert len(problems) == 4, problems


def test_public_tree_maps_prefix_to_prefix_without_special_use_roles() -> None:
    src, dst = Side(prefix="Public.", delimiter="."), Side(prefix="", delimiter="/")
    names = [
        ("Public.Team", None),
        ("Public.Team.Archive", None),
        ("Public.Sent Items", None),
        ("Public.Archive", None),
    ]
    got = {m.source: (m.target, m.special_use) for m in map_all(names, src, dst, roles=False)}
    assert got == {
        "Public.Team": ("Team", None),
        "Public.Team.Archive": ("Team/Archive", None),
        "Public.Sent Items": ("Sent Items", None),  # a personal tree would make it Sent
        "Public.Archive": ("Archive", None),
    }
    # The same names at the top of a personal namespace take their roles.
    personal = {m.source: m.target for m in map_all([("Sent Items", None)], Side("", "."), Side("", "/"))}
    assert personal == {"Sent Items": "Sent"}


def test_personal_folder_landing_in_the_targets_public_namespace_is_kept_out() -> None:
    shared = ["Public/"]
    inside = _keep_out_of(FolderMapping("INBOX/Public/Team", "Public/Team", "r", ()), shared)
    root = _keep_out_of(FolderMapping("INBOX/Public", "Public", "r", ()), shared)
    other = FolderMapping("INBOX/Publications", "Publications", "r", ())
    assert inside.target is None and inside.rule.startswith(SHARED_CLASH)
    assert root.target is None
    assert _keep_out_of(other, shared) == other


@given(st.sets(st.integers(min_value=1, max_value=5000), max_size=200))
def test_seen_ledger_value_round_trips(uids: set[int]) -> None:
    assert _uids(uid_ranges(sorted(uids))) == uids


# (name, prefix, the server's namespace prefixes, personal ones, hidden) -> in that namespace
DOVECOT = (["", "Public/"], [""])
CYRUS_USER = (["INBOX/", "user/", ""], ["INBOX/"])
CYRUS_ADMIN = (["user/", ""], [])


@pytest.mark.parametrize(
    ("name", "prefix", "server", "hidden", "inside"),
    [
        ("Public/Team", "Public/", DOVECOT, (), True),
        ("Public/Team/Archive", "Public/", DOVECOT, (), True),
        ("Public", "Public/", DOVECOT, (), False),  # the namespace's root, listed \Noselect
        ("Team", "Public/", DOVECOT, (), False),  # a personal folder
        ("INBOX", "Public/", DOVECOT, (), False),
        ("Team", "", DOVECOT, (), False),  # the empty prefix is personal there
        ("team", "", CYRUS_USER, (), True),
        ("public/team", "", CYRUS_USER, (), True),
        ("INBOX", "", CYRUS_USER, (), False),
        ("INBOX/Team", "", CYRUS_USER, (), False),
        ("user/bob/Sent", "", CYRUS_USER, (), False),
        ("user/alice", "", CYRUS_ADMIN, (), False),
        ("DELETED/team/5F3A", "", CYRUS_ADMIN, ("DELETED/",), False),
        ("team/Archive", "", CYRUS_ADMIN, ("DELETED/",), True),
        ("team/x", "team/", CYRUS_ADMIN, (), True),
        ("other", "team/", CYRUS_ADMIN, (), False),
    ],
)
def test_which_folders_are_in_a_shared_namespace(
    name: str, prefix: str, server: tuple[list[str], list[str]], hidden: tuple[str, ...], inside: bool
) -> None:
    namespaces, personal = server
    assert in_namespace(name, prefix, namespaces, hidden, personal) is inside


DOVECOT_NS = {"personal": [("", "/")], "other": [], "shared": [("Public/", "/")]}
CYRUS_NS = {"personal": [("INBOX/", "/")], "other": [("user/", "/")], "shared": [("", "/")]}


@pytest.mark.parametrize(
    ("ns", "prefix", "expected"),
    [
        (DOVECOT_NS, None, ("Public/", "/")),
        (DOVECOT_NS, "Public/Teams/", ("Public/Teams/", "/")),
        (DOVECOT_NS, "", None),  # the empty prefix is alice's own mailbox there
        (DOVECOT_NS, "Team/", None),
        (CYRUS_NS, None, ("", "/")),
        (CYRUS_NS, "public/", ("public/", "/")),
        (CYRUS_NS, "INBOX/Public/", None),
        (CYRUS_NS, "user/bob/", None),
        ({"personal": [("", "/")], "other": [], "shared": []}, None, None),
    ],
)
def test_public_prefix_only_in_a_shared_namespace(
    ns: dict[str, list[tuple[str, str]]], prefix: str | None, expected: tuple[str, str] | None
) -> None:
    if expected is None:
        with pytest.raises(ConfigError):
            scope_prefix(ns, prefix, "target", "#public")
    else:
        assert scope_prefix(ns, prefix, "target", "#public") == expected


def test_a_units_acls_leave_out_its_logins_own_entries_on_each_side() -> None:
    """The unit's login reads (and on the target writes) the public folders: its own entries,
    direct or from Dovecot's global ACL file (``#login``), are the migration's access, not the
    organisation's; everyone else's stay, global ones of others included (they are findings)."""
    from mailferry.connectors.imap import Endpoint, Login
    from mailferry.engine.acl import AclEngine
    from mailferry.engine.migrate import AccountJob, Connection, Scope

    ep = Endpoint("127.0.0.1", 1, "none")
    job = AccountJob(
        "#public",
        "#public",
        Connection(ep, Login("publisher", "pw", admin="admin")),
        Connection(ep, Login("cyrus", "pw")),
        scope=Scope(),
    )
    acls = {"Team": {"#publisher": "lrswipkxtea", "publisher": "lr", "admin": "l", "$staff": "lrswi", "#bob": "lr"}}
    assert AclEngine._without_login(job, acls) == {"Team": {"$staff": "lrswi", "#bob": "lr"}}
    target = {"Team": {"cyrus": "lrswipkxtecda", "anyone": "lrs"}}
    assert AclEngine._without_login(job, target, role="target") == {"Team": {"anyone": "lrs"}}
    personal = AccountJob("alice", "alice", job.source, job.target)
    assert AclEngine._without_login(personal, acls) == acls  # an account's own ACLs stay whole
