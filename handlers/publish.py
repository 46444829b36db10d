"""Publishing (CONTRACT §4 and §7, `POST /api/publish`, HTTP only): a backend service
sends a server event that a namespace declares publishable to users, to an allowed
room or to everyone in the namespace, on every instance; an admin, to everyone only
(a maintenance notice)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from handlers import ports
from handlers.context import EVERYONE, Context, user_room
from handlers.errors import Forbidden, PayloadTooLarge, ValidationFailed, validation_details
from handlers.registry import REGISTRY, Http, operation
from handlers.roles import ADMIN, SERVICE
from handlers.schema import Id, Input, JsonObject, Text
from storage import published

MAX_USERS = 1000


@dataclass(kw_only=True)
class PublishContext(Context):
    fanout: ports.Delivery


class Target(Input):
    user_ids: list[Id] | None = Field(None, min_length=1, max_length=MAX_USERS)
    room: Text(200, min_length=1) | None = None
    # Every connection of the namespace, on every instance (its `everyone` room).
    everyone: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_of(self):
        if sum(t is not None for t in (self.user_ids, self.room, self.everyone)) != 1:
            raise ValueError("give exactly one of user_ids, room and everyone")
        if self.user_ids is not None and any(u < 1 for u in self.user_ids):
            raise ValueError("user_ids must be positive")
        return self


class PublishIn(Input):
    namespace: Text(100, min_length=1)
    event: Text(100, min_length=1)
    to: Target
    data: JsonObject


class Published(BaseModel):
    delivered_to_rooms: list[str]
    offset: str | None


@lru_cache(maxsize=None)
def _strict(model: type[BaseModel]) -> type[BaseModel]:
    """The event's model, refusing unknown fields: a publisher's typo is an error,
    not a silently dropped field."""
    return type(f"{model.__name__}Published", (model,),
                {"model_config": ConfigDict(extra="forbid"), "__module__": model.__module__})


def _fail(message: str, loc: list[str], kind: str = "value_error", **extra) -> ValidationFailed:
    return ValidationFailed(message, details=[{"loc": loc, "msg": message, "type": kind, **extra}])


# Services (bots speak in their assistant's dialogs through /dialogs), and admins to everyone.
@operation("publish", "publish", roles={SERVICE, ADMIN}, socket=False, http=Http("POST", "/api/publish", status=200))
async def publish(ctx: PublishContext, req: PublishIn) -> Published:
    """Services: publish a server event to users, a room or everyone in a namespace.
    Admins: to everyone only."""
    if ctx.actor.role == ADMIN and not req.to.everyone:
        raise Forbidden("admins may publish to everyone only; services publish to users and rooms")
    limit = ctx.settings.max_payload_bytes
    if len(json.dumps(req.data, separators=(",", ":"))) > limit:
        raise PayloadTooLarge(f"data larger than {limit} bytes")
    spec = REGISTRY.namespaces.get(req.namespace)
    if spec is None:
        raise _fail(f"unknown namespace {req.namespace!r}", ["namespace"],
                    known=sorted(REGISTRY.namespaces))
    events = REGISTRY.events_of(req.namespace)
    publishable = sorted(name for name, ev in events.items() if ev.publishable)
    event = events.get(req.event)
    if event is None or not event.publishable:
        raise _fail(f"{req.event!r} is not a publishable event of {req.namespace}", ["event"],
                    publishable=publishable)
    try:
        # JSON mode, strict: ISO timestamps are accepted, "12" for an int is not.
        data = _strict(event.model).model_validate_json(json.dumps(req.data), strict=True)
    except ValidationError as exc:
        raise ValidationFailed("invalid data for " + req.event,
                               details=[{**d, "loc": ["data", *d["loc"]]} for d in validation_details(exc)]) from None
    if req.to.user_ids is not None:
        rooms = [user_room(u) for u in dict.fromkeys(req.to.user_ids)]
    elif req.to.everyone:
        rooms = [EVERYONE]
    else:
        if not spec.room_allowed(req.to.room):
            raise _fail(f"services may not publish to room {req.to.room!r} of {req.namespace}", ["to", "room"],
                        allowed=list(spec.publish_rooms))
        rooms = [req.to.room]
    # Stored in the outbox like any write's event: once answered, it reaches every
    # recipient that is connected or recovers, whatever happens to this instance;
    # and kept for `sync`, for those that could not recover.
    async with ctx.transaction() as tx:
        ctx.emit(data, rooms=rooms)
        await published.add(tx, req.namespace, req.event, ctx.events[-1].data, rooms)
    # Delivered here rather than by the adapter after the operation: the answer
    # carries the event's offset.
    offset, = await ctx.fanout.deliver(ctx.events)
    ctx.events.clear()
    return Published(delivered_to_rooms=rooms, offset=offset)
