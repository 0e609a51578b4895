"""Settings: every knob scrapesink has, read from the environment and `.env`.

Nothing here runs at import: the composition root calls :func:`get_settings` (or builds
``Settings(...)`` with overrides) and hands the result down.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from scrapesink.errors import ConfigError
from scrapesink.layout import DataDir

ENV_PREFIX = "SCRAPESINK_"


class Settings(BaseSettings):
    """scrapesink's configuration.

    Every field is read from ``SCRAPESINK_<FIELD>`` (upper case) except the seed 004 connection
    variables ``PG_HOST PG_PORT PG_DB PG_USER PG_PASSWORD``, which keep their historic names.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # -- database -----------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL; when unset (and no PG_HOST) use embedded."
    )
    pg_host: str | None = Field(default=None, validation_alias="PG_HOST")
    pg_port: int = Field(default=5432, ge=1, le=65535, validation_alias="PG_PORT")
    pg_db: str = Field(default="postgres", min_length=1, validation_alias="PG_DB")
    pg_user: str = Field(default="postgres", min_length=1, validation_alias="PG_USER")
    pg_password: SecretStr | None = Field(default=None, validation_alias="PG_PASSWORD")

    # Pool defaults come from seeds 001/003 (SQLAlchemy vocabulary, mapped onto psycopg_pool).
    pool_size: int = Field(default=10, ge=1, le=1000)
    pool_max_overflow: int = Field(default=20, ge=0, le=1000)
    pool_timeout: float = Field(default=30.0, gt=0)
    pool_recycle: float = Field(default=3600.0, gt=0)
    pool_pre_ping: bool = True
    connect_timeout: int = Field(default=10, ge=1, le=600)

    # -- files ----------------------------------------------------------------------------------
    data_dir: Path = Path("data")
    # signs backup manifests (HMAC-SHA256); set, unsigned or wrongly signed sets are refused
    backup_key: SecretStr | None = None
    backup_dir: Path | None = Field(
        default=None, description="Where backups go (default: <data dir>/backups)."
    )
    pg_bin_dir: Path | None = Field(
        default=None, description="pg_dump/pg_restore from here (default: the embedded ones)."
    )

    # -- raw events -----------------------------------------------------------------------------
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    max_payload_bytes: int = Field(default=1024 * 1024, ge=64)
    # levels of JSON nesting a payload may have (the encoders on the way recurse: at most 512)
    max_depth: int = Field(default=256, ge=1, le=512)
    partition_premake_days: int = Field(default=7, ge=0, le=3650)
    future_tolerance: timedelta = Field(
        default=timedelta(days=1), description="Reject occurred_at further than this ahead."
    )
    max_age: timedelta | None = Field(
        default=None, description="Reject occurred_at older than this (unset: accept any age)."
    )
    retention: timedelta | None = Field(
        default=None, description="Partitions older than this are dropped by maintenance."
    )

    # -- models --------------------------------------------------------------------------------
    models: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Model declaration files beside the bundled ones (os.pathsep-separated).",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    # -- delivery ------------------------------------------------------------------------------
    csv_enabled: bool = Field(default=True, description="Mirror raw events into CSV files.")
    retry_seconds: float = Field(
        default=10.0, ge=0, description="How long a sink's transient errors are retried."
    )
    cooldown_seconds: float = Field(
        default=30.0, ge=0, description="How long a failed sink is left alone before a retry."
    )

    # -- scale-out (a shared journal on Redis Streams, delivered by `scrapesink worker`) -------
    journal_url: SecretStr | None = Field(
        default=None,
        description="redis://host:6379/0: journal to Redis Streams, workers deliver (unset:"
        " the local SQLite journal, each process delivers its own).",
    )
    redis_durability: Literal["strict", "relaxed"] = Field(
        default="strict",
        description="strict: acknowledge only what Redis has fsynced (WAITAOF, or"
        " appendfsync always); relaxed: may lose the last second of acknowledged records.",
    )
    worker_claim_idle: float = Field(
        default=30.0, gt=0, description="Seconds before a silent worker's entries are claimed."
    )
    worker_outcome_wait: float = Field(
        default=5.0,
        ge=0,
        description="How long serve waits for workers to report a request's records (then:"
        " pending).",
    )
    worker_batch: int = Field(
        default=500, ge=1, le=100_000, description="Stream entries a worker reads at once."
    )

    # -- maintenance and health -------------------------------------------------------------
    write_window: timedelta = Field(
        default=timedelta(days=2),
        description="Day partitions that ended longer ago than this get VACUUMed by maintain.",
    )
    health_max_pending_age: timedelta = Field(
        default=timedelta(minutes=15), description="Older pending records make health fail."
    )
    health_min_free_bytes: int = Field(
        default=1024**3, ge=0, description="Less free space in the data dir makes health fail."
    )

    # -- REST API -------------------------------------------------------------------------------
    api_max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    api_max_batch: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Records in one JSON ingest request."
    )
    api_idempotency_ttl: timedelta = Field(
        default=timedelta(hours=24), description="How long an Idempotency-Key is remembered."
    )
    api_key_refresh_seconds: float = Field(
        default=10.0, gt=0, description="How often the server re-reads API keys (revocations)."
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON lines unless stderr is a terminal."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "future_tolerance",
        "max_age",
        "retention",
        "api_idempotency_ttl",
        "write_window",
        "health_max_pending_age",
        mode="before",
    )
    @classmethod
    def _parse_duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return SecretStr(url)

    @field_validator("journal_url")
    @classmethod
    def _check_journal_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix:// (Redis Streams)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"is not a valid URL: {exc}") from None
        database = parts.path.strip("/")
        if parts.scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"names the database {database!r}: Redis databases are numbers")
        return SecretStr(url)

    @model_validator(mode="after")
    def _check_durations(self) -> Settings:
        if self.future_tolerance < timedelta(0):
            raise ValueError("SCRAPESINK_FUTURE_TOLERANCE must not be negative")
        return self

    # -- derived --------------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when no server is configured and the embedded PostgreSQL must be used."""
        return self.database_url is None and not self.pg_host

    def external_conninfo(self) -> str:
        """The libpq URL of the configured external server (only when not embedded)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        assert self.pg_host is not None
        password = self.pg_password.get_secret_value() if self.pg_password else ""
        auth = quote(self.pg_user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{quote(self.pg_db, safe='')}"

    @property
    def paths(self) -> DataDir:
        """Where each file of the data directory is."""
        return DataDir(self.data_dir)

    @property
    def backups(self) -> Path:
        return self.backup_dir or self.paths.backups

    @property
    def pgdata_dir(self) -> Path:
        return self.paths.pgdata


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``15m``, ``90s`` or ``2w`` (a bare number means days)."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in units else "d"
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30d, 12h, 15m, 90s") from None
    if amount < 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return timedelta(**{units[unit]: amount})


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return ENV_PREFIX + field.upper()


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, `.env` and ``overrides``.

    Raises:
        ConfigError: one line naming the variable and what is wrong with it.
    """
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # a value the environment source could not even decode
        raise ConfigError(f"invalid setting: {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = _env_name(field) if field else "configuration"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
