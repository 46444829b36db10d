"""/sns: social posts (draft, scheduled, published), comments, likes, shares,
watching, coalesced analytics and per-platform trending hashtags. See docs/sns.md."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator, model_validator

from handlers.roles import ADMIN, ACCOUNTS
from handlers import sync
from handlers.context import Context
from handlers.errors import Conflict, Forbidden, NotFound, ValidationFailed
from handlers.registry import namespace, operation, periodic, rejoin_check, server_event
from handlers.schema import DateTime, Id, Input, Limit, Offset, Output, Page, Text
from storage import sns as store
from storage.base import aware, utcnow

log = logging.getLogger("hub.sns")

SNS = "/sns"
# Every /sns socket joins it on connect: the audience of `trending:updated`.
EVERYONE = "sns"

Platform = Literal["twitter", "facebook", "instagram", "linkedin", "threads", "telegram"]
PLATFORMS: tuple[str, ...] = get_args(Platform)
Status = Literal["draft", "scheduled", "published"]

MAX_CONTENT = 5000
MAX_COMMENT = 2000
MAX_SCHEDULE_AHEAD = timedelta(days=365)
ANALYTICS = "sns-analytics"
ANALYTICS_INTERVAL = 1.0  # at most one analytics:updated per post per this many seconds
TRENDING = "sns-trending"
TRENDING_INTERVAL = 1.0  # at most one trending recomputation per platform per this many seconds
COALESCE_EVERY = 0.25  # how often pending (trailing) analytics and trending work is looked for
TRENDING_WINDOW = timedelta(hours=24)
TRENDING_TOP = 10
TRENDING_EVERY = 30.0  # recompute every platform (posts leaving the window)
SCHEDULER_BATCH = 200
HASHTAG = re.compile(r"(?<![\w#])#(\w{1,50})")
MAX_TAGS = 30


def post_room(post_id: int) -> str:
    """The watchers of a post: joined only through `post:watch`."""
    return f"post:{post_id}"


namespace(SNS, "Social posts: publishing, scheduling, engagement, analytics and trends.",
          roles=ACCOUNTS, connect_rooms=lambda actor: [EVERYONE])


# --- input -------------------------------------------------------------------------

def _iso_time(value):
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO-8601 timestamp") from None
    else:
        raise ValueError("must be an ISO-8601 timestamp string")
    return moment  # DateTime makes it UTC, within range


IsoTime = Annotated[DateTime, BeforeValidator(_iso_time)]


def _unique_platforms(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("platforms must not repeat")
    return value


def _check_content(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value


def _check_url(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"https?://[^\s]+", value):
        raise ValueError("must be an http(s) URL")
    return value


class PostFields(Input):
    platforms: list[Platform] | None = Field(None, min_length=1, max_length=len(PLATFORMS))
    content: Text(MAX_CONTENT, min_length=1) | None = None
    image_url: Text(2000) | None = None
    scheduled_at: IsoTime | None = None
    draft: bool | None = None

    _platforms = field_validator("platforms")(_unique_platforms)
    _content = field_validator("content")(_check_content)
    _url = field_validator("image_url")(_check_url)

    @model_validator(mode="after")
    def _draft_or_scheduled(self):
        if self.draft and self.scheduled_at is not None:
            raise ValueError("a post is either a draft or scheduled: give draft or scheduled_at, not both")
        return self


class CreatePost(PostFields):
    platforms: list[Platform] = Field(min_length=1, max_length=len(PLATFORMS))
    content: Text(MAX_CONTENT, min_length=1)
    request_id: Text(100, min_length=1) | None = None


class EditPost(PostFields):
    post_id: Id

    @model_validator(mode="after")
    def _something(self):
        if not self.model_fields_set - {"post_id"}:
            raise ValueError("nothing to change")
        if self.draft is False and self.scheduled_at is None:
            raise ValueError("draft: false needs scheduled_at (use post:publish to publish now)")
        return self


class PostRef(Input):
    post_id: Id


class PostPage(PostRef):
    limit: Limit = 50
    offset: Offset = 0


class ListPosts(Input):
    limit: Limit = 50
    offset: Offset = 0
    platform: Platform | None = None
    status: Status | None = None
    author_id: Id | None = None


class AddComment(PostRef):
    text: Text(MAX_COMMENT, min_length=1)
    reply_to: Id | None = None
    request_id: Text(100, min_length=1) | None = None

    _text = field_validator("text")(_check_content)


class CommentRef(Input):
    comment_id: Id


class TrendingQuery(Input):
    platform: Platform | None = None


# --- output ------------------------------------------------------------------------

class PostOut(Output):
    post_id: int
    author_id: int
    platforms: list[str]
    content: str
    image_url: str | None
    status: str
    scheduled_at: datetime | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    likes: int
    comments: int
    shares: int


class SyncedPost(PostOut):
    deleted_at: None = None  # a deleted post comes as a PostTombstone


class PostTombstone(sync.Tombstone):
    post_id: int


class CommentOut(Output):
    comment_id: int
    post_id: int
    author_id: int
    text: str
    reply_to: int | None
    created_at: datetime
    likes: int


class LikeOut(Output):
    user_id: int
    liked_at: datetime


class LikesTotal(Output):
    post_id: int
    total_likes: int


class SharesTotal(Output):
    post_id: int
    total_shares: int


class CommentLikes(Output):
    comment_id: int
    post_id: int
    total_likes: int


class PostDeletedOut(Output):
    post_id: int


class Nothing(Output):
    pass


class Metrics(Output):
    likes: int
    comments: int
    shares: int
    reach: int
    impressions: int


class TrendingTopic(Output):
    topic: str
    hashtag: str
    posts: int


# --- server events -----------------------------------------------------------------

@server_event(SNS, "post:created")
class PostCreated(Output):
    """The user created a post (to the author's devices)."""

    post_id: int
    author_id: int
    status: str
    platforms: list[str]
    created_at: datetime
    post: PostOut


@server_event(SNS, "post:published")
class PostPublished(Output):
    """A post went live; one event per platform."""

    post_id: int
    platform: str
    published_at: datetime
    reach: int


@server_event(SNS, "post:scheduled")
class PostScheduled(Output):
    """A post was scheduled (or rescheduled) for publication."""

    post_id: int
    scheduled_time: datetime
    platforms: list[str]


@server_event(SNS, "post:deleted")
class PostDeleted(Output):
    """A post was deleted (by its author or an admin)."""

    post_id: int
    deleted_at: datetime


@server_event(SNS, "engagement:liked")
class EngagementLiked(Output):
    """Someone liked a post."""

    post_id: int
    liker_id: int
    total_likes: int


@server_event(SNS, "engagement:commented")
class EngagementCommented(Output):
    """Someone commented on a post (replies included)."""

    post_id: int
    commenter_id: int
    comment_id: int
    comment_text: str
    reply_to: int | None


@server_event(SNS, "engagement:shared")
class EngagementShared(Output):
    """Someone shared a post."""

    post_id: int
    sharer_id: int
    total_shares: int


@server_event(SNS, "comment:replied")
class CommentReplied(Output):
    """A comment got a reply (also to the author of the comment replied to)."""

    post_id: int
    original_comment_id: int
    reply_id: int
    reply_text: str
    replier_id: int


@server_event(SNS, "comment:liked")
class CommentLiked(Output):
    """A comment was liked (also to the comment's author)."""

    post_id: int
    comment_id: int
    liker_id: int
    total_likes: int


@server_event(SNS, "analytics:updated")
class AnalyticsUpdated(Output):
    """A post's metrics changed; coalesced to at most one per post per second."""

    post_id: int
    metrics: Metrics


@server_event(SNS, "trending:updated")
class TrendingUpdated(Output):
    """The trending hashtags of a platform changed (to every /sns socket)."""

    platform: str
    trending_topics: list[TrendingTopic]
    trending_hashtags: list[str]
    version: int  # grows by one per change of the platform's ranking: keep the highest


# --- helpers -----------------------------------------------------------------------

def hashtags(content: str) -> list[str]:
    return list(dict.fromkeys(t.lower() for t in HASHTAG.findall(content)))[:MAX_TAGS]


def _post_out(post: store.Post) -> PostOut:
    return PostOut(
        post_id=post.id, author_id=post.author_id, platforms=post.platform_list, content=post.content,
        image_url=post.image_url, status=post.status, scheduled_at=aware(post.scheduled_at),
        published_at=aware(post.published_at), created_at=aware(post.created_at),
        updated_at=aware(post.updated_at), likes=post.likes, comments=post.comments, shares=post.shares,
    )


def _comment_out(c: store.Comment) -> CommentOut:
    return CommentOut(comment_id=c.id, post_id=c.post_id, author_id=c.author_id, text=c.text,
                      reply_to=c.reply_to, created_at=aware(c.created_at), likes=c.likes)


def _can_see(ctx: Context, post: store.Post) -> bool:
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
    return post is not None and post.deleted_at is None and _can_see(ctx, post)


async def _visible_post(tx, ctx: Context, post_id: int) -> store.Post:
    post = await store.get_post(tx, post_id)
    if post is None or not _can_see(ctx, post):
        raise NotFound("no such post")
    return post


async def _own_unpublished(tx, ctx: Context, post_id: int, verb: str) -> store.Post:
    """The caller's own draft or scheduled post, for `verb` (edit, publish)."""
    post = await _visible_post(tx, ctx, post_id)
    if post.author_id != ctx.actor.id:
        raise Forbidden(f"only the author can {verb} a post")
    if post.status == store.PUBLISHED:
        raise Conflict("the post is already published")
    return post


async def _published_post(tx, ctx: Context, post_id: int) -> store.Post:
    post = await _visible_post(tx, ctx, post_id)
    if post.status != store.PUBLISHED:
        raise Conflict("the post is not published yet")
    return post


def _audience(post: store.Post) -> dict:
    return {"users": [post.author_id], "rooms": [post_room(post.id)]}


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
                               reach=post.reach), **_audience(post))


