"""The kinds of item a project moves; all by default (``migrate --only`` narrows a run).

"filters": each account's Sieve scripts (ManageSieve), after its mail (they name its folders).
"public": the public (shared) folders as their own unit, moved when the project has [public].
"permissions": the folder ACLs (RFC 4314) of each account's own folders, carried after its mail;
"metadata": their METADATA comments (RFC 5464).

A module of its own so that reading a project file does not import the calendar model.
"""

from __future__ import annotations

from typing import Literal

ItemType = Literal["mail", "calendars", "contacts", "filters", "public", "permissions", "metadata"]
ITEM_TYPES: tuple[ItemType, ...] = ("mail", "calendars", "contacts", "filters", "public", "permissions", "metadata")
