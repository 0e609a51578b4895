"""The composition root: turns Settings into a running set of adapters and services.

It only wires: every adapter is built here (or by a factory method of :class:`App`), and the use
cases it hands out live in ``application/`` (writes: ``ingest``, ``models``, ``writer``;
delivery: ``durable``; status, health, maintenance, compaction: ``operations``). Which file of
the data directory is which is said once, in ``layout.DataDir``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scrapesink.adapters.backup import Backups
from scrapesink.adapters.csv_models import CsvModelSink, ModelCsvFiles
from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.deadletters import DeadLetterStore
from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.idempotency import IdempotencyStore
from scrapesink.adapters.journal import Journal, JournalInfo, inspect
from scrapesink.adapters.metrics import Gauges, PrometheusObserver
from scrapesink.adapters.postgres.api_access import ApiKeys, AuditLog
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.events import PostgresEventStore
from scrapesink.adapters.postgres.jobs import JobStore
from scrapesink.adapters.postgres.maintenance import Maintenance
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.adapters.postgres.model_reader import PostgresModelReader
from scrapesink.adapters.postgres.model_schema import ModelSchema
from scrapesink.adapters.postgres.model_sink import PostgresModelSink
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.application.delivery import DeliveryObserver, RetryPolicy
from scrapesink.application.durable import DurableWriter
from scrapesink.application.health import Check, Health, group_checks
from scrapesink.application.ingest import IngestService
from scrapesink.application.kinds import EVENTS, ModelKind, kind_named
from scrapesink.application.models import ModelService
from scrapesink.application.operations import (
    Operations,
    OpsPolicy,
    PipelineStatus,
    Progress,
    pipeline_status,
)
from scrapesink.application.outcomes import RemoteOutcomes, SinkReport
from scrapesink.application.ports import EventReader, EventSink, ModelReader, RecordSink
from scrapesink.application.ports import Journal as JournalPort
from scrapesink.application.replay import ReplayResult, replay
from scrapesink.application.runs import JobRun
from scrapesink.config import Settings
from scrapesink.domain.declarations import load_models
from scrapesink.domain.events import EventRules
from scrapesink.domain.models import Declaration, fingerprint
from scrapesink.errors import ConfigError, ScrapesinkError, StorageError, TransientStorageError

if TYPE_CHECKING:  # the redis extra is optional: imported when a journal URL asks for it
    from scrapesink.adapters.redis_deadletters import RedisDeadLetters
    from scrapesink.adapters.redis_outcomes import OutcomeListener
    from scrapesink.adapters.redis_streams import RedisStreams

SchemaPolicy = Literal["auto", "check", "skip"]
log = logging.getLogger(__name__)
# One observer for the process: prometheus-client's counters are process-wide anyway.
OBSERVER = PrometheusObserver()


def journal_views(settings: Settings) -> list[JournalInfo]:
    return [inspect(path) for path in Journal.files(settings.paths.journals)]


def dead_letter_store(
    settings: Settings, streams: RedisStreams | None = None
) -> DeadLetterStore | RedisDeadLetters:
    """The local store (the data dir), or with a shared journal the one all workers share."""
    if settings.journal_url is None:
        return DeadLetterStore(settings.paths.dead_letters)
    from scrapesink.adapters.redis_deadletters import RedisDeadLetters

    return RedisDeadLetters(streams or shared_journal(settings))


def shared_journal(settings: Settings) -> RedisStreams:
    """The connection to the shared journal SCRAPESINK_JOURNAL_URL names."""
    assert settings.journal_url is not None
    try:
        from scrapesink.adapters.redis_streams import RedisStreams
    except ImportError as exc:
        raise ConfigError(
            "SCRAPESINK_JOURNAL_URL needs the redis extra: pip install 'scrapesink[redis]'"
        ) from exc
    url = settings.journal_url.get_secret_value()
    return RedisStreams(url, durability=settings.redis_durability)


def csv_files(settings: Settings) -> list[CsvEventSink | ModelCsvFiles]:
    return [CsvEventSink(settings.data_dir), ModelCsvFiles(settings.data_dir)]


class _ProgressOf:
    """What status reads per record kind: each sink's delivered ranges. PostgreSQL keeps one
    progress table for every kind; the model CSVs keep theirs apart from the events'."""

    def __init__(self, postgres: Progress | None, settings: Settings) -> None:
        # One instance each for the whole status: a CSV state opened the first time checks
        # its schema under the write lock, which the writers hold while they append.
        pg = [postgres] if postgres is not None else []
        csv = settings.csv_enabled
        self.events = [*pg, *([CsvEventSink(settings.data_dir)] if csv else [])]
        self.models = [*pg, *([ModelCsvFiles(settings.data_dir)] if csv else [])]

    def event_sinks(self) -> list[Progress]:
        return self.events

    def model_sinks(self, model: str) -> list[Progress]:
        return self.models


