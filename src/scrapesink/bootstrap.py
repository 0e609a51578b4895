"""The composition root: turns Settings into a running set of adapters and services."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.events import PostgresEventStore
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.application.ingest import IngestService
from scrapesink.config import Settings
from scrapesink.domain.events import EventRules

SchemaPolicy = Literal["auto", "check", "skip"]


@dataclass
class App:
    """Everything one process needs, built once; ``close()`` releases it."""

    settings: Settings
    database: Database
    migrator: Migrator
    partitions: PartitionManager
    events: PostgresEventStore
    embedded: EmbeddedPostgres | None = None
    _closed: bool = field(default=False, repr=False)

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

    def ingest_service(self, rules: EventRules | None = None) -> IngestService:
        return IngestService(
            self.events, rules or self.rules(), batch_size=self.settings.batch_size
        )

    @property
    def database_label(self) -> str:
        return self.embedded.describe() if self.embedded else self.database.label

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.database.close()


def bootstrap(
    settings: Settings, *, schema: SchemaPolicy = "auto", min_connections: int | None = 1
) -> App:
    """Build the application from ``settings``.

    Args:
        settings: the configuration.
        schema: ``auto`` applies pending migrations on the embedded database and refuses to run
            against an outdated external server; ``check`` always refuses; ``skip`` does
            neither (the ``db`` commands, which manage the schema themselves).
        min_connections: connections the pool keeps open (None: the configured pool size,
            for long-running servers; the CLI and Python API need just one warm).
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
    database.open()
    try:
        migrator = Migrator(database)
        if schema != "skip":
            migrator.ensure_current(auto_upgrade=schema == "auto" and embedded is not None)
        partitions = PartitionManager(database)
        events = PostgresEventStore(
            database, partitions, premake_days=settings.partition_premake_days
        )
    except BaseException:
        database.close()
        raise
    return App(settings, database, migrator, partitions, events, embedded)
