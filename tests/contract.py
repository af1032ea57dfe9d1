"""The --json contract: every output validates against its schema in src/mailferry/schemas.

Importable by tests (``from contract import validate``); schemas reference each other by their
``$id`` (``common.schema.json#/$defs/...``), resolved from the package's files, never fetched.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = resources.files("mailferry") / "schemas"


@functools.cache
def _registry() -> tuple[Registry, dict[str, dict[str, Any]]]:
    by_name: dict[str, dict[str, Any]] = {}
    registry: Registry = Registry()
    for entry in SCHEMAS.iterdir():
        if entry.name.endswith(".schema.json"):
            schema = json.loads(entry.read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
            by_name[entry.name.removesuffix(".schema.json")] = schema
            registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry, by_name


def schema_names() -> list[str]:
    return sorted(_registry()[1])


def validate(name: str, data: Any) -> None:
    """Raise AssertionError naming every violation of schema ``name`` (e.g. "migrate")."""
    registry, by_name = _registry()
    assert name in by_name, f"no schema for {name!r} in src/mailferry/schemas"
    validator = Draft202012Validator(by_name[name], registry=registry)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors[:20]]
        raise AssertionError(f"{name} --json breaks its schema:\n" + "\n".join(lines))