def _emit_scheduled(ctx: Context, post: store.Post) -> None:
    ctx.emit(PostScheduled(post_id=post.id, scheduled_time=aware(post.scheduled_at),
                           platforms=post.platform_list), **_audience(post))


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
            ctx.emit(AnalyticsUpdated(post_id=post.id, metrics=metrics), **_audience(post))


async def _metrics_changed(ctx: Context, post_id: int) -> None:
    """Call after the change committed: sends analytics now if none went out for the
    post in the last second (on any instance); else the flush job sends it later."""
    try:
        if await ctx.state.throttle(ANALYTICS, str(post_id), ANALYTICS_INTERVAL):
            await _emit_analytics(ctx, [post_id])
    except Exception:  # the change itself is committed: don't fail the request
        log.exception("analytics of post %s not sent", post_id)


async def _recompute_trending(ctx: Context, platforms) -> None:
    async with ctx.transaction() as tx:
        await refresh_trending(tx, ctx, platforms)


async def _trending_changed(ctx: Context, platforms) -> None:
    """Call after publishing or deleting a published post committed: recomputes the
    platforms' rankings now unless that happened in the last second (on any
    instance); else the flush job does it shortly. Keeps the publishing transaction
    free of the trending row locks and bounds trending:updated to one per platform
    per second."""
    try:
        now = [p for p in sorted(set(platforms)) if await ctx.state.throttle(TRENDING, p, TRENDING_INTERVAL)]
        if now:
            await _recompute_trending(ctx, now)
    except Exception:  # the posts are committed; the periodic recomputation catches up
        log.exception("trending of %s not recomputed", platforms)


