"""The package's public names are deliberate (httpx-style guard)."""

from __future__ import annotations

import scrapesink


def test_all_is_sorted_and_complete():
    # sorted as Python sorts names: classes, then dunders, then functions
    assert scrapesink.__all__ == sorted(scrapesink.__all__)
    assert len(set(scrapesink.__all__)) == len(scrapesink.__all__)
    public = {name for name in dir(scrapesink) if not name.startswith("_")}
    for name in scrapesink.__all__:
        assert hasattr(scrapesink, name), name
    # every public object the package exposes is listed (modules are not API)
    import types

    exported = {n for n in public if not isinstance(getattr(scrapesink, n), types.ModuleType)}
    assert exported <= set(scrapesink.__all__)


def test_every_error_renders_the_seed_report():
    error = scrapesink.ConstraintError("bad value", table_name="raw_events", query="INSERT ...")
    assert error.report() == {
        "error_type": "ConstraintError",
        "table_name": "raw_events",
        "query": "INSERT ...",
        "message": "bad value",
    }
    assert isinstance(error, scrapesink.PermanentStorageError)
    assert isinstance(error, scrapesink.StorageError)
