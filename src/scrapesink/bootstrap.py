"""The composition root: turns Settings into a running set of adapters and services."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from scrapesink import metrics
from scrapesink.adapters.backup import Backups
from scrapesink.adapters.csv_models import CsvModelSink, ModelCsvFiles
from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.deadletters import DeadLetterStore
from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.journal import Journal, inspect
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.entities import ModelRepository, PostgresModelSink
from scrapesink.adapters.postgres.events import PostgresEventStore
from scrapesink.adapters.postgres.jobs import JobStore
from scrapesink.adapters.postgres.maintenance import Maintenance, TableSize
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.adapters.postgres.model_schema import ModelSchema
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.application.delivery import RetryPolicy, SinkReport
from scrapesink.application.durable import DurableWriter, ReplayResult, replay
from scrapesink.application.health import Check, Health
from scrapesink.application.ingest import IngestService
from scrapesink.application.models import ModelService
from scrapesink.application.ports import EVENTS, EventSink, Sink, model_kind
from scrapesink.application.runs import JobRun
from scrapesink.config import Settings
from scrapesink.domain.events import EventRules
from scrapesink.domain.models import Declaration, load_models
from scrapesink.domain.partitions import days_ahead
from scrapesink.errors import ConfigError, ScrapesinkError, TransientStorageError

SchemaPolicy = Literal["auto", "check", "skip"]


@dataclass(frozen=True, slots=True)
class MaintainResult:
    created: list[str]
    dropped: list[str]
    vacuumed: list[str]
    retention: timedelta | None


@dataclass(frozen=True, slots=True)
class SinkStatus:
    pending: int
    oldest_pending: datetime | None
    dead_letters: int


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """What waits where: per sink the journaled records it has not stored yet, dead letters."""

    database: str
    sinks: dict[str, SinkStatus]
    journals: int
    journals_in_use: int
    journal_bytes: int
    csv_problems: list[str] = field(default_factory=list)  # state entries repair skipped

    @property
    def pending(self) -> int:
        return sum(sink.pending for sink in self.sinks.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "sinks": {
                name: {
                    "pending": sink.pending,
                    "oldest_pending": sink.oldest_pending.isoformat()
                    if sink.oldest_pending
                    else None,
                    "dead_letters": sink.dead_letters,
                }
                for name, sink in self.sinks.items()
            },
            "journals": self.journals,
            "journals_in_use": self.journals_in_use,
            "journal_bytes": self.journal_bytes,
            "csv_problems": self.csv_problems,
        }


def pipeline_status(settings: Settings, sinks: list[EventSink], database: str) -> PipelineStatus:
    """Read every journal against what each sink says it holds. Works with PostgreSQL down
    (leave it out of ``sinks``: every journaled record then counts as pending for it)."""
    names = ["postgres", *[s.name for s in sinks if s.name != "postgres"]]
    pending = dict.fromkeys(names, 0)
    oldest: dict[str, datetime | None] = dict.fromkeys(names)
    infos = [inspect(path) for path in Journal.files(settings.data_dir / "journal")]
    by_name: dict[str, Any] = {s.name: s for s in sinks}
    # Model journals: PostgreSQL keeps one progress table; the model CSVs their own state.
    by_name_models = {**by_name, "csv": ModelCsvFiles(settings.data_dir)}
    for info in infos:
        for name in names:
            sink = (by_name if info.kind == EVENTS else by_name_models).get(name)
            delivered = sink.delivered(info.id) if sink is not None else []
            count, first = info.pending(delivered)
            pending[name] += count
            if first is not None:
                current = oldest[name]
                oldest[name] = first if current is None else min(current, first)
    dead = DeadLetterStore(settings.data_dir / "deadletters.sqlite").counts()
    problems = []
    if settings.csv_enabled:
        problems = [
            *CsvEventSink(settings.data_dir).unreadable(),
            *ModelCsvFiles(settings.data_dir).unreadable(),
        ]
    return PipelineStatus(
        database,
        {name: SinkStatus(pending[name], oldest[name], dead.get(name, 0)) for name in names},
        len(infos),
        sum(info.in_use for info in infos),
        sum(info.size_bytes for info in infos),
        problems,
    )


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
    _writers: dict[str, DurableWriter] = field(default_factory=dict, repr=False)
    offline: str | None = None  # why PostgreSQL did not answer at start (writers go on)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        data_dir = self.settings.data_dir
        self.csv = CsvEventSink(data_dir)
        self.dead_letters = DeadLetterStore(data_dir / "deadletters.sqlite")
        self.journal_dir = data_dir / "journal"
        self._journal_paths: set[Path] = set()
        self._declaration: Declaration | None = None
        self.model_schema = ModelSchema(self.database)
        self.repository: ModelRepository | None = None

    @property
    def declaration(self) -> Declaration:
        """The bundled models and the configured declaration files (read once)."""
        if self._declaration is None:
            self._declaration = load_models(self.settings.models)
        return self._declaration

    def use_declaration(self, declaration: Declaration) -> None:
        self._declaration = declaration

    def ensure_models(self) -> None:
        """Apply the declaration's additive changes (once per process; raises when refused or
        when PostgreSQL does not answer)."""
        for change in self.model_schema.ensure(self.declaration):
            log.info("applied %s", change.describe())

    def models(self) -> ModelService:
        """The model service; the database is brought to the declaration first (additive
        changes by themselves, destructive ones refused). When it does not answer, saves are
        journaled and mirrored to CSV like events, and the declaration is applied before the
        first delivery to PostgreSQL (see ``sinks_for``)."""
        declaration = self.declaration
        if not self.offline:
            try:
                self.ensure_models()
            except TransientStorageError as exc:
                log.warning("model tables not checked yet (%s): saves wait for it", exc.message)
        self.repository = ModelRepository(self.database, declaration)
        return ModelService(
            declaration,
            lambda model: self.writer(model_kind(model.name)),
            self.repository,
            batch_size=min(self.settings.batch_size, 1000),
        )

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
            max_depth=s.max_depth,
            future_tolerance=s.future_tolerance,
            max_age=s.max_age,
        )

    @property
    def sinks(self) -> list[EventSink]:
        sinks: list[EventSink] = [self.events]
        if self.settings.csv_enabled:
            sinks.append(self.csv)
        return sinks

    def sinks_for(self, kind: str) -> list[Sink[Any]] | None:
        """The sinks of one journal kind; None for a model this process does not declare."""
        if kind == EVENTS:
            return list(self.sinks)
        name = kind.removeprefix("model:")
        model = self.declaration.models.get(name)
        if model is None:
            return None
        sinks: list[Sink[Any]] = [
            PostgresModelSink(self.database, model, prepare=self.ensure_models)
        ]
        if self.settings.csv_enabled:
            sinks.append(CsvModelSink(self.settings.data_dir, self.declaration, model))
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

    def writer(self, kind: str = EVENTS) -> DurableWriter:
        """This process's writer (and journal) for one kind of record."""
        if self._closed:
            raise ScrapesinkError("this sink is closed: open a new one to write")
        writer = self._writers.get(kind)
        if writer is None:
            sinks = self.sinks_for(kind)
            if sinks is None:
                raise ConfigError(f"no model {kind.removeprefix('model:')!r} is declared")
            journal = Journal.create(self.journal_dir, kind)
            self._journal_paths.add(journal.path)
            writer = self._writers[kind] = DurableWriter(
                journal,
                sinks,
                self.dead_letters,
                self.policy,
                batch_size=self.settings.batch_size,
            )
        return writer

    def compact(self, model: str | None = None) -> dict[str, tuple[int, int]]:
        """Rewrite model CSV files latest-only (one model's, or all); file -> rows before, after."""
        names = [model] if model else list(self.declaration.models)
        result: dict[str, tuple[int, int]] = {}
        for name in names:
            sink = CsvModelSink(
                self.settings.data_dir, self.declaration, self.declaration.model(name)
            )
            result.update(sink.compact())
        return result

    def writers(self) -> list[DurableWriter]:
        """The writers opened so far (raw events first)."""
        if EVENTS not in self._writers:
            self.writer(EVENTS)
        return list(self._writers.values())

    def maintain(self) -> MaintainResult:
        """Premake partitions, drop those past retention, VACUUM the closed ones, ANALYZE."""
        s = self.settings
        upkeep = Maintenance(self.database, self.partitions)
        created = self.partitions.premake(s.partition_premake_days)
        dropped = self.partitions.prune(s.retention) if s.retention is not None else []
        vacuumed = upkeep.vacuum_closed_partitions(s.write_window)
        upkeep.analyze()
        return MaintainResult(
            [p.name for p in created], [p.name for p in dropped], vacuumed, s.retention
        )

    def table_sizes(self) -> list[TableSize]:
        return Maintenance(self.database, self.partitions).table_sizes()

    def health(self, *, now: datetime | None = None) -> Health:
        """Database reachable, migrations at head, partitions premade, nothing pending for too
        long, free space in the data directory."""
        s = self.settings
        now = now or datetime.now(UTC)
        checks: list[Check] = []
        try:
            self.database.ping()
            up = True
            checks.append(Check("database", True, self.database_label))
        except TransientStorageError as exc:
            up = False
            checks.append(Check("database", False, exc.message))
        if up:
            current, head = self.migrator.current(), self.migrator.head()
            checks.append(
                Check("migrations", current == head, f"at {current or 'nothing'}, head {head}")
            )
            present = {p.day for p in self.partitions.existing()}
            wanted = days_ahead(now.date(), s.partition_premake_days)
            missing = [p.name for p in wanted if p.day not in present]
            checks.append(
                Check(
                    "partitions",
                    not missing,
                    f"missing {', '.join(missing)} (scrapesink maintain)"
                    if missing
                    else f"today and {s.partition_premake_days} day(s) ahead present",
                )
            )
        sinks = self.sinks if up else [x for x in self.sinks if x.name != "postgres"]
        status = pipeline_status(s, sinks, self.database_label)
        for name, sink in status.sinks.items():
            age = (now - sink.oldest_pending) if sink.oldest_pending else None
            late = age is not None and age > s.health_max_pending_age
            detail = f"{sink.pending} pending" + (
                f", oldest {int(age.total_seconds())} s" if age is not None else ""
            )
            checks.append(Check(f"pending {name}", not late, detail))
        usage = shutil.disk_usage(s.data_dir if s.data_dir.exists() else Path("."))
        checks.append(
            Check(
                "disk",
                usage.free >= s.health_min_free_bytes,
                f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB in the data dir",
            )
        )
        if s.csv_enabled:
            problems = [
                *self.csv.unreadable(),
                *ModelCsvFiles(s.data_dir).unreadable(),
            ]
            checks.append(
                Check(
                    "csv files",
                    not problems,
                    "; ".join(problems[:3])
                    + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
                    if problems
                    else "every file the CSV state names can be checked",
                )
            )
        return Health(checks)

    def backups(self) -> Backups:
        s = self.settings
        bin_dir = s.pg_bin_dir or EmbeddedPostgres.binaries()
        key = s.backup_key.get_secret_value().encode() if s.backup_key else None
        return Backups(s.backups, s.data_dir, self.database.conninfo, bin_dir, key)

    def database_is_empty(self) -> bool:
        """No table at all in the current schema (what a restore without --force needs)."""
        with self.database.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchone()
        return row is not None and row[0] == 0

    @property
    def jobs(self) -> JobStore:
        return JobStore(self.database)

    def job_run(self, job: str, *, origin: str, source: str | None = None) -> JobRun:
        """A context manager recording a run of ``job`` (made when new) around writes."""
        return JobRun(self.jobs, job, origin=origin, source=source)

    def catch_up(self) -> int:
        """Resubmit what this process's writers left pending to the sinks that are back."""
        return sum(writer.catch_up() for writer in list(self._writers.values()))

    def ingest_service(self, rules: EventRules | None = None) -> IngestService:
        rules = rules or self.rules()
        return IngestService(self.writer(), rules, batch_size=self.settings.batch_size)

    def replay(self) -> ReplayResult:
        """Deliver what every journal but our own still holds for some sink."""
        paths = [p for p in Journal.files(self.journal_dir) if p not in self._journal_paths]
        return replay(
            paths,
            Journal.open_if_free,
            self.sinks_for,
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
                for writer in self._writers.values():
                    for name, report in writer.close().items():
                        reports.setdefault(name, SinkReport()).add(report)
            finally:
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
    metrics.install()
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
