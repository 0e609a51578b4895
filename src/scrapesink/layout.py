"""The data directory's layout: the one place that names each file and folder in it.

<data dir>/
  journal/<id>.sqlite        one journal per writing process (and per record kind)
  deadletters.sqlite         records a store refused for good
  raw_events/<source>/<day>.csv, csv_state.sqlite
  <model>/<table>.csv, csv_models.sqlite
  pgdata/                    the embedded PostgreSQL
  backups/                   (SCRAPESINK_BACKUP_DIR moves it)
  idempotency.sqlite, api_keys.cache.json   the REST API's
  export/excel/              spreadsheet-safe copies
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PGDATA, BACKUPS, EXPORT = "pgdata", "backups", "export"
#: what a backup's files.tar never holds (the database is in its dump; the rest is derived)
NOT_BACKED_UP = frozenset({PGDATA, BACKUPS, EXPORT})


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def journals(self) -> Path:
        return self.root / "journal"

    @property
    def dead_letters(self) -> Path:
        return self.root / "deadletters.sqlite"

    @property
    def event_csv(self) -> Path:
        return self.root / "raw_events"

    @property
    def event_csv_state(self) -> Path:
        return self.root / "csv_state.sqlite"

    @property
    def model_csv(self) -> Path:
        return self.root

    @property
    def model_csv_state(self) -> Path:
        return self.root / "csv_models.sqlite"

    @property
    def pgdata(self) -> Path:
        return self.root.resolve() / PGDATA

    @property
    def backups(self) -> Path:
        return self.root / BACKUPS

    @property
    def idempotency(self) -> Path:
        return self.root / "idempotency.sqlite"

    @property
    def api_keys_cache(self) -> Path:
        return self.root / "api_keys.cache.json"

    @property
    def excel_export(self) -> Path:
        return self.root / EXPORT / "excel"
