"""Dead letters in Redis: shared by every worker and producer of a shared journal.

With SCRAPESINK_JOURNAL_URL set, workers on several machines refuse records; keeping each
machine's in its own data directory would scatter them. They go beside the stream instead, in
the same Redis (up whenever workers work at all, unlike PostgreSQL, which may be the store
that is down while the CSV worker refuses a record), durable as the stream is (AOF):

    scrapesink:deadletters         hash: letter id -> the letter (JSON)
    scrapesink:deadletters:keys    hash: "<sink> <journal id> <seq>" -> letter id (one per slot)
    scrapesink:deadletters:next    the last letter id given

Same interface as the local store (``deadletters.DeadLetterStore``); the same record refused
again counts one more attempt.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from scrapesink.adapters.deadletters import DeadLetter
from scrapesink.adapters.redis_streams import RedisStreams, translated
from scrapesink.application.kinds import Letter, kind_named
from scrapesink.domain.events import RawEvent
from scrapesink.domain.records import RecordOp
from scrapesink.errors import NotFound, ScrapesinkError

LETTERS, KEYS, NEXT = (
    "scrapesink:deadletters",
    "scrapesink:deadletters:keys",
    "scrapesink:deadletters:next",
)

# KEYS: letters, keys, next. ARGV: slot key, the new letter (JSON, id 0), now, error type,
# message. A letter already in the slot gets one more attempt and the new error.
_ADD = """
local id = redis.call('HGET', KEYS[2], ARGV[1])
if id then
  local letter = cjson.decode(redis.call('HGET', KEYS[1], id))
  letter.attempts = letter.attempts + 1
  letter.last_failed_at = ARGV[3]
  letter.error_type = ARGV[4]
  letter.message = ARGV[5]
  redis.call('HSET', KEYS[1], id, cjson.encode(letter))
  return tonumber(id)
end
id = redis.call('INCR', KEYS[3])
local letter = cjson.decode(ARGV[2])
letter.id = id
redis.call('HSET', KEYS[1], id, cjson.encode(letter))
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
"""


class RedisDeadLetters:
    """The dead-letter store of a shared journal (see the module docstring)."""

    def __init__(self, streams: RedisStreams) -> None:
        self.streams = streams
        self._add = streams.client.register_script(_ADD)

    def add(
        self,
        sink: str,
        kind: str,
        journal_id: str,
        seq: int,
        record: RawEvent | RecordOp,
        error: ScrapesinkError,
        accepted_us: int | None = None,
    ) -> None:
        now = repr(datetime.now(UTC).timestamp())
        source, source_id, at, payload = kind_named(kind).letter(record)
        letter = {
            "id": 0,
            "sink": sink,
            "kind": kind,
            "journal_id": journal_id,
            "seq": str(seq),  # strings: Lua's cjson keeps 14 digits of a number
            "source": source,
            "source_id": source_id,
            "occurred_at": at,
            "payload": payload,
            "error_type": error.error_type,
            "message": error.message,
            "attempts": 1,
            "first_failed_at": now,
            "last_failed_at": now,
            "accepted_us": None if accepted_us is None else str(accepted_us),
        }
        slot = f"{sink} {journal_id} {seq}"
        args = [slot, json.dumps(letter), now, error.error_type, error.message]
        with translated(self.streams.where):
            self._add(keys=[LETTERS, KEYS, NEXT], args=args)

    def failed_again(self, letter_id: int, error: ScrapesinkError) -> None:
        letter = self._raw(letter_id)
        letter["attempts"] += 1
        letter["last_failed_at"] = repr(datetime.now(UTC).timestamp())
        letter["error_type"], letter["message"] = error.error_type, error.message
        with translated(self.streams.where):
            self.streams.client.hset(LETTERS, str(letter_id), json.dumps(letter))

    def list(self, *, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        letters = sorted(self._all(), key=lambda raw: int(raw["id"]))
        return [_letter(raw) for raw in letters if sink is None or raw["sink"] == sink][:limit]

    def get(self, letter_id: int) -> DeadLetter:
        return _letter(self._raw(letter_id))

    def remove(self, ids: Sequence[int]) -> int:
        removed = 0
        for letter_id in ids:
            try:
                raw = self._raw(letter_id)
            except NotFound:
                continue
            with translated(self.streams.where):
                pipe = self.streams.client.pipeline(transaction=True)
                pipe.hdel(LETTERS, str(letter_id))
                pipe.hdel(KEYS, f"{raw['sink']} {raw['journal_id']} {raw['seq']}")
                removed += int(pipe.execute()[0])
        return removed

    def purge(self, *, sink: str | None = None) -> int:
        return self.remove([int(raw["id"]) for raw in self._all() if sink in (None, raw["sink"])])

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for raw in self._all():
            counts[raw["sink"]] = counts.get(raw["sink"], 0) + 1
        return counts

    def _all(self) -> builtins.list[dict[str, Any]]:
        with translated(self.streams.where):
            values = self.streams.client.hvals(LETTERS)
        return [json.loads(v) for v in values]

    def _raw(self, letter_id: int) -> dict[str, Any]:
        with translated(self.streams.where):
            value = self.streams.client.hget(LETTERS, str(letter_id))
        if value is None:
            raise NotFound(f"no dead letter {letter_id}")
        raw: dict[str, Any] = json.loads(value)
        return raw


def _letter(raw: dict[str, Any]) -> DeadLetter:
    record = kind_named(raw["kind"]).from_letter(
        Letter(raw["source"], raw["source_id"], raw["occurred_at"], raw["payload"])
    )
    accepted = raw.get("accepted_us")
    return DeadLetter(
        int(raw["id"]),
        raw["sink"],
        raw["kind"],
        raw["journal_id"],
        int(raw["seq"]),
        record,
        raw["error_type"],
        raw["message"],
        int(raw["attempts"]),
        datetime.fromtimestamp(float(raw["first_failed_at"]), UTC),
        datetime.fromtimestamp(float(raw["last_failed_at"]), UTC),
        None if accepted is None else int(accepted),
    )
