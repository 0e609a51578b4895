"""Shared fixtures: a real PostgreSQL for the whole session, a fresh database for each test.

The server is the embedded one (started in a temporary directory) unless
``SCRAPESINK_TEST_DATABASE_URL`` names a server; tests then create and drop their own databases
there, so the role needs CREATEDB. Each test database is cloned from a template that migrations
were applied to once, which is much faster than migrating every time.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.adapters.postgres.model_schema import ModelSchema
from scrapesink.bootstrap import App, bootstrap
from scrapesink.config import Settings
from scrapesink.domain.declarations import load_models
from scrapesink.entrypoints.python import Sink

# Settings read the environment; a developer's own configuration must not leak into tests.
for _name in list(os.environ):
    if _name.startswith("SCRAPESINK_") and _name != "SCRAPESINK_TEST_DATABASE_URL":
        del os.environ[_name]
for _name in ("PG_HOST", "PG_PORT", "PG_DB", "PG_USER", "PG_PASSWORD"):
    os.environ.pop(_name, None)


def pytest_configure(config: pytest.Config) -> None:
    """As root, pgserver runs PostgreSQL as a user ``pgserver`` it creates on first use; two
    xdist workers creating it at once race (one ``initdb`` then fails on a fresh machine), so
    the controller creates it before any worker starts."""
    if os.name == "posix" and os.geteuid() == 0 and not hasattr(config, "workerinput"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The libpq URL of a server's maintenance database."""
    configured = os.environ.get("SCRAPESINK_TEST_DATABASE_URL")
    if configured:
        return configured
    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    return EmbeddedPostgres(pgdata).start()


@pytest.fixture(scope="session")
def template_db(server_url: str, worker_id: str) -> str:
    name = f"scrapesink_tmpl_{worker_id}_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = Database(with_database(server_url, name), PoolOptions(size=1, min_size=0))
    Migrator(database).upgrade()
    # The bundled models' tables too: every test would otherwise create them on first use.
    ModelSchema(database).apply(load_models(), allow_destructive=False)
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_database(server_url: str, *, template: str | None) -> str:
    name = f"scrapesink_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database of its own for one test."""
    name = create_database(server_url, template=template_db)
    yield with_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database without the scrapesink schema."""
    name = create_database(server_url, template=None)
    yield with_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir)


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    application = bootstrap(settings, schema="check")
    yield application
    application.close()


@pytest.fixture
def sink(app: App) -> Sink:
    return Sink(app)


def env_for(url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a scrapesink subprocess: this database and data dir, no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPESINK_")}
    env.update(
        SCRAPESINK_DATABASE_URL=url,
        SCRAPESINK_DATA_DIR=str(data_dir),
        NO_COLOR="1",
        COLUMNS="200",
        # health's free-space check must not depend on the disk of the machine running tests
        SCRAPESINK_HEALTH_MIN_FREE_BYTES="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    """Environment for running the CLI as a subprocess against the test database."""
    return env_for(database_url, data_dir)


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """The xdist worker name (``master`` without xdist)."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "master"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of the test's own with AOF and ``appendfsync always``."""
    from tests.support import RedisServer

    server = RedisServer(tmp_path / "redis")
    yield server
    server.close()
