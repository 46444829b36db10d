"""Helpers of the /dialogs and /operators tests: accounts made in the database the
way `hub users create` does, tokens as `hub token issue` prints them."""
from __future__ import annotations

import secrets

from sqlalchemy import update

from hub.auth import Tokens, hash_password
from storage import users
from tests.support.servers import SECRET

ORIGIN = "https://shop.example"


def tokens() -> Tokens:
    return Tokens(SECRET, access_ttl=3600, refresh_ttl=3600, service_ttl=3600)


async def account(db, role: str = "user") -> tuple[int, str]:
    """A user with `role` in the database, and an access token for them."""
    async with db.transaction() as tx:
        user = await users.create_user(tx, email=f"{role}{secrets.token_hex(5)}@example.com",
                                       password_hash="!", role=role)
    return user.id, tokens().access(user.id, role).token


def bot_token(assistant_id: int, name: str = "bot") -> str:
    return tokens().service(name, assistant_id).token


async def assistant(api, owner_token: str, origins=(ORIGIN,), name: str = "Helper") -> dict:
    status, body = await api.request("POST", "/api/assistants", token=owner_token,
                                     json={"name": name, "allowed_origins": list(origins)})
    assert status == 201, body
    return body


async def widget_session(api, assistant_id: int, origin: str = ORIGIN, visitor_id: str | None = None):
    payload = {"assistant_id": assistant_id}
    if visitor_id:
        payload["visitor_id"] = visitor_id
    return await api.request("POST", "/api/widget/sessions", json=payload, headers={"Origin": origin})


async def visitor(api, assistant_id: int) -> dict:
    status, body = await widget_session(api, assistant_id)
    assert status == 201, body
    return body


async def next_where(client, event: str, pred, timeout: float = 10):
    """The next `event` the client receives that satisfies `pred` (others are skipped)."""
    while True:
        data = await client.next(event, timeout)
        if pred(data):
            return data


async def operator(db, first: str, last: str, password: str) -> tuple[int, str]:
    """An operator with a name and a password (for the console's login form): id, email."""
    op_id, _ = await account(db, "operator")
    email = f"{first.lower()}{op_id}@example.com"
    async with db.transaction() as tx:
        await tx.execute(update(users.User).where(users.User.id == op_id).values(
            email=email, first_name=first, last_name=last, password_hash=await hash_password(password)))
    return op_id, email
