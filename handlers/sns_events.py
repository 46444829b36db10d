"""/sns server events, and who hears about a post."""
from __future__ import annotations

from datetime import datetime

from handlers.registry import server_event
from handlers.schema import Output
from handlers.sns import SNS, Metrics, PostOut, TrendingTopic, post_room
from storage import sns as store


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


def audience(post: store.Post) -> dict:
    return {"users": [post.author_id], "rooms": [post_room(post.id)]}
