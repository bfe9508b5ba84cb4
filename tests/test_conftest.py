"""The suite's own rule: under CI a missing PostgreSQL fails the run instead of skipping half."""

from __future__ import annotations

import pytest

from tests.conftest import WITHOUT_POSTGRES, may_run_without_postgres


@pytest.mark.parametrize(
    ("environ", "allowed"),
    [
        ({}, False),
        ({WITHOUT_POSTGRES: "1"}, True),
        ({WITHOUT_POSTGRES: "1", "CI": "true"}, False),
        ({WITHOUT_POSTGRES: "1", "CI": "TRUE"}, False),
        ({"CI": "true"}, False),
        ({WITHOUT_POSTGRES: "0"}, False),
    ],
)
def test_only_a_developer_may_skip_postgresql(environ: dict[str, str], allowed: bool) -> None:
    assert may_run_without_postgres(environ) is allowed
