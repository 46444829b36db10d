"""User accounts (CONTRACT §4): register, log in, rotate a refresh token, log out,
the current user. HTTP-only operations (`/auth/...`): a socket already holds a token.

Tokens, password hashing, revocation and the login back-off belong to the hub; an account operation
gets them through the typed ports of its `AccountContext`, filled by the HTTP
adapter (hub/adapters/http/operations.py)."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from handlers import ports
from handlers.context import Context
from handlers.errors import Conflict, Forbidden, RateLimited, Unauthorized
from handlers.registry import Http, operation
from handlers.schema import Input, Output, Text
from storage import users
from storage.base import aware

GROUP = "accounts"
EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"  # no NUL either: see Text


@dataclass(kw_only=True)
class AccountContext(Context):
    tokens: ports.TokenIssuer
    passwords: ports.Passwords
    revocations: ports.Revoker
    limits: ports.Limits  # the login back-off


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


class NoInput(BaseModel):
    """A request without a body; query parameters are ignored."""

    model_config = ConfigDict(extra="ignore")


class UserOut(Output):
    id: int
    email: str
    first_name: str | None
    last_name: str | None
    role: str
    created_at: datetime


class TokenPair(BaseModel):
    """A login or refresh: a new access and refresh token."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: UserOut


class LoggedOut(BaseModel):
    status: str


def user_out(user: users.User) -> UserOut:
    out = UserOut.model_validate(user)
    out.created_at = aware(out.created_at)
    return out


async def _issue_pair(ctx: AccountContext, tx, user: users.User, family: str) -> TokenPair:
    access = ctx.tokens.access(user.id, user.role)
    refresh = ctx.tokens.refresh(user.id, family)
    await users.add_refresh(tx, jti=refresh.jti, user_id=user.id, family=family, access_jti=access.jti,
                            expires_at=datetime.fromtimestamp(refresh.expires_at, timezone.utc))
    return TokenPair(access_token=access.token, refresh_token=refresh.token, token_type="bearer",
                     expires_in=ctx.tokens.access_ttl, user=user_out(user))


@operation(GROUP, "register", socket=False,
           http=Http("POST", "/auth/register", public=True, per_address=("register", "register_per_minute")))
async def register(ctx: AccountContext, body: RegisterIn) -> UserOut:
    """Create a user account."""
    password_hash = await ctx.passwords.hash(body.password)
    async with ctx.db.transaction() as tx:
        try:
            user = await users.create_user(tx, email=body.email, password_hash=password_hash,
                                           first_name=body.first_name, last_name=body.last_name)
        except users.EmailTaken:
            raise Conflict("this email is already registered") from None
    return user_out(user)


def account_key(email: str) -> str:
    """The back-off key of an account's logins (a digest: no address in Redis keys)."""
    return "login-account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


@operation(GROUP, "login", socket=False,
           http=Http("POST", "/auth/login", status=200, public=True, per_address=("login", "login_per_minute")))
async def login(ctx: AccountContext, body: LoginIn) -> TokenPair:
    """Log in: an access and a refresh token."""
    settings = ctx.settings
    # Per account too: guessing one account's password from many addresses (or
    # instances) backs off exponentially. Unknown emails count alike, so the answer
    # tells nothing about which accounts exist.
    account = account_key(body.email)
    wait = await ctx.limits.locked(account)
    if wait:
        raise RateLimited(f"too many failed logins for this account; retry in {wait}s", retry_after=wait)
    async with ctx.db.transaction() as tx:
        user = await users.by_email(tx, body.email)
    if not await ctx.passwords.verify(body.password, user.password_hash if user else None):
        await ctx.limits.failed(account, settings.login_free_failures, settings.login_backoff_max)
        raise Unauthorized("wrong email or password")
    await ctx.limits.forgive(account)
    async with ctx.db.transaction() as tx:
        return await _issue_pair(ctx, tx, user, secrets.token_hex(16))


@operation(GROUP, "refresh", socket=False, http=Http("POST", "/auth/refresh", status=200, public=True))
async def refresh(ctx: AccountContext, body: RefreshIn) -> TokenPair:
    """Rotate a refresh token: a new pair."""
    claims = ctx.tokens.decode(body.refresh_token, typ="refresh")
    reused: list[tuple[str, int]] | None = None
    async with ctx.db.transaction() as tx:
        row = await users.get_refresh(tx, claims["jti"], for_update=True)
        if row is None:
            raise Unauthorized("unknown refresh token")
        if row.revoked_at is not None:
            # A rotated token came back: someone kept a copy. End the whole family,
            # with every access token issued in it that may still be live.
            await users.revoke_refresh(tx, family=row.family)
            reused = await users.family_access(tx, row.family, refresh_ttl=ctx.tokens.refresh_ttl,
                                               access_ttl=ctx.tokens.access_ttl)
        else:
            await users.revoke_refresh(tx, jti=row.jti)
            user = await users.get(tx, row.user_id)
            if user is None:
                raise Unauthorized("unknown user")
            pair = await _issue_pair(ctx, tx, user, row.family)
    if reused is not None:
        await ctx.revocations.revoke_many(reused)
        raise Unauthorized("refresh token already used; the session was ended")
    return pair


@operation(GROUP, "logout", socket=False, http=Http("POST", "/auth/logout", status=200, spend=False))
async def logout(ctx: AccountContext, body: LogoutIn) -> LoggedOut:
    """Revoke the access token (and its refresh token) everywhere."""
    actor = ctx.actor
    async with ctx.db.transaction() as tx:
        await users.revoke_refresh(tx, access_jti=actor.jti)
        if body.refresh_token:
            claims = ctx.tokens.decode(body.refresh_token, typ="refresh")
            if claims["sub"] == str(actor.id):
                await users.revoke_refresh(tx, jti=claims["jti"])
    await ctx.revocations.revoke(actor.jti, actor.expires_at)
    return LoggedOut(status="logged_out")


@operation(GROUP, "me", socket=False, http=Http("GET", "/auth/me", spend=False))
async def me(ctx: Context, body: NoInput) -> UserOut:
    """The current user."""
    if not ctx.actor.is_user:
        raise Forbidden("only user accounts have a profile")
    async with ctx.db.transaction() as tx:
        user = await users.get(tx, ctx.actor.id)
    if user is None:
        raise Unauthorized("unknown user")
    return user_out(user)
