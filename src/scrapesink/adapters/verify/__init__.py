"""``scrapesink verify``: do PostgreSQL and the CSV files hold the same data? And the repair.

What is compared:

* raw events, per key: the CSV files' row against PostgreSQL's (``occurred_at`` as an instant,
  the payload as JSON values: key order, spacing and ``1.50`` against ``1.5`` do not count);
* model records, per row of each of the model's files (the record, its children, its links):
  the latest version in the CSV history (a tombstone: gone) against the row PostgreSQL's record
  gives when it is written out the way the CSV mirror writes it;
* the CSV files against their committed lengths: a file longer or shorter than scrapesink left
  it was changed behind its back (a line appended or removed by hand, a restore of another copy).

Memory stays bounded whatever the size: the CSV side is loaded into a temporary SQLite file
(a digest per key), PostgreSQL is read through a server-side cursor, a page at a time, and each
page is matched against that file.

:func:`repair_events` and :func:`repair_model` rebuild the CSV files of one source or one model
from PostgreSQL — each file written to a temporary name, fsynced, renamed, the directory
fsynced — and their state with them, under the CSV state's write lock (no writer interleaves).
A crash in the middle leaves files that ``verify`` reports and a second repair fixes.
"""

from __future__ import annotations

from pathlib import Path

from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.verify.common import VerifyReport, canonical_json, check_lengths
from scrapesink.adapters.verify.events import compare_events, repair_events, sources
from scrapesink.adapters.verify.models import ModelFiles, compare_model, repair_model
from scrapesink.domain.models import Declaration


def verify(
    database: Database,
    declaration: Declaration,
    data_dir: Path,
    *,
    model: str | None = None,
    source: str | None = None,
    limit: int = 20,
) -> VerifyReport:
    """Compare both stores: every source and model, or only the one named."""
    report = VerifyReport(limit=limit)
    if model is None:
        compare_events(database, data_dir, report, source=source)
    if source is None:
        names = [model] if model is not None else list(declaration.models)
        for name in names:
            compare_model(database, declaration, data_dir, declaration.model(name), report)
        if names:  # one state for every model's files
            owned = {
                file
                for name in names
                for file in ModelFiles(data_dir, declaration, declaration.model(name)).layouts
            }
            sink = CsvModelSink(data_dir, declaration, declaration.model(names[0]))
            check_lengths(sink, report, owned.__contains__)
    return report


__all__ = [
    "VerifyReport",
    "canonical_json",
    "repair_events",
    "repair_model",
    "sources",
    "verify",
]
