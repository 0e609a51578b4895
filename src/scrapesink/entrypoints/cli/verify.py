"""`scrapesink verify`: whether PostgreSQL and the CSV files hold the same data; `--repair csv`."""

from __future__ import annotations

import json

import typer

from scrapesink.adapters import verify as comparison
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    EXIT_OK,
    err,
    escape,
    handle_errors,
    open_app,
    out,
)
from scrapesink.errors import ConfigError


@handle_errors
def verify(
    model: str | None = typer.Option(
        None, "--model", "-m", metavar="MODEL", help="Only this model's records."
    ),
    source: str | None = typer.Option(
        None, "--source", "-s", metavar="SOURCE", help="Only this source's raw events."
    ),
    repair: str | None = typer.Option(
        None,
        "--repair",
        metavar="STORE",
        help="csv: rebuild the CSV files (of --model or --source, else all) from PostgreSQL,"
        " then compare again.",
    ),
    limit: int = typer.Option(20, "--limit", min=0, metavar="N", help="Differences shown."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Compare PostgreSQL and the CSV files: every raw-event key, every model record's latest
    version, and each CSV file against the length scrapesink left it at (a line added or
    removed by hand). Exit code 1 on any difference.

    Run it while nothing writes (differences in flight look like drift); `scrapesink replay`
    first delivers what journals still hold.
    """
    if model is not None and source is not None:
        raise ConfigError("give --model or --source, not both")
    if repair not in (None, "csv"):
        raise ConfigError(f"--repair {repair}: only the CSV files can be rebuilt (--repair csv)")
    with open_app() as app:
        declaration = app.declaration
        if model is not None:
            declaration.model(model)  # an unknown model is one clear error
        if repair == "csv":
            if source is None:
                models = [model] if model is not None else list(declaration.models)
                for name in models:
                    written = comparison.repair_model(
                        app.database, declaration, app.settings.data_dir, declaration.model(name)
                    )
                    err.print(f"rebuilt the CSV files of {name}: {written:,} records")
            if model is None:
                names = (
                    [source]
                    if source is not None
                    else comparison.sources(app.database, app.settings.data_dir)
                )
                for name in names:
                    written = comparison.repair_events(app.database, app.settings.data_dir, name)
                    err.print(
                        f"rebuilt the CSV files of source {escape(name)}: {written:,} events",
                        highlight=False,
                    )
        report = comparison.verify(
            app.database,
            declaration,
            app.settings.data_dir,
            model=model,
            source=source,
            limit=limit,
        )
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        compared = ", ".join(f"{what} {n:,}" for what, n in report.compared.items())
        out.print(f"compared: {compared or 'nothing'}", highlight=False)
        for line in report.files:
            out.print(f"[yellow]changed by hand:[/] {escape(line)}", highlight=False)
        for difference in report.first:
            out.print(f"[yellow]differs:[/] {escape(str(difference))}", highlight=False)
        if report.differences > len(report.first):
            out.print(f"... and {report.differences - len(report.first):,} more", highlight=False)
        if report.ok:
            out.print("[green]PostgreSQL and the CSV files agree[/]")
        else:
            counts = ", ".join(f"{what} {n:,}" for what, n in report.counts.items())
            out.print(
                f"[red]{report.differences:,} difference(s)[/]"
                + (f" ({counts})" if counts else "")
                + (f", {len(report.files)} file(s) changed by hand" if report.files else "")
                + " — `scrapesink verify --repair csv` rebuilds the CSV files from PostgreSQL",
                highlight=False,
            )
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FATAL)
