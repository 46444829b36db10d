"""Bring the schema up to date with Alembic, safely from several instances at once."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Any constant: instances starting together queue on this lock instead of racing.
_MIGRATION_LOCK = 72_4242


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})

        def run(sync_conn) -> None:
            config = alembic_config()
            config.attributes["connection"] = sync_conn
            command.upgrade(config, revision)

        await conn.run_sync(run)
