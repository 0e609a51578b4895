"""Schemathesis against the app's own OpenAPI: generated requests to every operation over HTTP
to a real server; no 5xx, and every answer matches its documented status, type and schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import create_database, drop_database, with_database
from tests.support import ApiServer


@pytest.fixture(scope="module")
def schema_server(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    name = create_database(server_url, template=template_db)
    data_dir = tmp_path_factory.mktemp("schema") / "data"
    data_dir.mkdir()
    running = ApiServer(with_database(server_url, name), data_dir)
    yield running
    running.stop()
    drop_database(server_url, name)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    """The stream endpoint documents its body as text (JSON lines): send it as it is."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


# What the issue asks of the API (no 5xx; answers as documented), plus that an answer carries
# only documented statuses and content types. Not "positive data acceptance": some parameters
# carry formats the OpenAPI can only call strings (a JSON object in `contains`, a filter
# expression in `where`, a duration), and refusing a malformed one with 422 is correct.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def test_api_conforms_to_its_openapi(schema_server: ApiServer) -> None:
    """Every operation, 20 generated cases each (derandomized: the same cases every run)."""
    assert schema_server.token is not None
    headers = {"Authorization": f"Bearer {schema_server.token}"}
    api = schemathesis.openapi.from_url(schema_server.base + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            inner = getattr(exc, "exceptions", ())
            failures.append(f"{operation.label}: {exc} {' '.join(map(str, inner))}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
