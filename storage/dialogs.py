"""Assistants, their dialogs with website visitors, dialog messages and handoff requests.

Handoff transitions are compare-and-set UPDATEs on the dialog row (`WHERE id = ?
AND version = ?`, or `AND handoff_status = 'requested'`): of concurrent attempts
on any number of instances exactly one changes the row, the others see rowcount 0.
Every transition increments `version`."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable

from sqlalchemy import (ForeignKey, Index, String, Text, UniqueConstraint, and_, exists, false, func, or_,
                        select, update)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, insert_once, utcnow

# Handoff states: none -> requested -> active -> resolved; requested -> cancelled;
# active -> requested (the operator went offline: requeued). resolved/cancelled/none
# may be requested again.
REQUESTABLE = ("none", "resolved", "cancelled")


class Assistant(Base):
    __tablename__ = "assistants"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    owner_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    allowed_origins_json: Mapped[str] = mapped_column("allowed_origins", Text, default="[]")
    system_prompt: Mapped[str | None] = mapped_column(Text)
    # The support desk's settings (migration 0010, handlers/widgets.py): how waiting
    # dialogs reach operators, and what the widget shows.
    routing: Mapped[str] = mapped_column(String(12), default="manual")  # manual | round_robin | least_busy
    greeting: Mapped[str | None] = mapped_column(String(1000))
    widget_title: Mapped[str | None] = mapped_column(String(100))
    widget_color: Mapped[str | None] = mapped_column(String(7))
    hours_json: Mapped[str | None] = mapped_column("hours", Text)  # opening hours, JSON; none: always open
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    @property
    def allowed_origins(self) -> list[str]:
        return json.loads(self.allowed_origins_json or "[]")

    @allowed_origins.setter
    def allowed_origins(self, value: list[str]) -> None:
        self.allowed_origins_json = json.dumps(list(value))


class Dialog(Base):
    __tablename__ = "dialogs"
    __table_args__ = (
        Index("ix_dialogs_assistant_visitor", "assistant_id", "visitor_id"),
        Index("ix_dialogs_handoff_queue", "handoff_status", "requested_at"),
        Index("ix_dialogs_operator_status", "operator_id", "handoff_status"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    assistant_id: Mapped[int] = mapped_column(BigId, ForeignKey("assistants.id", ondelete="CASCADE"))
    visitor_id: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(10), default="widget")  # widget | site | bot | api
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | closed
    handoff_status: Mapped[str] = mapped_column(String(12), default="none")
    operator_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(default=1)
    handoff_reason: Mapped[str | None] = mapped_column(String(500))
    requested_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Who the visitor is and where they write from (migration 0010).
    origin: Mapped[str | None] = mapped_column(String(200))
    page_url: Mapped[str | None] = mapped_column(String(500))
    visitor_name: Mapped[str | None] = mapped_column(String(100))
    visitor_contact: Mapped[str | None] = mapped_column(String(200))
    # A transfer offered by the holder to another operator, until accepted or returned.
    transfer_to: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"), index=True)
    transfer_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class DialogMessage(Base):
    __tablename__ = "dialog_messages"
    __table_args__ = (
        UniqueConstraint("dialog_id", "sender_key", "client_msg_id", name="uq_dialog_messages_client_msg"),
        Index("ix_dialog_messages_dialog_id_id", "dialog_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(BigId, ForeignKey("dialogs.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(String(10))  # visitor | user | assistant | operator
    sender_id: Mapped[str | None] = mapped_column(String(100))
    sender_key: Mapped[str] = mapped_column(String(120))  # "<sender>:<sender_id>", for idempotency
    text: Mapped[str] = mapped_column(Text)
    client_msg_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # A streamed reply cut short (an operator took over, or its bot went silent).
    interrupted: Mapped[bool] = mapped_column(default=False, server_default=false())


class HandoffRequest(Base):
    """Every handoff request of a dialog, with its optional idempotency key."""

    __tablename__ = "handoff_requests"
    __table_args__ = (UniqueConstraint("dialog_id", "request_id", name="uq_handoff_requests_request"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(BigId, ForeignKey("dialogs.id", ondelete="CASCADE"), index=True)
    request_id: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))
    requested_by: Mapped[str] = mapped_column(String(120))
    outcome: Mapped[str] = mapped_column(String(12), default="requested")  # requested|accepted|cancelled|requeued
    operator_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class DuplicateClientId(Exception):
    pass


# --- assistants ----------------------------------------------------------------

async def create_assistant(tx: AsyncSession, *, owner_id: int, name: str, allowed_origins: list[str],
                           system_prompt: str | None) -> Assistant:
    a = Assistant(owner_id=owner_id, name=name, system_prompt=system_prompt)
    a.allowed_origins = allowed_origins
    tx.add(a)
    await tx.flush()
    return a


async def all_allowed_origins(tx: AsyncSession) -> frozenset[str]:
    """Every assistant's allowed website origins."""
    rows = (await tx.execute(select(Assistant.allowed_origins_json))).scalars()
    return frozenset(origin for raw in rows for origin in json.loads(raw or "[]"))


