"""The PostgreSQL event store: COPY into staging, one set-based insert through the key registry."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from scrapesink.adapters.postgres.database import Database, translate
from scrapesink.adapters.postgres.encoding import EncodedBatch, copy_text
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.adapters.postgres.progress import RECORD_PROGRESS, JournalProgress
from scrapesink.application.kinds import EVENTS
from scrapesink.application.ports import (
    Batch,
    DayStats,
    EventPage,
    EventQuery,
    WriteOutcome,
)
from scrapesink.domain.events import RawEvent, StoredEvent
from scrapesink.errors import ConstraintError, InputError, TransientStorageError

# Claim the batch's keys in the registry first, in key order (one lock order for concurrent
# writers); only the keys this transaction claimed are then copied into raw_events, so each
# payload crosses the wire once, straight into its partition (measured: COPY into a staging
# table plus INSERT ... SELECT was 40% slower). Binary parameters (%b) halve the cost of the
# arrays. Each key keeps the acceptance stamp of its copy: the oldest stamp wins, whichever copy
# arrives first (_REPLACE).
_KEYS = """
    SELECT * FROM unnest(%(sources)b::text[], %(ids)b::text[], %(times)b::timestamptz[],
                         %(stamps)b::bytea[])
        AS t(source, source_id, occurred_at, stamp)
    ORDER BY source COLLATE "C", source_id COLLATE "C"
"""
# Fast path for a batch of new keys: a plain INSERT costs a third less than ON CONFLICT's
# speculative insertion. It runs in a savepoint; one known key makes it fail, and the batch
# goes through _CLAIM instead.
_CLAIM_ALL = "INSERT INTO raw_event_keys (source, source_id, occurred_at, stamp)" + _KEYS
# The general path: claim what is free; the claimed keys come back only if some were not. The
# same statement counts the keys held, before it, by a copy at least as old as this one (plain
# duplicates: one probe of the primary key each); when claimed and those do not add up to the
# batch, some key may be held by a newer copy, and _REPLACE looks.
_CLAIM = f"""
WITH t AS MATERIALIZED ({_KEYS}), claimed AS (
    INSERT INTO raw_event_keys (source, source_id, occurred_at, stamp) SELECT * FROM t
    ON CONFLICT (source, source_id) DO NOTHING
    RETURNING source, source_id
), agg AS (
    SELECT count(*)::int AS n, array_agg(source) AS sources, array_agg(source_id) AS ids
    FROM claimed
)
SELECT agg.n,
       CASE WHEN agg.n < %(n)b THEN agg.sources END,
       CASE WHEN agg.n < %(n)b THEN agg.ids END,
       CASE WHEN agg.n < %(n)b THEN (
           SELECT count(*)::int FROM t CROSS JOIN LATERAL (
               SELECT 1 FROM raw_event_keys AS k
               WHERE k.source = t.source AND k.source_id = t.source_id
                 AND (k.stamp IS NULL OR k.stamp <= t.stamp)
           ) AS older
       ) ELSE 0 END
