"""How each plain gateway names and shapes the hub's server events: one kind per
gateway, each rendering an event into its frame once per event (hub/adapters/gateways/members.py).
docs/clients.md lists these tables.

- generic `/ws`: `{"ns", "event", "data", "offset"}`, every event.
- SSE `/sse`: `id: <offset>`, `event: <event>`, `data: <data as JSON>`, every event.
- EduStream `/ws/{user_id}`: flat `{"type", ...fields}` for the four types its app knows.
- AI-platform `/ws/dialog|site-dialog|widget-dialog/{id}`, `/ws/operator/{id}`:
  `{"type": <event in snake case>, "data": <data>}`, e.g. `message:added` -> `message_added`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from storage import users
from storage.jsoncodec import dumps

log = logging.getLogger("hub.gateways")


class Generic:
    """The generic plain-WebSocket protocol's server events."""

    def frame(self, namespace: str, event: str, data: dict, offset: str | None) -> str:
        return dumps({"ns": namespace, "event": event, "data": data, "offset": offset})


class ServerSentEvents:
    """One SSE event; `id:` is the log offset (volatile events have none, and then the
    browser's Last-Event-ID stays the last durable event's)."""

    def frame(self, namespace: str, event: str, data: dict, offset: str | None) -> str:
        head = f"id: {offset}\n" if offset else ""
        return f"{head}event: {event}\ndata: {dumps(data)}\n\n"


def snake(event: str) -> str:
    return event.replace(":", "_").replace("-", "_")


class Dialogs:
    """The AI-assistant platform's dialog and operator sockets: every event of the
    namespace, as `{"type": snake(event), "data": data}`."""

    def frame(self, namespace: str, event: str, data: dict, offset: str | None) -> str:
        return dumps({"type": snake(event), "data": data})


def _chat_message(kind: str) -> Callable[[dict, str | None], dict]:
    def shape(data: dict, email: str | None) -> dict:
        message = data.get("message") or {}
        return {"type": kind, "message_id": data["message_id"], "sender_id": data["sender_id"],
                "sender_email": email, "message": data["content"], "created_at": data["timestamp"],
                "thread_id": data["thread_id"], "booking_id": message.get("booking_id")}
    return shape


def _notification(data: dict, email: str | None) -> dict:
    return {"type": "notification", "notification_id": data["notification_id"],
            "notification_type": data.get("type"), "title": data["title"], "message": data["body"],
            "action_url": data.get("action_url"), "data": data.get("data"), "created_at": data.get("created_at")}


def _booking(data: dict, email: str | None) -> dict | None:
    if data.get("resource_type") != "booking":
        return None
    # EduStream's booking ids are integers; the hub keeps resource ids as text.
    booking = data["resource_id"]
    booking = int(booking) if isinstance(booking, str) and booking.isdigit() else booking
    return {"type": "booking_update", "booking_id": booking, "status": data.get("status"),
            **{k: data[k] for k in ("progress", "result", "error", "version") if k in data}}


# (namespace, hub event) -> the EduStream message it becomes.
EDUSTREAM: dict[tuple[str, str], Callable[[dict, str | None], dict | None]] = {
    ("/chat", "message:new"): _chat_message("new_message"),
    ("/chat", "message:sent"): _chat_message("message_sent"),
    ("/notifications", "push:received"): _notification,
    ("/notifications", "status:updated"): _booking,
    ("/notifications", "resource:updated"): _booking,
}
EMAILS_CACHED = 10_000


class EduStream:
    """EduStream's `/ws/{user_id}` messages. `new_message` carries the sender's email,
    which the hub's event does not: read once per sender and cached per instance."""

    def __init__(self, db) -> None:
        self.db = db
        self.emails: dict[int, str] = {}

    def frame(self, namespace: str, event: str, data: dict, offset: str | None):
        shape = EDUSTREAM.get((namespace, event))
        if shape is None:
            return None
        sender = data.get("sender_id") if namespace == "/chat" else None
        if sender is None or sender in self.emails:
            out = shape(data, self.emails.get(sender))
            return None if out is None else dumps(out)
        return asyncio.ensure_future(self._with_email(shape, data, sender))

    async def _with_email(self, shape, data: dict, sender: int) -> str:
        try:
            async with self.db.transaction() as tx:
                found = await users.by_ids(tx, [sender])
            if len(self.emails) >= EMAILS_CACHED:
                self.emails.clear()
            if sender in found:
                self.emails[sender] = found[sender].email
        except Exception:  # the message still goes out, without the email
            log.exception("could not read the email of user %s", sender)
        return dumps(shape(data, self.emails.get(sender)))
