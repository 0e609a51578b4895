"""The shared journal on Redis Streams: producers on many machines publish, workers deliver.

Per record kind (``events``, ``model:<name>``), in one hash slot (``{<kind>}``):

    scrapesink:{<kind>}:stream   one entry per published batch: ``f`` (its first seq) and ``r``
                                 (its records, msgpack, as in the local journal)
    scrapesink:{<kind>}:meta     ``id`` (the stream's journal id), ``seq`` (the last seq given),
                                 ``next_us`` (the earliest acceptance time the next record gets)
    consumer groups              one per sink (``postgres``, ``csv``), made from the stream's
                                 start by the first producer or worker, so a sink whose worker
                                 has not started yet still gets everything

Publishing is one Lua script, atomic: it gives the batch the next dense seqs and the next
acceptance times and adds the entry *under an id made of its first record's acceptance time*
(``<ms>-<µs within the ms>``). The entry id is the stamp (DESIGN.md, invariant 6), so one total
order spans every producer, and the seqs are what the stores' progress tables record, as for a
local journal: a redelivered entry is found there and not stored again.

Durability: a record is acknowledged only once Redis has it on disk. Redis >= 7.2: ``WAITAOF``
after the script. Older servers (Debian 12 ships 7.0): the journal checks at open that the
server runs ``appendonly yes`` with ``appendfsync always`` (Redis then fsyncs the AOF before it
answers) and refuses to acknowledge otherwise, unless ``SCRAPESINK_REDIS_DURABILITY=relaxed``.

A publish whose answer is lost (the connection broke mid-way) is reported as not accepted,
though the entry may be in the stream: publication is at least once. The stores keep one copy of
a key (stamps), so a batch published twice is stored once, its second copy counted duplicate.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis
import redis.exceptions

from scrapesink.adapters.journal import PACK, Entry, records_decoder, unencodable
from scrapesink.application.outcomes import Outcome
from scrapesink.errors import ConfigError, StorageError, TransientStorageError, UnencodableRecords

log = logging.getLogger(__name__)

# KEYS: stream, meta. ARGV: record count, packed records, a journal id should the stream be new,
# and for records published again: their acceptance times (packed) and their journal.
# Returns {first seq, acceptance µs of the first record, the stream's journal id}.
_PUBLISH = """
redis.call('HSETNX', KEYS[2], 'id', ARGV[3])
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
us = math.max(us, tonumber(redis.call('HGET', KEYS[2], 'next_us') or '0'))
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then  -- an entry added by someone else (XADD *) must not make ours fail
  local ms, seq = string.match(top[1][1], '(%d+)-(%d+)')
  us = math.max(us, tonumber(ms) * 1000 + math.min(tonumber(seq), 999) + 1)
end
local first = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') + 1
local ms = math.floor(us / 1000)
local id = string.format('%d-%d', ms, us - ms * 1000)
if ARGV[4] == '' then
  redis.call('XADD', KEYS[1], id, 'f', first, 'r', ARGV[2])
else  -- records published again (dead letters retried) keep their own stamps
  redis.call('XADD', KEYS[1], id, 'f', first, 'r', ARGV[2], 'a', ARGV[4], 'o', ARGV[5])
end
-- only once the entry is in: a failed XADD leaves no gap in the seqs
redis.call('HSET', KEYS[2], 'seq', first + n - 1, 'next_us', string.format('%d', us + n))
return {first, string.format('%d', us), redis.call('HGET', KEYS[2], 'id')}
"""
# Take or renew a lease, only where the leased thing lives. KEYS: lease, home. ARGV: holder,
# milliseconds, the holder's home. Returns 1 (held), 0 (another holder), -1 (not its home).
_LEASE = """
local home = redis.call('GET', KEYS[2])
if home and home ~= ARGV[3] then
  return -1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Drop a lease only if still ours. KEYS: lease. ARGV: holder.
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
WAITAOF_TIMEOUT_MS = 5000
# how often a long-lived producer checks again that Redis still fsyncs (CONFIG SET at runtime)
RECHECK_SECONDS = 60.0
# What workers did with each range, for producers waiting on it (``redis_outcomes.py``): notices,
# not data, so capped by length
OUTCOMES = "scrapesink:outcomes"
# entries no worker could read, as found (kept: someone must look at them)
UNREADABLE = "scrapesink:unreadable"
OUTCOMES_KEPT = 100_000


