"""Fixtures of the storage tests: the same tests on SQLite and PostgreSQL."""
import pytest

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
    yield database
    await database.close()

