"""Durable events' way into the log, and the outbox relay.

Durable events (emitted inside an operation's transaction) were stored in the
outbox with the write. After the commit they are appended to the broker's log,
which gives each its offset and sends it to every instance, this one included
(hub/delivery/fanout.py delivers them from there). What could not be appended (Redis
down, the instance killed right after the commit) stays unpublished in the outbox,
and the relay of any live instance appends it later: an acknowledged write's events
are never lost.

Nor overtaken: while events may be left behind in the outbox (this instance could
not append, lost the bus, or its relay found someone's stale events), newer events
are not appended past them. They stay in the outbox too, and the relay appends the
whole outbox in id order (the commit order of a thread's writes), one relay at a
time across instances, before appends go direct again."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Callable

from engine import cancel_and_wait
from hub.backends.bus import Broker, BrokerUnavailable
from hub.delivery.records import DurableEvent
from storage import outbox, published
from storage.base import aware, utcnow
from common.group_commit import GroupCommit

log = logging.getLogger("hub.delivery.relay")

# Unpublished outbox events older than this are the relay's: their writer had time.
# Short, as newer events of their threads may be appended meanwhile (an instance cut
# off from Redis); a writer that is merely slow is harmless, the log drops an event
# appended twice.
RELAY_AFTER = timedelta(seconds=0.5)
RELAY_EVERY = 0.25
PRUNE_EVERY = 60.0
PRUNE_AFTER = timedelta(hours=1)


class OutboxRelay:
    def __init__(self, broker: Broker, *, db, instance_id: str, metrics, published_retention: timedelta,
                 prune: Callable[[], None] = lambda: None) -> None:
        self.broker = broker
        self.db = db
        self.instance_id = instance_id
        self.metrics = metrics
        self.published_retention = published_retention
        self._prune_also = prune  # the fan-out's own housekeeping, on the relay's prune tick
        self._published: list[int] = []  # appended to the log, to be removed from the outbox
        # Appends to the log go one at a time, and those that wait meanwhile go
        # together in the next: when a group commit settles, its operations deliver
        # at once, and their events take one append instead of one each. In order,
        # too: appends on several Redis connections at once could get offsets in an
        # order other than the deliveries'.
        self._appends = GroupCommit(self._append_batch)
        self._tasks: list[asyncio.Task] = []
        # True while events may be left behind in the outbox: new durable events
        # then wait there for the relay, behind them. `_losses`: the bus losses
        # already taken into account.
        self._backlog = False
        self._waiting: list[DurableEvent] = []  # left in the outbox since the relay's pass began
        self._losses = broker.losses
        # The next relay pass holds direct appends everywhere (Broker.append): this
        # instance failed to append, or lost the bus.
        self._hold_next = False
        self._failed = False  # an append failed since the others were last told (`_signal`)
        self._relay_now = asyncio.Event()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._remove_forever(), name="outbox-remover"),
                       asyncio.create_task(self._relay_forever(), name="outbox-relay")]
        if not self.db.is_sqlite:
            self._tasks.append(asyncio.create_task(outbox.watch_left_behind(self.db.url, self._left_behind),
                                                   name="outbox-left-behind"))

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)

    async def append(self, events: list[DurableEvent]) -> list[str | None] | None:
        """Append the events to the log now: each one's offset (None: logged before).
        None if they were left in the outbox for the relays (events are left behind,
        the bus is down, or appends are held): not delivered here meanwhile, as other
        instances' events of the same threads, written before these, would reach this
        instance's sockets after them."""
        if self.broker.losses != self._losses:  # the bus was lost: others' events may be left behind
            self._losses, self._hold_next = self.broker.losses, True
            self._backlog = True
        if not self._backlog:
            offsets = await self._appends.submit(events)
            if offsets is not None:
                self._published.extend(e.event_id for e in events)
                return offsets
        self._defer(events)
        if self._failed or not self.broker.healthy:
            await self._signal()
        return None

    async def _signal(self) -> None:
        """This instance could not append (cut off from Redis, say): tell the others
        before the write is acknowledged, so that their newer events wait behind
        these rather than reach the log first."""
        self._failed = False
        try:
            async with asyncio.timeout(1.0):
                async with self.db.transaction() as tx:
                    await outbox.signal_left_behind(tx, self.instance_id)
        except Exception as exc:  # the relays' polling finds them anyway
            log.warning("could not tell the other instances about events left behind: %s", exc)

    def _left_behind(self, origin: str) -> None:
        """Another instance left events in the outbox: append nothing directly until
        the relays have taken them."""
        if origin != self.instance_id:
            self._backlog = self._hold_next = True
            self._relay_now.set()

    def _defer(self, events: list[DurableEvent]) -> None:
        """Leave a delivery's events in the outbox for the relay, and keep the next
        ones behind them until the relay has appended everything left behind."""
        self._backlog = True
        self._waiting.extend(events)
        self._relay_now.set()

    async def _append_batch(self, batches: list[list[DurableEvent]]) -> list[list[str] | None]:
        """The log append of several deliveries' events: one append (on Redis, one
        script call) for all of them, in order. None for each while events are left
        behind (a batch before these failed): they must not overtake them."""
        if self._backlog:
            return [None] * len(batches)
        offsets = await self._append([event for events in batches for event in events])
        if offsets is None:
            return [None] * len(batches)
        out, start = [], 0
        for events in batches:
            out.append(offsets[start:start + len(events)])
            start += len(events)
        return out

    async def _append(self, events: list[DurableEvent], *, relay: bool = False,
                      hold: bool = False) -> list[str] | None:
        """None if not appended: the bus is down, or direct appends are held (the
        relays are appending what was left behind)."""
        try:
            offsets = await self.broker.append(self.instance_id, [e.to_wire() for e in events], relay=relay,
                                               hold=hold)
            self.metrics.child(self.metrics.bus, "out", "ok").inc()
        except BrokerUnavailable as exc:
            # At once: the next batch must not go past these, and once the bus is
            # back the first relay pass holds everyone's direct appends.
            self._backlog = self._hold_next = self._failed = True
            self.metrics.child(self.metrics.bus, "out", "error").inc()
            log.error("could not append %d durable events; the outbox relay will: %s", len(events), exc)
            return None
        if offsets is None:
            self._backlog = True
        return offsets

    # --- the outbox's side -------------------------------------------------------

    async def remove(self) -> None:
        """Remove what this instance published from the outbox (at once on stop:
        it must not be published again)."""
        ids, self._published = self._published, []
        if not ids:
            return
        try:
            async with self.db.transaction() as tx:
                await outbox.remove_published(tx, ids)
        except Exception:
            # Left in the outbox, they are relayed again and dropped as duplicates.
            log.exception("could not remove %d published events from the outbox", len(ids))

    async def _remove_forever(self) -> None:
        """Removes in batches: one DELETE for everything published in the last moment."""
        while True:
            await asyncio.sleep(0.2)
            await self.remove()

    async def _relay_forever(self) -> None:
        """Never dies silently: logs and carries on at the next tick. Runs every
        RELAY_EVERY, or at once when a delivery was left in the outbox."""
        loop = asyncio.get_running_loop()
        pruned = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._relay_now.wait(), RELAY_EVERY)
            except asyncio.TimeoutError:
                pass
            self._relay_now.clear()
            try:
                if not await self._relay():
                    await asyncio.sleep(RELAY_EVERY)  # the bus is down: not once per delivery
                if loop.time() - pruned > PRUNE_EVERY:
                    pruned = loop.time()
                    self._prune_also()
                    async with self.db.transaction() as tx:
                        await outbox.prune(tx, PRUNE_AFTER)
                        await published.prune(tx, self.published_retention)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1.0)  # the database is down, say: not four tracebacks a second

    async def _relay(self) -> bool:
        """Append what was left in the outbox, oldest first. Out of backlog, only
        events older than RELAY_AFTER (their writer had time); finding any starts
        a backlog. In a backlog, everything, until a pass finds nothing more; then
        appends go direct again. A pass that appends what was left behind (stale
        events, the first pass after this instance's failure, a big backlog) holds
        direct appends on every instance for HOLD seconds, so that their newer
        events wait behind those. False if it could not (the bus is down, or
        another instance's relay holds the outbox)."""
        more = False
        while True:
            self._waiting = []  # committed before the claim below: the pass takes them
            hold = self._hold_next or more or not self._backlog
            done = await self._relay_batch(timedelta(0) if self._backlog else RELAY_AFTER, hold)
            if done is None:
                return False
            if hold and done != "none":
                self._hold_next = False
            more = done == "more"
            if more:
                continue
            if done == "some" and not self._backlog:
                self._backlog = True  # someone's events were left behind: drain, then go direct
                continue
            if self._backlog:
                await self._go_direct()
            return True

    async def _go_direct(self) -> None:
        """Leave the backlog. What was left in the outbox during the last pass goes
        first, in one append queued before any later delivery's (no await between
        the flag and the queue); if it cannot, the backlog goes on."""
        waiting, self._waiting = self._waiting, []
        self._backlog = False
        if waiting:
            if await self._appends.submit(waiting) is not None:
                self._published.extend(e.event_id for e in waiting)

    async def _relay_batch(self, older_than: timedelta, hold: bool, limit: int = 500) -> str | None:
        """Append one batch of unpublished events older than `older_than`, in id
        order: "none" left behind, "some", "more" (a full batch), None if it could not."""
        async with self.db.transaction() as tx:
            if not await outbox.lock_relay(tx):
                return None
            rows = await outbox.claim_stale(tx, older_than, limit)
            if not rows:
                return "none"
            events = [DurableEvent(r.namespace, r.event, r.data, r.rooms, r.skip_sid, r.id) for r in rows]
            # Events older than RELAY_AFTER were left behind (by an instance cut off
            # from Redis, say) whatever this instance's state: hold the others.
            hold = hold or aware(rows[0].created_at) < utcnow() - RELAY_AFTER
            try:
                offsets = await self._append(events, relay=True, hold=hold)
            except Exception:
                # Something in the batch the bus refuses: find it, alone.
                offsets = await self._relay_each(tx, rows, events, hold)
            else:
                if offsets is not None:
                    await outbox.remove_published(tx, [r.id for r in rows])
            if offsets is None:
                return None
        if len(rows) == limit:
            return "more"
        appended = sum(o is not None for o in offsets)
        if not appended:
            return "none"  # all in the log already: their writer's removal was late, nothing was left behind
        log.warning("relayed %d outbox events that were left behind", appended)
        return "some"

    async def _relay_each(self, tx, rows: list, events: list[DurableEvent],
                          hold: bool) -> list[str | None] | None:
        """Append the events one at a time, in order; one the bus refuses is set aside
        (logged once, counted), never retried: no single row may stall the relay.
        The offsets of those appended, or None when the bus became unavailable (or
        appends were held) before the last."""
        relayed: list[int] = []
        offsets: list[str | None] | None = []
        for row, event in zip(rows, events):
            try:
                got = await self._append([event], relay=True, hold=hold)
            except Exception:
                log.exception("outbox event %d (%s %s) cannot be relayed; set aside", row.id, row.namespace,
                              row.event)
                await outbox.set_aside(tx, row.id)
                self.metrics.set_aside.inc()
                continue
            if got is None:
                offsets = None
                break
            relayed.append(row.id)
            offsets.extend(got)
        await outbox.remove_published(tx, relayed)
        return offsets