def stream_key(kind: str) -> str:
    return f"scrapesink:{{{kind}}}:stream"


def meta_key(kind: str) -> str:
    return f"scrapesink:{{{kind}}}:meta"


def entry_us(entry_id: bytes | str) -> int:
    """The acceptance time (µs) an entry id encodes: ``<ms>-<µs within the ms>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, sub = text.partition("-")
    return int(ms) * 1000 + int(sub)


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Redis errors at the boundary: unreachable is transient, anything else a storage error."""
    try:
        yield
    except redis.exceptions.AuthenticationError as exc:  # a ConnectionError, but not transient
        raise ConfigError(f"Redis at {where} refused the credentials: {exc}") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        error = TransientStorageError(f"Redis at {where} is unreachable: {exc}")
        raise journal_error(error) from exc
    except redis.exceptions.RedisError as exc:
        raise journal_error(StorageError(f"Redis at {where} refused: {exc}")) from exc


def journal_error(error: StorageError) -> StorageError:
    """``error``, said to be the shared journal's (not the database's)."""
    error.store = "the shared journal (Redis)"
    return error


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One published batch: records ``first..first + len(records) - 1``."""

    id: bytes
    first: int
    records: list[Any]
    #: records published again: their own acceptance times, and the journal that gave them
    stamps: list[int] | None = None
    origin: str | None = None
    #: why the entry could not be read (then ``fields`` holds it as found)
    unreadable: str | None = None
    fields: dict[bytes, bytes] | None = None

    @property
    def last(self) -> int:
        return self.first + len(self.records) - 1

    def entries(self) -> list[Entry]:
        if self.stamps is not None:
            return [
                Entry(self.first + i, r, t)
                for i, (r, t) in enumerate(zip(self.records, self.stamps, strict=True))
            ]
        start = entry_us(self.id)
        return [Entry(self.first + i, r, start + i) for i, r in enumerate(self.records)]


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group (one sink) of one stream, as ``status`` shows it."""

    kind: str
    group: str
    #: entries not yet delivered to the group (None: Redis cannot tell after a trim)
    lag: int | None
    #: entries delivered to a worker and not acknowledged
    pending: int
    consumers: int
    #: milliseconds since the group's most recently active consumer did anything
    idle_ms: int | None


