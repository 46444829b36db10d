"""/sns posts: who may see a post, creating, editing, listing, publishing and
deleting posts, the scheduler that publishes them when their time comes, and sync."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from handlers.roles import ADMIN
from handlers import sync
from handlers.context import Context
from handlers.errors import Conflict, Forbidden, NotFound, ValidationFailed
from handlers.registry import operation, periodic, rejoin_check
from handlers.schema import Page
from handlers.sns import (SNS, CreatePost, EditPost, ListPosts, PostDeletedOut, PostOut, PostRef, PostTombstone,
                          SyncedPost, hashtags, post_out)
from handlers.sns_events import PostCreated, PostDeleted, PostPublished, PostScheduled, audience
from handlers.sns_trends import metrics_changed, trending_changed
from storage import sns as store
from storage.base import aware, utcnow

log = logging.getLogger("hub.sns")

MAX_SCHEDULE_AHEAD = timedelta(days=365)
SCHEDULER_BATCH = 200


# --- who may see a post ------------------------------------------------------------

def can_see(ctx: Context, post: store.Post) -> bool:
    """Published posts are public; drafts and scheduled posts are their author's
    (and visible to admins, who may delete any post)."""
    return post.status == store.PUBLISHED or post.author_id == ctx.actor.id or ctx.actor.role == ADMIN


@rejoin_check(SNS)
async def _may_rewatch(ctx: Context, room: str) -> bool:
    """A recovering socket watches a post again only if the caller may still see it."""
    kind, _, ident = room.partition(":")
    if kind != "post" or not ident.isdigit():
        return False
    async with ctx.transaction() as tx:
        post = await store.get_post(tx, int(ident))
    return post is not None and post.deleted_at is None and can_see(ctx, post)


async def visible_post(tx, ctx: Context, post_id: int) -> store.Post:
    post = await store.get_post(tx, post_id)
    if post is None or not can_see(ctx, post):
        raise NotFound("no such post")
    return post


async def _own_unpublished(tx, ctx: Context, post_id: int, verb: str) -> store.Post:
    """The caller's own draft or scheduled post, for `verb` (edit, publish)."""
    post = await visible_post(tx, ctx, post_id)
    if post.author_id != ctx.actor.id:
        raise Forbidden(f"only the author can {verb} a post")
    if post.status == store.PUBLISHED:
        raise Conflict("the post is already published")
    return post


async def published_post(tx, ctx: Context, post_id: int) -> store.Post:
    post = await visible_post(tx, ctx, post_id)
    if post.status != store.PUBLISHED:
        raise Conflict("the post is not published yet")
    return post


def _check_schedule(when: datetime | None) -> None:
    if when is None:
        return
    now = utcnow()
    problem = None
    if when <= now:
        problem = "must be in the future"
    elif when - now > MAX_SCHEDULE_AHEAD:
        problem = f"must be within {MAX_SCHEDULE_AHEAD.days} days"
    if problem:
        raise ValidationFailed(f"scheduled_at {problem}",
                               details=[{"loc": ["scheduled_at"], "msg": problem, "type": "value_error"}])


def _emit_published(ctx: Context, post: store.Post) -> None:
    for platform in post.platform_list:
        ctx.emit(PostPublished(post_id=post.id, platform=platform, published_at=aware(post.published_at),
                               reach=post.reach), **audience(post))


def _emit_scheduled(ctx: Context, post: store.Post) -> None:
    ctx.emit(PostScheduled(post_id=post.id, scheduled_time=aware(post.scheduled_at),
                           platforms=post.platform_list), **audience(post))


# --- operations ----------------------------------------------------------------------

@operation(SNS, "post:create", http=("POST", "/api/sns/posts"))
async def create_post(ctx: Context, req: CreatePost) -> PostOut:
    """Create a post: published now by default, scheduled with a future scheduled_at,
    a draft with draft: true."""
    me = ctx.actor.id
    _check_schedule(req.scheduled_at)
    status = store.DRAFT if req.draft else store.SCHEDULED if req.scheduled_at else store.PUBLISHED
    async with ctx.transaction() as tx:
        if req.request_id:
            earlier = await store.post_by_request(tx, me, req.request_id)
            if earlier is not None:
                return post_out(earlier)
        try:
            post = await store.create_post(tx, author_id=me, platforms=list(req.platforms), content=req.content,
                                           image_url=req.image_url, status=status, scheduled_at=req.scheduled_at,
                                           request_id=req.request_id, tags=hashtags(req.content))
        except store.DuplicateRequest:
            return post_out(await store.post_by_request(tx, me, req.request_id))
        out = post_out(post)
        ctx.emit(PostCreated(post_id=post.id, author_id=me, status=status, platforms=out.platforms,
                             created_at=out.created_at, post=out), users=[me])
        if status == store.SCHEDULED:
            _emit_scheduled(ctx, post)
        elif status == store.PUBLISHED:
            _emit_published(ctx, post)
    if status == store.PUBLISHED:
        await trending_changed(ctx, post.platform_list)
    return out


