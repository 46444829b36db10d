"""Catch-up beyond the recovery window: `sync {since: cursor}` in every namespace
whose events reflect stored data.

A cursor is an opaque string naming a point in a stream of changes ordered by
(updated_at, id). A change is committed a little after its timestamp was taken, so
a cursor never moves past "now minus SETTLE" (30 s): the next sync may return the
last half-minute's changes again (apply them by id, they are idempotent), but never skips one."""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Generic, TypeVar

from pydantic import Field

from handlers.errors import ValidationFailed
from handlers.schema import MAX_ID, Input, Output, Text, in_time_range

T = TypeVar("T")
# Longer than any write transaction takes to commit after taking its timestamp.
SETTLE = timedelta(seconds=30)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SyncRequest(Input):
    since: Text(200) | None = Field(None, description="cursor of the previous sync; omit for everything")
    limit: int = Field(200, ge=1, le=1000)


class Tombstone(Output):
    """What `sync` says of a deleted thing: that it is gone and when, nothing of what
    it was (its text, its files). Subclasses name the id as the live item does."""

    deleted_at: datetime


class SyncPage(Output, Generic[T]):
    items: list[T]
    cursor: str  # pass as `since` next time
    has_more: bool  # call again at once with the new cursor


def decode(cursor: str | None) -> tuple[datetime, int]:
    if not cursor:
        return EPOCH, 0
    try:
        stamp, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment, ident = in_time_range(datetime.fromisoformat(stamp)), int(ident)
        if not 0 <= ident <= MAX_ID:
            raise ValueError("id out of range")
        return moment, ident
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("invalid cursor", details=[{"loc": ["since"], "msg": "not a cursor from this hub",
                                                           "type": "value_error"}]) from None


def encode(moment: datetime, ident: int) -> str:
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{ident}".encode()).decode()


def page(rows: list, items: list, limit: int, since: tuple[datetime, int]) -> dict:
    """The page for `rows` (ordered by updated_at, id; at most limit + 1 fetched)."""
    has_more = len(rows) > limit
    rows, items = rows[:limit], items[:limit]
    moment, ident = since
    if rows:
        last = rows[-1]
        moment = last.updated_at if last.updated_at.tzinfo else last.updated_at.replace(tzinfo=timezone.utc)
        ident = last.id
    settled = datetime.now(timezone.utc) - SETTLE
    if moment > settled:
        moment, ident = settled, 0
    return {"items": items, "cursor": encode(moment, ident), "has_more": has_more}
