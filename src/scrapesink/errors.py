"""Every error scrapesink raises, in one tree.

    ScrapesinkError
    ├── ConfigError                 a setting is missing or invalid
    │   └── DeclarationError        a model declaration is malformed (every problem, with paths)
    ├── InputError                  an input file cannot be read at all (missing, empty, bad header)
    ├── RecordError                 one record is invalid; carries where (line, JSON path) and why
    │   └── UnencodableRecords      records of a batch hold values the journal cannot store
    ├── SchemaError                 the database schema is not at the version this code needs
    ├── StorageError                PostgreSQL (or another store) failed
    │   ├── TransientStorageError   worth retrying: connection refused/lost, timeout, 40001, 40P01
    │   └── PermanentStorageError   retrying will not help
    │       ├── ConstraintError     a value the database rejects (integrity, check, bad data)
    │       └── QueryError          anything else the database refuses
    ├── NotFound                    the thing asked for does not exist
    └── Conflict                    the request contradicts the current state

Adapters translate driver exceptions at the boundary (``raise X from exc``), so code above them
only ever sees this tree. Each error renders as the seed 001 report through :meth:`report`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "Conflict",
    "ConstraintError",
    "DeclarationError",
    "InputError",
    "NotFound",
    "PermanentStorageError",
    "QueryError",
    "RecordError",
    "SchemaError",
    "ScrapesinkError",
    "StorageError",
    "TransientStorageError",
    "UnencodableRecords",
]


class ScrapesinkError(Exception):
    """Root of every error scrapesink raises on purpose."""

    def __init__(
        self, message: str, *, table_name: str | None = None, query: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.table_name = table_name
        self.query = query

    @property
    def error_type(self) -> str:
        return type(self).__name__

    def report(self) -> dict[str, Any]:
        """The seed 001 error report: what went wrong, where, in one flat dict."""
        return {
            "error_type": self.error_type,
            "table_name": self.table_name,
            "query": self.query,
            "message": self.message,
        }


class ConfigError(ScrapesinkError):
    """A setting is missing or has a value that cannot work."""


class DeclarationError(ConfigError):
    """A model declaration has problems; ``problems`` lists each with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class InputError(ScrapesinkError):
    """An input cannot be read at all: missing file, empty file, CSV header lacking a column."""


class RecordError(ScrapesinkError):
    """One record is invalid. ``location`` says where (``line 12``, ``[3]``), ``path`` what."""

    def __init__(self, message: str, *, location: str | None = None, path: str = "") -> None:
        super().__init__(message)
        self.location = location
        self.path = path

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.location, self.path) if part)
        return f"{where}: {self.message}" if where else self.message

    def report(self) -> dict[str, Any]:
        return {**super().report(), "location": self.location, "path": self.path}


class UnencodableRecords(RecordError):
    """Records of a batch hold values the journal cannot encode (an arbitrary object in a JSON
    field). ``reasons`` maps each one's index in the batch to its field and why; the write loop
    rejects them alone and journals the rest."""

    def __init__(self, reasons: dict[int, tuple[str, str]]) -> None:
        super().__init__(f"{len(reasons)} records cannot be journaled")
        self.reasons = reasons


class SchemaError(ScrapesinkError):
    """The database schema is missing or older than this version of scrapesink expects."""


class StorageError(ScrapesinkError):
    """A store failed to do what was asked. ``sqlstate`` is PostgreSQL's code, when it has one,
    ``constraint_name`` the constraint a value broke."""

    sqlstate: str | None = None
    constraint_name: str | None = None
    #: which store failed, for a message that does not show the error itself (the REST API's)
    store: str = "the database"


class TransientStorageError(StorageError):
    """A failure that may go away by itself: retry later."""


class PermanentStorageError(StorageError):
    """A failure that will repeat on retry with the same input."""


class ConstraintError(PermanentStorageError):
    """The database rejected a value (integrity or check violation, invalid data)."""


class QueryError(PermanentStorageError):
    """The database refused a statement for another reason."""


class NotFound(ScrapesinkError):
    """The requested record, partition or object does not exist."""


class Conflict(ScrapesinkError):
    """The request conflicts with the current state."""