async def get_assistant(tx: AsyncSession, assistant_id: int) -> Assistant | None:
    return await tx.get(Assistant, assistant_id)


async def list_assistants(tx: AsyncSession, owner_id: int | None, limit: int, offset: int
                          ) -> tuple[list[Assistant], int]:
    cond = Assistant.owner_id == owner_id if owner_id is not None else True
    total = (await tx.execute(select(func.count()).select_from(Assistant).where(cond))).scalar_one()
    rows = (await tx.execute(select(Assistant).where(cond).order_by(Assistant.id)
                             .limit(limit).offset(offset))).scalars().all()
    return list(rows), total


async def update_assistant(tx: AsyncSession, a: Assistant, **fields) -> None:
    for key, value in fields.items():
        setattr(a, key, value)
    a.updated_at = utcnow()
    await tx.flush()


async def delete_assistant(tx: AsyncSession, a: Assistant) -> None:
    await tx.delete(a)
    await tx.flush()


# --- dialogs -------------------------------------------------------------------

async def create_dialog(tx: AsyncSession, *, assistant_id: int, visitor_id: str | None,
                        channel: str = "widget") -> Dialog:
    d = Dialog(assistant_id=assistant_id, visitor_id=visitor_id, channel=channel)
    tx.add(d)
    await tx.flush()
    return d


async def get_dialog(tx: AsyncSession, dialog_id: int) -> Dialog | None:
    return await tx.get(Dialog, dialog_id, populate_existing=True)


async def open_dialog_of(tx: AsyncSession, assistant_id: int, visitor_id: str) -> Dialog | None:
    query = (select(Dialog).where(Dialog.assistant_id == assistant_id, Dialog.visitor_id == visitor_id,
                                  Dialog.status == "open").order_by(Dialog.id.desc()).limit(1))
    return (await tx.execute(query)).scalar_one_or_none()


def _scope(owner_id: int | None, assistant_ids: Iterable[int] | None, dialog_id: int | None) -> list:
    """Conditions on Dialog for what a caller may see (none: everything, for staff)."""
    conds = []
    if owner_id is not None:
        conds.append(Dialog.assistant_id.in_(select(Assistant.id).where(Assistant.owner_id == owner_id)))
    if assistant_ids is not None:
        conds.append(Dialog.assistant_id.in_(list(assistant_ids)))
    if dialog_id is not None:
        conds.append(Dialog.id == dialog_id)
    return conds


async def messages_changed_since(tx: AsyncSession, *, owner_id: int | None = None,
                                 assistant_ids: Iterable[int] | None = None, dialog_id: int | None = None,
                                 moment: datetime, ident: int, limit: int) -> list[DialogMessage]:
    """Messages of the dialogs in scope written after (moment, ident), in
    (updated_at, id) order."""
    conds = [or_(DialogMessage.updated_at > moment,
                 and_(DialogMessage.updated_at == moment, DialogMessage.id > ident))]
    scope = _scope(owner_id, assistant_ids, dialog_id)
    if scope:
        conds.append(DialogMessage.dialog_id.in_(select(Dialog.id).where(*scope)))
    query = select(DialogMessage).where(*conds).order_by(DialogMessage.updated_at, DialogMessage.id).limit(limit)
    return list((await tx.execute(query)).scalars())


