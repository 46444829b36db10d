"""Auth routes (CONTRACT §4): register, login, refresh with rotation, logout, me."""
from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from aiohttp import web

from handlers.errors import Conflict, Forbidden, Unauthorized
from handlers.schema import Input, Output, Text
from hub.auth import hash_password, verify_password
from hub.http.common import HUB, rate_limit, read_json, request_actor, validate
from storage import users
from storage.base import aware

EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"  # no NUL either: see Text


class RegisterIn(Input):
    email: Text(320, pattern=EMAIL)
    password: Text(128, min_length=8)
    first_name: Text(100) | None = None
    last_name: Text(100) | None = None


class LoginIn(Input):
    email: Text(320)
    password: Text(128)


class RefreshIn(Input):
    refresh_token: Text(2000)


class LogoutIn(Input):
    refresh_token: Text(2000) | None = None


class UserOut(Output):
    id: int
    email: str
    first_name: str | None
    last_name: str | None
    role: str
    created_at: datetime


def user_out(user: users.User) -> dict:
    out = UserOut.model_validate(user)
    out.created_at = aware(out.created_at)
    return out.model_dump(mode="json")


async def _issue_pair(hub, tx, user: users.User, family: str) -> dict:
    access = hub.tokens.access(user.id, user.role)
    refresh = hub.tokens.refresh(user.id, family)
    await users.add_refresh(tx, jti=refresh.jti, user_id=user.id, family=family, access_jti=access.jti,
                            expires_at=datetime.fromtimestamp(refresh.expires_at, timezone.utc))
    return {
        "access_token": access.token,
        "refresh_token": refresh.token,
        "token_type": "bearer",
        "expires_in": hub.tokens.access_ttl,
        "user": user_out(user),
    }


async def register(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await rate_limit(request, "register", hub.settings.register_per_minute)
    body = validate(RegisterIn, await read_json(request))
    password_hash = await hash_password(body.password)
    async with hub.db.transaction() as tx:
        try:
            user = await users.create_user(tx, email=body.email, password_hash=password_hash,
                                           first_name=body.first_name, last_name=body.last_name)
        except users.EmailTaken:
            raise Conflict("this email is already registered") from None
    return web.json_response(user_out(user), status=201)


async def login(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await rate_limit(request, "login", hub.settings.login_per_minute)
    body = validate(LoginIn, await read_json(request))
    async with hub.db.transaction() as tx:
        user = await users.by_email(tx, body.email)
    if not await verify_password(body.password, user.password_hash if user else None):
        raise Unauthorized("wrong email or password")
    async with hub.db.transaction() as tx:
        pair = await _issue_pair(hub, tx, user, secrets.token_hex(16))
    return web.json_response(pair)


async def refresh(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = validate(RefreshIn, await read_json(request))
    claims = hub.tokens.decode(body.refresh_token, typ="refresh")
    reused: list[str] | None = None
    async with hub.db.transaction() as tx:
        row = await users.get_refresh(tx, claims["jti"], for_update=True)
        if row is None:
            raise Unauthorized("unknown refresh token")
        if row.revoked_at is not None:
            # A rotated token came back: someone kept a copy. End the whole family.
            reused = await users.revoke_refresh(tx, family=row.family)
        else:
            await users.revoke_refresh(tx, jti=row.jti)
            user = await users.get(tx, row.user_id)
            if user is None:
                raise Unauthorized("unknown user")
            pair = await _issue_pair(hub, tx, user, row.family)
    if reused is not None:
        for jti in reused:
            await hub.fanout.revoke(jti, hub.tokens.access_ttl)
        raise Unauthorized("refresh token already used; the session was ended")
    return web.json_response(pair)


async def logout(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    actor = await request_actor(request)
    body = validate(LogoutIn, await read_json(request)) if request.can_read_body else LogoutIn()
    ttl = max(int(actor.expires_at - time.time()), 1)
    async with hub.db.transaction() as tx:
        await users.revoke_refresh(tx, access_jti=actor.jti)
        if body.refresh_token:
            claims = hub.tokens.decode(body.refresh_token, typ="refresh")
            if claims["sub"] == str(actor.id):
                await users.revoke_refresh(tx, jti=claims["jti"])
    await hub.fanout.revoke(actor.jti, ttl)
    return web.json_response({"status": "logged_out"})


async def me(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    actor = await request_actor(request)
    if not actor.is_user:
        raise Forbidden("only user accounts have a profile")
    async with hub.db.transaction() as tx:
        user = await users.get(tx, actor.id)
    if user is None:
        raise Unauthorized("unknown user")
    return web.json_response(user_out(user))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/auth/register", register),
        web.post("/auth/login", login),
        web.post("/auth/refresh", refresh),
        web.post("/auth/logout", logout),
        web.get("/auth/me", me),
    ]
