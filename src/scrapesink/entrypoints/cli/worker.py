"""`scrapesink worker`: deliver the shared journal (Redis Streams) to the stores until stopped."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

import typer

from scrapesink.application.kinds import EVENTS, kind_named, model_kind
from scrapesink.application.worker import Worker, WorkerOptions
from scrapesink.domain.models import fingerprint
from scrapesink.entrypoints.cli.common import (
    EXIT_OK,
    err,
    escape,
    fail,
    handle_errors,
    open_app,
)
from scrapesink.errors import TransientStorageError

SINKS = ("postgres", "csv")
REPORT_SECONDS = 10.0
REACH_SECONDS = 2.0
STOP_GRACE_SECONDS = 3.0  # then a worker stops without waiting for Redis to answer

T = TypeVar("T")


@handle_errors
def worker(
    sink: str = typer.Option(
        "all", "--sink", help="The store to deliver to: postgres, csv or all (both)."
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="This worker's consumer name (default: <host>-<pid>). A worker restarted under"
        " its old name takes its unacknowledged entries back at once.",
    ),
    csv_here: bool = typer.Option(
        False,
        "--csv-here",
        help="Make this data directory the home of the CSV files from now on (a CSV worker"
        " refuses to write where they do not live; records delivered to the old home stay"
        " there).",
    ),
    metrics_port: int = typer.Option(
        0,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus metrics on this port (records delivered per sink, the consumer"
        " groups' lag, pending, consumers and idle time); 0: off.",
    ),
) -> None:
    """Deliver the shared journal (SCRAPESINK_JOURNAL_URL, Redis Streams) to the stores.

    Producers (ingest, serve, the Python API, the Scrapy pipeline) with SCRAPESINK_JOURNAL_URL
    set only publish; workers deliver. Each store has one consumer group: run as many postgres
    workers as you like (they share the entries); CSV files live in one data directory and have
    one writer at a time (other csv workers there stand by on a lease in Redis; a csv worker
    with another data directory refuses to start). A worker that dies is replaced: its
    entries are taken over after SCRAPESINK_WORKER_CLAIM_IDLE seconds. A worker waits for
    Redis when it does not answer, at start as later. Stops on Ctrl-C or SIGTERM after the
    batch in hand.
    """
    from scrapesink.adapters.redis_streams import consumer_name

    if sink not in (*SINKS, "all"):
        fail(f"--sink must be postgres, csv or all, not {sink!r}", 2)
    waiting = "its records wait in the stream until it is back"
    with open_app(offline_ok=True, offline_note=waiting) as app:
        streams = app.streams
        if streams is None:
            fail("no shared journal: set SCRAPESINK_JOURNAL_URL=redis://host:6379/0")
        wanted = [s for s in SINKS if sink in (s, "all")]
        if not app.settings.csv_enabled:
            wanted = [s for s in wanted if s != "csv"]
        if not wanted:
            fail("CSV is disabled (SCRAPESINK_CSV_ENABLED=false): nothing to deliver")
        stop = threading.Event()

        def stopping(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, stopping)
        signal.signal(signal.SIGINT, stopping)
        # One home for the CSV files: a CSV worker with another data directory (another
        # machine) would write part of the records there, and neither copy be whole.
        home = csv_home(app.settings.data_dir) if "csv" in wanted else ""

        def reach() -> str | None:
            streams.check_durability()
            return streams.settle_home("csv", home, move=csv_here) if home else None

        elsewhere = _patiently(reach, stop)
        if stop.is_set():
            raise typer.Exit(EXIT_OK)
        if home:
            if elsewhere is not None:
                fail(
                    f"the CSV files of this shared journal live in {escape(elsewhere)}, not in"
                    f" this data directory ({app.settings.data_dir}): run CSV workers there, or"
                    " start this one with --csv-here to move their home here (what was"
                    " delivered there stays there)"
                )
            app.repair()  # a torn line a killed CSV writer left is cut before anything else
        if metrics_port:
            from prometheus_client import CollectorRegistry

            from scrapesink.adapters.metrics import GroupGauges, serve_metrics

            registry = CollectorRegistry()
            registry.register(GroupGauges(streams.groups))
            try:
                serve_metrics(metrics_port, registry)
            except OSError as exc:
                fail(f"cannot serve metrics on port {metrics_port}: {exc.strerror}")
        consumer = name or consumer_name()
        settings = app.settings
        # the kinds this process delivers, whether or not a producer has published any yet (their
        # streams and groups are made now), and any other stream a producer made meanwhile
        known = [EVENTS, *(model_kind(m) for m in app.declaration.models)]

        def kinds() -> list[str]:
            return sorted({*known, *streams.kinds()})

        models = app.declaration.models

        def declarations(kind: str) -> str | None:
            model = kind_named(kind).model
            return fingerprint(models[model]) if model in models else None

        workers = [
            Worker(
                streams,
                s,
                consumer,
                app.sinks_for,
                app.dead_letters,
                app.policy,
                options=WorkerOptions(
                    claim_idle_seconds=settings.worker_claim_idle,
                    count=settings.worker_batch,
                    batch_size=settings.batch_size,
                    lease="csv" if s == "csv" else None,
                    home=home,
                ),
                observer=app.observer,
                kinds=kinds,
                declarations=declarations,
            )
            for s in wanted
        ]
        threads = [
            threading.Thread(target=w.run, args=(stop,), name=f"worker-{w.sink}", daemon=True)
            for w in workers
        ]
        err.print(
            f"worker {escape(consumer)}: delivering {', '.join(wanted)} from"
            f" {escape(streams.where)} (Ctrl-C to stop)",
            highlight=False,
        )
        for thread in threads:
            thread.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads) and not stop.wait(0.5):
            if time.monotonic() - last >= REPORT_SECONDS:
                last = time.monotonic()
                err.print(_line(workers), highlight=False)
        stop.set()
        for thread in threads:
            thread.join(STOP_GRACE_SECONDS)
        if any(t.is_alive() for t in threads):  # waiting on a Redis that does not answer
            streams.interrupt()
            for thread in threads:
                thread.join()
        err.print(_line(workers), highlight=False)
    raise typer.Exit(EXIT_OK)


def _patiently(action: Callable[[], T], stop: threading.Event) -> T | None:
    """``action`` once Redis answers: a worker started while Redis, or the link to it, is down
    waits for it, as a running worker does, rather than exit (None: stopped meanwhile). Any
    other refusal (credentials, durability) is said at once."""
    said = False
    while not stop.is_set():
        try:
            return action()
        except TransientStorageError as exc:
            if not said:
                err.print(f"waiting for Redis: {escape(exc.message)}", highlight=False)
                said = True
        stop.wait(REACH_SECONDS)
    return None


def csv_home(data_dir: Path) -> str:
    """This data directory's identity (made once, kept in it): ``<id> <host>:<path>``."""
    path = data_dir / "csv_home.id"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    identity = f"{uuid.uuid4().hex[:12]} {socket.gethostname()}:{data_dir.resolve()}"
    data_dir.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(identity + "\n", encoding="utf-8")
    os.replace(temp, path)
    return identity


def _line(workers: list[Worker]) -> str:
    parts = []
    for w in workers:
        r = w.report()
        text = f"{w.sink}: {r.stored:,} stored, {r.duplicates:,} duplicates, {r.unchanged:,}"
        text += f" unchanged, {r.dead_letters:,} dead letters"
        if w.mismatched:
            text += f" (not delivering {', '.join(sorted(w.mismatched))}: declared otherwise)"
        if w.elsewhere:
            text += " (standing by: the CSV files now live in another data directory)"
        elif not w.holds_lease:
            text += " (standing by: another worker holds the lease)"
        elif r.error:
            text += f" (last error: {r.error})"
        parts.append(text)
    return "; ".join(parts)
