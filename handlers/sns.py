"""/sns: social posts (draft, scheduled, published), comments, likes, shares,
watching, coalesced analytics and per-platform trending hashtags. See docs/sns.md.

This module holds the namespace and its inputs and outputs; the operations are in
sns_posts.py (posts, the scheduler, sync), sns_engagement.py (comments, likes,
shares, watching) and sns_trends.py (analytics and trending hashtags), the server
events in sns_events.py."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator, model_validator

from handlers.roles import ACCOUNTS
from handlers import sync
from handlers.registry import namespace
from handlers.schema import DateTime, Id, Input, Output, Paging, Text
from storage import sns as store
from storage.base import aware

SNS = "/sns"

Platform = Literal["twitter", "facebook", "instagram", "linkedin", "threads", "telegram"]
PLATFORMS: tuple[str, ...] = get_args(Platform)
Status = Literal["draft", "scheduled", "published"]

MAX_CONTENT = 5000
MAX_COMMENT = 2000
HASHTAG = re.compile(r"(?<![\w#])#(\w{1,50})")
MAX_TAGS = 30


def post_room(post_id: int) -> str:
    """The watchers of a post: joined only through `post:watch`."""
    return f"post:{post_id}"


namespace(SNS, "Social posts: publishing, scheduling, engagement, analytics and trends.",
          roles=ACCOUNTS)


# --- input -------------------------------------------------------------------------

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


class PostPage(PostRef, Paging):
    pass


class ListPosts(Paging):
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


# --- conversions -------------------------------------------------------------------

def hashtags(content: str) -> list[str]:
    return list(dict.fromkeys(t.lower() for t in HASHTAG.findall(content)))[:MAX_TAGS]


def post_out(post: store.Post) -> PostOut:
    return PostOut(
        post_id=post.id, author_id=post.author_id, platforms=post.platform_list, content=post.content,
        image_url=post.image_url, status=post.status, scheduled_at=aware(post.scheduled_at),
        published_at=aware(post.published_at), created_at=aware(post.created_at),
        updated_at=aware(post.updated_at), likes=post.likes, comments=post.comments, shares=post.shares,
    )


def comment_out(c: store.Comment) -> CommentOut:
    return CommentOut(comment_id=c.id, post_id=c.post_id, author_id=c.author_id, text=c.text,
                      reply_to=c.reply_to, created_at=aware(c.created_at), likes=c.likes)
