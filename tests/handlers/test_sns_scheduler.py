"""Scheduled posts are published exactly once at their time, however many instances
run; analytics stay coalesced across instances. Real `hub serve` processes on
PostgreSQL and Redis, real clients."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import asyncpg
from tests.support.clients import Api
from tests.support.servers import make_settings
from tests.support.services import pg_dsn

PLATFORMS = ["twitter", "telegram"]


def ahead(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


async def collect(clients, event: str, expected: int, timeout: float = 30) -> list[list]:
    """Read `event` (post:published) on every client until each has `expected` of them
    (or time runs out), then any extra up to a later post's."""
    got = [[] for _ in clients]
    deadline = time.monotonic() + timeout
    for i, client in enumerate(clients):
        while len(got[i]) < expected and time.monotonic() < deadline:
            try:
                got[i].append(await client.next(event, timeout=max(deadline - time.monotonic(), 0.01)))
            except asyncio.TimeoutError:
                break
    # Then everything up to a post scheduled now, which later rounds of the schedulers
    # publish: a double publication of the posts above would come before it. (Due in
    # 1.5 s: the trailing trending updates the callers read are out by then too.)
    probe = (await clients[0].ok("post:create", {"platforms": ["linkedin"], "content": "a later post",
                                                  "scheduled_at": ahead(1.5)}))["post_id"]
    for i, client in enumerate(clients):
        while (e := await client.next(event, timeout=30))["post_id"] != probe:
            got[i].append(e)
    return got


async def test_two_instances_publish_each_scheduled_post_exactly_once(spawn_hubs, pg_url, redis_url, redis_prefix,
                                                                      http, connect):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_SCHEDULER_INTERVAL": "0.05", "HUB_EVENT_RATE": "500", "HUB_EVENT_BURST": "500",
           "HUB_USER_OP_LIMIT": "100000", "HUB_REGISTER_PER_MINUTE": "100", "HUB_LOGIN_PER_MINUTE": "100"}
    a, b = await spawn_hubs(2, env)
    author = await Api(a.url, http).user()
    token = author["access_token"]
    on_a = await connect(a.url, "/sns", token)
    on_b = await connect(b.url, "/sns", token)
    n = 40

    async def schedule(i: int) -> dict:
        client = on_a if i % 2 else on_b
        # Due within the same half second: both schedulers find the same posts due.
        return await client.ok("post:create", {"platforms": PLATFORMS, "content": f"post {i} #launch",
                                               "scheduled_at": ahead(2.5 + (i % 5) * 0.1)})

    posts = await asyncio.gather(*(schedule(i) for i in range(n)))
    assert all(p["status"] == "scheduled" for p in posts)
    ids = [p["post_id"] for p in posts]
    expected = Counter((pid, platform) for pid in ids for platform in PLATFORMS)

    got_a, got_b = await collect([on_a, on_b], "post:published", len(expected))
    for got in (got_a, got_b):  # each of the author's devices, on either instance
        assert Counter((e["post_id"], e["platform"]) for e in got) == expected
    for e in got_a:
        assert datetime.fromisoformat(e["published_at"]) >= datetime.fromisoformat(
            next(p["scheduled_at"] for p in posts if p["post_id"] == e["post_id"]))

    conn = await asyncpg.connect(pg_dsn(pg_url))
    try:
        rows = await conn.fetch("SELECT id, status, published_at, scheduled_at FROM sns_posts WHERE id = ANY($1)", ids)
    finally:
        await conn.close()
    assert len(rows) == n
    assert all(r["status"] == "published" and r["published_at"] >= r["scheduled_at"] for r in rows)
    # What the events said is what was stored: one publication time per post.
    stored = {r["id"]: r["published_at"] for r in rows}
    for e in got_a:
        assert datetime.fromisoformat(e["published_at"]) == stored[e["post_id"]]

    # Trending: both instances recomputed it as they published; each ranking change was
    # announced once (one event per version, on each device), and the newest counts all.
    for client in (on_a, on_b):
        trends = [client.queue("trending:updated").get_nowait() for _ in range(client.queue("trending:updated").qsize())]
        for platform in PLATFORMS:
            mine = [t for t in trends if t["platform"] == platform]
            versions = [t["version"] for t in mine]
            assert mine and len(versions) == len(set(versions)), versions
            newest = max(mine, key=lambda t: t["version"])
            assert {"topic": "launch", "hashtag": "#launch", "posts": n} in newest["trending_topics"]

    # The ack of a scheduled post read back on the other instance agrees.
    again = await on_a.ok("post:get", {"post_id": ids[0]})
    assert again["status"] == "published"


