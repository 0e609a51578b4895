"""`scrapesink db ...`: the system schema (owned by Alembic), and the database from outside:
its URL, a psql shell, the embedded server kept up for other clients."""

from __future__ import annotations

import os
import signal
import subprocess

import typer
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.entrypoints.cli.common import err, fail, handle_errors, open_app, out, settings

app = typer.Typer(
    help="The database: schema migrations (Alembic), its URL, a psql shell, and the embedded"
    " server kept up for other clients (start, stop).",
    no_args_is_help=True,
)


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
    """Print the libpq URL of the database in use. The embedded server stops with the last
    scrapesink process: for other clients, `scrapesink db start` first (or `db shell`)."""
    with open_app(schema="skip", announce=False) as application:
        print(application.database.conninfo)
        if application.embedded is not None and not application.embedded.kept_running:
            err.print(
                "[dim]the embedded server stops when this command ends: run `scrapesink db"
                " start` to keep it up for other clients, or `scrapesink db shell`[/]"
            )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@handle_errors
def shell(ctx: typer.Context) -> None:
    """psql on the database in use (the embedded one, or the configured server), with psql from
    the PostgreSQL scrapesink ships; the embedded server stays up while it runs. Extra
    arguments go to psql: `scrapesink db shell -c 'SELECT count(*) FROM raw_events'`."""
    with open_app(schema="skip", announce=False) as application:
        settings = application.settings
        psql = (settings.pg_bin_dir or EmbeddedPostgres.binaries()) / "psql"
        if not psql.exists():
            fail(f"no psql in {psql.parent} (SCRAPESINK_PG_BIN_DIR)")
        # The password goes in psql's environment, not on its command line (`ps` shows that).
        parts = conninfo_to_dict(application.database.conninfo)
        password = parts.pop("password", None)
        env = {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}
        # Ctrl-C is psql's (cancel the query, clear the line), not a reason to end the session.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            target = make_conninfo("", **parts)
            code = subprocess.call([str(psql), target, *ctx.args], env=env)
        finally:
            signal.signal(signal.SIGINT, previous)
    raise typer.Exit(code)


@app.command()
@handle_errors
def start() -> None:
    """Start the embedded server and keep it up after this command, for other clients (psql,
    pandas, DBeaver, Grafana): it prints the URL. `scrapesink db stop` stops it."""
    embedded = _embedded()
    embedded.keep_running(True)
    try:
        uri = embedded.start()
    except BaseException:
        embedded.keep_running(False)  # not started: nothing to keep running
        raise
    embedded.stop()  # lets go of it; kept running by the marker
    out.print(f"embedded PostgreSQL running in {embedded.pgdata} (until `scrapesink db stop`)")
    print(uri)


@app.command()
@handle_errors
def stop() -> None:
    """Stop the embedded server `scrapesink db start` kept up; while scrapesink processes still
    use it, it stops when the last of them ends."""
    embedded = _embedded()
    embedded.keep_running(False)
    if not (embedded.pgdata / "postmaster.pid").exists():
        out.print("the embedded PostgreSQL is not running")
        return
    embedded.start()
    users = embedded.holders()
    embedded.stop()
    if users:
        out.print(
            f"{len(users)} scrapesink process(es) still use it (pid {', '.join(map(str, users))}):"
            " it stops when the last of them ends"
        )
    else:
        out.print("embedded PostgreSQL stopped")


def _embedded() -> EmbeddedPostgres:
    config = settings()
    if not config.embedded:
        fail(
            "a database server is configured (SCRAPESINK_DATABASE_URL or SCRAPESINK_PG_HOST):"
            " there is no embedded PostgreSQL to start or stop"
        )
    return EmbeddedPostgres(config.pgdata_dir)
