"""Which failures are outages: a dependency (the database, Redis) that cannot be
reached right now. Told apart here, below every layer, because both the handlers'
errors (`unavailable`) and the group commits' retries (common/group_commit.py)
depend on it."""
from __future__ import annotations

import errno
import socket

import asyncpg.exceptions as asyncpg
import redis.exceptions as redis_exc
from sqlalchemy import exc as sa_exc


def is_outage(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says a dependency — the database, Redis —
    cannot be reached right now: refused or lost connections, a pool or connect
    timeout, a server shutting down. Such failures are the client's cue to retry
    (`unavailable`), not a bug of ours (`internal_error`)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, _OUTAGES) or (isinstance(e, OSError) and e.errno in _UNREACHABLE):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, asyncpg.InterfaceError) and "closed" in str(e):  # used after it died
            return True
        # SQLAlchemy wraps the driver's error in `orig`, its adapter chains asyncpg's.
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False


_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # asyncio's too: a connect that never completed
    socket.gaierror,  # the host's name does not resolve
    sa_exc.TimeoutError,  # no pooled connection came free in time
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    redis_exc.ConnectionError, redis_exc.TimeoutError,
)
_UNREACHABLE = {  # OSError errnos of a network that cannot reach the host
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN,
}
