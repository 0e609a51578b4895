"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import StoppablePostgres


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppablePostgres]:
    """A PostgreSQL server of the module's own, which its tests may stop and start."""
    server = StoppablePostgres(tmp_path_factory.mktemp("stoppable") / "pgdata")
    yield server
    server.close()