async def list_dialogs(tx: AsyncSession, *, owner_id: int | None = None, assistant_ids: Iterable[int] | None = None,
                       dialog_id: int | None = None, operator_id: int | None = None,
                       assistant_id: int | None = None, status: str | None = None,
                       date_from: datetime | None = None, date_to: datetime | None = None,
                       search: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Dialog], int]:
    conds = _scope(owner_id, assistant_ids, dialog_id)
    if operator_id is not None:
        conds.append(Dialog.operator_id == operator_id)
    if assistant_id is not None:
        conds.append(Dialog.assistant_id == assistant_id)
    if status is not None:
        conds.append(Dialog.status == status)
    if date_from is not None:
        conds.append(Dialog.created_at >= date_from)
    if date_to is not None:
        conds.append(Dialog.created_at <= date_to)
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds.append(exists().where(DialogMessage.dialog_id == Dialog.id,
                                    func.lower(DialogMessage.text).like(pattern, escape="\\")))
    total = (await tx.execute(select(func.count()).select_from(Dialog).where(*conds))).scalar_one()
    query = (select(Dialog).where(*conds)
             .order_by(func.coalesce(Dialog.last_message_at, Dialog.created_at).desc(), Dialog.id.desc())
             .limit(limit).offset(offset))
    return list((await tx.execute(query)).scalars()), total


async def held_by(tx: AsyncSession, operator_id: int) -> list[Dialog]:
    query = (select(Dialog).where(Dialog.operator_id == operator_id, Dialog.handoff_status == "active")
             .order_by(Dialog.accepted_at, Dialog.id))
    return list((await tx.execute(query)).scalars())


async def count_held(tx: AsyncSession, operator_ids: Iterable[int]) -> dict[int, int]:
    ids = list(set(operator_ids))
    out = {i: 0 for i in ids}
    if ids:
        query = (select(Dialog.operator_id, func.count()).where(Dialog.operator_id.in_(ids),
                                                                Dialog.handoff_status == "active")
                 .group_by(Dialog.operator_id))
        for op, n in (await tx.execute(query)).all():
            out[op] = n
    return out


async def holders(tx: AsyncSession) -> list[int]:
    """Operators holding at least one dialog."""
    query = select(Dialog.operator_id).where(Dialog.handoff_status == "active").distinct()
    return [i for i in (await tx.execute(query)).scalars() if i is not None]


async def queue(tx: AsyncSession, limit: int = 500, offset: int = 0) -> list[Dialog]:
    """Dialogs waiting for an operator, longest waiting first."""
    query = (select(Dialog).where(Dialog.handoff_status == "requested")
             .order_by(Dialog.requested_at, Dialog.id).limit(limit).offset(offset))
    return list((await tx.execute(query)).scalars())


async def queue_size(tx: AsyncSession) -> int:
    query = select(func.count()).select_from(Dialog).where(Dialog.handoff_status == "requested")
    return (await tx.execute(query)).scalar_one()


async def queue_position(tx: AsyncSession, d: Dialog) -> int | None:
    """1-based place of a waiting dialog in the queue; None if not waiting."""
    if d.handoff_status != "requested":
        return None
    ahead = select(func.count()).select_from(Dialog).where(
        Dialog.handoff_status == "requested",
        or_(Dialog.requested_at < d.requested_at, (Dialog.requested_at == d.requested_at) & (Dialog.id < d.id)),
    )
    return (await tx.execute(ahead)).scalar_one() + 1