class RedisStreams:
    """A connection to the Redis that holds the shared journal."""

    def __init__(self, url: str, *, durability: str = "strict") -> None:
        self.url = url
        self.where = _label(url)
        self.durability = durability
        # Any: redis-py types every reply as str | bytes | None whatever decode_responses says;
        # replies here are bytes (decode_responses off: records are msgpack)
        self.client: Any = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30
        )
        self._publish = self.client.register_script(_PUBLISH)
        self._lease = self.client.register_script(_LEASE)
        self._drop = self.client.register_script(_DROP)
        self._wait_aof: bool | None = None
        self._checked_at = 0.0

    def close(self) -> None:
        self.client.close()

    def interrupt(self) -> None:
        """Break off every command in flight, from another thread (a worker stopping while
        Redis does not answer: its read would wait out the 30 s socket timeout)."""
        self.client.connection_pool.disconnect()

    def check_durability(self) -> None:
        """Decide how a publish is made durable; refuse a server that cannot make it so.

        Raises:
            ConfigError: strict durability on a server that does not fsync every write.
        """
        if self._wait_aof is not None and time.monotonic() - self._checked_at < RECHECK_SECONDS:
            return
        self._checked_at = time.monotonic()
        with translated(self.where):
            info = self.client.info("server")
            version = tuple(int(p) for p in str(info["redis_version"]).split(".")[:2])
            persistence = self.client.info("persistence")
            aof = bool(int(persistence.get("aof_enabled", 0)))
            fsync = None
            with suppress(redis.exceptions.ResponseError):  # CONFIG renamed away: cannot tell
                fsync = self.client.config_get("appendfsync").get("appendfsync")
        if isinstance(fsync, bytes):
            fsync = fsync.decode()
        if version >= (7, 2) and aof:
            self._wait_aof = True
            return
        self._wait_aof = False
        if fsync == "always" and aof:
            return
        why = (
            f"Redis at {self.where} (version {'.'.join(map(str, version))}) runs with"
            f" appendonly {'yes' if aof else 'no'}, appendfsync {fsync or 'unknown'}: an"
            " acknowledged record could be lost"
        )
        if self.durability == "relaxed":
            log.warning("%s (SCRAPESINK_REDIS_DURABILITY=relaxed)", why)
            return
        raise ConfigError(
            f"{why}. Run Redis with `appendonly yes` and `appendfsync always` (or Redis 7.2+"
            " with appendonly, for WAITAOF), or set SCRAPESINK_REDIS_DURABILITY=relaxed"
            " to accept losing the last second of acknowledged records"
        )

    # -- streams and groups -------------------------------------------------------------------
    def ensure_groups(self, kind: str, groups: Sequence[str]) -> None:
        """Consumer groups from the stream's start (existing ones are left as they are)."""
        with translated(self.where):
            for group in groups:
                try:
                    self.client.xgroup_create(stream_key(kind), group, id="0", mkstream=True)
                except redis.exceptions.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    def journal_id(self, kind: str) -> str:
        """The stream's journal id (made on first use): what the stores' progress records.

        Random, so a stream made anew (another Redis, a flushed one) never reuses the seqs
        a store holds as delivered from the old one."""
        candidate = f"redis-{uuid.uuid4().hex[:16]}:{kind}"
        with translated(self.where):
            self.client.hsetnx(meta_key(kind), "id", candidate)
            value = self.client.hget(meta_key(kind), "id")
        return value.decode() if isinstance(value, bytes) else str(value)

    def declare(self, kind: str, fingerprint: str) -> None:
        """Record the declaration producers validate this model's records with."""
        with translated(self.where):
            self.client.hset(meta_key(kind), "declaration", fingerprint)

    def declared(self, kind: str) -> str | None:
        """The declaration producers last said they validate with (None: not said)."""
        with translated(self.where):
            value = self.client.hget(meta_key(kind), "declaration")
        return None if value is None else _text(value)

    def kinds(self) -> list[str]:
        """The kinds that have a stream here."""
        with translated(self.where):
            keys = list(self.client.scan_iter(match="scrapesink:{*}:stream", count=1000))
        names = [k.decode() if isinstance(k, bytes) else k for k in keys]
        return sorted(n[len("scrapesink:{") : -len("}:stream")] for n in names)

    def publish(
        self,
        kind: str,
        records: Sequence[Any],
        new_id: str,
        *,
        stamps: Sequence[int] | None = None,
        origin: str | None = None,
    ) -> tuple[int, int, str]:
        """Add one batch durably; returns (first seq, first record's acceptance µs, journal id).

        ``stamps`` and ``origin``: records published again (retried dead letters) keep the
        acceptance times they got in ``origin``, so a retry is never newer than the records
        accepted after it.

        Raises:
            UnencodableRecords: some records cannot be packed (nothing is published).
            TransientStorageError: Redis did not confirm the batch durable (it may still be in
                the stream: then it is stored once, later copies counted duplicates).
        """
        try:
            packed = PACK.encode(records)
        except (TypeError, ValueError, OverflowError):
            raise UnencodableRecords(unencodable(records)) from None
        self.check_durability()
        keys = [stream_key(kind), meta_key(kind)]
        args: list[bytes | str | int] = [len(records), packed, new_id, "", ""]
        if stamps is not None:
            args[3:] = [PACK.encode(list(stamps)), origin or ""]
        with translated(self.where):
            if self._wait_aof:
                pipe = self.client.pipeline(transaction=False)
                self._publish(keys=keys, args=args, client=pipe)
                pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
                reply, (local, _replicas) = pipe.execute()
                if int(local) < 1:
                    raise journal_error(
                        TransientStorageError(
                            f"Redis at {self.where} did not confirm the batch on disk in time"
                        )
                    )
            else:
                reply = self._publish(keys=keys, args=args)
        first, accepted, journal_id = reply
        return int(first), int(accepted), journal_id.decode()

    def republish(
        self, kind: str, records: Sequence[Any], stamps: Sequence[int] | None, origin: str
    ) -> None:
        """Publish records again (retried dead letters) with their stamps, to every group."""
        self.publish(kind, records, self.journal_id(kind), stamps=stamps, origin=origin)

    def read_range(self, kind: str, first: int, last: int) -> Iterator[StreamEntry]:
        """Entries holding seqs ``first..last``, in order (a scan: for tools, not hot paths)."""
        decode = records_decoder(kind)
        start = "-"
        while True:
            with translated(self.where):
                rows = self.client.xrange(stream_key(kind), min=start, count=1000)
            for entry_id, fields in rows:
                entry = _entry(entry_id, fields, decode)
                if entry.last >= first and entry.first <= last:
                    yield entry
            if len(rows) < 1000:
                return
            start = "(" + rows[-1][0].decode()

    # -- consuming ----------------------------------------------------------------------------
    def read_group(
        self,
        kinds: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int | None,
        history: bool = False,
    ) -> dict[str, list[StreamEntry]]:
        """New entries for ``consumer`` (``history``: those delivered to it and not acked)."""
        streams = {stream_key(k): ("0" if history else ">") for k in kinds}
        with translated(self.where):
            reply = self.client.xreadgroup(
                group, consumer, streams, count=count, block=None if history else block_ms
            )
        return self._parse(reply)

    def claim(
        self, kind: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        """Take over entries other consumers left unacknowledged for ``min_idle_ms``."""
        decode = records_decoder(kind)
        taken: list[StreamEntry] = []
        start = "0-0"
        while len(taken) < count:
            with translated(self.where):
                reply = self.client.xautoclaim(
                    stream_key(kind), group, consumer, min_idle_ms, start, count=count
                )
            start, rows = reply[0], reply[1]
            # entries trimmed away while pending come back as None: nothing is left to deliver
            taken.extend(_entry(i, f, decode) for i, f in rows if f)
            if start in (b"0-0", "0-0"):
                break
        return taken

    def report_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Tell waiting producers what a worker did (``redis_outcomes.OutcomeListener``)."""
        if not outcomes:
            return
        with translated(self.where):
            pipe = self.client.pipeline(transaction=False)
            for outcome in outcomes:
                pipe.xadd(OUTCOMES, outcome.fields(), maxlen=OUTCOMES_KEPT, approximate=True)
            pipe.execute()

    def set_aside(self, kind: str, group: str, entry: StreamEntry) -> None:
        """An entry no worker can read goes to ``scrapesink:unreadable`` (as found, with why),
        acknowledged for ``group``: it never blocks the entries after it."""
        fields = {b"kind": kind.encode(), b"group": group.encode(), b"id": entry.id}
        fields[b"error"] = (entry.unreadable or "").encode()
        for key, value in (entry.fields or {}).items():
            fields[b"field:" + key] = value
        with translated(self.where):
            self.client.xadd(UNREADABLE, fields)
            self.client.xack(stream_key(kind), group, entry.id)
        log.error("stream entry %s of %s set aside: %s", entry.id, kind, entry.unreadable)

    def ack(self, kind: str, group: str, ids: Sequence[bytes]) -> None:
        if ids:
            with translated(self.where):
                self.client.xack(stream_key(kind), group, *ids)

    def _parse(self, reply: Any) -> dict[str, list[StreamEntry]]:
        out: dict[str, list[StreamEntry]] = {}
        for key, rows in reply or []:
            name = key.decode() if isinstance(key, bytes) else key
            kind = name[len("scrapesink:{") : -len("}:stream")]
            decode = records_decoder(kind)
            out[kind] = [_entry(i, f, decode) for i, f in rows if f]
        return out

    # -- how far each group is, trimming ------------------------------------------------------
    def first_unsettled(self, kind: str, group: str) -> bytes | None:
        """The id of the oldest entry ``group`` has not acknowledged (None: it has them all)."""
        with translated(self.where):
            summary = self.client.xpending(stream_key(kind), group)
            if summary["pending"]:
                low = summary["min"]
                return low if isinstance(low, bytes) else str(low).encode()
            groups = {_text(g["name"]): g for g in self.client.xinfo_groups(stream_key(kind))}
            last = groups[group]["last-delivered-id"]
            rows = self.client.xrange(stream_key(kind), min="(" + _text(last), count=1)
        return rows[0][0] if rows else None

    def settled_below(self, kind: str, group: str) -> int | None:
        """The seq below which ``group`` has acknowledged every entry (None: no entry to
        tell by)."""
        with translated(self.where):
            # read first: whatever is published after has a higher seq
            seq = self.client.hget(meta_key(kind), "seq")
        oldest = self.first_unsettled(kind, group)
        if oldest is not None:
            with translated(self.where):
                rows = self.client.xrange(stream_key(kind), min=oldest, max=oldest)
            return int(rows[0][1][b"f"]) if rows else None
        return int(seq) + 1 if seq is not None else None

    def forget_consumers(self, kind: str, group: str, idle_ms: int) -> int:
        """Remove consumers of ``group`` that hold nothing and did nothing for ``idle_ms``
        (workers gone for good), so `status` counts the ones that are there."""
        removed = 0
        with translated(self.where):
            for consumer in self.client.xinfo_consumers(stream_key(kind), group):
                if int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_ms:
                    name = consumer["name"]
                    self.client.xgroup_delconsumer(stream_key(kind), group, name)
                    removed += 1
        return removed

    def trim(self, kind: str) -> int:
        """Remove entries every group has acknowledged (``XTRIM MINID``: below the oldest entry
        any group still needs; never a length cap). Returns how many were removed."""
        with translated(self.where):
            groups = self.client.xinfo_groups(stream_key(kind))
        if not groups:
            return 0  # no sink has a group yet: everything is still needed
        needed = [k for g in groups if (k := self.first_unsettled(kind, _text(g["name"])))]
        with translated(self.where):
            if needed:
                low = min(needed, key=_id_order)
            else:
                # every group has everything: keep the last entry (cheap, and the stream's
                # last id stays visible)
                last = self.client.xrevrange(stream_key(kind), count=1)
                if not last:
                    return 0
                low = last[0][0]
            return int(self.client.xtrim(stream_key(kind), minid=low, approximate=False))

    def groups(self, kinds: Sequence[str] | None = None) -> list[GroupInfo]:
        out = []
        with translated(self.where):
            for kind in kinds if kinds is not None else self.kinds():
                try:
                    groups = self.client.xinfo_groups(stream_key(kind))
                except redis.exceptions.ResponseError:  # no such stream
                    continue
                for g in groups:
                    name = _text(g["name"])
                    consumers = self.client.xinfo_consumers(stream_key(kind), name)
                    idle = min((int(c["idle"]) for c in consumers), default=None)
                    lag = g.get("lag")
                    out.append(
                        GroupInfo(
                            kind,
                            name,
                            None if lag is None else int(lag),
                            int(g["pending"]),
                            len(consumers),
                            idle,
                        )
                    )
        return out

    # -- leases ---------------------------------------------------------------------------------
    def take_lease(self, name: str, holder: str, ms: int, home: str = "") -> bool | None:
        """Hold ``name`` for ``ms`` (renewed if already ours): True. False: another holder has
        it. None: ``home`` is not where the leased thing lives (see :meth:`settle_home`)."""
        keys = [f"scrapesink:lease:{name}", f"scrapesink:home:{name}"]
        with translated(self.where):
            answer = int(self._lease(keys=keys, args=[holder, ms, home]))
        return None if answer < 0 else bool(answer)

    def drop_lease(self, name: str, holder: str) -> None:
        with translated(self.where):
            self._drop(keys=[f"scrapesink:lease:{name}"], args=[holder])

    def settle_home(self, name: str, home: str, *, move: bool = False) -> str | None:
        """Where the files leased as ``name`` live: ``home`` if none is recorded yet (or
        ``move``); otherwise the recorded one is returned when it is another."""
        key = f"scrapesink:home:{name}"
        with translated(self.where):
            if move:
                self.client.set(key, home)
                return None
            if self.client.set(key, home, nx=True):
                return None
            current = self.client.get(key)
        current_text = _text(current) if current is not None else None
        return None if current_text in (None, home) else current_text


_STAMPS = msgspec.msgpack.Decoder(list[int])


def _entry(entry_id: bytes, fields: dict[bytes, bytes], decode: Any) -> StreamEntry:
    """One entry read back; one that cannot be (written by hand, or by another program) comes
    back with ``unreadable`` set and no records, for the worker to set aside."""
    try:
        records = decode.decode(fields[b"r"])
        if b"a" not in fields:
            return StreamEntry(entry_id, int(fields[b"f"]), records)
        origin = fields[b"o"].decode() or None
        stamps = _STAMPS.decode(fields[b"a"])
        if len(stamps) != len(records):
            raise ValueError(f"{len(stamps)} stamps for {len(records)} records")
        return StreamEntry(entry_id, int(fields[b"f"]), records, stamps, origin)
    except (KeyError, ValueError, UnicodeDecodeError, msgspec.MsgspecError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        return StreamEntry(entry_id, 0, [], unreadable=why, fields=dict(fields))


def _id_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _label(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"


def consumer_name() -> str:
    """A worker's default name: unique per process and telling where it runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisJournal:
    """The journal port on a Redis stream (one per kind, shared by every producer).

    It only appends: reading, trimming and progress belong to the workers' consumer groups.
    """

    def __init__(
        self,
        streams: RedisStreams,
        kind: str,
        groups: Sequence[str],
        *,
        declaration: str | None = None,
    ) -> None:
        self.streams = streams
        self.kind = kind
        streams.check_durability()
        streams.ensure_groups(kind, groups)
        if declaration is not None:  # a model: workers deliver only with the same declaration
            streams.declare(kind, declaration)
        self.id = streams.journal_id(kind)
        self._last_seq = 0
        self._batch_us = 0
        self._new_id = self.id

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def last_accepted_us(self) -> int:
        return self._batch_us

    def append(self, records: Sequence[Any]) -> tuple[int, int]:
        if not records:
            return (self._last_seq + 1, self._last_seq)
        first, accepted, journal_id = self.streams.publish(self.kind, records, self._new_id)
        if journal_id != self.id:  # the stream was made anew (flushed) since we opened
            self.id = journal_id
        self._last_seq = first + len(records) - 1
        self._batch_us = accepted
        return first, self._last_seq

    def read(self, first: int, last: int, *, chunk: int = 5000) -> Iterator[list[Entry]]:
        run: list[Entry] = []
        for entry in self.streams.read_range(self.kind, first, last):
            run.extend(e for e in entry.entries() if first <= e.seq <= last)
            if len(run) >= chunk:
                yield run
                run = []
        if run:
            yield run

    def first_seq(self) -> int | None:
        with translated(self.streams.where):
            rows = self.streams.client.xrange(stream_key(self.kind), count=1)
        return int(rows[0][1][b"f"]) if rows else None

    def count_between(self, first: int, last: int) -> int:
        return sum(len(chunk) for chunk in self.read(first, last))

    def compact(self, upto: int) -> int:
        return 0  # entries are trimmed by the workers, once every group has them

    def close(self, *, remove_if_empty: bool = True) -> bool:
        return False  # the stream is shared: it outlives every producer
