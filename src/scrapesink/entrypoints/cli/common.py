"""What every CLI command shares: exit codes, consoles, settings from global options, errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

from scrapesink.application.replay import ReplayResult
from scrapesink.bootstrap import App, SchemaPolicy, bootstrap
from scrapesink.config import Settings, get_settings
from scrapesink.errors import ScrapesinkError

EXIT_OK = 0
EXIT_FATAL = 1  # nothing (more) could be done: bad configuration, unreachable database, bad file
EXIT_USAGE = 2  # click's code for a wrong command line
EXIT_REJECTED = 3  # the run finished, but some records were rejected
EXIT_PENDING = 4  # records are safe in the journal but a store has not got them yet
EXIT_ADDRESS = 5  # `serve`: the address to listen on is in use or cannot be used

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_overrides: dict[str, Any] = {}

P = ParamSpec("P")
R = TypeVar("R")


def set_overrides(**values: Any) -> None:
    _overrides.clear()
    _overrides.update({k: v for k, v in values.items() if v is not None})


def overrides_as_env() -> dict[str, str]:
    """The global options given (--data-dir, --database-url) as the variables they override."""
    return {f"SCRAPESINK_{k.upper()}": str(v) for k, v in _overrides.items()}


def settings() -> Settings:
    return get_settings(**_overrides)


def fail(message: str, code: int = EXIT_FATAL) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn scrapesink errors into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ScrapesinkError as exc:
            fail(escape(exc.message))
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            sys.stderr.close()  # `scrapesink events list | head` is not an error
            raise typer.Exit(EXIT_OK) from None

    return wrapper


@contextmanager
def open_app(
    schema: SchemaPolicy = "auto",
    *,
    announce: bool = True,
    offline_ok: bool = False,
    offline_note: str = "records are journaled and delivered when it is back",
) -> Iterator[App]:
    app = bootstrap(settings(), schema=schema, offline_ok=offline_ok)
    try:
        if app.offline:  # one line: what does not answer, and that nothing is lost
            err.print(f"[yellow]warning:[/] {escape(app.offline)}; {offline_note}", highlight=False)
        elif announce:
            err.print(f"[dim]database: {escape(app.database_label)}[/]")
        yield app
    finally:
        app.close()


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def report_replay(result: ReplayResult) -> None:
    """One line about journals left by earlier runs, when there were any."""
    if not result.journals:
        return
    stored = ", ".join(f"{name} {r.stored:,}" for name, r in result.reports.items())
    pending = sum(r.pending for r in result.reports.values())
    err.print(
        f"replayed {result.journals} journal(s) left by earlier runs: stored {stored}"
        + (f"; {pending:,} still pending" if pending else ""),
        highlight=False,
    )


def fitted_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    keep: Collection[str],
    drop_first: Sequence[str] = (),
    right: Collection[str] = (),
) -> Table:
    """A table that fits the terminal (80 columns too): columns of ``drop_first`` are left out,
    in that order, until the rest fits; the ``keep`` columns (ids) are never cut or wrapped."""
    from rich.text import Text

    def width(name: str) -> int:
        i = columns.index(name)
        cells = [Text.from_markup(row[i]).cell_len for row in rows]
        return max([len(name), *cells])

    shown = list(columns)
    for name in drop_first:
        if sum(width(n) for n in shown) + 3 * len(shown) + 1 <= out.width:
            break
        shown.remove(name)
    table = Table(
        *(
            Column(
                name,
                no_wrap=name in keep,
                min_width=width(name) if name in keep else None,
                justify="right" if name in right else "left",
            )
            for name in shown
        )
    )
    where = [columns.index(name) for name in shown]
    for row in rows:
        table.add_row(*(row[i] for i in where))
    return table
