"""The PostgreSQL pool without pool_pre_ping: a connection that died while idle is
replaced before use, and a group commit rides out one that died while busy."""
import asyncio
import secrets

import asyncpg
from sqlalchemy import text

from handlers import chat, chat_send
from handlers.context import Actor, Context
from handlers.local import InstanceLocal
from hub.settings import Settings
from storage import users
from storage.db import Database
from storage.migrate import upgrade
from tests.support.services import pg_dsn


async def _backend_pid(db: Database) -> int:
    async with db.transaction() as tx:
        return (await tx.execute(text("SELECT pg_backend_pid()"))).scalar_one()


async def _terminate(pg_url: str, pid: int) -> None:
    conn = await asyncpg.connect(pg_dsn(pg_url))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_a_connection_that_died_idle_is_replaced_unseen(pg_url):
    db = Database(pg_url, idle_ping_after=0.0)
    try:
        pid = await _backend_pid(db)
        await _terminate(pg_url, pid)
        assert await _backend_pid(db) != pid  # no error: the checkout found it dead
    finally:
        await db.close()


async def test_a_group_commit_rides_out_a_connection_that_died_busy(pg_url):
    db = Database(pg_url)  # connections in use are not checked
    try:
        await upgrade(db.engine)
        run = secrets.token_hex(4)
        async with db.transaction() as tx:
            a = await users.create_user(tx, email=f"a-{run}@x.io", password_hash="x")
            b = await users.create_user(tx, email=f"b-{run}@x.io", password_hash="x")
        settings = Settings.from_env({"HUB_DATA_DIR": "/tmp/unused"})
        local = InstanceLocal()  # one instance's: its sends share the group commit

        def ctx():
            return Context(actor=Actor(role="user", id=a.id), db=db, settings=settings, local=local)

        await chat_send.send_message(ctx(), chat.SendMessage(recipient_id=b.id, message="first"))
        await _terminate(pg_url, await _backend_pid(db))  # the connection the next batch gets
        sent = await asyncio.gather(*(chat_send.send_message(ctx(), chat.SendMessage(recipient_id=b.id, message=f"m{i}"))
                                      for i in range(10)))
        assert len({m.id for m in sent}) == 10
    finally:
        await db.close()


async def test_a_connection_that_died_under_a_driver_statement_is_not_pooled_again(pg_url):
    """Statements on the driver's connection (storage.base.pg_driver) bypass
    SQLAlchemy's disconnect detection: the rollback must still discard it."""
    from storage.base import pg_driver

    db = Database(pg_url)
    try:
        for _ in range(2):
            try:
                async with db.transaction() as tx:
                    pg = await pg_driver(tx)
                    await _terminate(pg_url, await pg.fetchval("SELECT pg_backend_pid()"))
                    await pg.fetchval("SELECT 1")
            except Exception as exc:
                assert "connection" in str(exc).lower()
            else:
                raise AssertionError("the statement on a dead connection succeeded")
            async with db.transaction() as tx:  # a fresh connection, at once
                assert await (await pg_driver(tx)).fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_a_connection_that_died_under_a_write_transaction_is_not_pooled_again(pg_url):
    """The group commits' lean transaction (Database.write_transaction) runs on the
    driver alone: SQLAlchemy never sees its connection die, so it must discard it."""
    db = Database(pg_url)
    try:
        for _ in range(2):
            try:
                async with db.write_transaction() as tx:
                    await _terminate(pg_url, await tx.conn.fetchval("SELECT pg_backend_pid()"))
                    await tx.conn.fetchval("SELECT 1")
            except Exception as exc:
                assert "connection" in str(exc).lower()
            else:
                raise AssertionError("the statement on a dead connection succeeded")
            async with db.write_transaction() as tx:  # a fresh connection, at once
                assert await tx.conn.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_a_write_transaction_commits_or_rolls_back_as_one(pg_url):
    db = Database(pg_url)
    try:
        name = f"w-{secrets.token_hex(4)}"
        try:
            async with db.write_transaction() as tx:
                await tx.conn.execute("CREATE TABLE IF NOT EXISTS write_tx_probe (name text)")
                await tx.conn.execute("INSERT INTO write_tx_probe VALUES ($1)", name)
                raise RuntimeError("the write fails after its statements")
        except RuntimeError:
            pass
        async with db.write_transaction() as tx:
            await tx.conn.execute("CREATE TABLE IF NOT EXISTS write_tx_probe (name text)")
            assert await tx.conn.fetchval("SELECT count(*) FROM write_tx_probe WHERE name = $1", name) == 0
            await tx.conn.execute("INSERT INTO write_tx_probe VALUES ($1)", name)
        async with db.transaction() as tx:
            assert (await tx.execute(text("SELECT count(*) FROM write_tx_probe WHERE name = :n"),
                                     {"n": name})).scalar_one() == 1
            await tx.execute(text("DROP TABLE write_tx_probe"))
    finally:
        await db.close()
