"""The help texts and the README cannot drift from the code: every example a command's --help
gives is run, and every command the README's "Command line" section names exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from scrapesink.entrypoints.cli import app
from tests.e2e.test_cli_ingest import run
from tests.unit.test_cli_help import _commands

README = Path(__file__).resolve().parents[2] / "README.md"
_EXAMPLE = re.compile(r"`(scrapesink [^`]+)`")


def _help(*command: str) -> str:
    """A command's --help, in this process (a subprocess each would cost a minute in all)."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, (command, result.output)
    return result.output


def _help_examples() -> list[str]:
    examples: list[str] = []
    for command in _commands():
        text = _help(*command)
        flat = " ".join(line.strip(" │") for line in text.splitlines())
        examples += [e for e in _EXAMPLE.findall(flat) if "<" not in e]
    return list(dict.fromkeys(examples))


def test_every_example_in_the_help_runs(cli_env, tmp_path):
    movies = tmp_path / "movies.jsonl"
    movies.write_text(json.dumps({"url": "https://m/1", "title": "Heat", "genres": ["Drama"]}))
    flows = tmp_path / "flows.jsonl"
    flows.write_text(
        json.dumps({"workflow_id": "w1", "url": "https://n8n.io/w/1", "quality_score": 0.9})
    )
    assert run(cli_env, "ingest", "--model", "movies", str(movies)).returncode == 0
    assert run(cli_env, "ingest", "--model", "workflows", str(flows)).returncode == 0
    examples = _help_examples()
    assert any("genres~" in e for e in examples)  # the extraction found the list examples
    known = {tuple(c) for c in _commands()}
    for example in examples:
        words = shlex.split(example)[1:]
        if tuple(words) in known:  # a mention of a command ("see `scrapesink jobs`"): it exists
            _help(*words)
            continue
        result = run(cli_env, *words)
        assert result.returncode == 0, f"{example}\n{result.stdout}\n{result.stderr}"


def _readme_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Command line", 1)[1].split("```", 2)[1]
    commands = []
    for line in section.splitlines():
        words = line.split()
        if not words or words[0] != "scrapesink":
            continue
        path = []
        for word in words[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        commands.append(path)
        # "db upgrade [REV] | downgrade [REV] | current": each alternative is a subcommand
        for alternative in re.findall(r"\|\s*([a-z][a-z-]*)", line):
            if path:
                commands.append([*path[:1], alternative])
    return commands


def test_every_command_the_readme_names_exists():
    known = {tuple(c) for c in _commands()}
    for path in _readme_commands():
        # the longest prefix that is a command: the rest may be an argument (a model's name)
        while path and tuple(path) not in known:
            path = path[:-1]
        assert path, "a README line names no command"
        _help(*path)
    named = {tuple(p[:1]) for p in _readme_commands() if p}
    assert ("db",) in named and ("ingest",) in named


# Commands the README names that are not run as they stand: they serve forever, are
# interactive, or destroy what the commands after them look at; their --help is checked.
_NOT_RUN = {("serve",), ("worker",), ("db", "shell"), ("db", "downgrade"), ("deadletters", "purge")}
# Without what they need they explain it: a usage answer (export: a format; prune: what to keep)
_EXPECTED_EXIT = {("export",): 2, ("backup", "prune"): 2}


def test_every_readme_command_runs_on_the_embedded_database(tmp_path):
    import typer.main

    from tests.conftest import env_for
    from tests.support import stop_if_running

    root = typer.main.get_command(app)
    env = env_for("", tmp_path / "data")  # nothing configured: the embedded database
    known = {tuple(c) for c in _commands()}
    paths: list[tuple[str, ...]] = []
    for path in _readme_commands():
        while path and tuple(path) not in known:
            path = path[:-1]
        if path and tuple(path) not in paths:
            paths.append(tuple(path))
    try:
        assert run(env, "demo").returncode == 0
        for path in paths:
            command = root
            for word in path:
                command = command.commands[word]  # type: ignore[attr-defined]
            needs = [p for p in command.params if p.required]
            if path in _NOT_RUN or needs or (hasattr(command, "commands") and path != ("backup",)):
                _help(*path)
                continue
            result = run(env, *path)
            expected = _EXPECTED_EXIT.get(path, 0)
            assert result.returncode in (expected, 4), (path, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr, path
            if path == ("db", "start"):
                assert run(env, "db", "stop").returncode == 0
    finally:
        stop_if_running(tmp_path / "data" / "pgdata")
