"""scrapesink: the persistence layer for scrapers and ETL pipelines.

import scrapesink

with scrapesink.open() as sink:
    summary = sink.write_events([{"id": 1, "timestamp": "2025-05-15T12:00:00Z", "title": "x"}],
                                source="shop")
"""

from scrapesink.application.ports import DayStats, EventPage, Filter, ModelPage, SearchHit
from scrapesink.application.summary import IngestSummary, ModelSummary, WriteSummary
from scrapesink.config import Settings, get_settings
from scrapesink.domain.events import RawEvent, StoredEvent
from scrapesink.entrypoints.python import Sink, open
from scrapesink.errors import (
    ConfigError,
    Conflict,
    ConstraintError,
    DeclarationError,
    InputError,
    NotFound,
    PermanentStorageError,
    QueryError,
    RecordError,
    SchemaError,
    ScrapesinkError,
    StorageError,
    TransientStorageError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Conflict",
    "ConstraintError",
    "DayStats",
    "DeclarationError",
    "EventPage",
    "Filter",
    "IngestSummary",
    "InputError",
    "ModelPage",
    "ModelSummary",
    "NotFound",
    "PermanentStorageError",
    "QueryError",
    "RawEvent",
    "RecordError",
    "SchemaError",
    "ScrapesinkError",
    "SearchHit",
    "Settings",
    "Sink",
    "StorageError",
    "StoredEvent",
    "TransientStorageError",
    "WriteSummary",
    "__version__",
    "get_settings",
    "open",
]
