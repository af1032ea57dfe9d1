"""Real iCalendar and vCard files that nobody here wrote (the icalendar and vobject test suites,
tests/data/dav) carried through a migration and compared. A file the source server itself
refuses is left out and listed; one the target refuses is a finding with the server's words and
shows in verify as refused, never as silently missing or altered; every other one verifies
equal after normalisation."""

from __future__ import annotations

import pytest
from dav_org import REFUSED_BY_SOURCE, seed_org
from helpers import cli
from test_dav_migrate import USERS, dav_project, domain_of

from mailferry.errors import ExitCode
from mailferry.sandbox.dav_servers import RadicaleServer


@pytest.mark.parametrize("direction", ["radicale-cyrus", "cyrus-radicale"])
def test_real_files_are_carried_or_named(direction, dovecot_factory, cyrus_factory, tmp_path) -> None:
    radicale: list[RadicaleServer] = []

    def side(kind: str, name: str):
        if kind == "cyrus":
            s = cyrus_factory(users=dict(USERS))
            return s, s.dav_url
        r = RadicaleServer.start(tmp_path / name, users=dict(USERS))
        radicale.append(r)
        return dovecot_factory(users=dict(USERS)), r.url

    try:
        skind, tkind = direction.split("-")
        src_imap, src_url = side(skind, "src")
        tgt_imap, tgt_url = side(tkind, "tgt")
        REFUSED_BY_SOURCE.clear()
        seed_org(src_url, USERS, real=True)
        print(f"left out, refused by the source {skind}: {len(REFUSED_BY_SOURCE)}")
        for line in REFUSED_BY_SOURCE:
            print("  ", line)
        project = dav_project(
            tmp_path / direction,
            src_imap,
            tgt_imap,
            src_url,
            tgt_url,
            src_admin=False,
            tgt_admin=False,
            new_domain=domain_of(tgt_url, "alice"),
        )
        r = cli("migrate", project, "--json")
        assert r.code in (ExitCode.OK, ExitCode.FINDINGS), r.out + r.err
        data = r.json()
        refused = {f["details"].get("item_uid") for f in data["findings"] if f["kind"] == "refused"}
        expected = ("refused", "unusual", "sharing-unknown", "freebusy-unknown")
        assert all(f["kind"] in expected for f in data["findings"]), data["findings"]
        for f in data["findings"]:
            if f["kind"] == "refused":
                assert f["details"]["status"] >= 400 and f["details"]["item_uid"] in f["message"], f
        copied = sum(a["calendars"]["copied"] for a in data["accounts"])
        assert copied >= 20, copied  # the real files that both servers take, and ours
        v = cli("verify", project, "--deep", "--json").json()
        seen: set[str | None] = set()
        for a in v["accounts"]:
            for coll in a["calendars"]["collections"]:
                for d in coll["discrepancies"]:
                    assert d["what"] == "refused", d  # nothing missing, extra or altered
                    seen.add(d["item_uid"])
        assert seen == refused
        print(f"{direction}: {copied} items copied and verified equal; refused by the target: {sorted(refused)}")
    finally:
        for rs in radicale:
            rs.close()
