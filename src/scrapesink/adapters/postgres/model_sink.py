"""Model records into PostgreSQL: the sink of one model's journaled operations.

Writes call ``upsert_<model>(jsonb, stamps)`` / ``delete_<model>(jsonb, stamps)`` with a whole
batch as one JSON array, in the transaction that records the journal range: one upsert
implementation, server-side and set-based (``model_sql.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.postgres.model_sql import found_name, q, upsert_name
from scrapesink.adapters.postgres.progress import RECORD_PROGRESS, JournalProgress
from scrapesink.application.kinds import model_kind
from scrapesink.application.ports import (
    Batch,
    WriteOutcome,
)
from scrapesink.domain.models import ModelDef
from scrapesink.domain.records import DELETE, RecordOp

_JSON = msgspec.json.Encoder()


class PostgresModelSink(JournalProgress):
    """One model's records delivered to its tables (a ``ports.RecordSink`` of ``RecordOp``)."""

    name = "postgres"
    parallelism = 1  # batches of one model touch the same keys: in journal order

    def __init__(
        self, database: Database, model: ModelDef, *, prepare: Callable[[], None] | None = None
    ) -> None:
        self.database = database
        self.model = model
        # Brings the tables to the declaration; run before the first delivery (it may have
        # failed when the model service started, with PostgreSQL down).
        self._prepare = prepare
        self.kind = model_kind(model.name)
        self._upsert = f"SELECT {q(upsert_name(model))}(%s::jsonb, %b::bytea[])"
        self._delete = f"SELECT {q(found_name(model))}(%s::jsonb, %b::bytea[])"

    def stage(self, batch: Batch[RecordOp]) -> Callable[[], WriteOutcome]:
        # Runs of one operation, in journal order: an upsert then a delete of a key stays so.
        # Each record carries its acceptance stamp: the newest wins (model_sql).
        runs: list[tuple[str, int, int, str, list[bytes]]] = []  # op, first seq, n, JSON, stamps
        start = 0
        records = batch.records
        stamps = batch.stamps()
        for i in range(1, len(records) + 1):
            if i == len(records) or records[i].op != records[start].op:
                chunk = [e.record for e in records[start:i]]
                payload = _JSON.encode(chunk).decode()
                op = records[start].op
                runs.append((op, batch.first + start, i - start, payload, stamps[start:i]))
                start = i

        def run() -> WriteOutcome:
            self._verify_schema()
            stored = unchanged = 0
            same: set[int] = set()
            with self.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
                for op, first, count, payload, run_stamps in runs:
                    if op == DELETE:  # a key not found (or newer than the delete) is unchanged
                        row = cur.execute(self._delete, (payload, run_stamps)).fetchone()
                        found = {first + position - 1 for position in (row[0] if row else ())}
                        stored += len(found)
                        unchanged += count - len(found)
                        same.update(s for s in range(first, first + count) if s not in found)
                        continue
                    row = cur.execute(self._upsert, (payload, run_stamps)).fetchone()
                    result = row[0] if row else {}
                    stored += int(result.get("inserted", 0)) + int(result.get("updated", 0))
                    unchanged += int(result.get("unchanged", 0))
                    changed = {first + position - 1 for position in result.get("changed", ())}
                    same.update(s for s in range(first, first + count) if s not in changed)
                if batch.journal_id:
                    cur.execute(RECORD_PROGRESS, (batch.journal_id, batch.first, batch.last))
            return WriteOutcome(stored, unchanged=unchanged, unchanged_seqs=frozenset(same))

        return run

    def _verify_schema(self) -> None:
        if self._prepare is not None:
            self._prepare()  # ModelSchema.ensure: once per process, then a set lookup
            self._prepare = None
