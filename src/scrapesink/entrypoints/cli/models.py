"""`scrapesink models ...`: the model declarations in use (bundled and your own files)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from scrapesink.domain.declarations import load_declaration, load_models
from scrapesink.domain.models import Declaration
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    err,
    escape,
    handle_errors,
    open_app,
    out,
    settings,
)
from scrapesink.errors import DeclarationError

app = typer.Typer(
    help="Model declarations (bundled movies, workflows, SCRAPESINK_MODELS files), their tables.",
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


@app.command()
@handle_errors
def apply(
    models: list[Path] = typer.Option([], "--models", help="Another declaration file."),
    allow_destructive: bool = typer.Option(
        False,
        "--allow-destructive",
        help="Also apply changes that drop or rewrite data (drops, type changes, new NOT NULL).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would change."),
) -> None:
    """Bring the database's model tables and upsert functions to the declarations.

    New models, nullable or defaulted fields and indexes are applied by themselves (also on
    first use); destructive changes are refused unless --allow-destructive. Every applied
    change is recorded (`scrapesink models history`).
    """
    try:
        declared = declarations(models)
    except DeclarationError as exc:
        _problems(exc)
    with open_app(announce=False) as application:
        if dry_run:
            changes = application.model_schema.plan(declared)
        else:
            changes = application.model_schema.apply(declared, allow_destructive=allow_destructive)
    if not changes:
        out.print("models are up to date")
        return
    verb = "would apply" if dry_run else "applied"
    for change in changes:
        mark = "[red]destructive[/] " if change.destructive else ""
        out.print(f"{verb} {mark}{escape(change.describe())}", highlight=False)


@app.command()
@handle_errors
def history(
    model: str | None = typer.Argument(None, help="Only this model."),
    limit: int = typer.Option(100, "--limit", "-n", min=1),
) -> None:
    """The changes `models apply` made, newest first."""
    with open_app(announce=False) as application:
        rows = application.model_schema.history(model=model, limit=limit)
    table = Table("applied at", "model", "table", "change", "detail")
    for row in rows:
        change = f"[red]{row.change}[/]" if row.destructive else row.change
        table.add_row(
            row.applied_at.isoformat(timespec="seconds"),
            row.model,
            row.table_name,
            change,
            escape(row.detail),
        )
    out.print(table)
