"""The migrations build exactly the schema the models describe, column types included, on both
dialects."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from bridge.settings import DatabaseSettings
from bridge.store.engine import create_engine
from bridge.store.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


# SQLite cannot reflect the expression index of history positions; PostgreSQL compares it.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []
