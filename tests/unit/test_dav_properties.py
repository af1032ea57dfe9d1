"""Which collection properties count as not kept on the target (and are named and set again)."""

from __future__ import annotations

from dataclasses import replace

from mailferry.engine.dav import property_differences
from mailferry.model.dav import Collection

SRC = Collection("/alice/Work/", "calendar", "Work", displayname="Work", color="#ff0000", components=("VEVENT",))


def test_the_same_meaning_is_no_difference() -> None:
    tgt = replace(SRC, href="/dav/calendars/user/alice/Work/", color="#FF0000FF")
    assert property_differences(SRC, tgt) == []


def test_a_component_set_the_target_cant_change_counts_only_when_it_takes_less() -> None:
    # Cyrus' Default calendar takes VEVENT and VTODO and keeps that (protected after MKCALENDAR)
    assert property_differences(SRC, replace(SRC, components=("VEVENT", "VTODO"))) == []
    assert property_differences(SRC, replace(SRC, components=())) == []  # the target doesn't say
    assert property_differences(SRC, replace(SRC, components=("VTODO",))) == ["components"]


def test_a_lost_display_name_or_colour_is_named() -> None:
    assert property_differences(SRC, replace(SRC, displayname=None, color="#00FF00")) == ["displayname", "color"]
