"""/sns engagement: comments and replies, likes of posts and comments, shares, and
watching a post's events."""
from __future__ import annotations

from handlers.context import Context
from handlers.errors import NotFound, ValidationFailed
from handlers.registry import operation
from handlers.schema import Page
from handlers.sns import (SNS, AddComment, CommentLikes, CommentOut, CommentRef, LikeOut, LikesTotal, Nothing,
                          PostPage, PostRef, SharesTotal, comment_out, post_room)
from handlers.sns_events import (CommentLiked, CommentReplied, EngagementCommented, EngagementLiked,
                                 EngagementShared, audience)
from handlers.sns_posts import published_post, visible_post
from handlers.sns_trends import metrics_changed
from storage import sns as store
from storage.base import aware


@operation(SNS, "post:comments", http=("GET", "/api/sns/posts/{post_id}/comments"))
async def list_comments(ctx: Context, req: PostPage) -> Page[CommentOut]:
    """A post's comments, oldest first; replies carry the id they answer (reply_to)."""
    async with ctx.transaction() as tx:
        await visible_post(tx, ctx, req.post_id)
        rows, total = await store.comments_of(tx, req.post_id, req.limit, req.offset)
    return Page[CommentOut](total=total, limit=req.limit, offset=req.offset, items=[comment_out(c) for c in rows])


@operation(SNS, "post:comment", http=("POST", "/api/sns/posts/{post_id}/comments"))
async def add_comment(ctx: Context, req: AddComment) -> CommentOut:
    """Comment on a published post, or reply to one of its comments (reply_to)."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        if req.request_id:
            earlier = await store.comment_by_request(tx, me, req.request_id)
            if earlier is not None:
                return comment_out(earlier)
        post = await published_post(tx, ctx, req.post_id)
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
            return comment_out(await store.comment_by_request(tx, me, req.request_id))
        if me != post.author_id:
            await store.record_view(tx, post.id, me)
        ctx.emit(EngagementCommented(post_id=post.id, commenter_id=me, comment_id=comment.id,
                                     comment_text=comment.text, reply_to=comment.reply_to), **audience(post))
        if original is not None:
            ctx.emit(CommentReplied(post_id=post.id, original_comment_id=original.id, reply_id=comment.id,
                                    reply_text=comment.text, replier_id=me),
                     users=[post.author_id, original.author_id], rooms=[post_room(post.id)])
        out = comment_out(comment)
    await metrics_changed(ctx, post.id)
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
            post = await visible_post(tx, ctx, comment.post_id)
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
        await visible_post(tx, ctx, req.post_id)
        rows, total = await store.likes_of(tx, req.post_id, req.limit, req.offset)
    return Page[LikeOut](total=total, limit=req.limit, offset=req.offset,
                         items=[LikeOut(user_id=r.user_id, liked_at=aware(r.created_at)) for r in rows])


async def _engage(ctx: Context, post_id: int, record, event) -> store.Post:
    """Record the caller's like or share of a published post, once: a first one
    counts as a view, and `event(post, user_id)` goes to the author and watchers."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        post = await published_post(tx, ctx, post_id)
        new = await record(tx, post.id, me)
        if new:
            if me != post.author_id:
                await store.record_view(tx, post.id, me)
            post = await store.reload(tx, post)
            ctx.emit(event(post, me), **audience(post))
    if new:
        await metrics_changed(ctx, post.id)
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
        post = await visible_post(tx, ctx, req.post_id)
        viewed = post.status == store.PUBLISHED and post.author_id != ctx.actor.id
        if viewed:
            await store.record_view(tx, post.id, ctx.actor.id)
    ctx.join(post_room(post.id))
    if viewed:
        await metrics_changed(ctx, post.id)
    return Nothing()


@operation(SNS, "post:unwatch")
async def unwatch_post(ctx: Context, req: PostRef) -> Nothing:
    """Stop receiving a post's events on this socket."""
    ctx.leave(post_room(req.post_id))
    return Nothing()
