"""Durable token records: every revoked token id (the truth every instance's
revocation cache is loaded from) and every issued service/bot token (so that an
operator can list and revoke them)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, aware, insert_once, utcnow


class RevokedToken(Base):
    """A token id refused until the token would have expired anyway; pruned after."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ServiceToken(Base):
    """A service token issued by `hub token issue` (a bot's when `assistant_id` is set)."""

    __tablename__ = "service_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    assistant_id: Mapped[int | None] = mapped_column(BigId)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


async def revoke(tx: AsyncSession, jti: str, expires_at: datetime) -> bool:
    """Record the revocation; False if the token was already revoked."""
    return await insert_once(tx, RevokedToken(jti=jti, expires_at=expires_at, revoked_at=utcnow()))


async def revoked_since(tx: AsyncSession, since: datetime | None) -> list[tuple[str, datetime]]:
    """(jti, expires_at) of the unexpired revocations recorded at or after `since`
    (all of them when None)."""
    query = select(RevokedToken.jti, RevokedToken.expires_at).where(RevokedToken.expires_at > utcnow())
    if since is not None:
        query = query.where(RevokedToken.revoked_at >= since)
    return [(jti, aware(exp)) for jti, exp in (await tx.execute(query)).all()]


async def prune(tx: AsyncSession) -> None:
    """Forget revocations of tokens that have expired: they are refused anyway."""
    await tx.execute(delete(RevokedToken).where(RevokedToken.expires_at <= utcnow()))


async def add_service(tx: AsyncSession, *, jti: str, name: str, assistant_id: int | None,
                      expires_at: datetime) -> None:
    tx.add(ServiceToken(jti=jti, name=name, assistant_id=assistant_id, expires_at=expires_at))
    await tx.flush()


async def get_service(tx: AsyncSession, jti: str) -> ServiceToken | None:
    return await tx.get(ServiceToken, jti)


async def services(tx: AsyncSession) -> list[tuple[ServiceToken, datetime | None]]:
    """Every issued service token, newest first, with when it was revoked (None: not
    revoked; a revocation is forgotten once the token has expired)."""
    query = (select(ServiceToken, RevokedToken.revoked_at)
             .outerjoin(RevokedToken, RevokedToken.jti == ServiceToken.jti)
             .order_by(ServiceToken.issued_at.desc()))
    return [(row, aware(revoked)) for row, revoked in (await tx.execute(query)).all()]


def expiry(timestamp: int) -> datetime:
    """A token's `exp` claim as a stored timestamp."""
    return datetime.fromtimestamp(timestamp, timezone.utc)


# A revocation written by an instance whose clock runs behind the reader's still
# reaches it: every read looks back this far past the last one.
CLOCK_SKEW = timedelta(seconds=60)