# --- operations: posts ---------------------------------------------------------------

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
                return _post_out(earlier)
        try:
            post = await store.create_post(tx, author_id=me, platforms=list(req.platforms), content=req.content,
                                           image_url=req.image_url, status=status, scheduled_at=req.scheduled_at,
                                           request_id=req.request_id, tags=hashtags(req.content))
        except store.DuplicateRequest:
            return _post_out(await store.post_by_request(tx, me, req.request_id))
        out = _post_out(post)
        ctx.emit(PostCreated(post_id=post.id, author_id=me, status=status, platforms=out.platforms,
                             created_at=out.created_at, post=out), users=[me])
        if status == store.SCHEDULED:
            _emit_scheduled(ctx, post)
        elif status == store.PUBLISHED:
            _emit_published(ctx, post)
    if status == store.PUBLISHED:
        await _trending_changed(ctx, post.platform_list)
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
        return _post_out(post)


@operation(SNS, "posts:list", http=("GET", "/api/sns/posts"))
async def list_posts(ctx: Context, req: ListPosts) -> Page[PostOut]:
    """Posts newest first: everyone's published posts plus the caller's own drafts and
    scheduled posts (admins: all posts); filter by platform, status, author_id."""
    async with ctx.transaction() as tx:
        rows, total = await store.list_posts(
            tx, viewer_id=ctx.actor.id, see_all=ctx.actor.role == ADMIN, platform=req.platform,
            status=req.status, author_id=req.author_id, limit=req.limit, offset=req.offset)
    return Page[PostOut](total=total, limit=req.limit, offset=req.offset, items=[_post_out(p) for p in rows])


@operation(SNS, "post:get", http=("GET", "/api/sns/posts/{post_id}"))
async def get_post(ctx: Context, req: PostRef) -> PostOut:
    """One post the caller may see; counts as an impression of a published post."""
    async with ctx.transaction() as tx:
        post = await _visible_post(tx, ctx, req.post_id)
        viewed = post.status == store.PUBLISHED and post.author_id != ctx.actor.id
        if viewed:
            await store.record_view(tx, post.id, ctx.actor.id)
            post = await store.reload(tx, post)
        out = _post_out(post)
    if viewed:
        await _metrics_changed(ctx, post.id)
    return out


