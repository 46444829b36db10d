"""The support desk around dialogs: operators' internal notes, the team's canned
replies, assistants' public app keys, and what automatic routing remembers."""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from sqlalchemy import ForeignKey, String, Text, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, insert_once, utcnow
from storage.dialogs import Assistant, Dialog, DialogMessage
from storage.users import User


class DialogNote(Base):
    """An operator's note on a dialog: staff only, never sent to the visitor or the bot."""

    __tablename__ = "dialog_notes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(BigId, ForeignKey("dialogs.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CannedReply(Base):
    """A reply the team reuses, typed as `/shortcut` in the console."""

    __tablename__ = "canned_replies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shortcut: Mapped[str] = mapped_column(String(40), unique=True)
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppKey(Base):
    """A public key a native app presents instead of a website's Origin. Only its
    SHA-256 is stored; revoked keys stay for the record."""

    __tablename__ = "assistant_app_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    assistant_id: Mapped[int] = mapped_column(BigId, ForeignKey("assistants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class RoutingTurn(Base):
    """When automatic routing last gave an operator a dialog (round robin's order)."""

    __tablename__ = "routing_turns"
    operator_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class AssistantBot(Base):
    """An instance with a bot of this assistant connected (handlers/bots.py)."""

    __tablename__ = "assistant_bots"
    assistant_id: Mapped[int] = mapped_column(BigId, ForeignKey("assistants.id", ondelete="CASCADE"),
                                              primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class DuplicateShortcut(Exception):
    pass


# --- notes -----------------------------------------------------------------------

async def add_note(tx: AsyncSession, dialog_id: int, author_id: int, text: str) -> DialogNote:
    note = DialogNote(dialog_id=dialog_id, author_id=author_id, text=text)
    tx.add(note)
    await tx.flush()
    return note


async def notes(tx: AsyncSession, dialog_id: int, limit: int = 500) -> list[DialogNote]:
    query = select(DialogNote).where(DialogNote.dialog_id == dialog_id).order_by(DialogNote.id).limit(limit)
    return list((await tx.execute(query)).scalars())


# --- canned replies -------------------------------------------------------------------

async def canned_replies(tx: AsyncSession) -> list[CannedReply]:
    return list((await tx.execute(select(CannedReply).order_by(CannedReply.shortcut).limit(500))).scalars())


async def get_canned(tx: AsyncSession, reply_id: int) -> CannedReply | None:
    return await tx.get(CannedReply, reply_id)


async def save_canned(tx: AsyncSession, reply: CannedReply) -> CannedReply:
    reply.updated_at = utcnow()
    if reply.id is None:
        if not await insert_once(tx, reply):
            raise DuplicateShortcut(reply.shortcut)
        return reply
    try:
        async with tx.begin_nested():
            await tx.flush()
    except Exception as exc:  # the unique shortcut
        raise DuplicateShortcut(reply.shortcut) from exc
    return reply


async def delete_canned(tx: AsyncSession, reply: CannedReply) -> None:
    await tx.delete(reply)
    await tx.flush()


# --- app keys ----------------------------------------------------------------------------

async def add_app_key(tx: AsyncSession, assistant_id: int, name: str, key_hash: str) -> AppKey:
    key = AppKey(assistant_id=assistant_id, name=name, key_hash=key_hash)
    tx.add(key)
    await tx.flush()
    return key


async def app_keys(tx: AsyncSession, assistant_id: int) -> list[AppKey]:
    query = select(AppKey).where(AppKey.assistant_id == assistant_id).order_by(AppKey.id)
    return list((await tx.execute(query)).scalars())


async def app_key_by_hash(tx: AsyncSession, key_hash: str) -> AppKey | None:
    query = select(AppKey).where(AppKey.key_hash == key_hash, AppKey.revoked_at.is_(None))
    return (await tx.execute(query)).scalar_one_or_none()


async def revoke_app_key(tx: AsyncSession, assistant_id: int, key_id: int) -> bool:
    result = await tx.execute(update(AppKey).where(AppKey.id == key_id, AppKey.assistant_id == assistant_id,
                                                   AppKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return result.rowcount == 1


# --- routing -------------------------------------------------------------------------------

async def lock_operators(tx: AsyncSession, operator_ids: list[int]) -> list[int]:
    """Row-lock the operators (PostgreSQL), always in id order so that two
    assignments never wait for each other in a cycle; returns those that are staff."""
    query = (select(User.id).where(User.id.in_(operator_ids), User.role.in_(("operator", "admin")))
             .order_by(User.id).with_for_update())
    return list((await tx.execute(query)).scalars())


async def last_turns(tx: AsyncSession, operator_ids: Iterable[int]) -> dict[int, datetime]:
    query = select(RoutingTurn.operator_id, RoutingTurn.last_assigned_at).where(
        RoutingTurn.operator_id.in_(list(operator_ids)))
    return dict((await tx.execute(query)).all())


async def record_turn(tx: AsyncSession, operator_id: int) -> None:
    now = utcnow()
    result = await tx.execute(update(RoutingTurn).where(RoutingTurn.operator_id == operator_id)
                              .values(last_assigned_at=now))
    if result.rowcount == 0:
        await insert_once(tx, RoutingTurn(operator_id=operator_id, last_assigned_at=now))


async def routed_assistants(tx: AsyncSession, assistant_id: int | None = None) -> dict[int, str]:
    """Assistants whose dialogs are assigned automatically, with their routing."""
    query = select(Assistant.id, Assistant.routing).where(Assistant.routing != "manual")
    if assistant_id is not None:
        query = query.where(Assistant.id == assistant_id)
    return dict((await tx.execute(query)).all())


async def waiting_of(tx: AsyncSession, assistant_ids: list[int], limit: int = 100) -> list[Dialog]:
    """Waiting dialogs of these assistants, longest waiting first."""
    query = (select(Dialog).where(Dialog.handoff_status == "requested", Dialog.status == "open",
                                  Dialog.assistant_id.in_(assistant_ids))
             .order_by(Dialog.requested_at, Dialog.id).limit(limit))
    return list((await tx.execute(query)).scalars())


async def expired_transfers(tx: AsyncSession, before: datetime) -> list[Dialog]:
    query = select(Dialog).where(Dialog.transfer_to.is_not(None), Dialog.transfer_at < before).limit(100)
    return list((await tx.execute(query)).scalars())


async def first_visitor_texts(tx: AsyncSession, dialog_ids: list[int]) -> dict[int, str]:
    """Each dialog's first visitor message: the queue's preview."""
    if not dialog_ids:
        return {}
    first = (select(func.min(DialogMessage.id)).where(DialogMessage.dialog_id.in_(dialog_ids),
                                                      DialogMessage.sender == "visitor")
             .group_by(DialogMessage.dialog_id))
    query = select(DialogMessage.dialog_id, DialogMessage.text).where(DialogMessage.id.in_(first))
    return dict((await tx.execute(query)).all())



# --- bots connected ------------------------------------------------------------------------

async def bot_seen(tx: AsyncSession, assistant_id: int, instance_id: str) -> None:
    now = utcnow()
    result = await tx.execute(update(AssistantBot).where(AssistantBot.assistant_id == assistant_id,
                                                         AssistantBot.instance_id == instance_id)
                              .values(seen_at=now))
    if result.rowcount == 0:
        await insert_once(tx, AssistantBot(assistant_id=assistant_id, instance_id=instance_id, seen_at=now))


async def bot_gone(tx: AsyncSession, assistant_id: int, instance_id: str) -> None:
    await tx.execute(delete(AssistantBot).where(AssistantBot.assistant_id == assistant_id,
                                                AssistantBot.instance_id == instance_id))


async def bots_seen_since(tx: AsyncSession, assistant_id: int, since: datetime) -> bool:
    query = select(AssistantBot.instance_id).where(AssistantBot.assistant_id == assistant_id,
                                                   AssistantBot.seen_at > since).limit(1)
    return (await tx.execute(query)).first() is not None


async def forget_bots_before(tx: AsyncSession, before: datetime) -> None:
    await tx.execute(delete(AssistantBot).where(AssistantBot.seen_at < before))