async def transition(tx: AsyncSession, d: Dialog, *, expect_version: int | None = None,
                     expect_status: Iterable[str] | None = None, expect_operator: int | None = None,
                     **values) -> bool:
    """Compare-and-set the dialog's handoff fields: applied only if the row still has
    the expected version / status / operator. True if this call changed it (and `d`
    is refreshed either way)."""
    now = utcnow()
    conds = [Dialog.id == d.id]
    if expect_version is not None:
        conds.append(Dialog.version == expect_version)
    if expect_status is not None:
        conds.append(Dialog.handoff_status.in_(list(expect_status)))
    if expect_operator is not None:
        conds.append(Dialog.operator_id == expect_operator)
    result = await tx.execute(
        update(Dialog).where(*conds)
        .values(version=Dialog.version + 1, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    await tx.refresh(d)
    return result.rowcount == 1


async def set_visitor(tx: AsyncSession, d: Dialog, **fields: str | None) -> None:
    """Record who and where the visitor is (name, contact, origin, page_url); a
    field given as None keeps its value."""
    values = {k: v for k, v in fields.items() if v is not None}
    if values:
        await tx.execute(update(Dialog).where(Dialog.id == d.id).values(**values)
                         .execution_options(synchronize_session=False))
        await tx.refresh(d)


async def touch_dialog(tx: AsyncSession, d: Dialog, at: datetime) -> None:
    await tx.execute(update(Dialog).where(Dialog.id == d.id).values(last_message_at=at, updated_at=at)
                     .execution_options(synchronize_session=False))
    await tx.refresh(d)


# --- messages --------------------------------------------------------------------

async def add_message(tx: AsyncSession, d: Dialog, *, sender: str, sender_id: str | None, text: str,
                      client_msg_id: str | None, interrupted: bool = False) -> DialogMessage:
    now = utcnow()
    msg = DialogMessage(dialog_id=d.id, sender=sender, sender_id=sender_id, sender_key=f"{sender}:{sender_id}",
                        text=text, client_msg_id=client_msg_id, created_at=now, updated_at=now,
                        interrupted=interrupted)
    if not await insert_once(tx, msg):
        raise DuplicateClientId(client_msg_id)
    await touch_dialog(tx, d, now)
    return msg


async def by_client_msg_id(tx: AsyncSession, dialog_id: int, sender: str, sender_id: str | None,
                           client_msg_id: str) -> DialogMessage | None:
    query = select(DialogMessage).where(DialogMessage.dialog_id == dialog_id,
                                        DialogMessage.sender_key == f"{sender}:{sender_id}",
                                        DialogMessage.client_msg_id == client_msg_id)
    return (await tx.execute(query)).scalar_one_or_none()


async def messages(tx: AsyncSession, dialog_id: int, limit: int, before_id: int | None = None) -> list[DialogMessage]:
    """The newest `limit` messages (before `before_id`), oldest first."""
    query = select(DialogMessage).where(DialogMessage.dialog_id == dialog_id)
    if before_id is not None:
        query = query.where(DialogMessage.id < before_id)
    rows = (await tx.execute(query.order_by(DialogMessage.id.desc()).limit(limit))).scalars().all()
    return list(reversed(rows))


# --- handoff requests ---------------------------------------------------------------

async def add_request(tx: AsyncSession, d: Dialog, *, request_id: str | None, reason: str | None,
                      requested_by: str) -> HandoffRequest | None:
    """Record a request; None if this dialog already has one with `request_id`."""
    req = HandoffRequest(dialog_id=d.id, request_id=request_id, reason=reason, requested_by=requested_by)
    return req if await insert_once(tx, req) else None


async def request_by_id(tx: AsyncSession, dialog_id: int, request_id: str) -> HandoffRequest | None:
    query = select(HandoffRequest).where(HandoffRequest.dialog_id == dialog_id,
                                         HandoffRequest.request_id == request_id)
    return (await tx.execute(query)).scalar_one_or_none()


async def close_requests(tx: AsyncSession, dialog_id: int, outcome: str, operator_id: int | None = None) -> None:
    """Mark the dialog's open requests with how they ended."""
    await tx.execute(update(HandoffRequest)
                     .where(HandoffRequest.dialog_id == dialog_id, HandoffRequest.outcome == "requested")
                     .values(outcome=outcome, operator_id=operator_id, updated_at=utcnow()))
