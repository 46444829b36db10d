"""/orders: customers' orders, the status machine, and billing events that backend
services publish through POST /api/publish."""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from handlers.roles import ACCOUNTS, ACCOUNTS_AND_SERVICES, STAFF_AND_SERVICES
from handlers.context import Actor, Context
from handlers.errors import Conflict, Forbidden, NotFound
from handlers.registry import namespace, operation, server_event
from handlers import sync
from handlers.schema import Id, Input, Output, Page, Paging, Text
from storage import orders as store
from storage.base import aware

ORDERS = "/orders"
STAFF_ROOM = "staff"  # the room of every operator, admin and service socket of /orders
CUSTOMERS = ACCOUNTS  # anyone with an account may buy
SELLERS = STAFF_AND_SERVICES  # who sees every order and moves it on

Status = Literal["pending", "processing", "shipped", "delivered", "cancelled"]

# Allowed moves of the status machine; anything else is a conflict.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"processing", "cancelled"}),
    "processing": frozenset({"shipped", "cancelled"}),
    "shipped": frozenset({"delivered"}),
    "delivered": frozenset(),
    "cancelled": frozenset(),
}


def _staff_rooms(actor: Actor) -> list[str]:
    return [STAFF_ROOM] if actor.role in SELLERS else []


namespace(
    ORDERS,
    "Customers' orders and their status; staff and services see every order.",
    roles=ACCOUNTS_AND_SERVICES,
    connect_rooms=_staff_rooms,
    publish_rooms=(STAFF_ROOM, r"user:\d+"),
)


# --- models ------------------------------------------------------------------

# An address is free text, or an object of text fields ({"line1": ..., "city": ...}).
Address = Union[Text(500, min_length=1), Annotated[dict[Text(50), Text(200)], Field(min_length=1, max_length=20)]]


class Item(Input):
    product_id: Id
    quantity: int = Field(ge=1, le=10_000)
    price_krw: int = Field(ge=0, le=1_000_000_000_000)


class CreateOrder(Input):
    items: list[Item] = Field(min_length=1, max_length=100)
    billing_address: Address
    shipping_address: Address
    client_order_id: Text(100, min_length=1) | None = None


class OrderRef(Input):
    order_id: Id


class ListOrders(Paging):
    status: Status | None = None
    customer_id: Id | None = Field(None, description="staff only: one customer's orders")


class UpdateStatus(OrderRef):
    status: Status
    tracking_number: Text(100, min_length=1) | None = None
    # ISO date ("2026-11-30"); strict=False lets the JSON string through.
    estimated_delivery: date | None = Field(None, strict=False)

    @model_validator(mode="after")
    def _shipping_fields(self):
        if self.status == "shipped" and self.tracking_number is None:
            raise ValueError("shipping an order needs a tracking_number")
        if self.status != "shipped" and (self.tracking_number or self.estimated_delivery):
            raise ValueError("tracking_number and estimated_delivery go with status shipped")
        return self


class ItemOut(Output):
    product_id: int
    quantity: int
    price_krw: int


class OrderOut(Output):
    order_id: int
    order_number: str
    customer_id: int
    status: Status
    items: list[ItemOut]
    total_krw: int
    billing_address: Address
    shipping_address: Address
    tracking_number: str | None
    estimated_delivery: date | None
    client_order_id: str | None
    created_at: datetime
    updated_at: datetime


# --- server events -------------------------------------------------------------

@server_event(ORDERS, "order:created")
class OrderCreated(Output):
    """A new order was placed (to its customer and to staff)."""

    order_id: int
    order_number: str
    customer_id: int
    total_krw: int
    items_count: int
    status: Status
    created_at: datetime


@server_event(ORDERS, "order:updated")
class OrderUpdated(Output):
    """An order changed status (to its customer and to staff)."""

    order_id: int
    order_number: str
    customer_id: int
    status: Status
    previous_status: Status
    updated_at: datetime


@server_event(ORDERS, "order:shipped")
class OrderShipped(Output):
    """An order was shipped (to its customer and to staff), with its tracking number."""

    order_id: int
    order_number: str
    customer_id: int
    tracking_number: str
    estimated_delivery: date | None


@server_event(ORDERS, "invoice:generated", publishable=True)
class InvoiceGenerated(Output):
    """Billing made an invoice for an order."""

    invoice_id: int
    order_id: int
    pdf_url: str = Field(max_length=2000)


@server_event(ORDERS, "invoice:sent", publishable=True)
class InvoiceSent(Output):
    """Billing sent an invoice by email."""

    invoice_id: int
    recipient_email: str = Field(max_length=320)


@server_event(ORDERS, "payment:received", publishable=True)
class PaymentReceived(Output):
    """A payment for an invoice arrived."""

    payment_id: int
    invoice_id: int
    amount_krw: int = Field(ge=0)


@server_event(ORDERS, "subscription:renewed", publishable=True)
class SubscriptionRenewed(Output):
    """A subscription was renewed until its next billing date."""

    subscription_id: int
    next_billing_date: date


@server_event(ORDERS, "refund:initiated", publishable=True)
class RefundInitiated(Output):
    """A refund for an order was started."""

    order_id: int
    amount_krw: int = Field(ge=0)


# --- helpers ---------------------------------------------------------------------

