"""The README's project file is the one ``mailferry init`` writes with the README's own example
command: the section "The project file" shows every key as the template describes it, so a key
added to the template (or a comment changed) without the README fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailferry.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "The complete file, as `mailferry init` writes it"


def readme_init_command(text: str) -> list[str]:
    """The arguments of the README's example ``mailferry init`` (an indented block, its lines
    joined at the trailing backslashes)."""
    m = re.search(r"^    mailferry init (.*?)(?<!\\)\n", text, re.S | re.M)
    assert m, "no indented `mailferry init` example in the README"
    return ["init", *shlex.split(m.group(1).replace("\\\n", " "))]


def readme_project_file(text: str) -> str:
    """The ```toml block after the line that says it is what ``mailferry init`` writes."""
    at = text.index(MARKER)
    m = re.compile(r"^```toml\n(.*?)^```$", re.S | re.M).search(text, at)
    assert m, f"no ```toml block after {MARKER!r}"
    return m.group(1)


def test_readme_project_file_is_what_init_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text(encoding="utf-8")
    args = readme_init_command(text)
    assert args[1] == "acme.toml" and "--source-admin" in args  # the example as the README shows it
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    written = (tmp_path / args[1]).read_text(encoding="utf-8")
    shown = readme_project_file(text)
    assert shown == written, (
        "README.md's project file differs from what `mailferry init` writes: regenerate the block "
        "(tests/unit/test_readme_template.py shows how the command is read)"
    )
