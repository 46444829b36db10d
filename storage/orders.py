"""Orders: items, totals, the status machine's stored state, idempotency keys."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (JSON, BigInteger, Date, ForeignKey, Index, String, UniqueConstraint, and_, func, or_, select,
                        update)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, aware, insert_once, utcnow


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # One order per customer and idempotency key, even under concurrent retries.
        UniqueConstraint("customer_id", "client_order_id", name="uq_orders_customer_client_order"),
        Index("ix_orders_status_id", "status", "id"),
        Index("ix_orders_customer_id_id", "customer_id", "id"),
        # A customer's `sync`: their orders in (updated_at, id) order (migration 0006).
        Index("ix_orders_customer_id_updated_at_id", "customer_id", "updated_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Derived from the id after insert, so unique across every instance.
    order_number: Mapped[str | None] = mapped_column(String(40), unique=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    items: Mapped[list] = mapped_column(JSON)
    total_krw: Mapped[int] = mapped_column(BigInteger)
    billing_address: Mapped[object] = mapped_column(JSON)
    shipping_address: Mapped[object] = mapped_column(JSON)
    tracking_number: Mapped[str | None] = mapped_column(String(100))
    estimated_delivery: Mapped[date | None] = mapped_column(Date)
    client_order_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class DuplicateClientOrderId(Exception):
    """The customer already has an order with this client_order_id."""


def order_number(order_id: int, created_at: datetime) -> str:
    return f"ORD-{aware(created_at):%Y%m%d}-{order_id:06d}"


async def create(tx: AsyncSession, *, customer_id: int, items: list[dict], total_krw: int,
                 billing_address, shipping_address, client_order_id: str | None) -> Order:
    now = utcnow()
    order = Order(customer_id=customer_id, status="pending", items=items, total_krw=total_krw,
                  billing_address=billing_address, shipping_address=shipping_address,
                  client_order_id=client_order_id, created_at=now, updated_at=now)
    if not await insert_once(tx, order):
        raise DuplicateClientOrderId(client_order_id)
    order.order_number = order_number(order.id, now)
    await tx.flush()
    return order


async def by_client_order_id(tx: AsyncSession, customer_id: int, client_order_id: str) -> Order | None:
    query = select(Order).where(Order.customer_id == customer_id, Order.client_order_id == client_order_id)
    return (await tx.execute(query)).scalar_one_or_none()


async def get(tx: AsyncSession, order_id: int) -> Order | None:
    return await tx.get(Order, order_id)


async def change_status(tx: AsyncSession, order: Order, *, expected: str, status: str,
                        tracking_number: str | None, estimated_delivery: date | None) -> bool:
    """Move the order from `expected` to `status`; False if another request changed
    its status first (the compare-and-set keeps concurrent updates from both winning)."""
    values: dict = {"status": status, "updated_at": utcnow()}
    if tracking_number is not None:
        values["tracking_number"] = tracking_number
    if estimated_delivery is not None:
        values["estimated_delivery"] = estimated_delivery
    result = await tx.execute(
        update(Order).where(Order.id == order.id, Order.status == expected).values(**values)
    )
    if result.rowcount != 1:
        return False
    await tx.refresh(order)
    return True


async def page(tx: AsyncSession, *, customer_id: int | None, status: str | None,
               limit: int, offset: int) -> tuple[list[Order], int]:
    """Orders newest first, optionally of one customer and/or in one status."""
    cond = []
    if customer_id is not None:
        cond.append(Order.customer_id == customer_id)
    if status is not None:
        cond.append(Order.status == status)
    total = int((await tx.execute(select(func.count()).select_from(Order).where(*cond))).scalar_one())
    query = select(Order).where(*cond).order_by(Order.id.desc()).limit(limit).offset(offset)
    return list((await tx.execute(query)).scalars()), total


async def changed_since(tx: AsyncSession, customer_id: int | None, moment: datetime, ident: int,
                        limit: int) -> list[Order]:
    """Orders created or changed after (moment, ident), in (updated_at, id) order; at
    most `limit`. Only one customer's when `customer_id` is given (None: every order)."""
    cond = [or_(Order.updated_at > moment, and_(Order.updated_at == moment, Order.id > ident))]
    if customer_id is not None:
        cond.append(Order.customer_id == customer_id)
    query = select(Order).where(*cond).order_by(Order.updated_at, Order.id).limit(limit)
    return list((await tx.execute(query)).scalars())
