"""Social posts: posts (draft, scheduled, published), hashtags, comments, likes,
shares, audience (reach/impressions) and the last trending ranking sent per platform."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable

from sqlalchemy import (ForeignKey, Index, String, Text, UniqueConstraint, and_, delete, func, insert,
                        or_, select, update)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, insert_once, utcnow

DRAFT, SCHEDULED, PUBLISHED = "draft", "scheduled", "published"
UNPUBLISHED = (DRAFT, SCHEDULED)


class Post(Base):
    __tablename__ = "sns_posts"
    __table_args__ = (
        UniqueConstraint("author_id", "request_id", name="uq_sns_posts_author_request"),
        Index("ix_sns_posts_status_scheduled_at", "status", "scheduled_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    author_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    # ",twitter,facebook," : known names only (validated), so a LIKE filter is exact.
    platforms: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    image_url: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(12))
    scheduled_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None] = mapped_column(index=True)
    request_id: Mapped[str | None] = mapped_column(String(100))
    likes: Mapped[int] = mapped_column(default=0)
    comments: Mapped[int] = mapped_column(default=0)
    shares: Mapped[int] = mapped_column(default=0)
    reach: Mapped[int] = mapped_column(default=0)
    impressions: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    deleted_at: Mapped[datetime | None]

    @property
    def platform_list(self) -> list[str]:
        return [p for p in self.platforms.split(",") if p]


class PostTag(Base):
    __tablename__ = "sns_post_tags"
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("sns_posts.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class Comment(Base):
    __tablename__ = "sns_comments"
    __table_args__ = (
        UniqueConstraint("author_id", "request_id", name="uq_sns_comments_author_request"),
        Index("ix_sns_comments_post_id_id", "post_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("sns_posts.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    reply_to: Mapped[int | None] = mapped_column(BigId, ForeignKey("sns_comments.id", ondelete="SET NULL"))
    request_id: Mapped[str | None] = mapped_column(String(100))
    likes: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class PostLike(Base):
    __tablename__ = "sns_post_likes"
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("sns_posts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class CommentLike(Base):
    __tablename__ = "sns_comment_likes"
    comment_id: Mapped[int] = mapped_column(BigId, ForeignKey("sns_comments.id", ondelete="CASCADE"),
                                            primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Share(Base):
    __tablename__ = "sns_shares"
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("sns_posts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Audience(Base):
    """Who (other than the author) saw or engaged with a published post, and how often:
    one row per user is the post's reach, the sum of views its impressions."""

    __tablename__ = "sns_audience"
    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("sns_posts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    views: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Trending(Base):
    """The last trending ranking sent for a platform; its row lock serializes the
    instances that recompute it, so one ranking change is announced once."""

    __tablename__ = "sns_trending"
    platform: Mapped[str] = mapped_column(String(20), primary_key=True)
    ranking: Mapped[str] = mapped_column(Text, default="[]")
    # +1 per ranking sent: events from several instances may arrive out of order,
    # a client keeps the highest version.
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class DuplicateRequest(Exception):
    """The author already created something with this request_id."""


def platforms_column(platforms: Iterable[str]) -> str:
    return "," + ",".join(platforms) + ","


def _live():
    return Post.deleted_at.is_(None)


# --- posts -------------------------------------------------------------------------

async def create_post(tx: AsyncSession, *, author_id: int, platforms: list[str], content: str,
                      image_url: str | None, status: str, scheduled_at: datetime | None,
                      request_id: str | None, tags: list[str]) -> Post:
    now = utcnow()
    post = Post(author_id=author_id, platforms=platforms_column(platforms), content=content, image_url=image_url,
                status=status, scheduled_at=scheduled_at, published_at=now if status == PUBLISHED else None,
                request_id=request_id, created_at=now, updated_at=now)
    if not await insert_once(tx, post):
        raise DuplicateRequest(request_id)
    await set_tags(tx, post.id, tags)
    return post


async def set_tags(tx: AsyncSession, post_id: int, tags: list[str]) -> None:
    await tx.execute(delete(PostTag).where(PostTag.post_id == post_id))
    if tags:
        await tx.execute(insert(PostTag), [{"post_id": post_id, "tag": t} for t in dict.fromkeys(tags)])


async def post_by_request(tx: AsyncSession, author_id: int, request_id: str) -> Post | None:
    query = select(Post).where(Post.author_id == author_id, Post.request_id == request_id)
    return (await tx.execute(query)).scalar_one_or_none()


async def get_post(tx: AsyncSession, post_id: int) -> Post | None:
    """A post that is not deleted."""
    query = select(Post).where(Post.id == post_id, _live())
    return (await tx.execute(query)).scalar_one_or_none()


async def reload(tx: AsyncSession, post: Post) -> Post:
    await tx.refresh(post)
    return post


async def edit_unpublished(tx: AsyncSession, post_id: int, values: dict) -> Post | None:
    """Change a post that is still a draft or scheduled; None if it no longer is
    (published or deleted meanwhile, e.g. by the scheduler on another instance)."""
    query = (update(Post).where(Post.id == post_id, Post.status.in_(UNPUBLISHED), _live())
             .values(**values, updated_at=utcnow()).returning(Post.id))
    if (await tx.execute(query)).scalar_one_or_none() is None:
        return None
    return await reload(tx, await tx.get(Post, post_id))


async def publish(tx: AsyncSession, post_id: int) -> Post | None:
    """Publish a draft or scheduled post now; None if it is not one (any more)."""
    now = utcnow()
    query = (update(Post).where(Post.id == post_id, Post.status.in_(UNPUBLISHED), _live())
             .values(status=PUBLISHED, published_at=now, updated_at=now).returning(Post.id))
    if (await tx.execute(query)).scalar_one_or_none() is None:
        return None
    return await reload(tx, await tx.get(Post, post_id))


async def claim_due(tx: AsyncSession, now: datetime, limit: int) -> list[Post]:
    """Publish the scheduled posts whose time has come, atomically: a post moves from
    `scheduled` to `published` in exactly one transaction, whichever instance runs it.

    PostgreSQL: the candidates are locked with SKIP LOCKED (instances don't wait on each
    other) and the UPDATE re-checks the status of each row after the lock.
    SQLite: the UPDATE takes the database's write lock; the status condition does the rest."""
    candidates = (select(Post.id)
                  .where(Post.status == SCHEDULED, Post.scheduled_at <= now, _live())
                  .order_by(Post.scheduled_at, Post.id).limit(limit)
                  .with_for_update(skip_locked=True))
    query = (update(Post)
             .where(Post.id.in_(candidates.scalar_subquery()), Post.status == SCHEDULED)
             .values(status=PUBLISHED, published_at=now, updated_at=now)
             .returning(Post.id))
    ids = list((await tx.execute(query)).scalars())
    if not ids:
        return []
    rows = (await tx.execute(select(Post).where(Post.id.in_(ids)).order_by(Post.id)
                             .execution_options(populate_existing=True))).scalars()
    return list(rows)


async def delete_post(tx: AsyncSession, post: Post) -> None:
    post.deleted_at = post.updated_at = utcnow()
    await tx.flush()


async def list_posts(tx: AsyncSession, *, viewer_id: int, see_all: bool, platform: str | None,
                     status: str | None, author_id: int | None, limit: int, offset: int) -> tuple[list[Post], int]:
    """Newest first. Visible: every published post, plus the viewer's own drafts and
    scheduled posts (everything when `see_all`)."""
    cond = [_live()]
    if not see_all:
        cond.append(or_(Post.status == PUBLISHED, Post.author_id == viewer_id))
    if platform:
        cond.append(Post.platforms.like(f"%,{platform},%"))
    if status:
        cond.append(Post.status == status)
    if author_id:
        cond.append(Post.author_id == author_id)
    where = and_(*cond)
    total = int((await tx.execute(select(func.count()).select_from(Post).where(where))).scalar_one())
    query = select(Post).where(where).order_by(Post.id.desc()).limit(limit).offset(offset)
    return list((await tx.execute(query)).scalars()), total


async def posts_changed_since(tx: AsyncSession, *, viewer_id: int, see_all: bool, moment: datetime,
                              ident: int, limit: int) -> list[Post]:
    """Posts the viewer may see that changed after (moment, ident), deleted ones
    included, in (updated_at, id) order."""
    cond = [or_(Post.updated_at > moment, and_(Post.updated_at == moment, Post.id > ident))]
    if not see_all:
        cond.append(or_(Post.status == PUBLISHED, Post.author_id == viewer_id))
    query = select(Post).where(*cond).order_by(Post.updated_at, Post.id).limit(limit)
    return list((await tx.execute(query)).scalars())


# --- engagement --------------------------------------------------------------------

async def _bump(tx: AsyncSession, post_id: int, **deltas: int) -> None:
    values = {name: getattr(Post, name) + n for name, n in deltas.items()}
    await tx.execute(update(Post).where(Post.id == post_id).values(**values, updated_at=utcnow()))


async def like_post(tx: AsyncSession, post_id: int, user_id: int) -> bool:
    """Record the user's like; False (and nothing changes) if they already liked it."""
    now = utcnow()
    if not await insert_once(tx, PostLike(post_id=post_id, user_id=user_id, created_at=now, updated_at=now)):
        return False
    await _bump(tx, post_id, likes=1)
    return True


async def share_post(tx: AsyncSession, post_id: int, user_id: int) -> bool:
    now = utcnow()
    if not await insert_once(tx, Share(post_id=post_id, user_id=user_id, created_at=now, updated_at=now)):
        return False
    await _bump(tx, post_id, shares=1)
    return True


async def likes_of(tx: AsyncSession, post_id: int, limit: int, offset: int) -> tuple[list[PostLike], int]:
    cond = PostLike.post_id == post_id
    total = int((await tx.execute(select(func.count()).select_from(PostLike).where(cond))).scalar_one())
    query = select(PostLike).where(cond).order_by(PostLike.created_at, PostLike.user_id).limit(limit).offset(offset)
    return list((await tx.execute(query)).scalars()), total


async def add_comment(tx: AsyncSession, *, post_id: int, author_id: int, text: str, reply_to: int | None,
                      request_id: str | None) -> Comment:
    now = utcnow()
    comment = Comment(post_id=post_id, author_id=author_id, text=text, reply_to=reply_to,
                      request_id=request_id, created_at=now, updated_at=now)
    if not await insert_once(tx, comment):
        raise DuplicateRequest(request_id)
    await _bump(tx, post_id, comments=1)
    return comment


async def comment_by_request(tx: AsyncSession, author_id: int, request_id: str) -> Comment | None:
    query = select(Comment).where(Comment.author_id == author_id, Comment.request_id == request_id)
    return (await tx.execute(query)).scalar_one_or_none()


async def get_comment(tx: AsyncSession, comment_id: int) -> Comment | None:
    return await tx.get(Comment, comment_id)


async def comments_of(tx: AsyncSession, post_id: int, limit: int, offset: int) -> tuple[list[Comment], int]:
    """Oldest first, replies among them (each names the comment it answers)."""
    cond = Comment.post_id == post_id
    total = int((await tx.execute(select(func.count()).select_from(Comment).where(cond))).scalar_one())
    query = select(Comment).where(cond).order_by(Comment.id).limit(limit).offset(offset)
    return list((await tx.execute(query)).scalars()), total


async def like_comment(tx: AsyncSession, comment: Comment, user_id: int) -> bool:
    now = utcnow()
    if not await insert_once(tx, CommentLike(comment_id=comment.id, user_id=user_id, created_at=now,
                                              updated_at=now)):
        return False
    await tx.execute(update(Comment).where(Comment.id == comment.id)
                     .values(likes=Comment.likes + 1, updated_at=now))
    await tx.refresh(comment, ["likes", "updated_at"])
    return True


async def record_view(tx: AsyncSession, post_id: int, user_id: int) -> None:
    """One more impression by `user_id`; one more reached user if it is their first."""
    now = utcnow()
    if await insert_once(tx, Audience(post_id=post_id, user_id=user_id, views=1, created_at=now, updated_at=now)):
        await _bump(tx, post_id, reach=1, impressions=1)
        return
    await tx.execute(update(Audience).where(Audience.post_id == post_id, Audience.user_id == user_id)
                     .values(views=Audience.views + 1, updated_at=now))
    await _bump(tx, post_id, impressions=1)


# --- trending ----------------------------------------------------------------------

async def lock_trending(tx: AsyncSession, platform: str) -> Trending:
    """The platform's trending row, locked until the transaction ends (PostgreSQL)."""
    query = select(Trending).where(Trending.platform == platform).with_for_update()
    row = (await tx.execute(query.execution_options(populate_existing=True))).scalar_one_or_none()
    if row is None:
        await insert_once(tx, Trending(platform=platform, ranking="[]", version=0, updated_at=utcnow()))
        row = (await tx.execute(query.execution_options(populate_existing=True))).scalar_one()
    return row


async def hashtag_counts(tx: AsyncSession, platform: str, since: datetime, top: int) -> list[tuple[str, int]]:
    """The most used hashtags of the platform's posts published since `since`: by the
    number of posts using them, then alphabetically."""
    n = func.count().label("n")
    query = (select(PostTag.tag, n)
             .join(Post, Post.id == PostTag.post_id)
             .where(Post.status == PUBLISHED, _live(), Post.published_at >= since,
                    Post.platforms.like(f"%,{platform},%"))
             .group_by(PostTag.tag)
             .order_by(n.desc(), PostTag.tag)
             .limit(top))
    return [(tag, int(count)) for tag, count in (await tx.execute(query)).all()]


async def rankings(tx: AsyncSession, platforms: list[str]) -> dict[str, tuple[list, int]]:
    """The last ranking announced per platform, with its version."""
    query = select(Trending).where(Trending.platform.in_(platforms))
    return {row.platform: (json.loads(row.ranking), row.version) for row in (await tx.execute(query)).scalars()}


async def save_ranking(tx: AsyncSession, row: Trending, ranking: list) -> bool:
    """Store `ranking` as the last one sent; False if it equals the stored one."""
    encoded = json.dumps(ranking, separators=(",", ":"))
    if encoded == row.ranking:
        return False
    row.ranking = encoded
    row.version += 1
    row.updated_at = utcnow()
    await tx.flush()
    return True
