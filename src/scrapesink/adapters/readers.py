"""Streaming readers for JSON Lines, JSON and CSV input, in bounded memory.

Each reader yields ``(location, value)`` for a record it could decode and a :class:`RecordError`
for one it could not, so one bad line never stops the lines after it. A problem that makes the
rest of the input unreadable (a CSV header without a needed column, a JSON array broken in the
middle) raises :class:`InputError` instead.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import ijson
import msgspec

from scrapesink.errors import InputError, RecordError

Format = Literal["jsonl", "json", "csv"]
# (location, value) or (location, value, the JSON text it was decoded from), or an error.
Item = tuple[str, Any] | tuple[str, Any, str] | RecordError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every call: json.loads(..., parse_constant=) would build a new one per line.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# msgspec decodes JSON about four times faster than the standard library, keeps big integers
# exact and refuses NaN; whatever it refuses is decoded again by the standard library, whose
# error messages are clearer and whose results validation then judges.
_FAST = msgspec.json.Decoder()


def loads(data: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity are refused (PostgreSQL's jsonb has neither).

    A value nested past the decoders' recursion limit is built by ijson instead, which needs no
    recursion, so validation can refuse that one record with its reason (nested too deep) while
    its neighbours go on."""
    try:
        return _FAST.decode(data)
    except RecursionError:
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        values = ijson.items(io.BytesIO(raw), "", use_float=True)
        try:
            value = next(values)
            next(values, None)  # nothing may follow the value: ijson says "trailing garbage"
        except (ijson.JSONError, StopIteration) as exc:
            raise ValueError(f"malformed JSON: {exc}") from None
        return value
    except msgspec.DecodeError:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _DECODER.decode(text)


@dataclass
class InputFile:
    """An opened input: a binary stream plus what a progress bar needs."""

    name: str
    stream: IO[bytes]
    raw: IO[bytes]
    size: int | None

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.raw is not sys.stdin.buffer:
            self.stream.close()
            self.raw.close()


def open_input(path: str | Path) -> InputFile:
    """Open a file (``.gz`` is decompressed on the fly) or ``-`` for standard input."""
    if str(path) == "-":
        return InputFile("<stdin>", sys.stdin.buffer, sys.stdin.buffer, None)
    p = Path(path)
    try:
        raw: IO[bytes] = open(p, "rb")  # noqa: SIM115 - closed by InputFile.close
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot open: {exc.strerror}") from None
    size = os.fstat(raw.fileno()).st_size
    if size == 0:
        raw.close()
        raise InputError(f"{p}: the file is empty, nothing to ingest")
    stream: IO[bytes] = raw
    if p.suffix == ".gz":
        stream = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
    return InputFile(str(p), stream, raw, size)


def detect_format(name: str) -> Format:
    base = name.removesuffix(".gz").lower()
    if base.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if base.endswith(".json"):
        return "json"
    if base.endswith((".csv", ".tsv")):
        return "csv"
    raise InputError(f"{name}: cannot tell the format from the name; pass --format jsonl|json|csv")


def read_records(
    source: InputFile,
    fmt: Format,
    *,
    max_record_bytes: int,
    required_columns: tuple[str, ...] = (),
) -> Iterator[Item]:
    """Yield every record of ``source`` in order."""
    if fmt == "jsonl":
        return read_jsonl(source.stream, max_record_bytes=max_record_bytes)
    if fmt == "json":
        return read_json(source.stream, name=source.name)
    return read_csv(
        source.stream,
        name=source.name,
        max_record_bytes=max_record_bytes,
        required_columns=required_columns,
    )


def read_jsonl(stream: IO[bytes], *, max_record_bytes: int) -> Iterator[Item]:
    # A line may carry some framing beyond the payload limit; anything past twice the limit is
    # refused unread, so one giant line cannot exhaust memory.
    limit = 2 * max_record_bytes + 4096
    for lineno, line in enumerate(_lines(stream, limit), 1):
        if line is None:
            yield RecordError(f"record too large: over {limit:,} bytes", location=f"line {lineno}")
            continue
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            yield RecordError("not valid UTF-8", location=f"line {lineno}")
            continue
        if lineno == 1:
            text = text.lstrip("\ufeff")
        if not text:
            continue
        try:
            # The text goes along: a flat record's payload can be stored without re-encoding.
            yield f"line {lineno}", loads(text), text
        except ValueError as exc:
            yield RecordError(f"malformed JSON: {exc}", location=f"line {lineno}")


def _lines(stream: IO[bytes], limit: int, chunk_size: int = 1 << 20) -> Iterator[bytes | None]:
    """Split a byte stream into lines, reading a megabyte at a time (``bytes.split`` is C-fast,
    ``readline`` per line is not); a line longer than ``limit`` comes out as None, unkept."""
    pending = b""
    oversized = False
    while chunk := stream.read(chunk_size):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if oversized:
                oversized = False
                yield None
            else:
                yield line if len(line) <= limit else None
        if len(pending) > limit:
            oversized, pending = True, b""
    if oversized:
        yield None
    elif pending:
        yield pending


def read_json(stream: IO[bytes], *, name: str) -> Iterator[Item]:
    """A top-level array is streamed item by item; a single object is one record."""
    head = stream.read(64 * 1024)
    first = head.lstrip()[:1]
    rest = _Prefixed(head, stream)
    if first == b"[":
        index = -1
        try:
            for index, value in enumerate(ijson.items(rest, "item", use_float=True)):
                yield f"[{index}]", value
        except ijson.JSONError as exc:
            raise InputError(
                f"{name}: malformed JSON after item [{index}]: {exc}; "
                "the records before it were read, nothing after it can be"
            ) from None
        return
    try:
        value = loads(rest.read())
    except ValueError as exc:
        raise InputError(f"{name}: malformed JSON: {exc}") from None
    yield "[0]", value


class _Prefixed(io.RawIOBase):
    """A stream that first replays bytes already read (used to sniff the JSON's first byte)."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_csv(
    stream: IO[bytes],
    *,
    name: str,
    max_record_bytes: int,
    required_columns: tuple[str, ...],
) -> Iterator[Item]:
    """RFC 4180 CSV with a header row; ``utf-8-sig`` accepts spreadsheet exports with a BOM."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    csv.field_size_limit(max(csv.field_size_limit(), 2 * max_record_bytes))
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{name}: the file is empty, nothing to ingest") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: unreadable CSV header: {exc}") from None
    header = [column.strip() for column in header]
    if "payload" in header and "source_id" in header:  # canonical: checked by its own header
        source_column = ("source",) if "source" in required_columns else ()
        required_columns = ("source_id", "occurred_at", "payload", *source_column)
    missing = [column for column in required_columns if column not in header]
    if missing:
        raise InputError(
            f"{name}: missing column {', '.join(repr(c) for c in missing)} "
            f"(header has: {', '.join(header)})"
        )
    if len(set(header)) != len(header):
        raise InputError(f"{name}: the header names a column twice: {', '.join(header)}")
    line = reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{name}: line {start}: unreadable CSV: {exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"{name}: near line {start}: not valid UTF-8") from None
        line = reader.line_num
        location = f"line {start}"
        if not row:
            continue
        if len(row) != len(header):
            yield RecordError(
                f"row has {len(row)} fields, the header has {len(header)}", location=location
            )
            continue
        record: dict[str, Any] = dict(zip(header, row, strict=True))
        if "payload" in record and "source_id" in record:
            try:
                record["payload"] = loads(record["payload"])
            except ValueError as exc:
                yield RecordError(f"payload is not JSON: {exc}", location=location, path="payload")
                continue
        yield location, record