async def test_analytics_coalesced_across_instances(spawn_hubs, pg_url, redis_url, redis_prefix, http, connect):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_REGISTER_PER_MINUTE": "100", "HUB_LOGIN_PER_MINUTE": "100"}
    a, b = await spawn_hubs(2, env)
    api_a, api_b = Api(a.url, http), Api(b.url, http)
    author = await api_a.user()
    watch = await connect(a.url, "/sns", author["access_token"])
    post = await watch.ok("post:create", {"platforms": ["twitter"], "content": "two instances"})
    pid = post["post_id"]
    # A watcher on the other instance gets the post's events through the bus.
    viewer = await connect(b.url, "/sns", (await api_b.user())["access_token"])
    await viewer.ok("post:watch", {"post_id": pid})
    assert (await watch.next("analytics:updated"))["metrics"]["reach"] == 1  # the watch is a view
    fans = []
    for i in range(16):
        login = await (api_a if i % 2 else api_b).user()
        fan = await connect((a if i % 2 else b).url, "/sns", login["access_token"])
        fan.id = login["user"]["id"]
        fans.append(fan)
    started = time.monotonic()
    await asyncio.gather(*(f.ok("post:like", {"post_id": pid}) for f in fans))
    events = []
    while True:
        try:
            events.append(await watch.next("analytics:updated", timeout=3.0))
        except asyncio.TimeoutError:
            break
    span = time.monotonic() - started
    final = {"post_id": pid, "metrics": {"likes": 16, "comments": 0, "shares": 0, "reach": 17, "impressions": 17}}
    assert events[-1] == final
    seen = [await viewer.next("analytics:updated") for _ in range(viewer.queue("analytics:updated").qsize())]
    assert seen and seen[-1] == final
    likes = [await viewer.next("engagement:liked") for _ in range(16)]
    assert sorted(e["liker_id"] for e in likes) == sorted(f.id for f in fans)
    # Both instances saw changes; together they sent at most about one a second.
    assert len(events) <= int(span) + 2, (len(events), span)


async def _race(server, connect, http) -> None:
    author = await Api(server.url, http).user()
    client = await connect(server.url, "/sns", author["access_token"])
    n = 20
    posts = await asyncio.gather(*(client.ok("post:create", {"platforms": ["threads"], "content": f"race {i}",
                                                             "scheduled_at": ahead(1.5)}) for i in range(n)))
    await asyncio.sleep(1.45)
    replies = await asyncio.gather(*(client.call("post:publish", {"post_id": p["post_id"]}) for p in posts))
    outcomes = Counter("ok" if r["ok"] else r["error"]["code"] for r in replies)
    assert set(outcomes) <= {"ok", "conflict"} and sum(outcomes.values()) == n
    (got,) = await collect([client], "post:published", n)
    assert Counter(e["post_id"] for e in got) == Counter(p["post_id"] for p in posts)
    page = await client.ok("posts:list", {"status": "published", "author_id": author["user"]["id"]})
    assert page["total"] == n + 1  # and collect()'s later post


RACE = {"scheduler_interval": 0.02, "event_rate": 500.0, "event_burst": 500, "user_op_limit": 100_000}


async def test_publish_now_racing_the_scheduler_publishes_once_sqlite(start_server, tmp_path, connect, http):
    await _race(await start_server(make_settings(tmp_path, **RACE)), connect, http)


async def test_publish_now_racing_the_scheduler_publishes_once_postgresql(start_server, tmp_path, connect, http,
                                                                         pg_url):
    await _race(await start_server(make_settings(tmp_path, database_url=pg_url, **RACE)), connect, http)
