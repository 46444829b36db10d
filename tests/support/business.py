"""Helpers of the /orders, /notifications, publish and AsyncAPI tests: real staff
accounts and service tokens, made the way an operator of the hub would."""
from __future__ import annotations

import secrets

from sqlalchemy import update

from hub.auth import Tokens
from storage import users
from tests.support.servers import SECRET

ITEMS = [{"product_id": 1, "quantity": 2, "price_krw": 15000}, {"product_id": 7, "quantity": 1, "price_krw": 990}]


def order_input(**overrides) -> dict:
    return {"items": ITEMS, "billing_address": "Seoul, Gangnam-gu 1", "shipping_address": "Seoul, Mapo-gu 2",
            **overrides}


async def staff(server, api, role: str = "operator") -> dict:
    """A registered account promoted to a staff role in the database (as
    `hub users create --role` does), logged in: its token carries the role."""
    email = f"{role}{secrets.token_hex(4)}@example.com"
    login = await api.user(email)
    async with server.hub.db.transaction() as tx:
        await tx.execute(update(users.User).where(users.User.id == login["user"]["id"]).values(role=role))
    status, body = await api.request("POST", "/auth/login", json={"email": email, "password": "password123"})
    assert status == 200 and body["user"]["role"] == role, body
    return body


def tokens() -> Tokens:
    """Tokens signed with the test secret, as `hub token issue` would print them."""
    return Tokens(SECRET, access_ttl=900, refresh_ttl=3600, service_ttl=3600)


def service_token(name: str = "billing") -> str:
    return tokens().service(name).token
