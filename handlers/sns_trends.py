"""/sns analytics and trending hashtags: coalesced announcements of a post's
metrics and of each platform's ranking, the trending:list operation and the jobs
that send the trailing work and recompute rankings as posts leave the window."""
from __future__ import annotations

import logging
from datetime import timedelta

from handlers.context import EVERYONE, Context
from handlers.registry import operation, periodic
from handlers.sns import PLATFORMS, SNS, Metrics, TrendingQuery, TrendingTopic
from handlers.sns_events import AnalyticsUpdated, TrendingUpdated, audience
from storage import sns as store
from storage.base import utcnow

log = logging.getLogger("hub.sns")

ANALYTICS = "sns-analytics"
ANALYTICS_INTERVAL = 1.0  # at most one analytics:updated per post per this many seconds
TRENDING = "sns-trending"
TRENDING_INTERVAL = 1.0  # at most one trending recomputation per platform per this many seconds
COALESCE_EVERY = 0.25  # how often pending (trailing) analytics and trending work is looked for
TRENDING_WINDOW = timedelta(hours=24)
TRENDING_TOP = 10
TRENDING_EVERY = 30.0  # recompute every platform (posts leaving the window)


async def refresh_trending(tx, ctx: Context, platforms) -> None:
    """Recompute the ranking of each platform and announce the ones that changed.

    The platform's row is locked first (sorted order: no deadlocks), so instances
    recomputing together are serialized and each sees the other's committed posts:
    a change is announced once, and never overtaken by an older ranking."""
    since = utcnow() - TRENDING_WINDOW
    for platform in sorted(set(platforms)):
        row = await store.lock_trending(tx, platform)
        counts = await store.hashtag_counts(tx, platform, since, TRENDING_TOP)
        topics = [TrendingTopic(topic=tag, hashtag=f"#{tag}", posts=n) for tag, n in counts]
        if await store.save_ranking(tx, row, [[t.topic, t.posts] for t in topics]):
            ctx.emit(TrendingUpdated(platform=platform, trending_topics=topics, version=row.version,
                                     trending_hashtags=[t.hashtag for t in topics]), rooms=[EVERYONE])


async def _emit_analytics(ctx: Context, post_ids) -> None:
    """Send the current metrics of the posts. Volatile: a snapshot, re-sent on change."""
    async with ctx.db.transaction() as tx:
        for post_id in post_ids:
            post = await store.get_post(tx, int(post_id))
            if post is None:
                continue
            metrics = Metrics(likes=post.likes, comments=post.comments, shares=post.shares,
                              reach=post.reach, impressions=post.impressions)
            ctx.emit(AnalyticsUpdated(post_id=post.id, metrics=metrics), **audience(post))


async def metrics_changed(ctx: Context, post_id: int) -> None:
    """Call after the change committed: sends analytics now if none went out for the
    post in the last second (on any instance); else the flush job sends it later."""
    try:
        if await ctx.coalescing.throttle(ANALYTICS, str(post_id), ANALYTICS_INTERVAL):
            await _emit_analytics(ctx, [post_id])
    except Exception:  # the change itself is committed: don't fail the request
        log.exception("analytics of post %s not sent", post_id)


async def _recompute_trending(ctx: Context, platforms) -> None:
    async with ctx.transaction() as tx:
        await refresh_trending(tx, ctx, platforms)


async def trending_changed(ctx: Context, platforms) -> None:
    """Call after publishing or deleting a published post committed: recomputes the
    platforms' rankings now unless that happened in the last second (on any
    instance); else the flush job does it shortly. Keeps the publishing transaction
    free of the trending row locks and bounds trending:updated to one per platform
    per second."""
    try:
        now = [p for p in sorted(set(platforms)) if await ctx.coalescing.throttle(TRENDING, p, TRENDING_INTERVAL)]
        if now:
            await _recompute_trending(ctx, now)
    except Exception:  # the posts are committed; the periodic recomputation catches up
        log.exception("trending of %s not recomputed", platforms)


@operation(SNS, "trending:list", http=("GET", "/api/sns/trending"))
async def list_trending(ctx: Context, req: TrendingQuery) -> list[TrendingUpdated]:
    """The trending hashtags last announced per platform (what `trending:updated` said),
    for a client that just connected."""
    platforms = [req.platform] if req.platform else list(PLATFORMS)
    async with ctx.transaction() as tx:
        stored = await store.rankings(tx, platforms)
    out = []
    for platform in platforms:
        ranking, version = stored.get(platform, ([], 0))
        topics = [TrendingTopic(topic=tag, hashtag=f"#{tag}", posts=n) for tag, n in ranking]
        out.append(TrendingUpdated(platform=platform, trending_topics=topics, version=version,
                                   trending_hashtags=[t.hashtag for t in topics]))
    return out


@periodic("sns.coalesce", every=COALESCE_EVERY)
async def flush_coalesced(ctx: Context) -> None:
    """The trailing work of throttled changes: analytics:updated of posts whose metrics
    changed, and trending recomputation of platforms that got posts, in the last second."""
    due = await ctx.coalescing.due(ANALYTICS, ANALYTICS_INTERVAL, 200)
    if due:
        await _emit_analytics(ctx, due)
    platforms = [p for p in await ctx.coalescing.due(TRENDING, TRENDING_INTERVAL, len(PLATFORMS)) if p in PLATFORMS]
    if platforms:
        await _recompute_trending(ctx, platforms)


@periodic("sns.trending", every=TRENDING_EVERY)
async def trending_tick(ctx: Context) -> None:
    """Posts leave the trending window with time: recompute every platform."""
    async with ctx.transaction() as tx:
        await refresh_trending(tx, ctx, PLATFORMS)
