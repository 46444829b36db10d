"""What an assistant's owner sets for its support desk and widget: routing,
greeting, title, colour and opening hours; and the public app keys that give a
native app (which has no Origin) visitor sessions (docs/handoff.md)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from handlers import assistants
from handlers import dialogs as dlg
from handlers import bots, routing
from handlers.context import Context
from handlers.errors import NotFound
from handlers.registry import operation
from handlers.roles import OWNERS
from handlers.schema import Id, Input, Output, Text
from storage import desk as desk_store
from storage import dialogs as store
from storage.base import aware

APP_KEY_PREFIX = "hubapp_"


class Hours(Input):
    """Opening hours: on these weekdays (0 = Monday) from `open` to `close`, local time."""

    timezone: Text(64, min_length=1) = "UTC"
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(default_factory=lambda: [0, 1, 2, 3, 4], max_length=7)
    open: Text(5, pattern=r"^([01]\d|2[0-3]):[0-5]\d$") = "09:00"
    close: Text(5, pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$") = "17:00"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        if any(not 0 <= d <= 6 for d in value):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return sorted(set(value))

    def is_open(self, at: float) -> bool:
        local = datetime.fromtimestamp(at, ZoneInfo(self.timezone))
        return local.weekday() in self.days and self.open <= local.strftime("%H:%M") < self.close


def hours_of(a: store.Assistant) -> Hours | None:
    return Hours.model_validate_json(a.hours_json) if a.hours_json else None


def open_now(a: store.Assistant) -> bool:
    """Within the assistant's opening hours (always, when it has none)."""
    hours = hours_of(a)
    return hours is None or hours.is_open(datetime.now(timezone.utc).timestamp())


class DeskSettings(assistants.AssistantRef):
    routing: Literal["manual", "round_robin", "least_busy"] | None = None
    greeting: Text(1000) | None = None
    title: Text(100) | None = None
    color: Text(7, pattern=r"^#[0-9a-fA-F]{6}$") | None = None
    hours: Hours | None = None


class DeskSettingsOut(Output):
    assistant_id: int
    name: str
    routing: str
    greeting: str | None
    title: str | None
    color: str | None
    hours: dict | None


class Availability(Output):
    operators_online: int
    open_now: bool  # within the assistant's opening hours (always, without hours)
    routing: str
    bot_online: bool  # a bot of the assistant is connected (on any instance)


class NewAppKey(assistants.AssistantRef):
    name: Text(100, min_length=1)


class AppKeyRef(assistants.AssistantRef):
    key_id: Id


class AppKeyOut(Output):
    id: int
    assistant_id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    key: str | None = None  # only in the answer that created it


def settings_out(a: store.Assistant) -> DeskSettingsOut:
    hours = hours_of(a)
    return DeskSettingsOut(assistant_id=a.id, name=a.name, routing=a.routing, greeting=a.greeting,
                           title=a.widget_title, color=a.widget_color,
                           hours=hours.model_dump() if hours else None)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_out(k: desk_store.AppKey, key: str | None = None) -> AppKeyOut:
    return AppKeyOut(id=k.id, assistant_id=k.assistant_id, name=k.name, created_at=aware(k.created_at),
                     revoked_at=aware(k.revoked_at), key=key)


@operation(dlg.DIALOGS, "assistant:settings", roles=OWNERS, http=("PUT", "/api/assistants/{assistant_id}/settings"))
async def desk_settings(ctx: Context, req: DeskSettings) -> DeskSettingsOut:
    """Read (no other fields) or change an assistant's routing (manual, round_robin,
    least_busy), widget greeting, title, colour and opening hours (owner only)."""
    async with ctx.transaction() as tx:
        a = await assistants.owned_assistant(tx, ctx, req.assistant_id)
        given = req.model_dump(exclude_unset=True, exclude={"assistant_id"})
        if given.get("routing", "") is None:
            del given["routing"]  # an assistant always has a routing: null leaves it as it is
        names = {"routing": "routing", "greeting": "greeting", "title": "widget_title", "color": "widget_color"}
        fields = {names[k]: v for k, v in given.items() if k in names}
        if "hours" in given:
            fields["hours_json"] = req.hours.model_dump_json() if req.hours else None
        if fields:
            await store.update_assistant(tx, a, **fields)
            ctx.emit(assistants.AssistantChanged(assistant_id=a.id), users=[a.owner_id])
        out = settings_out(a)
    if fields.get("routing", "manual") != "manual":
        await routing.route_after(ctx, a.id)
    return out


@operation(dlg.DIALOGS, "dialog:availability", http=("GET", "/api/dialogs/{dialog_id}/availability"))
async def availability(ctx: Context, req: dlg.DialogRef) -> Availability:
    """Whether a human can answer now: operators online, and the assistant's hours.
    The widget offers the offline form when not."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        a = await store.get_assistant(tx, d.assistant_id)
        bot = await bots.bot_online(tx, a.id)
    return Availability(operators_online=len(await routing.online_operators(ctx)), open_now=open_now(a),
                        routing=a.routing, bot_online=bot)


@operation(dlg.DIALOGS, "app-key:create", roles=OWNERS, http=("POST", "/api/assistants/{assistant_id}/app-keys"))
async def create_app_key(ctx: Context, req: NewAppKey) -> AppKeyOut:
    """A public key for a native app (owner only). The key is in this answer only;
    the hub keeps its hash."""
    key = APP_KEY_PREFIX + secrets.token_urlsafe(24)
    async with ctx.transaction() as tx:
        a = await assistants.owned_assistant(tx, ctx, req.assistant_id)
        return key_out(await desk_store.add_app_key(tx, a.id, req.name, key_hash(key)), key)


@operation(dlg.DIALOGS, "app-keys:list", roles=OWNERS, http=("GET", "/api/assistants/{assistant_id}/app-keys"))
async def list_app_keys(ctx: Context, req: assistants.AssistantRef) -> list[AppKeyOut]:
    """The assistant's app keys, revoked ones included (never the keys themselves)."""
    async with ctx.transaction() as tx:
        a = await assistants.owned_assistant(tx, ctx, req.assistant_id)
        return [key_out(k) for k in await desk_store.app_keys(tx, a.id)]


@operation(dlg.DIALOGS, "app-key:revoke", roles=OWNERS,
           http=("DELETE", "/api/assistants/{assistant_id}/app-keys/{key_id}"))
async def revoke_app_key(ctx: Context, req: AppKeyRef) -> AppKeyOut:
    """Revoke an app key: no new sessions with it (sessions already given live on
    until their visitor token expires)."""
    async with ctx.transaction() as tx:
        a = await assistants.owned_assistant(tx, ctx, req.assistant_id)
        await desk_store.revoke_app_key(tx, a.id, req.key_id)
        for k in await desk_store.app_keys(tx, a.id):
            if k.id == req.key_id:
                return key_out(k)
    raise NotFound("no such app key")


async def app_key_assistant(ctx: Context, key: str) -> int | None:
    """The assistant a (not revoked) app key belongs to."""
    async with ctx.transaction() as tx:
        k = await desk_store.app_key_by_hash(tx, key_hash(key))
    return k.assistant_id if k else None


def public_settings(a: store.Assistant) -> dict:
    """What the widget shows, in the widget session's answer."""
    return {"name": a.name, "title": a.widget_title, "greeting": a.greeting, "color": a.widget_color,
            "routing": a.routing, "open_now": open_now(a)}

