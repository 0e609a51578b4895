"""Settings: defaults from the seeds, seed variables, one clear line for a bad value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scrapesink.config import Settings, get_settings, parse_duration
from scrapesink.errors import ConfigError


def test_defaults_follow_the_seeds(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = get_settings()
    assert (s.pool_size, s.pool_max_overflow, s.pool_timeout, s.pool_recycle) == (10, 20, 30, 3600)
    assert s.pool_pre_ping
    assert s.embedded
    assert s.partition_premake_days == 7
    assert s.future_tolerance == timedelta(days=1)
    assert s.max_payload_bytes == 1024 * 1024
    assert s.pgdata_dir == (tmp_path / "data" / "pgdata")


def test_seed_pg_variables_build_a_url(monkeypatch):
    monkeypatch.setenv("PG_HOST", "db.example")
    monkeypatch.setenv("PG_PORT", "6543")
    monkeypatch.setenv("PG_DB", "market db")
    monkeypatch.setenv("PG_USER", "market")
    monkeypatch.setenv("PG_PASSWORD", "p@ss:word")
    s = get_settings()
    assert not s.embedded
    assert s.external_conninfo() == "postgresql://market:p%40ss%3Aword@db.example:6543/market%20db"
    assert "p@ss" not in repr(s)


def test_database_url_wins_and_is_secret(monkeypatch):
    monkeypatch.setenv("SCRAPESINK_DATABASE_URL", "postgresql://u:secret@h/db")
    monkeypatch.setenv("PG_HOST", "ignored")
    s = get_settings()
    assert s.external_conninfo() == "postgresql://u:secret@h/db"
    assert "secret" not in repr(s)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SCRAPESINK_POOL_SIZE", "ten", "SCRAPESINK_POOL_SIZE"),
        ("SCRAPESINK_POOL_SIZE", "0", "SCRAPESINK_POOL_SIZE"),
        ("PG_PORT", "99999", "PG_PORT"),
        ("SCRAPESINK_DATABASE_URL", "mysql://x", "must start with postgresql://"),
        ("SCRAPESINK_FUTURE_TOLERANCE", "soon", "invalid duration 'soon'"),
        ("SCRAPESINK_LOG_LEVEL", "chatty", "SCRAPESINK_LOG_LEVEL"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_durations():
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("7") == timedelta(days=7)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("-3d")


def test_overrides_by_field_name():
    s = Settings(pg_host="h", pg_port=1234)
    assert s.external_conninfo() == "postgresql://postgres@h:1234/postgres"


def test_model_files_are_a_path_list(monkeypatch):
    import os

    monkeypatch.setenv("SCRAPESINK_MODELS", f"/a.json{os.pathsep}/b/c.json{os.pathsep}")
    assert [str(p) for p in get_settings().models] == ["/a.json", "/b/c.json"]
