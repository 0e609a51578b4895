"""Every command's --help names values as people do (FILE, MODEL, N), never as Python types."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from scrapesink.entrypoints.cli import app

_PYTHON_TYPE = re.compile(
    r"<(bool|str|int|float|list\[[^\]]*\]|Path|int range|float range)>|\{\w+\}"
)


def _commands() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    found: list[list[str]] = [[]]

    def walk(group: object, path: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            found.append([*path, name])
            walk(command, [*path, name])

    walk(root, [])
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "scrapesink")
def test_help_shows_no_python_types(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert not _PYTHON_TYPE.findall(result.output), result.output


def _infos(typer_app) -> list:
    found = list(typer_app.registered_commands)
    for group in typer_app.registered_groups:
        found += _infos(group.typer_instance)
    return found


def test_help_paragraphs_flow_so_the_terminal_wraps_them():
    # A docstring's line breaks, kept, broke sentences in the middle on an 80-column terminal.
    for info in _infos(app):
        text = info.help or (info.callback.__doc__ if info.callback else "") or ""
        assert not re.search(r"[^\n]\n(?![-*] )[^\n]", text), (info.name, text)
