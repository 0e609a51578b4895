"""`scrapesink db ...`: the system schema, owned by Alembic."""

from __future__ import annotations

import typer

from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.entrypoints.cli.common import handle_errors, open_app, out

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@app.command()
@handle_errors
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    with open_app(schema="skip") as application:
        before, after = application.migrator.upgrade(revision)
    if before == after:
        out.print(f"already at {after}")
    else:
        out.print(f"upgraded {before or '<empty>'} -> {after}")


@app.command()
@handle_errors
def downgrade(revision: str = typer.Argument("-1", help="Target revision, or -N steps.")) -> None:
    """Revert migrations down to REVISION (`base` removes every scrapesink table)."""
    with open_app(schema="skip") as application:
        before, after = application.migrator.downgrade(revision)
    out.print(f"downgraded {before or '<empty>'} -> {after or '<empty>'}")


@app.command()
@handle_errors
def current() -> None:
    """Show the revision the database is at, and the latest one."""
    with open_app(schema="skip") as application:
        now, head = application.migrator.current(), application.migrator.head()
    state = "up to date" if now == head else "run `scrapesink db upgrade`"
    out.print(f"current: {now or '<empty>'}  head: {head}  ({state})")


@app.command()
@handle_errors
def history() -> None:
    """List every migration, newest first (no database needed)."""
    out.print(Migrator.history(), end="", highlight=False)


@app.command()
@handle_errors
def url() -> None:
    """Print the libpq URL of the database in use, e.g. for `psql "$(scrapesink db url)"`."""
    with open_app(schema="skip", announce=False) as application:
        print(application.database.conninfo)