def _out(order: store.Order) -> OrderOut:
    return OrderOut(
        order_id=order.id, order_number=order.order_number, customer_id=order.customer_id,
        status=order.status, items=order.items, total_krw=order.total_krw,
        billing_address=order.billing_address, shipping_address=order.shipping_address,
        tracking_number=order.tracking_number, estimated_delivery=order.estimated_delivery,
        client_order_id=order.client_order_id, created_at=aware(order.created_at),
        updated_at=aware(order.updated_at),
    )


def _sees_all(actor: Actor) -> bool:
    return actor.role in SELLERS


async def _visible(tx, ctx: Context, order_id: int) -> store.Order:
    """The order, if the actor may see it; a customer's view of another's order is not found."""
    order = await store.get(tx, order_id)
    if order is None or (not _sees_all(ctx.actor) and order.customer_id != ctx.actor.id):
        raise NotFound("no such order")
    return order


# --- operations -----------------------------------------------------------------

@operation(ORDERS, "order:create", roles=CUSTOMERS, http=("POST", "/api/orders"))
async def create_order(ctx: Context, req: CreateOrder) -> OrderOut:
    """Place an order for the calling user; the total is computed by the server.
    Repeating a `client_order_id` returns the first order and creates nothing."""
    me = ctx.actor.id
    items = [item.model_dump() for item in req.items]
    total = sum(i["quantity"] * i["price_krw"] for i in items)
    async with ctx.transaction() as tx:
        if req.client_order_id:
            earlier = await store.by_client_order_id(tx, me, req.client_order_id)
            if earlier is not None:
                return _out(earlier)
        try:
            order = await store.create(
                tx, customer_id=me, items=items, total_krw=total,
                billing_address=req.billing_address, shipping_address=req.shipping_address,
                client_order_id=req.client_order_id)
        except store.DuplicateClientOrderId:
            # A concurrent retry of the same request won the race: answer with its order.
            return _out(await store.by_client_order_id(tx, me, req.client_order_id))
        out = _out(order)
        ctx.emit(OrderCreated(order_id=out.order_id, order_number=out.order_number, customer_id=me,
                              total_krw=total, items_count=len(items), status=out.status,
                              created_at=out.created_at),
                 users=[me], rooms=[STAFF_ROOM])
    return out


@operation(ORDERS, "order:get", http=("GET", "/api/orders/{order_id}"))
async def get_order(ctx: Context, req: OrderRef) -> OrderOut:
    """One order: customers may read their own, staff and services any."""
    async with ctx.transaction() as tx:
        return _out(await _visible(tx, ctx, req.order_id))


@operation(ORDERS, "orders:list")
async def list_orders(ctx: Context, req: ListOrders) -> Page[OrderOut]:
    """Orders newest first: a customer's own, or for staff and services every order
    (optionally of one `customer_id`); filterable by `status`."""
    customer = req.customer_id
    if not _sees_all(ctx.actor):
        if customer is not None and customer != ctx.actor.id:
            raise Forbidden("customers see only their own orders")
        customer = ctx.actor.id
    async with ctx.transaction() as tx:
        rows, total = await store.page(tx, customer_id=customer, status=req.status,
                                       limit=req.limit, offset=req.offset)
    return Page[OrderOut](total=total, limit=req.limit, offset=req.offset, items=[_out(o) for o in rows])


@operation(ORDERS, "order:update-status", roles=SELLERS)
async def update_status(ctx: Context, req: UpdateStatus) -> OrderOut:
    """Move an order along pending -> processing -> shipped -> delivered, or cancel
    it while pending or processing. Any other move is a conflict."""
    async with ctx.transaction() as tx:
        order = await _visible(tx, ctx, req.order_id)
        current = order.status
        if req.status not in TRANSITIONS[current]:
            raise Conflict(f"an order cannot go from {current} to {req.status}",
                           details={"status": current, "allowed": sorted(TRANSITIONS[current])})
        moved = await store.change_status(tx, order, expected=current, status=req.status,
                                          tracking_number=req.tracking_number,
                                          estimated_delivery=req.estimated_delivery)
        if not moved:
            raise Conflict("the order's status changed meanwhile; read it again")
        out = _out(order)
        targets = dict(users=[order.customer_id], rooms=[STAFF_ROOM])
        ctx.emit(OrderUpdated(order_id=out.order_id, order_number=out.order_number,
                              customer_id=out.customer_id, status=out.status, previous_status=current,
                              updated_at=out.updated_at), **targets)
        if out.status == "shipped":
            ctx.emit(OrderShipped(order_id=out.order_id, order_number=out.order_number,
                                  customer_id=out.customer_id, tracking_number=out.tracking_number,
                                  estimated_delivery=out.estimated_delivery), **targets)
    return out


@operation(ORDERS, "sync")
async def sync_orders(ctx: Context, req: sync.SyncRequest) -> sync.PublishedSyncPage[OrderOut]:
    """Orders created or changed since a cursor (a customer's own; staff and services
    every order): how a client that was away longer than the recovery window catches
    up. Each item is the order as it is now; apply them by `order_id`. `events`: what
    services published to the caller (or to staff, for staff) meanwhile."""
    since = sync.decode(req.since)
    customer = None if _sees_all(ctx.actor) else ctx.actor.id
    async with ctx.transaction() as tx:
        rows = await store.changed_since(tx, customer, *since, req.limit + 1)
        items = [_out(o) for o in rows]
        published = await sync.published_since(tx, ctx, ORDERS, req.since, req.limit)
    return sync.PublishedSyncPage[OrderOut](**sync.page(rows, items, req.limit, req.since, published))