@operation(SNS, "post:edit", http=("PUT", "/api/sns/posts/{post_id}"))
async def edit_post(ctx: Context, req: EditPost) -> PostOut:
    """Change a draft or scheduled post (author only); a published post is a conflict."""
    _check_schedule(req.scheduled_at)
    given = req.model_fields_set
    values: dict = {}
    if "platforms" in given:
        if req.platforms is None:
            raise ValidationFailed("platforms cannot be null")
        values["platforms"] = store.platforms_column(req.platforms)
    if "content" in given:
        if req.content is None:
            raise ValidationFailed("content cannot be null")
        values["content"] = req.content
    if "image_url" in given:
        values["image_url"] = req.image_url
    if req.scheduled_at is not None:
        values.update(status=store.SCHEDULED, scheduled_at=req.scheduled_at)
    elif req.draft:
        values.update(status=store.DRAFT, scheduled_at=None)
    async with ctx.transaction() as tx:
        post = await _own_unpublished(tx, ctx, req.post_id, "edit")
        before = (post.status, aware(post.scheduled_at))
        post = await store.edit_unpublished(tx, post.id, values)
        if post is None:
            raise Conflict("the post was published or deleted meanwhile")
        if "content" in values:
            await store.set_tags(tx, post.id, hashtags(post.content))
        if post.status == store.SCHEDULED and (post.status, aware(post.scheduled_at)) != before:
            _emit_scheduled(ctx, post)
        return post_out(post)


@operation(SNS, "posts:list", http=("GET", "/api/sns/posts"))
async def list_posts(ctx: Context, req: ListPosts) -> Page[PostOut]:
    """Posts newest first: everyone's published posts plus the caller's own drafts and
    scheduled posts (admins: all posts); filter by platform, status, author_id."""
    async with ctx.transaction() as tx:
        rows, total = await store.list_posts(
            tx, viewer_id=ctx.actor.id, see_all=ctx.actor.role == ADMIN, platform=req.platform,
            status=req.status, author_id=req.author_id, limit=req.limit, offset=req.offset)
    return Page[PostOut](total=total, limit=req.limit, offset=req.offset, items=[post_out(p) for p in rows])


@operation(SNS, "post:get", http=("GET", "/api/sns/posts/{post_id}"))
async def get_post(ctx: Context, req: PostRef) -> PostOut:
    """One post the caller may see; counts as an impression of a published post."""
    async with ctx.transaction() as tx:
        post = await visible_post(tx, ctx, req.post_id)
        viewed = post.status == store.PUBLISHED and post.author_id != ctx.actor.id
        if viewed:
            await store.record_view(tx, post.id, ctx.actor.id)
            post = await store.reload(tx, post)
        out = post_out(post)
    if viewed:
        await metrics_changed(ctx, post.id)
    return out


@operation(SNS, "post:delete", http=("DELETE", "/api/sns/posts/{post_id}"))
async def delete_post(ctx: Context, req: PostRef) -> PostDeletedOut:
    """Delete a post: its author or an admin."""
    async with ctx.transaction() as tx:
        post = await visible_post(tx, ctx, req.post_id)
        if post.author_id != ctx.actor.id and ctx.actor.role != ADMIN:
            raise Forbidden("only the author or an admin can delete a post")
        was_published = post.status == store.PUBLISHED
        await store.delete_post(tx, post)
        ctx.emit(PostDeleted(post_id=post.id, deleted_at=aware(post.deleted_at)), **audience(post))
    if was_published:
        await trending_changed(ctx, post.platform_list)
    return PostDeletedOut(post_id=post.id)


@operation(SNS, "post:publish", http=("POST", "/api/sns/posts/{post_id}/publish"))
async def publish_post(ctx: Context, req: PostRef) -> PostOut:
    """Publish a draft or scheduled post now (author only); already published: conflict."""
    async with ctx.transaction() as tx:
        post = await _own_unpublished(tx, ctx, req.post_id, "publish")
        post = await store.publish(tx, post.id)
        if post is None:
            raise Conflict("the post was published or deleted meanwhile")
        _emit_published(ctx, post)
        out = post_out(post)
    await trending_changed(ctx, post.platform_list)
    return out


@operation(SNS, "sync")
async def sync_posts(ctx: Context, req: sync.SyncRequest) -> sync.SyncPage[SyncedPost | PostTombstone]:
    """Posts the caller may see that were created, changed (counts included) or
    deleted since a cursor: catching up beyond the recovery window."""
    since = sync.decode(req.since)
    async with ctx.transaction() as tx:
        rows = await store.posts_changed_since(tx, viewer_id=ctx.actor.id, see_all=ctx.actor.role == ADMIN,
                                               moment=since[0], ident=since[1], limit=req.limit + 1)
    items = [SyncedPost(**post_out(p).model_dump()) if p.deleted_at is None
             else PostTombstone(post_id=p.id, deleted_at=aware(p.deleted_at)) for p in rows]
    return sync.SyncPage[SyncedPost | PostTombstone](**sync.page(rows, items, req.limit, req.since))


# --- the scheduler -------------------------------------------------------------------

@periodic("sns.scheduler", every=lambda settings: max(settings.scheduler_interval, 0.01))
async def publish_due(ctx: Context) -> None:
    """Publish the scheduled posts whose time has come. Runs on every instance; each
    post is claimed by exactly one transaction, which also records its events."""
    while True:
        async with ctx.transaction() as tx:
            posts = await store.claim_due(tx, utcnow(), SCHEDULER_BATCH)
            for post in posts:
                _emit_published(ctx, post)
        if posts:
            await trending_changed(ctx, {p for post in posts for p in post.platform_list})
            log.info("published %d scheduled posts (ids %d..%d)", len(posts), posts[0].id, posts[-1].id)
        if len(posts) < SCHEDULER_BATCH:
            return