FROM agg
"""  # noqa: S608 - composed of constants
# Keys already held by a copy with a *newer* stamp (it arrived first: a catch-up after an
# outage, another process's journal) are taken over by this older copy. Each key is probed
# through the primary key (LATERAL: a nested loop, not a hash join over the whole registry, so a
# batch of plain duplicates costs one index probe a key); the rows to replace are locked in key
# order and read after the lock, so the copy replaced is the one committed last. A key claimed
# before stamps existed (NULL) is never replaced. A statement of its own after the claim: its
# snapshot sees the keys concurrent writers committed while the claim waited for them.
_REPLACE = f"""
WITH c AS MATERIALIZED ({_KEYS}), old AS (
    SELECT c.source, c.source_id, c.occurred_at, c.stamp, k.occurred_at AS held_at
    FROM c CROSS JOIN LATERAL (
        SELECT k.occurred_at FROM raw_event_keys AS k
        WHERE k.source = c.source AND k.source_id = c.source_id AND k.stamp > c.stamp
        FOR UPDATE
    ) AS k
)
UPDATE raw_event_keys AS k SET occurred_at = old.occurred_at, stamp = old.stamp
FROM old WHERE k.source = old.source AND k.source_id = old.source_id AND k.stamp > old.stamp
RETURNING k.source, k.source_id, old.held_at
"""  # noqa: S608 - composed of constants
_REMOVE = """
DELETE FROM raw_events AS e
USING unnest(%s::text[], %s::text[], %s::timestamptz[]) AS o(source, source_id, occurred_at)
WHERE e.occurred_at = o.occurred_at AND e.source = o.source AND e.source_id = o.source_id
"""
_COPY = "COPY raw_events (source, source_id, occurred_at, payload) FROM STDIN"
# "no partition of relation ... found for row" (a check violation without a constraint name):
# a partition was pruned under our feet.
_NO_PARTITION = "23514"
_RETRIED_STATES = {"40001", "40P01"}
_COLUMNS = "e.id, e.source, e.source_id, e.occurred_at, e.payload, e.created_at, e.processed"


def _worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, TransientStorageError) and exc.sqlstate in _RETRIED_STATES


class PostgresEventStore(JournalProgress):
    """Raw events in the day-partitioned ``raw_events`` table."""

    def __init__(
        self,
        database: Database,
        partitions: PartitionManager,
        *,
        premake_days: int = 7,
        schema_check: Callable[[], bool] | None = None,
    ) -> None:
        self.database = database
        self.partitions = partitions
        self.premake_days = premake_days
        # Set when the server was unreachable at start: the schema is verified before the
        # first write, so an outdated one leaves records pending instead of failing them.
        self._schema_check = schema_check
        # Today and the days ahead are premade once per process, at the first delivery (as
        # `maintain` does): a process started while PostgreSQL was down premakes when it is back.
        self._premade = False
        # Whether the last batch held known keys; picks the claim path (a hint, not state that
        # needs a lock: a wrong guess costs one failed savepoint).
        self._expect_duplicates = False

    def prepare(self) -> None:
        """Premake today's partition and the days ahead."""
        self.partitions.premake(self.premake_days)
        self._premade = True

    name = "postgres"
    kind = EVENTS
    parallelism = 2  # two batches in flight on two connections; progress is kept per range

    def write(self, events: Sequence[RawEvent]) -> WriteOutcome:
        """Store events outside any journal (tests, benchmarks, one-off loads)."""
        return self.stage(Batch("", 0, len(events) - 1, events))()

    def stage(self, batch: Batch[RawEvent]) -> Callable[[], WriteOutcome]:
        """Encode the batch now (CPU: sort, key arrays, COPY text) and return the database part.

        The ingest service calls this in its reading thread and runs the returned function in a
        writer thread, which then holds the GIL only briefly and mostly waits on PostgreSQL.
        """
        if not batch.records:
            return lambda: WriteOutcome()

        def run() -> WriteOutcome:
            self._verify_schema()
            if not self._premade:
                self.prepare()
            encoded = EncodedBatch(batch)
            self.partitions.ensure_days(encoded.days)
            try:
                return self._write(encoded)
            except ConstraintError as exc:
                if exc.sqlstate != _NO_PARTITION or exc.constraint_name is not None:
                    raise
                # Another process pruned a partition we believed in: re-check, go again once.
                self.partitions.forget()
                self.partitions.ensure_days(encoded.days)
                return self._write(encoded)

        return run

    def _verify_schema(self) -> None:
        if self._schema_check is None:
            return
        try:
            current = self._schema_check()
        except psycopg.Error as exc:
            raise translate(exc) from exc
        if not current:
            raise TransientStorageError(
                f"database {self.database.label} is not at this scrapesink's schema: "
                "run `scrapesink db upgrade`"
            )
        self._schema_check = None

    @retry(
        retry=retry_if_exception(_worth_retrying),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        reraise=True,
    )
    def _write(self, batch: EncodedBatch) -> WriteOutcome:
        with self.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
            outcome = None
            if not self._expect_duplicates:
                try:
                    with conn.transaction():  # a savepoint
                        cur.execute(_CLAIM_ALL, batch.params)
                    with cur.copy(_COPY) as copy:
                        copy.write(batch.text)
                    outcome = WriteOutcome(len(batch.events))
                except psycopg.errors.UniqueViolation:
                    self._expect_duplicates = True
            if outcome is None:
                outcome = self._claim(cur, batch)
            if batch.journal_id:  # the range is recorded in the same transaction as its data
                cur.execute(RECORD_PROGRESS, (batch.journal_id, batch.first, batch.last))
        return outcome

    def _claim(self, cur: psycopg.Cursor[Any], batch: EncodedBatch) -> WriteOutcome:
        """Some keys are known: claim the free ones, take over those held by a newer copy."""
        events, stamps, picked = batch.oldest_copies()
        params = {
            "sources": [e.source for e in events],
            "ids": [e.source_id for e in events],
            "times": [e.occurred_at for e in events],
            "stamps": stamps,
            "n": len(events),
        }
        row = cur.execute(_CLAIM, params).fetchone()
        count, sources, ids, older = row or (0, None, None, 0)
        repeated = len(events) < len(batch.events)
        if count == len(events):
            self._expect_duplicates = repeated  # new keys again: the fast path next time
            chosen = events
        else:
            stored = set(zip(sources or [], ids or [], strict=True))
            taken = []
            if count + older < len(events):  # some key may be held by a newer copy
                held = [(e, s) for e, s in zip(events, stamps, strict=True) if e.key not in stored]
                taken = cur.execute(
                    _REPLACE,
                    {
                        "sources": [e.source for e, _ in held],
                        "ids": [e.source_id for e, _ in held],
                        "times": [e.occurred_at for e, _ in held],
                        "stamps": [s for _, s in held],
                    },
                ).fetchall()
            if taken:
                cur.execute(_REMOVE, [list(column) for column in zip(*taken, strict=True)])
                stored.update((source, source_id) for source, source_id, _ in taken)
            kept = [i for i, e in zip(picked, events, strict=True) if e.key in stored]
            picked, chosen = kept, [batch.events[i] for i in kept]
        if chosen:
            with cur.copy(_COPY) as copy:
                copy.write(copy_text(chosen, frozenset()))
        if len(chosen) == len(batch.events):
            return WriteOutcome(len(chosen))
        return WriteOutcome(len(chosen), batch.seqs_but(picked))

    # -- queries ------------------------------------------------------------------------------
    def get(self, source: str, source_id: str) -> StoredEvent | None:
        with self.database.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM raw_event_keys k JOIN raw_events e"  # noqa: S608 - constant
                " ON e.occurred_at = k.occurred_at AND e.source = k.source"
                " AND e.source_id = k.source_id"
                " WHERE k.source = %s AND k.source_id = %s",
                (source, source_id),
            ).fetchone()
        return _stored(row) if row else None

    def query(self, query: EventQuery) -> EventPage:
        clauses: list[str] = []
        params: list[Any] = []
        if query.source is not None:
            clauses.append("e.source = %s")
            params.append(query.source)
        if query.since is not None:
            clauses.append("e.occurred_at >= %s")
            params.append(query.since)
        if query.until is not None:
            clauses.append("e.occurred_at < %s")
            params.append(query.until)
        if query.processed is not None:
            clauses.append("e.processed = %s")
            params.append(query.processed)
        if query.contains is not None:
            clauses.append("e.payload @> %s")
            params.append(Jsonb(query.contains))
        if query.after is not None:
            at, last_id = decode_cursor(query.after)
            clauses.append("(e.occurred_at, e.id) > (%s, %s)")
            params.extend([at, last_id])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {_COLUMNS} FROM raw_events e {where}"  # noqa: S608 - clauses are constants
            " ORDER BY e.occurred_at, e.id LIMIT %s"
        )
        with self.database.connection() as conn:
            rows = conn.execute(sql, [*params, query.limit + 1]).fetchall()
        events = [_stored(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        cursor = encode_cursor(events[-1].occurred_at, events[-1].id) if more and events else None
        return EventPage(events, cursor)

    def stats(
        self,
        *,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DayStats]:
        sql = """
            SELECT source, (occurred_at AT TIME ZONE 'UTC')::date AS day,
                   count(*), count(*) FILTER (WHERE processed)
            FROM raw_events
            WHERE (%(source)s::text IS NULL OR source = %(source)s)
              AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
            GROUP BY 1, 2 ORDER BY 1, 2
        """
        with self.database.connection() as conn:
            rows = conn.execute(sql, {"source": source, "since": since, "until": until}).fetchall()
        return [DayStats(*row) for row in rows]

    def mark_processed(self, keys: Sequence[tuple[str, str]], processed: bool = True) -> int:
        if not keys:
            return 0
        sql = """
            UPDATE raw_events e SET processed = %(flag)s
            FROM raw_event_keys k,
                 unnest(%(sources)s::text[], %(ids)s::text[]) AS t(source, source_id)
            WHERE k.source = t.source AND k.source_id = t.source_id
              AND e.occurred_at = k.occurred_at AND e.source = k.source
              AND e.source_id = k.source_id AND e.processed <> %(flag)s
        """
        params = {
            "flag": processed,
            "sources": [k[0] for k in keys],
            "ids": [k[1] for k in keys],
        }
        with self.database.connection() as conn:
            return conn.execute(sql, params).rowcount


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(*row)


def encode_cursor(occurred_at: datetime, event_id: int) -> str:
    raw = f"{occurred_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, _, event_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(at), int(event_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InputError(
            f"invalid cursor {cursor!r}: pass the value a previous page returned"
        ) from None
