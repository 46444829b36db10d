"""/sns end to end: a real server, real python-socketio clients, every operation and
every server event, and who receives what."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from handlers import sns_trends as handlers_sns
from hub.jobs import SYSTEM
from storage import sns as storage_sns
from storage import users
from tests.support.node import run_node
from tests.support.servers import make_settings

TWO = ["twitter", "facebook"]


@pytest.fixture
async def server(start_server, tmp_path):
    return await start_server(make_settings(tmp_path, register_per_minute=1000, login_per_minute=1000,
                                            scheduler_interval=0.2))


def ahead(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


class Sns:
    """Users of one server, each with one /sns socket."""

    def __init__(self, server, api, connect):
        self.server, self.api, self.connect = server, api, connect

    async def user(self, role: str = "user"):
        login = await self.api.user()
        if role != "user":
            async with self.server.hub.db.transaction() as tx:
                await tx.execute(update(users.User).where(users.User.id == login["user"]["id"]).values(role=role))
            status, login = await self.api.request("POST", "/auth/login", json={
                "email": login["user"]["email"], "password": "password123"})
            assert status == 200
        client = await self.connect(self.server.url, "/sns", login["access_token"])
        client.id = login["user"]["id"]
        client.token = login["access_token"]
        return client


@pytest.fixture
def sns(server, api, connect) -> Sns:
    return Sns(server, api, connect)


async def quiet(client, event: str, *others: str) -> None:
    """No `event` (nor any of `others`) reached `client` so far: a post of its own,
    created now, is announced to the same socket after anything sent to it before, so
    once its post:created is in, an earlier event would be too."""
    mine = (await client.ok("post:create", {"platforms": ["telegram"], "content": "a later post"}))["post_id"]
    await client.absent(event, until="post:created", where=lambda e: e["post_id"] == mine)
    for other in others:
        early = [e for e in client.queue(other)._queue if e.get("post_id") != mine]  # noqa: SLF001
        assert not early, (other, early)


async def drain(client, event: str, wait: float = 0.3) -> list:
    """Every `event` that arrives within `wait` seconds of the last one."""
    got = []
    while True:
        try:
            got.append(await client.next(event, timeout=wait))
        except asyncio.TimeoutError:
            return got


# --- posts ---------------------------------------------------------------------------

async def test_create_publishes_now_by_default(sns):
    author, other = await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": TWO, "content": "hello #World"})
    assert post["status"] == "published" and post["author_id"] == author.id and post["platforms"] == TWO
    assert post["published_at"] and post["scheduled_at"] is None and post["image_url"] is None
    assert (post["likes"], post["comments"], post["shares"]) == (0, 0, 0)
    created = await author.next("post:created")
    assert created["post_id"] == post["post_id"] and created["status"] == "published"
    assert created["post"] == post
    published = [await author.next("post:published") for _ in TWO]
    assert sorted(p["platform"] for p in published) == sorted(TWO)
    assert all(p["post_id"] == post["post_id"] and p["published_at"] == post["published_at"]
               and p["reach"] == 0 for p in published)
    # A post is not news for users who do not watch it.
    await quiet(other, "post:created", "post:published")


async def test_draft_and_scheduled(sns):
    author = await sns.user()
    draft = await author.ok("post:create", {"platforms": ["linkedin"], "content": "later", "draft": True})
    assert draft["status"] == "draft" and draft["published_at"] is None
    assert (await author.next("post:created"))["status"] == "draft"
    when = ahead(1.5)
    sched = await author.ok("post:create", {"platforms": TWO, "content": "soon", "scheduled_at": when})
    assert sched["status"] == "scheduled" and sched["published_at"] is None
    assert datetime.fromisoformat(sched["scheduled_at"]) == datetime.fromisoformat(when)
    scheduled = await author.next("post:scheduled")
    assert scheduled == {"post_id": sched["post_id"], "scheduled_time": sched["scheduled_at"], "platforms": TWO}
    published = [await author.next("post:published") for _ in TWO]
    assert {p["post_id"] for p in published} == {sched["post_id"]}
    assert datetime.fromisoformat(published[0]["published_at"]) >= datetime.fromisoformat(when)
    got = await author.ok("post:get", {"post_id": sched["post_id"]})
    assert got["status"] == "published" and got["published_at"] == published[0]["published_at"]
    # The draft stays a draft; nothing more is published.
    assert (await author.ok("post:get", {"post_id": draft["post_id"]}))["status"] == "draft"
    # A post scheduled now is published by a later run of the scheduler than the
    # one that published `sched`: by then a published draft would have been announced.
    probe = await author.ok("post:create", {"platforms": ["linkedin"], "content": "probe", "scheduled_at": ahead(1.0)})
    await author.absent("post:published", until="post:published", where=lambda e: e["post_id"] == probe["post_id"])


@pytest.mark.parametrize("bad", [
    {"platforms": [], "content": "x"},
    {"platforms": ["myspace"], "content": "x"},
    {"platforms": ["twitter", "twitter"], "content": "x"},
    {"platforms": ["twitter", "facebook", "instagram", "linkedin", "threads", "telegram", "twitter"], "content": "x"},
    {"platforms": ["twitter"], "content": ""},
    {"platforms": ["twitter"], "content": "   "},
    {"platforms": ["twitter"], "content": "x" * 5001},
    {"platforms": "twitter", "content": "x"},
    {"platforms": ["twitter"], "content": "x", "scheduled_at": "2001-01-01T00:00:00Z"},
    {"platforms": ["twitter"], "content": "x", "scheduled_at": "tomorrow"},
    {"platforms": ["twitter"], "content": "x", "scheduled_at": 4102444800},
    {"platforms": ["twitter"], "content": "x", "scheduled_at": "2999-01-01T00:00:00Z"},
    {"platforms": ["twitter"], "content": "x", "draft": True, "scheduled_at": "2999-01-01T00:00:00Z"},
    {"platforms": ["twitter"], "content": "x", "image_url": "javascript:alert(1)"},
    {"platforms": ["twitter"], "content": "x", "unknown": 1},
])
async def test_create_validation(sns, bad):
    author = await sns.user()
    assert await author.error("post:create", bad) == "validation_error"
    await quiet(author, "post:created")


async def test_all_six_platforms_and_image(sns):
    author = await sns.user()
    six = ["twitter", "facebook", "instagram", "linkedin", "threads", "telegram"]
    post = await author.ok("post:create", {"platforms": six, "content": "everywhere",
                                           "image_url": "https://cdn.example.com/a.png"})
    assert post["platforms"] == six and post["image_url"] == "https://cdn.example.com/a.png"
    assert len([await author.next("post:published") for _ in six]) == 6


async def test_request_id_makes_create_idempotent(sns):
    author = await sns.user()
    body = {"platforms": ["twitter"], "content": "once", "request_id": "r-1"}
    first = await author.ok("post:create", body)
    again = await author.ok("post:create", body)
    assert again == first
    page = await author.ok("posts:list", {})
    assert page["total"] == 1
    await author.next("post:created")
    await quiet(author, "post:created")


async def test_list_visibility_and_filters(sns):
    alice, bob, admin = await sns.user(), await sns.user(), await sns.user("admin")
    a_pub = await alice.ok("post:create", {"platforms": ["twitter"], "content": "a pub"})
    a_draft = await alice.ok("post:create", {"platforms": ["twitter"], "content": "a draft", "draft": True})
    a_sched = await alice.ok("post:create", {"platforms": ["facebook"], "content": "a sched",
                                             "scheduled_at": ahead(3600)})
    b_pub = await bob.ok("post:create", {"platforms": ["facebook", "twitter"], "content": "b pub"})
    b_draft = await bob.ok("post:create", {"platforms": ["facebook"], "content": "b draft", "draft": True})

    def ids(page):
        return [p["post_id"] for p in page["items"]]

    page = await alice.ok("posts:list", {})
    assert set(page) == {"total", "limit", "offset", "items"} and page["limit"] == 50 and page["offset"] == 0
    assert ids(page) == [b_pub["post_id"], a_sched["post_id"], a_draft["post_id"], a_pub["post_id"]]
    assert page["total"] == 4
    assert ids(await bob.ok("posts:list", {})) == [b_draft["post_id"], b_pub["post_id"], a_pub["post_id"]]
    assert (await admin.ok("posts:list", {}))["total"] == 5
    assert ids(await alice.ok("posts:list", {"platform": "twitter"})) == [b_pub["post_id"], a_draft["post_id"],
                                                                         a_pub["post_id"]]
    assert ids(await alice.ok("posts:list", {"status": "scheduled"})) == [a_sched["post_id"]]
    assert ids(await bob.ok("posts:list", {"status": "draft", "platform": "twitter"})) == []
    assert ids(await bob.ok("posts:list", {"author_id": alice.id})) == [a_pub["post_id"]]
    paged = await alice.ok("posts:list", {"limit": 2, "offset": 1})
    assert ids(paged) == [a_sched["post_id"], a_draft["post_id"]] and paged["total"] == 4
    assert await alice.error("posts:list", {"status": "deleted"}) == "validation_error"
    assert await alice.error("posts:list", {"platform": "myspace"}) == "validation_error"
    # Someone else's draft or scheduled post does not exist for you.
    for post in (a_draft, a_sched):
        assert await bob.error("post:get", {"post_id": post["post_id"]}) == "not_found"
    assert (await admin.ok("post:get", {"post_id": a_draft["post_id"]}))["status"] == "draft"
    assert await bob.error("post:get", {"post_id": 999999}) == "not_found"


async def test_edit_before_publishing_only(sns):
    author, other = await sns.user(), await sns.user()
    draft = await author.ok("post:create", {"platforms": ["twitter"], "content": "v1", "draft": True})
    pid = draft["post_id"]
    edited = await author.ok("post:edit", {"post_id": pid, "content": "v2", "platforms": ["threads"],
                                           "image_url": "https://img.example.com/x.jpg"})
    assert (edited["content"], edited["platforms"], edited["status"]) == ("v2", ["threads"], "draft")
    assert edited["image_url"] == "https://img.example.com/x.jpg"
    cleared = await author.ok("post:edit", {"post_id": pid, "image_url": None})
    assert cleared["image_url"] is None and cleared["content"] == "v2"
    assert await other.error("post:edit", {"post_id": pid, "content": "mine"}) == "not_found"
    assert await author.error("post:edit", {"post_id": pid}) == "validation_error"
    assert await author.error("post:edit", {"post_id": pid, "scheduled_at": "2001-01-01T00:00:00+00:00"}) \
        == "validation_error"
    assert await author.error("post:edit", {"post_id": pid, "draft": False}) == "validation_error"
    # Scheduling a draft announces it; back to draft, then publish now.
    when = ahead(3600)
    sched = await author.ok("post:edit", {"post_id": pid, "scheduled_at": when})
    assert sched["status"] == "scheduled"
    assert (await author.next("post:scheduled"))["scheduled_time"] == sched["scheduled_at"]
    back = await author.ok("post:edit", {"post_id": pid, "draft": True})
    assert back["status"] == "draft" and back["scheduled_at"] is None
    published = await author.ok("post:publish", {"post_id": pid})
    assert published["status"] == "published" and published["published_at"]
    assert (await author.next("post:published"))["platform"] == "threads"
    assert await author.error("post:edit", {"post_id": pid, "content": "v3"}) == "conflict"
    assert await author.error("post:publish", {"post_id": pid}) == "conflict"
    assert await other.error("post:edit", {"post_id": pid, "content": "v3"}) == "forbidden"
    assert await other.error("post:publish", {"post_id": pid}) == "forbidden"


async def test_delete_author_or_admin(sns):
    author, other, admin = await sns.user(), await sns.user(), await sns.user("admin")
    p1 = await author.ok("post:create", {"platforms": ["twitter"], "content": "one"})
    p2 = await author.ok("post:create", {"platforms": ["twitter"], "content": "two"})
    await other.ok("post:watch", {"post_id": p1["post_id"]})
    assert await other.error("post:delete", {"post_id": p1["post_id"]}) == "forbidden"
    assert await author.ok("post:delete", {"post_id": p1["post_id"]}) == {"post_id": p1["post_id"]}
    deleted = await other.next("post:deleted")  # the watcher hears it
    assert deleted["post_id"] == p1["post_id"]
    assert (await author.next("post:deleted"))["post_id"] == p1["post_id"]
    assert await admin.ok("post:delete", {"post_id": p2["post_id"]}) == {"post_id": p2["post_id"]}
    for pid in (p1["post_id"], p2["post_id"]):
        assert await author.error("post:get", {"post_id": pid}) == "not_found"
        assert await author.error("post:delete", {"post_id": pid}) == "not_found"
    assert (await author.ok("posts:list", {}))["total"] == 0


# --- engagement ------------------------------------------------------------------------

async def test_comments_and_replies(sns):
    author, fan, watcher, stranger = await sns.user(), await sns.user(), await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["twitter"], "content": "discuss"})
    other_post = await author.ok("post:create", {"platforms": ["twitter"], "content": "elsewhere"})
    pid = post["post_id"]
    await watcher.ok("post:watch", {"post_id": pid})
    c1 = await fan.ok("post:comment", {"post_id": pid, "text": "first!"})
    assert {k: c1[k] for k in ("post_id", "author_id", "text", "reply_to", "likes")} == \
        {"post_id": pid, "author_id": fan.id, "text": "first!", "reply_to": None, "likes": 0}
    for client in (author, watcher):
        ev = await client.next("engagement:commented")
        assert ev == {"post_id": pid, "commenter_id": fan.id, "comment_id": c1["comment_id"],
                      "comment_text": "first!", "reply_to": None}
    reply = await watcher.ok("post:comment", {"post_id": pid, "text": "welcome", "reply_to": c1["comment_id"]})
    assert reply["reply_to"] == c1["comment_id"]
    for client in (author, fan, watcher):  # the replied-to commenter hears it too
        ev = await client.next("comment:replied")
        assert ev == {"post_id": pid, "original_comment_id": c1["comment_id"], "reply_id": reply["comment_id"],
                      "reply_text": "welcome", "replier_id": watcher.id}
    assert (await author.next("engagement:commented"))["reply_to"] == c1["comment_id"]
    # reply_to must be a comment of the same post.
    foreign = await fan.ok("post:comment", {"post_id": other_post["post_id"], "text": "x"})
    assert await fan.error("post:comment", {"post_id": pid, "text": "x", "reply_to": foreign["comment_id"]}) \
        == "validation_error"
    assert await fan.error("post:comment", {"post_id": pid, "text": "x", "reply_to": 999999}) == "validation_error"
    assert await fan.error("post:comment", {"post_id": pid, "text": ""}) == "validation_error"
    assert await fan.error("post:comment", {"post_id": pid, "text": "x" * 2001}) == "validation_error"
    page = await stranger.ok("post:comments", {"post_id": pid})
    assert page["total"] == 2 and [c["comment_id"] for c in page["items"]] == [c1["comment_id"], reply["comment_id"]]
    assert (await stranger.ok("post:get", {"post_id": pid}))["comments"] == 2
    # Idempotent with a request_id.
    once = {"post_id": pid, "text": "retry", "request_id": "c-1"}
    assert await fan.ok("post:comment", once) == await fan.ok("post:comment", once)
    assert (await fan.ok("post:comments", {"post_id": pid}))["total"] == 3
    await quiet(stranger, "engagement:commented", "comment:replied")


async def test_no_engagement_on_unpublished_posts(sns):
    author, other = await sns.user(), await sns.user()
    draft = await author.ok("post:create", {"platforms": ["twitter"], "content": "wip", "draft": True})
    pid = draft["post_id"]
    for event, body in [("post:like", {}), ("post:share", {}), ("post:comment", {"text": "x"})]:
        assert await author.error(event, {"post_id": pid, **body}) == "conflict"
        assert await other.error(event, {"post_id": pid, **body}) == "not_found"
    for event in ("post:comments", "post:likes", "post:watch"):
        assert await other.error(event, {"post_id": pid}) == "not_found"


async def test_likes_are_idempotent(sns):
    author, fan, fan2, watcher = await sns.user(), await sns.user(), await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["twitter"], "content": "like me"})
    pid = post["post_id"]
    await watcher.ok("post:watch", {"post_id": pid})
    assert await fan.ok("post:like", {"post_id": pid}) == {"post_id": pid, "total_likes": 1}
    for client in (author, watcher):
        assert await client.next("engagement:liked") == {"post_id": pid, "liker_id": fan.id, "total_likes": 1}
    # Liking again is a no-op: same total, no event.
    assert await fan.ok("post:like", {"post_id": pid}) == {"post_id": pid, "total_likes": 1}
    assert await fan2.ok("post:like", {"post_id": pid}) == {"post_id": pid, "total_likes": 2}
    # The next like the author hears of is fan2's: none came for the repeat before it.
    liked = await author.absent("engagement:liked", until="engagement:liked", where=lambda e: e["liker_id"] == fan2.id)
    assert liked["total_likes"] == 2
    likes = await fan.ok("post:likes", {"post_id": pid})
    assert likes["total"] == 2 and [x["user_id"] for x in likes["items"]] == [fan.id, fan2.id]
    assert all(x["liked_at"] for x in likes["items"])
    assert (await fan.ok("post:get", {"post_id": pid}))["likes"] == 2
    assert await fan.error("post:like", {"post_id": 424242}) == "not_found"


async def test_comment_likes(sns):
    author, commenter, fan = await sns.user(), await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["twitter"], "content": "c"})
    comment = await commenter.ok("post:comment", {"post_id": post["post_id"], "text": "nice"})
    cid = comment["comment_id"]
    expected = {"comment_id": cid, "post_id": post["post_id"], "total_likes": 1}
    assert await fan.ok("comment:like", {"comment_id": cid}) == expected
    for client in (author, commenter):
        assert await client.next("comment:liked") == {"comment_id": cid, "post_id": post["post_id"],
                                                      "liker_id": fan.id, "total_likes": 1}
    assert await fan.ok("comment:like", {"comment_id": cid}) == expected
    # The next like the commenter hears of is another fan's: none came for the repeat.
    fan2 = await sns.user()
    await fan2.ok("comment:like", {"comment_id": cid})
    liked = await commenter.absent("comment:liked", until="comment:liked", where=lambda e: e["liker_id"] == fan2.id)
    assert liked["total_likes"] == 2
    page = await fan.ok("post:comments", {"post_id": post["post_id"]})
    assert page["items"][0]["likes"] == 2
    assert await fan.error("comment:like", {"comment_id": 999999}) == "not_found"


async def test_shares(sns):
    author, fan, watcher = await sns.user(), await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["facebook"], "content": "share me"})
    pid = post["post_id"]
    await watcher.ok("post:watch", {"post_id": pid})
    assert await fan.ok("post:share", {"post_id": pid}) == {"post_id": pid, "total_shares": 1}
    for client in (author, watcher):
        assert await client.next("engagement:shared") == {"post_id": pid, "sharer_id": fan.id, "total_shares": 1}
    assert await fan.ok("post:share", {"post_id": pid}) == {"post_id": pid, "total_shares": 1}
    # The next share the author hears of is another fan's: none came for the repeat.
    fan2 = await sns.user()
    await fan2.ok("post:share", {"post_id": pid})
    shared = await author.absent("engagement:shared", until="engagement:shared", where=lambda e: e["sharer_id"] == fan2.id)
    assert shared["total_shares"] == 2
    assert (await author.ok("post:get", {"post_id": pid}))["shares"] == 2


# --- watching --------------------------------------------------------------------------

async def test_only_watchers_and_the_author_receive_post_events(sns):
    author, watcher, bystander, fan = await sns.user(), await sns.user(), await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["twitter"], "content": "watched"})
    pid = post["post_id"]
    assert await watcher.ok("post:watch", {"post_id": pid}) == {}
    await author.ok("post:watch", {"post_id": pid})  # the author's socket in both rooms: still one event
    await fan.ok("post:like", {"post_id": pid})
    await fan.ok("post:share", {"post_id": pid})
    await fan.ok("post:comment", {"post_id": pid, "text": "hey"})
    for client in (author, watcher):  # each once
        for event in ("engagement:liked", "engagement:shared", "engagement:commented"):
            await client.next(event)
        await quiet(client, "engagement:liked", "engagement:shared", "engagement:commented")
    await quiet(bystander, "engagement:liked", "engagement:shared", "engagement:commented", "analytics:updated")
    # The fan engaged but does not watch: they get their acks, not the events.
    await quiet(fan, "engagement:liked", "engagement:shared", "engagement:commented", "analytics:updated")
    # Unwatching stops the events on that socket.
    assert await watcher.ok("post:unwatch", {"post_id": pid}) == {}
    other = await sns.user()
    await other.ok("post:like", {"post_id": pid})
    assert (await author.next("engagement:liked"))["liker_id"] == other.id
    await quiet(watcher, "engagement:liked")


async def test_watch_is_per_socket_and_authorized(sns, connect):
    author, other = await sns.user(), await sns.user()
    draft = await author.ok("post:create", {"platforms": ["twitter"], "content": "secret", "draft": True})
    assert await other.error("post:watch", {"post_id": draft["post_id"]}) == "not_found"
    assert await other.error("post:watch", {"post_id": 777777}) == "not_found"
    assert await other.error("post:watch", {"post_id": "1"}) == "validation_error"
    # The author may watch their own draft, and hears its scheduling there.
    await author.ok("post:watch", {"post_id": draft["post_id"]})
    # A second socket of the other user that did not watch gets nothing.
    pub = await author.ok("post:create", {"platforms": ["twitter"], "content": "open"})
    await other.ok("post:watch", {"post_id": pub["post_id"]})
    second = await connect(sns.server.url, "/sns", other.token)
    liker = await sns.user()
    await liker.ok("post:like", {"post_id": pub["post_id"]})
    assert (await other.next("engagement:liked"))["post_id"] == pub["post_id"]
    await quiet(second, "engagement:liked")


# --- analytics -------------------------------------------------------------------------

async def test_analytics_burst_is_coalesced_with_the_final_count(sns):
    author, watcher = await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["twitter"], "content": "viral"})
    pid = post["post_id"]
    await watcher.ok("post:watch", {"post_id": pid})
    first = await watcher.next("analytics:updated")  # the watch itself is an impression
    assert first == {"post_id": pid, "metrics": {"likes": 0, "comments": 0, "shares": 0, "reach": 1,
                                                 "impressions": 1}}
    fans = [await sns.user() for _ in range(12)]
    started = time.monotonic()
    await asyncio.gather(*(f.ok("post:like", {"post_id": pid}) for f in fans))
    burst = time.monotonic() - started
    events = await drain(author, "analytics:updated", wait=3.0)
    watched = await drain(watcher, "analytics:updated", wait=0.1)
    span = time.monotonic() - started
    # The last event carries the final metrics: likes from all, reach = watcher + fans.
    final = {"likes": 12, "comments": 0, "shares": 0, "reach": 13, "impressions": 13}
    assert events and events[-1] == {"post_id": pid, "metrics": final}
    assert watched and watched[-1] == events[-1]
    # 12 changes, at most one event per second (plus the one already open).
    assert len(events) <= int(span) + 2, (len(events), span, burst)
    assert len(events) < 12
    # No trailing event repeats the final count: the next one is a later like's.
    late = await sns.user()
    await late.ok("post:like", {"post_id": pid})
    await author.absent("analytics:updated", until="analytics:updated", where=lambda e: e["metrics"]["likes"] == 13)


async def test_views_count_as_impressions_and_reach(sns):
    author, reader = await sns.user(), await sns.user()
    post = await author.ok("post:create", {"platforms": ["twitter"], "content": "read me"})
    pid = post["post_id"]
    await author.ok("post:get", {"post_id": pid})  # the author's own views do not count
    await reader.ok("post:get", {"post_id": pid})
    # The first analytics the author gets is the reader's view (and the counts below
    # show the author's own view was not counted).
    first = await author.absent("analytics:updated", until="analytics:updated")
    assert first["metrics"] == {"likes": 0, "comments": 0, "shares": 0, "reach": 1, "impressions": 1}
    await reader.ok("post:get", {"post_id": pid})
    await reader.ok("post:get", {"post_id": pid})
    # (coalesced: the last views' counts come in one trailing event, which says 3 and 1)
    while (last := (await author.next("analytics:updated"))["metrics"])["impressions"] != 3:
        pass
    assert last["reach"] == 1


# --- trending --------------------------------------------------------------------------

async def test_trending_updates_on_ranking_change(sns):
    alice, bob = await sns.user(), await sns.user()
    await alice.ok("post:create", {"platforms": ["twitter"], "content": "#AI and #python"})
    for client in (alice, bob):  # every /sns socket hears it
        ev = await client.next("trending:updated")
        assert ev == {"platform": "twitter", "trending_hashtags": ["#ai", "#python"], "version": 1,
                      "trending_topics": [{"topic": "ai", "hashtag": "#ai", "posts": 1},
                                          {"topic": "python", "hashtag": "#python", "posts": 1}]}
    await bob.ok("post:create", {"platforms": ["twitter", "threads"], "content": "more #python"})
    for client in (alice, bob):
        ranked = {}
        for _ in range(2):
            ev = await client.next("trending:updated")
            ranked[ev["platform"]] = ev["trending_hashtags"]
            assert ev["version"] == {"twitter": 2, "threads": 1}[ev["platform"]]
        assert ranked == {"twitter": ["#python", "#ai"], "threads": ["#python"]}
    # No hashtags, a draft, a scheduled post: the ranking does not change, nothing is sent.
    await bob.ok("post:create", {"platforms": ["twitter"], "content": "plain"})
    await bob.ok("post:create", {"platforms": ["twitter"], "content": "#ai draft", "draft": True})
    draft = await bob.ok("post:create", {"platforms": ["twitter"], "content": "#rust", "scheduled_at": ahead(3600)})
    # Publishing the scheduled post changes it (the first trending:updated since is
    # that one, for both); deleting a published post too.
    await bob.ok("post:publish", {"post_id": draft["post_id"]})
    for client in (bob, alice):
        ev = await client.absent("trending:updated", until="trending:updated",
                                 where=lambda e: "#rust" in e["trending_hashtags"])
        assert ev["platform"] == "twitter" and ev["trending_hashtags"] == ["#python", "#ai", "#rust"]
    await bob.ok("post:delete", {"post_id": draft["post_id"]})
    last = await alice.next("trending:updated")
    assert last["trending_hashtags"] == ["#python", "#ai"] and last["version"] == 4
    # A client that just connected asks for what was last announced.
    late = await sns.user()
    assert await late.ok("trending:list", {"platform": "twitter"}) == [last]
    everything = await late.ok("trending:list", {})
    assert [t["platform"] for t in everything] == ["twitter", "facebook", "instagram", "linkedin", "threads",
                                                   "telegram"]
    assert everything[0] == last and everything[4]["trending_hashtags"] == ["#python"]
    assert everything[1] == {"platform": "facebook", "trending_topics": [], "trending_hashtags": [], "version": 0}
    assert await late.error("trending:list", {"platform": "myspace"}) == "validation_error"


async def test_trending_burst_is_coalesced_per_platform(sns):
    authors = [await sns.user() for _ in range(3)]
    listener = await sns.user()
    started = time.monotonic()
    await asyncio.gather(*(authors[i % 3].ok("post:create", {"platforms": ["linkedin"], "content": f"#tag{i:02d}"})
                           for i in range(15)))
    events = await drain(listener, "trending:updated", wait=3.0)
    span = time.monotonic() - started
    assert events[-1]["trending_hashtags"] == [f"#tag{i:02d}" for i in range(10)]  # top 10, alphabetical ties
    versions = [e["version"] for e in events]
    assert versions == sorted(set(versions))  # one instance: in order, each version once
    assert len(events) <= int(span) + 2 and len(events) < 15, (len(events), span)


async def test_trending_forgets_posts_that_leave_the_window(sns):
    alice = await sns.user()
    old = await alice.ok("post:create", {"platforms": ["instagram"], "content": "#old news"})
    await alice.ok("post:create", {"platforms": ["instagram"], "content": "#fresh news"})
    while {"#old", "#fresh"} - set((await alice.next("trending:updated"))["trending_hashtags"]):
        pass  # the first post's ranking, then (coalesced) both posts'
    hub = sns.server.hub
    async with hub.db.transaction() as tx:
        await tx.execute(update(storage_sns.Post).where(storage_sns.Post.id == old["post_id"])
                         .values(published_at=datetime.now(timezone.utc) - timedelta(hours=25)))
    ctx = hub.context(SYSTEM)  # one run of the periodic trending job
    await handlers_sns.trending_tick(ctx)
    await hub.fanout.deliver(ctx.events)
    ev = await alice.next("trending:updated")
    assert ev["platform"] == "instagram" and ev["trending_hashtags"] == ["#fresh"]
    ctx = hub.context(SYSTEM)  # unchanged since: nothing more
    await handlers_sns.trending_tick(ctx)
    await hub.fanout.deliver(ctx.events)
    # The next ranking alice hears of is a later post's: none came for the unchanged one.
    await alice.ok("post:create", {"platforms": ["instagram"], "content": "#later news"})
    ev = await alice.absent("trending:updated", until="trending:updated", where=lambda e: "#later" in e["trending_hashtags"])
    assert ev["platform"] == "instagram"


async def test_deleted_or_rescheduled_posts_are_not_published_early(sns):
    author = await sns.user()
    gone = await author.ok("post:create", {"platforms": ["twitter"], "content": "gone", "scheduled_at": ahead(2.0)})
    moved = await author.ok("post:create", {"platforms": ["twitter"], "content": "moved", "scheduled_at": ahead(2.0)})
    kept = await author.ok("post:create", {"platforms": ["twitter"], "content": "kept", "scheduled_at": ahead(2.2)})
    await author.ok("post:delete", {"post_id": gone["post_id"]})
    await author.ok("post:edit", {"post_id": moved["post_id"], "scheduled_at": ahead(3600)})
    # `gone` and `moved` were due before `kept` (the scheduler publishes by due time):
    # the first post published is `kept`.
    await author.absent("post:published", until="post:published", where=lambda e: e["post_id"] == kept["post_id"])
    assert (await author.ok("post:get", {"post_id": moved["post_id"]}))["status"] == "scheduled"


# --- HTTP mirror ---------------------------------------------------------------------------

async def test_http_routes_share_the_operations(sns, api):
    author = await sns.user()
    status, post = await api.request("POST", "/api/sns/posts", token=author.token,
                                     json={"platforms": ["twitter"], "content": "over http"})
    assert status == 201 and post["status"] == "published"
    assert (await author.next("post:published"))["post_id"] == post["post_id"]
    status, got = await api.request("GET", f"/api/sns/posts/{post['post_id']}", token=author.token)
    assert status == 200 and got["content"] == "over http"
    status, body = await api.request("POST", f"/api/sns/posts/{post['post_id']}/like", token=author.token, json={})
    assert body == {"post_id": post["post_id"], "total_likes": 1}
    status, body = await api.request("POST", f"/api/sns/posts/{post['post_id']}/comments", token=author.token,
                                     json={"text": "via http"})
    assert status == 201 and body["text"] == "via http"
    status, page = await api.request("GET", "/api/sns/posts?limit=1&offset=0&platform=twitter&status=published",
                                     token=author.token)
    assert status == 200 and page["total"] == 1 and page["limit"] == 1 and page["items"][0]["likes"] == 1
    status, page = await api.request("GET", f"/api/sns/posts/{post['post_id']}/comments?limit=5", token=author.token)
    assert status == 200 and page["total"] == 1 and page["items"][0]["text"] == "via http"
    status, page = await api.request("GET", f"/api/sns/posts/{post['post_id']}/likes", token=author.token)
    assert status == 200 and [x["user_id"] for x in page["items"]] == [author.id]
    status, body = await api.request("GET", "/api/sns/posts?limit=ten", token=author.token)
    assert status == 422
    status, body = await api.request("DELETE", f"/api/sns/posts/{post['post_id']}", token=author.token)
    assert status == 200 and body == {"post_id": post["post_id"]}
    status, body = await api.request("GET", f"/api/sns/posts/{post['post_id']}", token=author.token)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.request("POST", "/api/sns/posts", token=author.token, json={"platforms": ["x"]})
    assert status == 422 and body["error"]["code"] == "validation_error"
    status, _ = await api.request("GET", f"/api/sns/posts/{post['post_id']}")
    assert status == 401


# --- the official JavaScript client ----------------------------------------------------------

@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_js_client_watches_a_post(sns, api, node, transport):
    author, watcher, fan = await api.user(), await api.user(), await api.user()
    out = json.loads(await run_node("sns_watch.mjs", sns.server.url, author["access_token"],
                                    watcher["access_token"], fan["access_token"], transport))
    post_id = out["created"]["data"]["post_id"]
    assert out["created"]["data"]["status"] == "published"
    assert out["watch"] == {"ok": True, "data": {}}
    assert out["like"] == {"ok": True, "data": {"post_id": post_id, "total_likes": 1}}
    assert out["published"]["post_id"] == post_id and out["published"]["platform"] == "threads"
    assert out["trending"]["platform"] == "threads" and out["trending"]["trending_hashtags"] == ["#js"]
    assert out["liked"] == {"post_id": post_id, "liker_id": fan["user"]["id"], "total_likes": 1}
    assert out["analytics"]["post_id"] == post_id and out["analytics"]["metrics"]["likes"] in (0, 1)
    assert out["fanHeard"] is None  # liking does not subscribe you
    assert out["badWatch"]["ok"] is False and out["badWatch"]["error"]["code"] == "validation_error"
    assert out["transport"] == transport
