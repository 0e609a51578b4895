"""Spreadsheet-safe copies of the CSV files (``scrapesink export --excel``).

Excel and LibreOffice execute a cell that starts with ``= + - @`` (and, in some versions, a tab
or carriage return) as a formula — CSV injection. The copy prefixes such cells with an
apostrophe, which spreadsheets show as text, and starts with a UTF-8 byte-order mark so Excel
reads the encoding right. The machine-readable originals are never touched.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    return "'" + cell if cell.startswith(_DANGEROUS) else cell


def export_excel(sources: Iterable[tuple[Path, Path]], target_root: Path) -> list[Path]:
    """Copy each (CSV file, where below ``target_root``) pair; returns the files written."""
    written = []
    for source, relative in sources:
        target = target_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # temp file + rename: a reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with (
                open(source, encoding="utf-8", newline="") as src,
                os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as dst,
            ):
                writer = csv.writer(dst, lineterminator="\r\n")
                for row in csv.reader(src):
                    writer.writerow([neutralise(cell) for cell in row])
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
