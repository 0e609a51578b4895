"""Input readers: streaming, line numbers, and what they refuse."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from scrapesink.adapters.readers import (
    detect_format,
    open_input,
    read_csv,
    read_json,
    read_jsonl,
)
from scrapesink.errors import InputError, RecordError


def jsonl(text: str, limit: int = 1024 * 1024):
    """Items without the raw text (checked separately)."""
    items = read_jsonl(io.BytesIO(text.encode()), max_record_bytes=limit)
    return [item if isinstance(item, RecordError) else item[:2] for item in items]


def test_jsonl_hands_over_the_exact_text_of_each_line():
    items = list(
        read_jsonl(io.BytesIO(b'\xef\xbb\xbf{"a":  1}\r\n {"b": 2} \n'), max_record_bytes=99)
    )
    assert items == [("line 1", {"a": 1}, '{"a":  1}'), ("line 2", {"b": 2}, '{"b": 2}')]


def test_jsonl_reports_malformed_lines_and_goes_on():
    items = jsonl('{"a": 1}\n\n{"a": \n[1]\n{"b": NaN}\n{"c": 3}')
    assert items[0] == ("line 1", {"a": 1})
    assert isinstance(items[1], RecordError) and items[1].location == "line 3"
    assert "malformed JSON" in items[1].message
    assert items[2] == ("line 4", [1])
    assert isinstance(items[3], RecordError) and "NaN" in items[3].message
    assert items[4] == ("line 6", {"c": 3})


def test_jsonl_refuses_oversized_lines_without_reading_them_whole():
    big = json.dumps({"x": "y" * 5000})
    items = jsonl(f'{{"a": 1}}\n{big}\n{{"a": 2}}\n', limit=100)
    assert items[0] == ("line 1", {"a": 1})
    assert isinstance(items[1], RecordError) and "too large" in items[1].message
    assert items[2] == ("line 3", {"a": 2})


def test_jsonl_reports_invalid_utf8():
    items = list(read_jsonl(io.BytesIO(b'{"a": "\xff"}\n'), max_record_bytes=1000))
    assert isinstance(items[0], RecordError) and "UTF-8" in items[0].message


def test_json_array_is_streamed_item_by_item():
    data = json.dumps([{"i": i} for i in range(3)] + [5]).encode()
    items = list(read_json(io.BytesIO(data), name="f.json"))
    assert items == [("[0]", {"i": 0}), ("[1]", {"i": 1}), ("[2]", {"i": 2}), ("[3]", 5)]


def test_json_array_broken_in_the_middle_keeps_what_came_before():
    stream = read_json(io.BytesIO(b'[{"i": 0}, {"i": 1}, {"i": '), name="f.json")
    assert next(stream) == ("[0]", {"i": 0})
    assert next(stream) == ("[1]", {"i": 1})
    with pytest.raises(InputError, match="malformed JSON after item"):
        next(stream)


def test_json_single_object_is_one_record():
    assert list(read_json(io.BytesIO(b' {"a": 1}'), name="f.json")) == [("[0]", {"a": 1})]


def csv_items(text: str, required=("id", "timestamp")):
    return list(
        read_csv(
            io.BytesIO(text.encode("utf-8")),
            name="f.csv",
            max_record_bytes=1 << 20,
            required_columns=required,
        )
    )


def test_csv_rows_become_objects_with_line_numbers_even_across_embedded_newlines():
    items = csv_items('id,timestamp,text\n1,2025-05-15,"two\nlines"\n2,2025-05-15,"a ""q"""\n')
    assert items[0] == ("line 2", {"id": "1", "timestamp": "2025-05-15", "text": "two\nlines"})
    assert items[1] == ("line 4", {"id": "2", "timestamp": "2025-05-15", "text": 'a "q"'})


def test_csv_with_a_missing_column_is_refused_up_front():
    with pytest.raises(InputError, match="missing column 'timestamp'"):
        csv_items("id,when\n1,2025\n")


def test_csv_row_with_wrong_field_count_is_rejected_alone():
    items = csv_items("id,timestamp\n1,2025-05-15,extra\n2,2025-05-15\n")
    assert isinstance(items[0], RecordError) and "3 fields" in items[0].message
    assert items[1] == ("line 3", {"id": "2", "timestamp": "2025-05-15"})


def test_canonical_csv_decodes_the_payload_column_and_needs_its_own_columns():
    text = 'source,source_id,occurred_at,payload\ns,1,2025-05-15,"{""a"": 1}"\ns,2,2025,{bad\n'
    items = csv_items(text, required=("id", "timestamp", "source"))
    assert items[0][1]["payload"] == {"a": 1}
    assert isinstance(items[1], RecordError) and items[1].path == "payload"
    with pytest.raises(InputError, match="missing column 'occurred_at'"):
        csv_items("source,source_id,payload\n", required=("id", "timestamp", "source"))


def test_csv_accepts_a_spreadsheet_bom():
    data = "\ufeffid,timestamp\n1,2025-05-15\n".encode()
    items = list(
        read_csv(io.BytesIO(data), name="f.csv", max_record_bytes=1000, required_columns=("id",))
    )
    assert items == [("line 2", {"id": "1", "timestamp": "2025-05-15"})]


def test_open_input_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_input(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_input(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        open_input(tmp_path)


def test_gzip_input_is_decompressed(tmp_path):
    path = tmp_path / "e.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"a": 1}\n')
    infile = open_input(path)
    try:
        items = list(read_jsonl(infile.stream, max_record_bytes=100))
        assert items == [("line 1", {"a": 1}, '{"a": 1}')]
    finally:
        infile.close()
    assert detect_format(str(path)) == "jsonl"


def test_detect_format_asks_when_it_cannot_tell():
    assert detect_format("x.ndjson") == "jsonl"
    assert detect_format("x.CSV") == "csv"
    with pytest.raises(InputError, match="--format"):
        detect_format("x.txt")


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_line_splitting_is_the_same_whatever_the_chunk_size(chunk):
    from scrapesink.adapters.readers import _lines

    data = b'{"a": 1}\n' + b"x" * 300 + b'\n\n{"b": 2}\n' + b"y" * 90 + b"\nlast"
    lines = list(_lines(io.BytesIO(data), limit=100, chunk_size=chunk))
    assert lines == [b'{"a": 1}', None, b"", b'{"b": 2}', b"y" * 90, b"last"]


@pytest.mark.parametrize(
    "source_id",
    [
        "plain",
        "with,comma",
        'with "quote"',
        "multi\nline",
        "cr\rhere",
        " lead",
        "trail ",
        "tab\there",
        "ünï 😀",
        "'=1+1",
    ],
)
def test_csv_rows_are_exactly_what_csv_writer_writes(source_id):
    import csv as _csv
    from datetime import UTC, datetime

    from scrapesink.adapters.csv_format import format_rows
    from scrapesink.domain.events import RawEvent

    event = RawEvent("s,rc", source_id, datetime(2025, 5, 15, tzinfo=UTC), '{"a": "b,\\"c\\""}')
    buffer = io.StringIO()
    _csv.writer(buffer, lineterminator="\r\n").writerow(
        (event.source, event.source_id, event.occurred_at.isoformat(), event.payload_json)
    )
    ours = format_rows([event])
    assert list(_csv.reader(io.StringIO(ours, newline=""))) == list(
        _csv.reader(io.StringIO(buffer.getvalue(), newline=""))
    )
