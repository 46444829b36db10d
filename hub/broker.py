"""The bus between instances: every published message reaches every started
broker on the same bus (the publisher's own included; callers filter by origin).

Messages are plain dicts encoded with msgpack: nothing is ever unpickled."""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Awaitable, Callable

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("hub.broker")

Handler = Callable[[dict], Awaitable[None]]


class BrokerUnavailable(Exception):
    pass


class Broker(ABC):
    healthy = True

    @abstractmethod
    async def start(self, handler: Handler) -> None: ...

    @abstractmethod
    async def publish(self, message: dict) -> None:
        """Send to every broker on the bus; raises BrokerUnavailable if it cannot."""

    @abstractmethod
    async def stop(self) -> None: ...


class MemoryBus:
    """An in-process bus; brokers sharing one behave like instances sharing Redis."""

    def __init__(self) -> None:
        self.handlers: list[Handler] = []


class MemoryBroker(Broker):
    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus or MemoryBus()
        self.handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self.handler = handler
        self.bus.handlers.append(handler)

    async def publish(self, message: dict) -> None:
        # Encode and decode as Redis would, so both backends accept the same messages.
        data = msgpack.unpackb(msgpack.packb(message))
        for handler in list(self.bus.handlers):
            await handler(data)

    async def stop(self) -> None:
        if self.handler in self.bus.handlers:
            self.bus.handlers.remove(self.handler)


class RedisBroker(Broker):
    def __init__(self, url: str, prefix: str) -> None:
        self.redis = aioredis.from_url(url, socket_connect_timeout=2, socket_keepalive=True)
        self.channel = f"{prefix}:bus"
        self.healthy = False
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()
        self._closing = False

    async def start(self, handler: Handler) -> None:
        self._task = asyncio.create_task(self._listen(handler), name="redis-bus-listener")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)
        except asyncio.TimeoutError:
            log.error("Redis bus not reachable at start; will keep retrying")

    async def publish(self, message: dict) -> None:
        try:
            await self.redis.publish(self.channel, msgpack.packb(message))
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def stop(self) -> None:
        if self._closing:
            return
        # redis-py can swallow a cancellation that lands inside get_message(), so
        # the loop also checks this flag.
        self._closing = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.redis.aclose()

    async def _listen(self, handler: Handler) -> None:
        """Never dies silently: on any error it logs, backs off and resubscribes."""
        backoff, lost = 0.1, False
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.healthy = True
                self._subscribed.set()
                if lost:
                    log.warning("Redis is back: resubscribed to %s", self.channel)
                else:
                    log.info("subscribed to %s", self.channel)
                backoff, lost = 0.1, False
                while not self._closing:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        await pubsub.ping()  # notice a dead connection while idle
                        continue
                    if msg["type"] != "message":
                        continue
                    try:
                        await handler(msgpack.unpackb(msg["data"]))
                    except Exception:
                        log.exception("bus message handler failed")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not lost:
                    log.error("lost the Redis bus (%s); resubscribing", exc)
                self.healthy, lost = False, True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
