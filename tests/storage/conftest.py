"""Fixtures of the storage tests: the same tests on SQLite and PostgreSQL."""
import pytest
from sqlalchemy import inspect

from storage.db import Database
from storage.migrate import upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    database = Database(url)
    await upgrade(database.engine)
    if request.param == "postgresql":
        # The PostgreSQL database is shared by the run (servers of other tests use it
        # too): start from empty, and leave it empty for the next test.
        await _truncate(database)
    yield database
    if request.param == "postgresql":
        await _truncate(database)
    await database.close()


async def _truncate(database: Database) -> None:
    async with database.engine.begin() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        tables = ", ".join(f'"{n}"' for n in names if n != "alembic_version")
        if tables:
            await conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
