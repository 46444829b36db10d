"""Catch-up beyond the recovery window: `sync {since: cursor}` in every namespace
whose events reflect stored data.

A cursor is an opaque string naming a point in a stream of changes ordered by
(updated_at, id) (and, where services publish events, one in the stream of those
events, ordered by (published_at, id)). A change is committed a little after its
timestamp was taken, so a change may become visible behind a point already read.
Hence two kinds of cursor:

* while `has_more` is true, the cursor is the last item returned: every page moves
  on, and a loop over n changes ends after ceil(n / limit) pages;
* the cursor of the last page (`has_more` false) steps back to "SETTLE (30 s) before
  the loop began" if it is later than that: the next sync, later, may return the
  last half-minute's changes again (apply them by id, they are idempotent), but
  never skips one whose commit was slow."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Generic, TypeVar

import orjson
from pydantic import Field

from handlers.context import Context
from handlers.errors import ValidationFailed
from handlers.registry import REGISTRY
from handlers.schema import MAX_ID, Input, Output, Text, in_time_range
from storage import published as published_store
from storage.base import aware

T = TypeVar("T")
# Longer than any write transaction takes to commit after taking its timestamp.
SETTLE = timedelta(seconds=30)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
Position = tuple[datetime, int]  # (timestamp, id) of the last item returned
START: Position = (EPOCH, 0)


class SyncRequest(Input):
    since: Text(200) | None = Field(None, description="cursor of the previous sync; omit for everything")
    limit: int = Field(200, ge=1, le=1000)


class Tombstone(Output):
    """What `sync` says of a deleted thing: that it is gone and when, nothing of what
    it was (its text, its files). Subclasses name the id as the live item does."""

    deleted_at: datetime


class PublishedEvent(Output):
    """An event a service published (`POST /api/publish`) to the caller or a room it
    is in: what `socket.on(event, data)` would have received."""

    id: int
    event: str
    data: dict
    published_at: datetime


class SyncPage(Output, Generic[T]):
    items: list[T]
    cursor: str  # pass as `since` next time
    has_more: bool  # call again at once with the new cursor


class PublishedSyncPage(SyncPage[T], Generic[T]):
    """The page of a namespace that services publish to: its changes, and the
    published events addressed to the caller, each stream in its own order."""

    events: list[PublishedEvent]


@dataclass(frozen=True)
class Cursor:
    changes: Position
    events: Position
    # While paging: no resting cursor goes later than this (SETTLE before the loop began).
    back_to: datetime | None = None


def _aware(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _invalid() -> ValidationFailed:
    return ValidationFailed("invalid cursor", details=[{"loc": ["since"], "msg": "not a cursor from this hub",
                                                        "type": "value_error"}])


def parse(cursor: str | None) -> Cursor:
    if not cursor:
        return Cursor(START, START)
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
        if raw.startswith(b"{"):
            fields = orjson.loads(raw)
            back = fields.get("b")
            return Cursor(_position(fields["c"]), _position(fields.get("e", [0, 0])),
                          None if back is None else _moment(back))
        stamp, _, ident = raw.decode().partition("|")  # the cursors of earlier versions
        return Cursor(_checked(in_time_range(datetime.fromisoformat(stamp)), int(ident)), START)
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, OverflowError, orjson.JSONDecodeError):
        raise _invalid() from None


# Positions travel as [microseconds since the epoch, id]: short enough that a cursor
# stays well inside `since`'s 200 characters.
def _moment(micros) -> datetime:
    if type(micros) is not int:
        raise ValueError("not a time")
    return in_time_range(EPOCH + timedelta(microseconds=micros))


def _checked(moment: datetime, ident: int) -> Position:
    """A position a client may name: its time in range, its id a 64-bit id."""
    if not 0 <= ident <= MAX_ID:
        raise ValueError("id out of range")
    return moment, ident


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _position(value) -> Position:
    stamp, ident = value
    if type(ident) is not int:
        raise ValueError("not a position")
    return _checked(_moment(stamp), ident)


def encode(cursor: Cursor) -> str:
    fields: dict = {"c": [_micros(cursor.changes[0]), cursor.changes[1]]}
    if cursor.events != START:
        fields["e"] = [_micros(cursor.events[0]), cursor.events[1]]
    if cursor.back_to is not None:
        fields["b"] = _micros(cursor.back_to)
    return base64.urlsafe_b64encode(orjson.dumps(fields)).decode()


def decode(cursor: str | None) -> Position:
    """Where the changes of a sync begin: after this (timestamp, id)."""
    return parse(cursor).changes


def _advanced(rows: list, limit: int, since: Position, stamp: str) -> Position:
    if not rows[:limit]:
        return since
    last = rows[:limit][-1]
    return _aware(getattr(last, stamp)), last.id


def page(rows: list, items: list, limit: int, since: str | None,
         published: tuple[list, list] | None = None) -> dict:
    """The page for `rows` (ordered by updated_at, id; at most limit + 1 fetched) and,
    where services publish, the published events' rows and items (ordered by
    published_at, id; at most limit + 1) after `parse(since).events`."""
    cursor = parse(since)
    event_rows, event_items = published or ([], [])
    has_more = len(rows) > limit or len(event_rows) > limit
    changes = _advanced(rows, limit, cursor.changes, "updated_at")
    events = _advanced(event_rows, limit, cursor.events, "published_at")
    back_to = cursor.back_to or datetime.now(timezone.utc) - SETTLE
    if has_more:
        nxt = Cursor(changes, events, back_to)
    else:
        rest = (back_to, 0)
        nxt = Cursor(min(changes, rest), min(events, rest))
    out = {"items": items[:limit], "cursor": encode(nxt), "has_more": has_more}
    if published is not None:
        out["events"] = event_items[:limit]
    return out


async def published_since(tx, ctx: Context, namespace: str, since: str | None, limit: int) -> tuple[list, list]:
    """The events services published to the caller's rooms (its own, and those its
    sockets join on connect, such as everyone's and /orders' staff room) after the cursor: rows and
    items, at most limit + 1, for `page`."""
    rooms = REGISTRY.namespaces[namespace].rooms_on_connect(ctx.actor)
    moment, ident = parse(since).events
    rows = await published_store.since(tx, namespace, rooms, moment, ident, limit + 1)
    return rows, [PublishedEvent(id=r.id, event=r.event, data=r.data, published_at=aware(r.published_at))
                  for r in rows]
