"""`scrapesink models ...`: the model declarations in use (bundled and your own files)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from scrapesink.domain.models import Declaration, load_declaration, load_models
from scrapesink.entrypoints.cli.common import EXIT_FATAL, err, escape, handle_errors, out, settings
from scrapesink.errors import DeclarationError

app = typer.Typer(
    help="Model declarations: the bundled movies and workflows, plus SCRAPESINK_MODELS files.",
    no_args_is_help=True,
)


def declarations(extra: list[Path]) -> Declaration:
    """Bundled declarations merged with the configured files and ``extra``."""
    return load_models([*settings().models, *extra])


def _problems(exc: DeclarationError) -> None:
    for problem in exc.problems:
        err.print(f"[red]error:[/] {escape(problem)}", highlight=False)
    raise typer.Exit(EXIT_FATAL)


@app.command("list")
@handle_errors
def list_(
    models: list[Path] = typer.Option([], "--models", help="Another declaration file."),
) -> None:
    """Every declared model: table, natural key, fields, children, links."""
    try:
        declared = declarations(models)
    except DeclarationError as exc:
        _problems(exc)
    table = Table("model", "table", "natural key", "fields", "children", "links")
    for model in declared.models.values():
        table.add_row(
            model.name,
            model.table_name,
            ", ".join(model.natural_key),
            str(len(model.fields)),
            ", ".join(f"{c.name} ({c.relation})" for c in model.children) or "-",
            ", ".join(f"{link.name} → {link.model}" for link in model.links) or "-",
        )
    out.print(table)


@app.command()
@handle_errors
def show(
    name: str,
    models: list[Path] = typer.Option([], "--models", help="Another declaration file."),
) -> None:
    """One model's declaration as scrapesink understood it, as JSON."""
    try:
        model = declarations(models).model(name)
    except DeclarationError as exc:
        _problems(exc)
    out.print_json(json.dumps(asdict(model), default=str))


@app.command()
@handle_errors
def check(path: Path) -> None:
    """Check a declaration file; every problem on its own line with its path (exit 1)."""
    try:
        declared = load_declaration(path)
        declarations([]).merged(declared)
    except DeclarationError as exc:
        _problems(exc)
    out.print(f"{path}: {len(declared.models)} model(s), no problems")
