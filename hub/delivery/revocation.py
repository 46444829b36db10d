"""Token revocation that no restart forgets.

The database is the truth: every revocation is a row (the token id and when the
token expires anyway), pruned after that expiry. Every instance answers "is this
token revoked?" from memory (hub/backends/revocations/, plus Redis keys when
configured): it loads every unexpired revocation from the database at start, learns
its own and other instances' at once over the bus, and reads the recent ones from
the database every few seconds, which also brings in revocations made with `hub
token revoke` (no instance running) and any the bus lost. A socket using a revoked
token is disconnected on every instance, whichever of these paths brought the news.
This service does all of that; the fan-out only carries the announcements and
disconnects a token's sockets."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from engine import cancel_and_wait
from hub.backends.revocations import RevokedTokens
from hub.delivery.fanout import Fanout
from storage import tokens as store
from storage.base import utcnow

log = logging.getLogger("hub.revocations")

POLL_EVERY = 2.0
PRUNE_EVERY = 300  # polls


class Revocations:
    def __init__(self, db, revoked: RevokedTokens, fanout: Fanout) -> None:
        self.db = db
        self.revoked = revoked
        self.fanout = fanout
        fanout.on_revoked = self._learned  # another instance's, over the bus
        self._since: datetime | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Load every unexpired revocation before the instance serves anyone."""
        await self._learn()
        self._task = asyncio.create_task(self._poll_forever(), name="revocations")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Revoke a token for good, everywhere; its sockets are disconnected."""
        await self.revoke_many([(jti, expires_at)])

    async def revoke_many(self, revoked: list[tuple[str, int]]) -> None:
        now = time.time()
        live = [(jti, exp) for jti, exp in revoked if exp > now]
        if not live:
            return
        async with self.db.transaction() as tx:
            for jti, exp in live:
                await store.revoke(tx, jti, store.expiry(exp))
        for jti, exp in live:
            await self._spread(jti, max(int(exp - now), 1))

    async def _spread(self, jti: str, ttl: int) -> None:
        """A revocation recorded in the database, everywhere at once: in the shared
        store (every instance refuses the token), on this instance's sockets, and on the
        bus (the other instances disconnect theirs)."""
        await self.revoked.revoke(jti, ttl)
        await self._learned(jti, ttl)
        await self.fanout.announce_revoked(jti, ttl)

    async def _learned(self, jti: str, ttl: int) -> None:
        """This instance knows `jti` revoked for `ttl` seconds: it answers so without
        asking the shared store, and disconnects the token's sockets here."""
        self.revoked.remember(jti, ttl)
        await self.fanout.disconnect_token(jti)

    async def _learn(self) -> None:
        started = utcnow()
        async with self.db.transaction() as tx:
            rows = await store.revoked_since(tx, self._since and self._since - store.CLOCK_SKEW)
        now = time.time()
        for jti, expires_at in rows:
            if not self.revoked.known(jti):
                await self._learned(jti, max(int(expires_at.timestamp() - now), 1))
        self._since = started

    async def _poll_forever(self) -> None:
        """Never dies silently: logs and carries on at the next tick."""
        polls = 0
        while True:
            await asyncio.sleep(POLL_EVERY)
            polls += 1
            try:
                await self._learn()
                if polls % PRUNE_EVERY == 0:
                    async with self.db.transaction() as tx:
                        await store.prune(tx)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not read revocations from the database; retrying")
