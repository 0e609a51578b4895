"""The composition root: turns Settings into a running set of adapters and services."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.deadletters import DeadLetterStore
from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.journal import Journal
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.events import PostgresEventStore
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.application.delivery import RetryPolicy, SinkReport
from scrapesink.application.durable import DurableWriter, ReplayResult, replay
from scrapesink.application.ingest import IngestService
from scrapesink.application.ports import EventSink
from scrapesink.config import Settings
from scrapesink.domain.events import EventRules
from scrapesink.errors import ScrapesinkError, TransientStorageError

SchemaPolicy = Literal["auto", "check", "skip"]
log = logging.getLogger(__name__)


@dataclass
class App:
    """Everything one process needs, built once; ``close()`` releases it."""

    settings: Settings
    database: Database
    migrator: Migrator
    partitions: PartitionManager
    events: PostgresEventStore
    embedded: EmbeddedPostgres | None = None
    _writer: DurableWriter | None = field(default=None, repr=False)
    offline: str | None = None  # why PostgreSQL did not answer at start (writers go on)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        data_dir = self.settings.data_dir
        self.csv = CsvEventSink(data_dir)
        self.dead_letters = DeadLetterStore(data_dir / "deadletters.sqlite")
        self.journal_dir = data_dir / "journal"
        self._journal_path: Path | None = None

    def rules(
        self,
        *,
        id_field: str = "id",
        time_field: str = "timestamp",
        default_source: str | None = None,
    ) -> EventRules:
        s = self.settings
        return EventRules(
            id_field=id_field,
            time_field=time_field,
            default_source=default_source,
            max_payload_bytes=s.max_payload_bytes,
            future_tolerance=s.future_tolerance,
            max_age=s.max_age,
        )

    @property
    def sinks(self) -> list[EventSink]:
        sinks: list[EventSink] = [self.events]
        if self.settings.csv_enabled:
            sinks.append(self.csv)
        return sinks

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.settings.retry_seconds, self.settings.cooldown_seconds)

    def start_writing(self) -> ReplayResult:
        """Before the first write: repair CSV tails, premake partitions, drain old journals."""
        for sink in self.sinks:
            try:
                sink.repair()
            except TransientStorageError as exc:
                log.warning("%s: %s", sink.name, exc.message)
        if not self.offline:
            try:
                self.events.prepare()
            except TransientStorageError as exc:
                log.warning("partitions not premade: %s", exc.message)
        return self.replay()

    def writer(self) -> DurableWriter:
        if self._closed:
            raise ScrapesinkError("this sink is closed: open a new one to write")
        if self._writer is None:
            journal = Journal.create(self.journal_dir)
            self._journal_path = journal.path
            self._writer = DurableWriter(
                journal,
                self.sinks,
                self.dead_letters,
                self.policy,
                batch_size=self.settings.batch_size,
            )
        return self._writer

    def ingest_service(self, rules: EventRules | None = None) -> IngestService:
        rules = rules or self.rules()
        return IngestService(self.writer(), rules, batch_size=self.settings.batch_size)

    def replay(self) -> ReplayResult:
        """Deliver what every journal but our own still holds for some sink."""
        own = self._journal_path
        paths = [p for p in Journal.files(self.journal_dir) if p != own]
        return replay(
            paths,
            Journal.open_if_free,
            self.sinks,
            self.dead_letters,
            self.policy,
            batch_size=self.settings.batch_size,
        )

    @property
    def database_label(self) -> str:
        label = self.embedded.describe() if self.embedded else self.database.label
        if self.offline:
            label += " — unreachable, records are journaled and delivered when it is back"
        return label

    def close(self) -> dict[str, SinkReport]:
        """Deliver what can be, close the journal (kept if something is pending), release."""
        reports: dict[str, SinkReport] = {}
        if not self._closed:
            self._closed = True
            try:
                if self._writer is not None:
                    reports = self._writer.close()
            finally:
                self.database.close()
        return reports


def bootstrap(
    settings: Settings,
    *,
    schema: SchemaPolicy = "auto",
    min_connections: int | None = 1,
    offline_ok: bool = False,
) -> App:
    """Build the application from ``settings``.

    Args:
        settings: the configuration.
        schema: ``auto`` applies pending migrations on the embedded database and refuses to run
            against an outdated external server; ``check`` always refuses; ``skip`` does
            neither (the ``db`` commands, which manage the schema themselves).
        min_connections: connections the pool keeps open (None: the configured pool size,
            for long-running servers; the CLI and Python API need just one warm).
        offline_ok: when an external server does not answer, start anyway (writers: records
            are journaled and mirrored to CSV, and PostgreSQL gets them when it is back; the
            schema is then checked at the first delivery). Otherwise fail with one line.
    """
    logging.getLogger("scrapesink").setLevel(settings.log_level)
    embedded = None
    if settings.embedded:
        embedded = EmbeddedPostgres(settings.pgdata_dir)
        conninfo = embedded.start()
        label = embedded.describe()
    else:
        conninfo = settings.external_conninfo()
        label = None
    options = PoolOptions(
        size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        timeout=settings.pool_timeout,
        recycle=settings.pool_recycle,
        pre_ping=settings.pool_pre_ping,
        connect_timeout=settings.connect_timeout,
        min_size=min_connections,
    )
    database = Database(conninfo, options, label=label)
    offline: str | None = None
    try:
        database.ping()
    except TransientStorageError as exc:
        if not offline_ok or embedded is not None:
            raise
        offline = exc.message
    database.open(check=False, suspect=offline is not None)  # pinged just above
    try:
        migrator = Migrator(database)
        if schema != "skip" and offline is None:
            migrator.ensure_current(auto_upgrade=schema == "auto" and embedded is not None)
        partitions = PartitionManager(database)
        events = PostgresEventStore(
            database,
            partitions,
            premake_days=settings.partition_premake_days,
            # checked at the first delivery when the server was down at start
            schema_check=migrator.is_current if offline is not None else None,
        )
    except BaseException:
        database.close()
        raise
    app = App(settings, database, migrator, partitions, events, embedded)
    app.offline = offline
    return app
