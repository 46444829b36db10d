"""Auth routes (CONTRACT §4): register, login, refresh with rotation, logout, me."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from aiohttp import web

from handlers.errors import Conflict, Forbidden, RateLimited, Unauthorized
from handlers.schema import Input, Output, Text
from hub.auth import hash_password, verify_password
from hub.adapters.http.common import HUB, rate_limit, read_json, request_actor, validate
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


def account_key(email: str) -> str:
    """The back-off key of an account's logins (a digest: no address in Redis keys)."""
    return "login-account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


async def login(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    settings = hub.settings
    await rate_limit(request, "login", settings.login_per_minute)
    body = validate(LoginIn, await read_json(request))
    # Per account too: guessing one account's password from many addresses (or
    # instances) backs off exponentially. Unknown emails count alike, so the answer
    # tells nothing about which accounts exist.
    account = account_key(body.email)
    wait = await hub.state.locked(account)
    if wait:
        raise RateLimited(f"too many failed logins for this account; retry in {wait}s", retry_after=wait)
    async with hub.db.transaction() as tx:
        user = await users.by_email(tx, body.email)
    if not await verify_password(body.password, user.password_hash if user else None):
        await hub.state.failed(account, settings.login_free_failures, settings.login_backoff_max)
        raise Unauthorized("wrong email or password")
    await hub.state.forgive(account)
    async with hub.db.transaction() as tx:
        pair = await _issue_pair(hub, tx, user, secrets.token_hex(16))
    return web.json_response(pair)


async def refresh(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    body = validate(RefreshIn, await read_json(request))
    claims = hub.tokens.decode(body.refresh_token, typ="refresh")
    reused: list[tuple[str, int]] | None = None
    async with hub.db.transaction() as tx:
        row = await users.get_refresh(tx, claims["jti"], for_update=True)
        if row is None:
            raise Unauthorized("unknown refresh token")
        if row.revoked_at is not None:
            # A rotated token came back: someone kept a copy. End the whole family,
            # with every access token issued in it that may still be live.
            await users.revoke_refresh(tx, family=row.family)
            reused = await users.family_access(tx, row.family, refresh_ttl=hub.tokens.refresh_ttl,
                                               access_ttl=hub.tokens.access_ttl)
        else:
            await users.revoke_refresh(tx, jti=row.jti)
            user = await users.get(tx, row.user_id)
            if user is None:
                raise Unauthorized("unknown user")
            pair = await _issue_pair(hub, tx, user, row.family)
    if reused is not None:
        await hub.revocations.revoke_many(reused)
        raise Unauthorized("refresh token already used; the session was ended")
    return web.json_response(pair)


async def logout(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    actor = await request_actor(request)
    body = validate(LogoutIn, await read_json(request)) if request.can_read_body else LogoutIn()
    async with hub.db.transaction() as tx:
        await users.revoke_refresh(tx, access_jti=actor.jti)
        if body.refresh_token:
            claims = hub.tokens.decode(body.refresh_token, typ="refresh")
            if claims["sub"] == str(actor.id):
                await users.revoke_refresh(tx, jti=claims["jti"])
    await hub.revocations.revoke(actor.jti, actor.expires_at)
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
