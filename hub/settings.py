"""Settings, built once from the environment and passed down.

Nothing else in the project reads the environment.
"""
from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

log = logging.getLogger("hub.settings")


class SettingsError(Exception):
    """The environment asks for something the hub refuses to run with."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None = None
    redis_prefix: str = "hub"
    jwt_secret: str | None = None
    cors_origins: tuple[str, ...] | None = None
    log_level: str = "INFO"
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 30 * 24 * 3600
    service_token_ttl: int = 365 * 24 * 3600
    # Application limits: a request larger than max_payload_bytes is answered
    # `payload_too_large`; the transport closes connections only far above it.
    max_payload_bytes: int = 64 * 1024
    max_message_chars: int = 4000
    max_attachment_bytes: int = 10 * 1024 * 1024
    # Per-connection token bucket for client events.
    event_rate: float = 20.0
    event_burst: int = 40
    register_per_minute: int = 5
    login_per_minute: int = 10
    trust_proxy: bool = False
    # How long a disconnected client can come back and get what it missed (0: off).
    recovery_window: float = 120.0
    # Most events one recovering socket may be replayed (its own rooms' events, not
    # the namespace's); more, and it gets a new session and uses `sync`.
    max_replay: int = 10000
    # Seconds an event published through POST /api/publish stays reachable by `sync`.
    published_retention: float = 7 * 24 * 3600.0
    # Websocket permessage-deflate: off by default (per-frame compression costs more
    # CPU than it saves on small events; see docs/performance.md).
    ws_compression: bool = False
    # Seconds between two runs of the /sns scheduler (publishes due scheduled posts).
    scheduler_interval: float = 1.0
    # Operator presence and handoff (docs/handoff.md): a console is live while it
    # heartbeats within presence_timeout; an operator with no live console turns
    # offline presence_grace seconds later, and their dialogs are requeued
    # requeue_delay seconds after that.
    presence_timeout: float = 60.0
    presence_grace: float = 30.0
    requeue_delay: float = 0.0
    max_active_chats: int = 5
    handoff_threshold: float = 0.7
    widget_sessions_per_minute: int = 20
    visitor_token_ttl: int = 7 * 24 * 3600
    instance_id: str = field(default_factory=lambda: secrets.token_hex(6))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("HUB_DATA_DIR") or "data").resolve()
        database_url = env.get("HUB_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'hub.db'}"
        if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
            database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]
        if database_url.startswith("sqlite:///"):
            database_url = "sqlite+aiosqlite:///" + database_url[len("sqlite:///"):]
        cors = env.get("HUB_CORS_ORIGINS")
        cors_origins = None
        if cors:
            cors_origins = tuple(o.strip() for o in cors.split(",") if o.strip())
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=env.get("HUB_REDIS_URL") or None,
            redis_prefix=env.get("HUB_REDIS_PREFIX") or "hub",
            jwt_secret=env.get("HUB_JWT_SECRET") or None,
            cors_origins=cors_origins,
            log_level=(env.get("HUB_LOG_LEVEL") or "INFO").upper(),
            access_token_ttl=_int(env, "HUB_ACCESS_TOKEN_TTL", 15 * 60),
            refresh_token_ttl=_int(env, "HUB_REFRESH_TOKEN_TTL", 30 * 24 * 3600),
            max_payload_bytes=_int(env, "HUB_MAX_PAYLOAD_BYTES", 64 * 1024),
            max_message_chars=_int(env, "HUB_MAX_MESSAGE_CHARS", 4000),
            max_attachment_bytes=_int(env, "HUB_MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024),
            event_rate=_float(env, "HUB_EVENT_RATE", 20.0),
            event_burst=_int(env, "HUB_EVENT_BURST", 40),
            register_per_minute=_int(env, "HUB_REGISTER_PER_MINUTE", 5),
            login_per_minute=_int(env, "HUB_LOGIN_PER_MINUTE", 10),
            trust_proxy=(env.get("HUB_TRUST_PROXY") or "").lower() in ("1", "true", "yes"),
            recovery_window=_float(env, "HUB_RECOVERY_WINDOW", 120.0),
            max_replay=_int(env, "HUB_MAX_REPLAY", 10000),
            published_retention=_float(env, "HUB_PUBLISHED_RETENTION", 7 * 24 * 3600.0),
            ws_compression=(env.get("HUB_WS_COMPRESSION") or "").lower() in ("1", "true", "yes", "on"),
            scheduler_interval=_float(env, "HUB_SCHEDULER_INTERVAL", 1.0),
            presence_timeout=_float(env, "HUB_PRESENCE_TIMEOUT", 60.0),
            presence_grace=_float(env, "HUB_PRESENCE_GRACE", 30.0),
            requeue_delay=_float(env, "HUB_REQUEUE_DELAY", 0.0),
            max_active_chats=_int(env, "HUB_MAX_ACTIVE_CHATS", 5),
            handoff_threshold=_float(env, "HUB_HANDOFF_THRESHOLD", 0.7),
            widget_sessions_per_minute=_int(env, "HUB_WIDGET_SESSIONS_PER_MINUTE", 20),
            visitor_token_ttl=_int(env, "HUB_VISITOR_TOKEN_TTL", 7 * 24 * 3600),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        return Path(self.database_url.split(":///", 1)[1])

    def with_jwt_secret(self) -> "Settings":
        """Return settings whose JWT secret is set, or refuse.

        Several instances (Redis configured) must share one secret, so it has to be
        given. A single instance without one generates it once and keeps it in a file
        only the owner can read, beside the database, so tokens survive restarts.
        """
        if self.jwt_secret:
            if len(self.jwt_secret) < 32:
                raise SettingsError("HUB_JWT_SECRET must be at least 32 characters")
            return self
        if self.redis_url:
            raise SettingsError(
                "HUB_REDIS_URL is set (several instances) but HUB_JWT_SECRET is not: "
                "every instance must share one secret; set HUB_JWT_SECRET"
            )
        folder = self.sqlite_path.parent if self.sqlite_path else self.data_dir
        path = folder / "jwt_secret"
        if path.exists():
            secret = path.read_text().strip()
        else:
            folder.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_urlsafe(48)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret)
            log.warning("HUB_JWT_SECRET is not set: generated one and kept it in %s (mode 600)", path)
            return replace(self, jwt_secret=secret)
        log.info("HUB_JWT_SECRET is not set: using the generated secret in %s", path)
        return replace(self, jwt_secret=secret)