@operation(SNS, "post:delete", http=("DELETE", "/api/sns/posts/{post_id}"))
async def delete_post(ctx: Context, req: PostRef) -> PostDeletedOut:
    """Delete a post: its author or an admin."""
    async with ctx.transaction() as tx:
        post = await _visible_post(tx, ctx, req.post_id)
        if post.author_id != ctx.actor.id and ctx.actor.role != ADMIN:
            raise Forbidden("only the author or an admin can delete a post")
        was_published = post.status == store.PUBLISHED
        await store.delete_post(tx, post)
        ctx.emit(PostDeleted(post_id=post.id, deleted_at=aware(post.deleted_at)), **_audience(post))
    if was_published:
        await _trending_changed(ctx, post.platform_list)
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
        out = _post_out(post)
    await _trending_changed(ctx, post.platform_list)
    return out


# --- operations: engagement ---------------------------------------------------------

@operation(SNS, "post:comments", http=("GET", "/api/sns/posts/{post_id}/comments"))
async def list_comments(ctx: Context, req: PostPage) -> Page[CommentOut]:
    """A post's comments, oldest first; replies carry the id they answer (reply_to)."""
    async with ctx.transaction() as tx:
        await _visible_post(tx, ctx, req.post_id)
        rows, total = await store.comments_of(tx, req.post_id, req.limit, req.offset)
    return Page[CommentOut](total=total, limit=req.limit, offset=req.offset, items=[_comment_out(c) for c in rows])


@operation(SNS, "post:comment", http=("POST", "/api/sns/posts/{post_id}/comments"))
async def add_comment(ctx: Context, req: AddComment) -> CommentOut:
    """Comment on a published post, or reply to one of its comments (reply_to)."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        if req.request_id:
            earlier = await store.comment_by_request(tx, me, req.request_id)
            if earlier is not None:
                return _comment_out(earlier)
        post = await _published_post(tx, ctx, req.post_id)
        original = None
        if req.reply_to is not None:
            original = await store.get_comment(tx, req.reply_to)
            if original is None or original.post_id != post.id:
                raise ValidationFailed("reply_to must be a comment of the same post",
                                       details=[{"loc": ["reply_to"], "msg": "not a comment of this post",
                                                 "type": "value_error"}])
        try:
            comment = await store.add_comment(tx, post_id=post.id, author_id=me, text=req.text,
                                              reply_to=req.reply_to, request_id=req.request_id)
        except store.DuplicateRequest:
            return _comment_out(await store.comment_by_request(tx, me, req.request_id))
        if me != post.author_id:
            await store.record_view(tx, post.id, me)
        ctx.emit(EngagementCommented(post_id=post.id, commenter_id=me, comment_id=comment.id,
                                     comment_text=comment.text, reply_to=comment.reply_to), **_audience(post))
        if original is not None:
            ctx.emit(CommentReplied(post_id=post.id, original_comment_id=original.id, reply_id=comment.id,
                                    reply_text=comment.text, replier_id=me),
                     users=[post.author_id, original.author_id], rooms=[post_room(post.id)])
        out = _comment_out(comment)
    await _metrics_changed(ctx, post.id)
    return out


@operation(SNS, "comment:like")
async def like_comment(ctx: Context, req: CommentRef) -> CommentLikes:
    """Like a comment; liking it again changes nothing (idempotent per user)."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        comment = await store.get_comment(tx, req.comment_id)
        if comment is None:
            raise NotFound("no such comment")
        try:
            post = await _visible_post(tx, ctx, comment.post_id)
        except NotFound:
            raise NotFound("no such comment") from None
        if await store.like_comment(tx, comment, me):
            ctx.emit(CommentLiked(post_id=post.id, comment_id=comment.id, liker_id=me, total_likes=comment.likes),
                     users=[post.author_id, comment.author_id], rooms=[post_room(post.id)])
        return CommentLikes(comment_id=comment.id, post_id=post.id, total_likes=comment.likes)


@operation(SNS, "post:likes", http=("GET", "/api/sns/posts/{post_id}/likes"))
async def list_likes(ctx: Context, req: PostPage) -> Page[LikeOut]:
    """Who liked a post, in the order they did."""
    async with ctx.transaction() as tx:
        await _visible_post(tx, ctx, req.post_id)
        rows, total = await store.likes_of(tx, req.post_id, req.limit, req.offset)
    return Page[LikeOut](total=total, limit=req.limit, offset=req.offset,
                         items=[LikeOut(user_id=r.user_id, liked_at=aware(r.created_at)) for r in rows])


