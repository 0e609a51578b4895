"""`scrapesink backup` (create, list, verify, prune) and `scrapesink restore`."""

from __future__ import annotations

import json
from datetime import timedelta

import typer

from scrapesink import __version__
from scrapesink.config import parse_duration
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    EXIT_OK,
    err,
    escape,
    fitted_table,
    handle_errors,
    open_app,
    out,
)

app = typer.Typer(
    help="Backups: pg_dump + the CSV tree and journal + a manifest with SHA-256 checksums.",
    invoke_without_command=True,
)


_ID_HELP = "The set's id (see backup list), a prefix only it has, or latest."


def _duration(text: str | None, option: str) -> timedelta | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@app.callback()
@handle_errors
def create(
    ctx: typer.Context,
    keep: str | None = typer.Option(None, help="Then remove sets older than this (30d)."),
    keep_last: int | None = typer.Option(None, min=1, help="Then keep only the newest N sets."),
) -> None:
    """Write a backup set to SCRAPESINK_BACKUP_DIR (default <data dir>/backups).

    A set is a directory named by its UTC time: database.dump (pg_dump custom format),
    files.tar (CSV files, journal, local state) and manifest.json (sizes, SHA-256). It is
    written under a temporary name and renamed only when whole: a failure leaves nothing.
    """
    if ctx.invoked_subcommand is not None:
        # `backup --keep-last 1 prune`, as `backup --help` shows the options: prune takes them
        ctx.obj = {"keep": keep, "keep_last": keep_last}
        return
    keep_for = _duration(keep, "--keep")
    with open_app(announce=False) as application:
        backups = application.backups()
        manifest = backups.create(
            version=__version__,
            revision=application.migrator.current(),
            database=application.database_label,
        )
        removed = (
            backups.prune(keep=keep_for, keep_last=keep_last)
            if keep_for is not None or keep_last is not None
            else []
        )
    out.print(
        f"backup {manifest.id} written to {escape(str(manifest.path))}"
        f" ({manifest.bytes / 1e6:.1f} MB)"
    )
    for old in removed:
        out.print(f"removed {old.id} (retention)")


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json", help="JSON lines.")) -> None:
    """Backup sets, oldest first."""
    with open_app(announce=False, schema="skip") as application:
        sets = application.backups().list()
    if as_json:
        for manifest in sets:
            print(json.dumps(manifest.as_dict()))
        return
    rows = [
        [
            manifest.id,
            manifest.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{manifest.bytes / 1e6:.1f} MB",
            manifest.schema_revision or "-",
            escape(manifest.database),
        ]
        for manifest in sets
    ]
    columns = ("id", "created (UTC)", "size", "schema", "database")
    # the id is the one value needed (verify, restore): never cut; the database goes first
    drop = ("database", "schema", "created (UTC)")
    out.print(fitted_table(columns, rows, keep={"id"}, drop_first=drop, right={"size"}))


@app.command("verify")
@handle_errors
def verify(backup_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP)) -> None:
    """Check sizes and SHA-256 against the manifest, that pg_restore can read the dump and the
    tar can be read. Exit code 1 when anything is off."""
    with open_app(announce=False, schema="skip") as application:
        backups = application.backups()
        backup_id = backups.resolve(backup_id)
        problems = backups.verify(backup_id)
    for problem in problems:
        err.print(f"[red]damaged[/] {escape(problem)}")
    if problems:
        raise typer.Exit(EXIT_FATAL)
    out.print(f"backup {backup_id} is whole")


@app.command("prune")
@handle_errors
def prune(
    ctx: typer.Context,
    keep: str | None = typer.Option(None, help="Remove sets older than this (30d)."),
    keep_last: int | None = typer.Option(None, min=1, help="Keep the newest N sets."),
) -> None:
    """Retention: remove sets older than --keep, except the newest --keep-last (given here or
    before the command: `scrapesink backup --keep-last 1 prune`)."""
    given = ctx.obj if isinstance(ctx.obj, dict) else {}
    keep = keep if keep is not None else given.get("keep")
    keep_last = keep_last if keep_last is not None else given.get("keep_last")
    if keep is None and keep_last is None:
        raise typer.BadParameter("say what to keep: --keep 30d and/or --keep-last N")
    with open_app(announce=False, schema="skip") as application:
        removed = application.backups().prune(keep=_duration(keep, "--keep"), keep_last=keep_last)
    for old in removed:
        out.print(f"removed {old.id}")
    out.print(f"{len(removed)} set(s) removed")


@handle_errors
def restore(
    backup_id: str = typer.Argument(..., metavar="ID", help=_ID_HELP),
    force: bool = typer.Option(
        False, "--force", help="Replace a database and data directory that are not empty."
    ),
) -> None:
    """Restore a backup set: verified first (a damaged set changes nothing), then the dump is
    loaded and the CSV files, journal and state put back. Into an empty database and data
    directory, unless --force."""
    with open_app(announce=False, schema="skip") as application:
        backups = application.backups()
        manifest = backups.restore(
            backups.resolve(backup_id), database_empty=application.upkeep.is_empty(), force=force
        )
    out.print(f"restored {manifest.id} (schema {manifest.schema_revision})")
    raise typer.Exit(EXIT_OK)
