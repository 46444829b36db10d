"""User accounts and refresh tokens."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import ForeignKey, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, aware, insert_once, utcnow


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20), default="user")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def display_name(self) -> str:
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or self.email.split("@", 1)[0]


class RefreshToken(Base):
    """One row per issued refresh token. A rotated token is revoked; presenting a
    revoked one revokes its whole family (it was stolen or replayed)."""

    __tablename__ = "refresh_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(64), index=True)
    access_jti: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class EmailTaken(Exception):
    pass


async def create_user(
    tx: AsyncSession, *, email: str, password_hash: str, role: str = "user",
    first_name: str | None = None, last_name: str | None = None,
) -> User:
    user = User(email=email.lower(), password_hash=password_hash, role=role,
                first_name=first_name, last_name=last_name)
    if not await insert_once(tx, user):
        raise EmailTaken(email)
    return user


async def by_email(tx: AsyncSession, email: str) -> User | None:
    return (await tx.execute(select(User).where(User.email == email.lower()))).scalar_one_or_none()


async def get(tx: AsyncSession, user_id: int) -> User | None:
    return await tx.get(User, user_id)


async def lock(tx: AsyncSession, user_id: int) -> None:
    """Serialize this transaction with any other that locks the same user (a row
    lock on PostgreSQL; SQLite runs one writer at a time anyway)."""
    await tx.execute(select(User.id).where(User.id == user_id).with_for_update())


async def by_ids(tx: AsyncSession, ids: Iterable[int]) -> dict[int, User]:
    ids = list(set(ids))
    if not ids:
        return {}
    rows = (await tx.execute(select(User).where(User.id.in_(ids)))).scalars()
    return {u.id: u for u in rows}


async def add_refresh(tx: AsyncSession, *, jti: str, user_id: int, family: str,
                      access_jti: str, expires_at: datetime) -> None:
    tx.add(RefreshToken(jti=jti, user_id=user_id, family=family, access_jti=access_jti,
                        expires_at=expires_at))
    await tx.flush()


async def get_refresh(tx: AsyncSession, jti: str, *, for_update: bool = False) -> RefreshToken | None:
    query = select(RefreshToken).where(RefreshToken.jti == jti)
    if for_update:
        query = query.with_for_update()
    return (await tx.execute(query)).scalar_one_or_none()


async def revoke_refresh(tx: AsyncSession, *, jti: str | None = None, family: str | None = None,
                         access_jti: str | None = None) -> list[str]:
    """Revoke matching live refresh tokens; returns the access jtis paired with them."""
    cond = RefreshToken.revoked_at.is_(None)
    if jti:
        cond &= RefreshToken.jti == jti
    if family:
        cond &= RefreshToken.family == family
    if access_jti:
        cond &= RefreshToken.access_jti == access_jti
    rows = (await tx.execute(select(RefreshToken.access_jti).where(cond))).scalars().all()
    await tx.execute(update(RefreshToken).where(cond).values(revoked_at=utcnow()))
    return list(rows)


async def family_access(tx: AsyncSession, family: str, *, refresh_ttl: int,
                        access_ttl: int) -> list[tuple[str, int]]:
    """(access jti, expiry) of the access tokens issued in a refresh family that may
    still be live: each was issued with a refresh token, `refresh_ttl` before that
    one's expiry, and lives `access_ttl`."""
    issued_after = utcnow() - timedelta(seconds=access_ttl)
    cond = (RefreshToken.family == family) & (
        RefreshToken.expires_at > issued_after + timedelta(seconds=refresh_ttl))
    rows = (await tx.execute(select(RefreshToken.access_jti, RefreshToken.expires_at).where(cond))).all()
    return [(jti, int(aware(exp).timestamp()) - refresh_ttl + access_ttl) for jti, exp in rows]
