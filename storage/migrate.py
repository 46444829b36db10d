"""Bring the schema up to date with Alembic, safely from several instances at once."""
from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("hub.migrate")

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
            before = set(MigrationContext.configure(sync_conn).get_current_heads())
            command.upgrade(config, revision)
            after = set(MigrationContext.configure(sync_conn).get_current_heads())
            if after != before:  # Alembic itself is kept quiet (hub/logs.py)
                log.info("database schema upgraded to %s", ", ".join(sorted(after)))

        await conn.run_sync(run)
