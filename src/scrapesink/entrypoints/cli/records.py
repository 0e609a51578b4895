"""`scrapesink get|list|search|update|delete|stats|compact`: the records of declared models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from scrapesink.application.models import ModelService
from scrapesink.bootstrap import App
from scrapesink.domain.declarations import load_models
from scrapesink.domain.models import ModelDef
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    EXIT_PENDING,
    escape,
    handle_errors,
    open_app,
    out,
    settings,
)
from scrapesink.entrypoints.parsing import parse_filters, parse_key
from scrapesink.errors import InputError, NotFound

MODELS_OPTION = typer.Option([], "--models", help="Another declaration file.")


@contextmanager
def _service(models: list[Path], *, writing: bool = False) -> Iterator[tuple[App, ModelService]]:
    declaration = load_models([*settings().models, *models])
    with open_app(announce=False) as app:
        app.use_declaration(declaration)
        if writing:
            app.start_writing()
        yield app, app.models()


def _print(record: dict[str, Any]) -> None:
    out.print_json(json.dumps(record, ensure_ascii=False, default=str))


@handle_errors
def get(
    model: str = typer.Argument(..., help="The model (movies, workflows, ...)."),
    key: str = typer.Argument(..., help='Natural key value, or a JSON object {"a": .., "b": ..}.'),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """One record with its children and links, as JSON (exit 1 when there is none)."""
    with _service(models) as (_, service):
        record = service.get(model, parse_key(key))
    if record is None:
        raise NotFound(f"no {model} record with key {key!r}")
    _print(record)


@handle_errors
def list_(
    model: str = typer.Argument(..., help="The model (movies, workflows, ...)."),
    where: list[str] = typer.Option(
        [],
        "--where",
        "-w",
        metavar="FILTER",
        help="Filter FIELD OP VALUE, OP one of = != < <= > >= ~ (JSON contains); repeatable. "
        "Examples: `scrapesink list workflows -w 'quality_score>=0.8' -w layer1_success=true`, "
        "`scrapesink list movies -w 'genres~[\"Drama\"]'`",
    ),
    sort: str | None = typer.Option(None, "--sort", help="Field to sort by; -field descending."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10_000),
    after: str | None = typer.Option(
        None, "--after", metavar="CURSOR", help="Cursor from the previous page."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
    children: bool = typer.Option(
        False, "--children", help="Whole records, with their children and links (with --json)."
    ),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """A page of records, their own fields (keyset pagination: pass the printed cursor to
    --after; ties in the sorted field are ordered by id, in the same direction)."""
    with _service(models) as (app, service):
        declared = service.model(model)
        page = app.model_reader.list(
            declared,
            filters=parse_filters(where),
            sort=sort,
            limit=limit,
            after=after,
            children=children,
        )
    if as_json:
        for record in page.records:
            print(json.dumps(record, ensure_ascii=False, default=str))
    else:
        columns = [f.name for f in declared.fields][:6]
        table = Table(*columns)
        for record in page.records:
            table.add_row(*(escape(_short(record.get(c))) for c in columns))
        out.print(table)
    if page.next_cursor:
        out.print(f"next page: --after {page.next_cursor}", highlight=False)


def _match_text(model: ModelDef, record: dict[str, Any]) -> str:
    """The first non-empty search field, of the record or of its 1:1 children."""
    places = [(record, model.fields)] + [
        (record.get(c.name) or {}, c.fields) for c in model.children if c.relation == "one"
    ]
    for values, fields in places:
        for f in fields:
            if f.search and values.get(f.name):
                return str(values[f.name])
    return ""


def _short(value: Any) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


@handle_errors
def search(
    model: str = typer.Argument(..., help="The model (movies, workflows, ...)."),
    query: str = typer.Argument(..., help='Words, "a phrase", -excluded, or OR.'),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """Full-text search over the model's search fields, best match first."""
    with _service(models) as (app, service):
        declared = service.model(model)
        hits = app.model_reader.search(declared, query, limit=limit)
    table = Table("rank", *declared.natural_key, "match")
    for hit in hits:
        record = hit.record
        text = _match_text(declared, record)
        keys = [escape(str(record.get(k))) for k in declared.natural_key]
        table.add_row(f"{hit.rank:.3f}", *keys, escape(_short(text)))
    out.print(table)
    out.print(f"{len(hits)} match(es)")


@handle_errors
def update(
    model: str = typer.Argument(..., help="The model (movies, workflows, ...)."),
    key: str = typer.Argument(..., help="Natural key value, or a JSON object."),
    changes: str = typer.Argument(..., help="The changed fields as JSON: '{\"retry_count\": 2}'"),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """Change some fields of a record (through the journal: PostgreSQL and CSV both see it)."""
    try:
        parsed = json.loads(changes)
    except json.JSONDecodeError as exc:
        raise InputError(f"CHANGES is not valid JSON: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise InputError("CHANGES must be a JSON object of fields")
    with _service(models, writing=True) as (_, service):
        record = service.update(model, parse_key(key), parsed)
    _print(record)


@handle_errors
def delete(
    model: str = typer.Argument(..., help="The model (movies, workflows, ...)."),
    keys: list[str] = typer.Argument(..., help="Natural key values (or JSON objects)."),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """Delete records with their children and links (the CSV files keep them as history,
    marked deleted, until `scrapesink compact`)."""
    with _service(models, writing=True) as (_, service):
        summary = service.delete(model, [parse_key(k) for k in keys])
    if summary.pending:  # journaled: PostgreSQL says what it found when it is back
        out.print(f"{len(keys):,} {model} delete(s) journaled, pending for PostgreSQL")
        raise typer.Exit(EXIT_PENDING)
    missing = summary.unchanged
    out.print(
        f"deleted {summary.stored:,} of {len(keys):,} {model} record(s)"
        + (f"; {missing:,} not found" if missing else "")
    )
    if summary.stored == 0:
        raise typer.Exit(EXIT_FATAL)


@handle_errors
def stats(
    model: str | None = typer.Argument(
        None, help="A model (movies, workflows, ...); without one, the whole installation."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """Without MODEL: table sizes, events per source and day, job run success rates, pool.
    With MODEL: counts, rates of boolean fields (success flags), averages, ranges, child rows.
    """
    if model is None:
        from scrapesink.entrypoints.cli.ops import installation_stats

        installation_stats(as_json)
        return
    with _service(models) as (app, service):
        result = app.model_reader.stats(service.model(model))
    if as_json:
        print(json.dumps(result, default=str))
        return
    table = Table("statistic", "value")
    for name, value in result.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(name, shown)
    out.print(table)


@handle_errors
def compact(
    model: str | None = typer.Argument(None, help="One model (default: every model)."),
    models: list[Path] = MODELS_OPTION,
) -> None:
    """Rewrite model CSV files keeping each row's latest version (deleted rows dropped);
    atomic: a temporary file is renamed over the old one."""
    declaration = load_models([*settings().models, *models])
    if model is not None:
        declaration.model(model)
    with open_app(announce=False, offline_ok=True) as app:
        app.use_declaration(declaration)
        app.start_writing()  # pending deliveries first: compaction sees every version
        result = app.operations.compact(model)
    table = Table("file", "rows before", "rows after")
    for file, (before, after) in result.items():
        table.add_row(file, f"{before:,}", f"{after:,}")
    out.print(table)