def offline_status(settings: Settings, database: str) -> PipelineStatus:
    """Status when no database could be reached at all (every record pending for it)."""
    problems = []
    if settings.csv_enabled:
        problems = [p for files in csv_files(settings) for p in files.unreadable()]
    return pipeline_status(
        journal_views(settings),
        _ProgressOf(None, settings),
        dead_letter_store(settings).counts(),
        database,
        problems,
    )


@dataclass
class App:
    """Everything one process needs, built once; ``close()`` releases it."""

    settings: Settings
    database: Database
    migrator: Migrator
    partitions: PartitionManager
    events: PostgresEventStore
    embedded: EmbeddedPostgres | None = None
    offline: str | None = None  # why PostgreSQL did not answer at start (writers go on)
    observer: DeliveryObserver = OBSERVER
    #: False for background delivery: writes never wait for a sink (see ``DurableWriter``)
    wait_for_lanes: bool = True
    #: False: this process only journals; another one delivers its closed journals (replay)
    delivers: bool = True
    _writers: dict[str, DurableWriter] = field(default_factory=dict, repr=False)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.paths = self.settings.paths
        self.csv = CsvEventSink(self.settings.data_dir)
        self.dead_letters: DeadLetterStore | RedisDeadLetters = dead_letter_store(
            self.settings, self.streams
        )
        self.journal_dir = self.paths.journals
        self._journal_paths: set[Path] = set()
        self._declaration: Declaration | None = None
        self._listener: OutcomeListener | None = None
        self.model_schema = ModelSchema(self.database)
        self.upkeep = Maintenance(self.database, self.partitions)

    # -- models -------------------------------------------------------------------------------
    @property
    def declaration(self) -> Declaration:
        """The bundled models and the configured declaration files (read once)."""
        if self._declaration is None:
            self._declaration = load_models(self.settings.models)
        return self._declaration

    def use_declaration(self, declaration: Declaration) -> None:
        self._declaration = declaration
        self.__dict__.pop("repository", None)

    @cached_property
    def repository(self) -> PostgresModelReader:
        return PostgresModelReader(self.database, self.declaration)

    @property
    def model_reader(self) -> ModelReader:
        """The read side of the declared models."""
        return self.repository

    @property
    def event_reader(self) -> EventReader:
        """The read side of raw events."""
        return self.events

    def ensure_models(self) -> None:
        """Apply the declaration's additive changes (once per process; raises when refused or
        when PostgreSQL does not answer)."""
        for change in self.model_schema.ensure(self.declaration):
            log.info("applied %s", change.describe())

    def models(self) -> ModelService:
        """The model service; the database is brought to the declaration first (additive
        changes by themselves, destructive ones refused). When it does not answer, saves are
        journaled and mirrored to CSV like events, and the declaration is applied before the
        first delivery to PostgreSQL (see ``model_sinks``)."""
        if not self.offline:
            try:
                self.ensure_models()
            except TransientStorageError as exc:
                log.warning("model tables not checked yet (%s): saves wait for it", exc.message)
        return ModelService(
            self.declaration,
            self.writer_of,
            self.repository,
            batch_size=min(self.settings.batch_size, 1000),
        )

    # -- events -------------------------------------------------------------------------------
    def rules(
        self,
        *,
        id_field: str = "id",
        time_field: str = "timestamp",
        default_source: str | None = None,
        time_format: str | None = None,
    ) -> EventRules:
        s = self.settings
        return EventRules(
            id_field=id_field,
            time_field=time_field,
            default_source=default_source,
            max_payload_bytes=s.max_payload_bytes,
            max_depth=s.max_depth,
            future_tolerance=s.future_tolerance,
            max_age=s.max_age,
            time_format=time_format,
        )

    def ingest_service(self, rules: EventRules | None = None) -> IngestService:
        rules = rules or self.rules()
        return IngestService(self.writer(), rules, batch_size=self.settings.batch_size)

    # -- sinks and writers (``kinds.Targets``) ------------------------------------------------
    @property
    def sinks(self) -> list[EventSink]:
        sinks: list[EventSink] = [self.events]
        if self.settings.csv_enabled:
            sinks.append(self.csv)
        return sinks

    def event_sinks(self) -> list[RecordSink[Any]]:
        return list(self.sinks)

    def model_sinks(self, model: str) -> list[RecordSink[Any]] | None:
        """A declared model's sinks; None for one this process does not declare."""
        definition = self.declaration.models.get(model)
        if definition is None:
            return None
        sinks: list[RecordSink[Any]] = [
            PostgresModelSink(self.database, definition, prepare=self.ensure_models)
        ]
        if self.settings.csv_enabled:
            sinks.append(CsvModelSink(self.settings.data_dir, self.declaration, definition))
        return sinks

    def sinks_for(self, kind: str) -> Sequence[RecordSink[Any]] | None:
        """The sinks of one journal kind; None for a model this process does not declare."""
        return kind_named(kind).sinks(self)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.settings.retry_seconds, self.settings.cooldown_seconds)

    def start_writing(self) -> ReplayResult:
        """Before the first write: repair CSV tails, premake partitions, drain old journals."""
        self.repair()
        return self.replay()

    def repair(self) -> None:
        """Cut CSV files back to their committed length (a torn line from a crash)."""
        for sink in self.sinks:
            try:
                sink.repair()
            except TransientStorageError as exc:
                log.warning("%s: %s", sink.name, exc.message)

    def writer_of(self, kind: ModelKind) -> DurableWriter:
        return self.writer(kind.name)

    def writer(self, kind: str = EVENTS) -> DurableWriter:
        """This process's writer (and journal) for one kind of record."""
        if self._closed:
            raise ScrapesinkError("this sink is closed: open a new one to write")
        writer = self._writers.get(kind)
        if writer is None:
            record_kind = kind_named(kind)
            sinks = record_kind.sinks(self)
            if sinks is None:
                raise ConfigError(f"no model {record_kind.model!r} is declared")
            journal: JournalPort
            remote = None
            if self.streams is not None:
                # The shared journal: workers deliver (`scrapesink worker`), one consumer group
                # per sink, made now so that a sink whose worker is not running keeps its entries.
                from scrapesink.adapters.redis_streams import RedisJournal

                names = [sink.name for sink in sinks]
                model = record_kind.model
                declared = fingerprint(self.declaration.model(model)) if model else None
                journal = RedisJournal(self.streams, kind, names, declaration=declared)
                sinks = []
                remote = self._outcomes(names)
            else:
                if not self.delivers:
                    sinks = []
                local = Journal.create(self.journal_dir, kind)
                self._journal_paths.add(local.path)
                journal = local
            writer = self._writers[kind] = DurableWriter(
                journal,
                sinks,
                self.dead_letters,
                self.policy,
                batch_size=self.settings.batch_size,
                kind=record_kind,
                observer=self.observer,
                wait_for_lanes=self.wait_for_lanes,
                remote=remote,
            )
        return writer

    def _outcomes(self, sinks: Sequence[str]) -> RemoteOutcomes:
        """What workers report, for writes that wait for it (one listener per process)."""
        from scrapesink.adapters.redis_outcomes import OutcomeListener

        assert self.streams is not None
        if self._listener is None:
            wait = self.settings.worker_outcome_wait
            self._listener = OutcomeListener(self.streams, sinks, wait_seconds=wait)
        return self._listener

    @cached_property
    def streams(self) -> RedisStreams | None:
        """The shared journal on Redis Streams (SCRAPESINK_JOURNAL_URL); None: local journals."""
        if self.settings.journal_url is None:
            return None
        return shared_journal(self.settings)

    def writers(self) -> list[DurableWriter]:
        """The writers opened so far (raw events first)."""
        if EVENTS not in self._writers:
            self.writer(EVENTS)
        return list(self._writers.values())

    def rotate(self) -> int:
        """Close this process's journals (kept: what they hold waits for replay) so another
        process can deliver them; the next write starts new ones. Returns how many closed."""
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
        self._journal_paths.clear()  # closed: no longer this process's to skip in replay
        return len(writers)

    def open_writers(self) -> list[DurableWriter]:
        """The writers opened so far (none made by asking)."""
        return list(self._writers.values())

    def catch_up(self) -> int:
        """Resubmit what this process's writers left pending to the sinks that are back."""
        return sum(writer.catch_up() for writer in list(self._writers.values()))

    def replay(self, *, prepare: bool = True) -> ReplayResult:
        """Deliver what every journal but our own still holds for some sink (``prepare``:
        premake partitions first)."""
        if prepare and not self.offline:  # today's partition and the days ahead, as `maintain`
            try:
                self.events.prepare()
            except TransientStorageError as exc:
                log.warning("partitions not premade: %s", exc.message)
        paths = [p for p in Journal.files(self.journal_dir) if p not in self._journal_paths]
        return replay(
            paths,
            Journal.open_if_free,
            self.sinks_for,
            self.dead_letters,
            self.policy,
            batch_size=self.settings.batch_size,
            observer=self.observer,
        )

    # -- operations ---------------------------------------------------------------------------
    @cached_property
    def operations(self) -> Operations:
        s = self.settings

        def compactors(model: str | None) -> list[CsvModelSink]:
            d = self.declaration
            names = [model] if model else list(d.models)
            return [CsvModelSink(s.data_dir, d, d.model(name)) for name in names]

        return Operations(
            OpsPolicy(
                data_dir=s.data_dir,
                premake_days=s.partition_premake_days,
                retention=s.retention,
                write_window=s.write_window,
                max_pending_age=s.health_max_pending_age,
                min_free_bytes=s.health_min_free_bytes,
                csv_enabled=s.csv_enabled,
            ),
            database=self.database,
            database_label=lambda: self.database_label,
            schema=self.migrator,
            partitions=self.partitions,
            upkeep=self.upkeep,
            journals=lambda: journal_views(s),
            progress=lambda up: _ProgressOf(self.events if up else None, s),
            dead_letters=self.dead_letters.counts,
            csv_files=csv_files(s),
            compactors=compactors,
        )

    def status(self) -> PipelineStatus:
        """Status as this process sees it (PostgreSQL left out when it does not answer: every
        journaled record then counts as pending for it)."""
        if not self.offline:
            try:
                return self.operations.status(database_up=True)
            except TransientStorageError as exc:
                log.info("status without PostgreSQL: %s", exc.message)
        return self.operations.status(database_up=False)

    def health(self) -> Health:
        """The installation's health checks, with one per consumer group of the shared journal
        (a group idle with entries to deliver fails)."""
        report = self.operations.health()
        if self.streams is None:
            return report
        try:
            groups = self.streams.groups()
        except StorageError as exc:
            return Health([*report.checks, Check("shared journal", False, exc.message)])
        idle = max(2 * self.settings.worker_claim_idle, 60.0)
        return Health([*report.checks, *group_checks(groups, idle)])

    def gauges(self, status: Any = None) -> Gauges:
        """The pipeline gauges of this installation (a Prometheus collector)."""

        def up() -> bool:
            try:
                self.database.ping()
            except TransientStorageError:
                return False
            return True

        return Gauges(
            status or self.status,
            self.database.stats,
            lambda: (p.day for p in self.partitions.existing()),
            up,
            self.jobs.freshness,
            self.streams.groups if self.streams is not None else list,
        )

    def backups(self) -> Backups:
        s = self.settings
        bin_dir = s.pg_bin_dir or EmbeddedPostgres.binaries()
        key = s.backup_key.get_secret_value().encode() if s.backup_key else None
        return Backups(s.backups, s.data_dir, self.database.conninfo, bin_dir, key)

    @property
    def jobs(self) -> JobStore:
        return JobStore(self.database)

    @property
    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.database)

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.database)

    def idempotency(self) -> IdempotencyStore:
        """The REST API's Idempotency-Key records (local: they work with PostgreSQL down)."""
        ttl = self.settings.api_idempotency_ttl.total_seconds()
        return IdempotencyStore(self.paths.idempotency, ttl=ttl)

    def job_run(
        self, job: str, *, origin: str, source: str | None = None, bind_logs: bool = True
    ) -> JobRun:
        """A context manager recording a run of ``job`` (made when new) around writes."""
        return JobRun(self.jobs, job, origin=origin, source=source, bind_logs=bind_logs)

    @property
    def database_label(self) -> str:
        label = self.embedded.describe() if self.embedded else self.database.label
        if self.offline:
            label += " — unreachable, records are journaled and delivered when it is back"
        return label

    def close(self, *, catch_up: bool = True) -> dict[str, SinkReport]:
        """Deliver what can be (without ``catch_up``: only what is in flight), close the
        journal (kept if something is pending), release."""
        reports: dict[str, SinkReport] = {}
        if not self._closed:
            self._closed = True
            try:
                for writer in self._writers.values():
                    for name, report in writer.close(catch_up=catch_up).items():
                        reports.setdefault(name, SinkReport()).add(report)
            finally:
                if self._listener is not None:
                    self._listener.close()
                if "streams" in self.__dict__ and self.streams is not None:
                    self.streams.close()
                self.database.close()
                if self.embedded is not None:
                    # Now, not in an exit handler: a server stopped by SIGTERM (uvicorn
                    # re-raises it after its shutdown) never runs those.
                    self.embedded.stop()
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
            try:
                migrator.ensure_current(auto_upgrade=schema == "auto" and embedded is not None)
            except TransientStorageError as exc:
                # it answered the ping and went away before the schema check: as down at start
                if not offline_ok or embedded is not None:
                    raise
                offline = exc.message
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
    return App(settings, database, migrator, partitions, events, embedded, offline)
