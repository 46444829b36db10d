"""Passwords, tokens, and turning a token into an Actor at the edge."""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from handlers.context import Actor
from handlers.errors import Unauthorized
from hub.backends.revocations import RevokedTokens

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not a password")

ALGORITHM = "HS256"
ROLES = ("user", "operator", "admin", "service", "visitor")


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, stored: str | None) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


@dataclass(frozen=True)
class Issued:
    token: str
    jti: str
    expires_at: int


class Tokens:
    """Issues and checks the hub's JWTs (HS256, one shared secret).

    `typ` is `access` (users and staff, short-lived), `refresh`, `service` (backends
    and bots) or `visitor` (a widget visitor, scoped to one dialog)."""

    def __init__(self, secret: str, *, access_ttl: int, refresh_ttl: int, service_ttl: int):
        self.secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.service_ttl = service_ttl

    def _issue(self, typ: str, ttl: int, claims: dict) -> Issued:
        now = int(time.time())
        jti = secrets.token_hex(16)
        payload = {"typ": typ, "jti": jti, "iat": now, "exp": now + ttl, **claims}
        return Issued(jwt.encode(payload, self.secret, algorithm=ALGORITHM), jti, now + ttl)

    def access(self, user_id: int, role: str) -> Issued:
        return self._issue("access", self.access_ttl, {"sub": str(user_id), "role": role})

    def refresh(self, user_id: int, family: str) -> Issued:
        return self._issue("refresh", self.refresh_ttl, {"sub": str(user_id), "fam": family})

    def service(self, name: str, assistant_id: int | None = None) -> Issued:
        claims = {"sub": f"service:{name}", "role": "service", "name": name}
        if assistant_id is not None:
            claims["aid"] = assistant_id
        return self._issue("service", self.service_ttl, claims)

    def visitor(self, dialog_id: int, assistant_id: int, visitor_id: str, ttl: int) -> Issued:
        claims = {"sub": f"visitor:{visitor_id}", "role": "visitor", "did": dialog_id,
                  "aid": assistant_id, "vid": visitor_id}
        return self._issue("visitor", ttl, claims)

    def decode(self, token: str, *, typ: str | tuple[str, ...]) -> dict:
        """The verified claims of a token of the given type(s), or Unauthorized."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "jti", "typ", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        allowed = (typ,) if isinstance(typ, str) else typ
        if claims.get("typ") not in allowed:
            raise Unauthorized("wrong kind of token")
        return claims


def actor_of(claims: dict) -> Actor:
    typ = claims["typ"]
    common = dict(jti=claims["jti"], expires_at=claims["exp"])
    if typ == "access":
        role = claims.get("role", "user")
        if role not in ("user", "operator", "admin"):
            raise Unauthorized("invalid token")
        return Actor(role=role, id=int(claims["sub"]), **common)
    if typ == "service":
        return Actor(role="service", name=claims.get("name"), assistant_id=claims.get("aid"), **common)
    if typ == "visitor":
        return Actor(role="visitor", dialog_id=claims["did"], assistant_id=claims["aid"],
                     visitor_id=claims["vid"], **common)
    raise Unauthorized("invalid token")


class Authenticator:
    """Token -> Actor, refusing revoked tokens. Used by every edge (HTTP, Socket.IO)."""

    def __init__(self, tokens: Tokens, revoked: RevokedTokens):
        self.tokens = tokens
        self.revoked = revoked

    async def actor(self, token: str | None) -> Actor:
        if not token:
            raise Unauthorized("missing token")
        claims = self.tokens.decode(token, typ=("access", "service", "visitor"))
        if await self.revoked.is_revoked(claims["jti"]):
            raise Unauthorized("token revoked")
        return actor_of(claims)