async def _engage(ctx: Context, post_id: int, record, event) -> store.Post:
    """Record the caller's like or share of a published post, once: a first one
    counts as a view, and `event(post, user_id)` goes to the author and watchers."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        post = await _published_post(tx, ctx, post_id)
        new = await record(tx, post.id, me)
        if new:
            if me != post.author_id:
                await store.record_view(tx, post.id, me)
            post = await store.reload(tx, post)
            ctx.emit(event(post, me), **_audience(post))
    if new:
        await _metrics_changed(ctx, post.id)
    return post


@operation(SNS, "post:like", http=("POST", "/api/sns/posts/{post_id}/like"))
async def like_post(ctx: Context, req: PostRef) -> LikesTotal:
    """Like a published post; liking it again is a no-op (no toggle, no event)."""
    post = await _engage(ctx, req.post_id, store.like_post,
                         lambda p, me: EngagementLiked(post_id=p.id, liker_id=me, total_likes=p.likes))
    return LikesTotal(post_id=post.id, total_likes=post.likes)


@operation(SNS, "post:share", http=("POST", "/api/sns/posts/{post_id}/share"))
async def share_post(ctx: Context, req: PostRef) -> SharesTotal:
    """Share a published post; a user's share counts once (sharing again is a no-op)."""
    post = await _engage(ctx, req.post_id, store.share_post,
                         lambda p, me: EngagementShared(post_id=p.id, sharer_id=me, total_shares=p.shares))
    return SharesTotal(post_id=post.id, total_shares=post.shares)


@operation(SNS, "post:watch")
async def watch_post(ctx: Context, req: PostRef) -> Nothing:
    """Receive a post's events on this socket (only a post the caller may see);
    counts as an impression of someone else's published post."""
    async with ctx.transaction() as tx:
        post = await _visible_post(tx, ctx, req.post_id)
        viewed = post.status == store.PUBLISHED and post.author_id != ctx.actor.id
        if viewed:
            await store.record_view(tx, post.id, ctx.actor.id)
    ctx.join(post_room(post.id))
    if viewed:
        await _metrics_changed(ctx, post.id)
    return Nothing()


@operation(SNS, "post:unwatch")
async def unwatch_post(ctx: Context, req: PostRef) -> Nothing:
    """Stop receiving a post's events on this socket."""
    ctx.leave(post_room(req.post_id))
    return Nothing()


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


# --- background jobs ----------------------------------------------------------------

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
            await _trending_changed(ctx, {p for post in posts for p in post.platform_list})
            log.info("published %d scheduled posts (ids %d..%d)", len(posts), posts[0].id, posts[-1].id)
        if len(posts) < SCHEDULER_BATCH:
            return


@periodic("sns.coalesce", every=COALESCE_EVERY)
async def flush_coalesced(ctx: Context) -> None:
    """The trailing work of throttled changes: analytics:updated of posts whose metrics
    changed, and trending recomputation of platforms that got posts, in the last second."""
    due = await ctx.state.due(ANALYTICS, ANALYTICS_INTERVAL, 200)
    if due:
        await _emit_analytics(ctx, due)
    platforms = [p for p in await ctx.state.due(TRENDING, TRENDING_INTERVAL, len(PLATFORMS)) if p in PLATFORMS]
    if platforms:
        await _recompute_trending(ctx, platforms)


@periodic("sns.trending", every=TRENDING_EVERY)
async def trending_tick(ctx: Context) -> None:
    """Posts leave the trending window with time: recompute every platform."""
    async with ctx.transaction() as tx:
        await refresh_trending(tx, ctx, PLATFORMS)


@operation(SNS, "sync")
async def sync_posts(ctx: Context, req: sync.SyncRequest) -> sync.SyncPage[SyncedPost | PostTombstone]:
    """Posts the caller may see that were created, changed (counts included) or
    deleted since a cursor: catching up beyond the recovery window."""
    since = sync.decode(req.since)
    async with ctx.transaction() as tx:
        rows = await store.posts_changed_since(tx, viewer_id=ctx.actor.id, see_all=ctx.actor.role == ADMIN,
                                               moment=since[0], ident=since[1], limit=req.limit + 1)
    items = [SyncedPost(**_post_out(p).model_dump()) if p.deleted_at is None
             else PostTombstone(post_id=p.id, deleted_at=aware(p.deleted_at)) for p in rows]
    return sync.SyncPage[SyncedPost | PostTombstone](**sync.page(rows, items, req.limit, req.since))
