"""Settings, built once from the environment and passed down.

Nothing else in the project reads the environment.
"""
from __future__ import annotations

import logging
import difflib
import os
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

log = logging.getLogger("hub.settings")


class SettingsError(Exception):
    """The environment asks for something the hub refuses to run with."""


class _Env(Mapping[str, str]):
    """The environment as `from_env` reads it: remembers which names were read (the
    others are unknown) and collects every bad value, so one start reports them all."""

    def __init__(self, env: Mapping[str, str]):
        self._env, self.read, self.errors = env, set(), []

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._env[name]

    def __iter__(self):
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)

    def get(self, name, default=None):
        self.read.add(name)
        return self._env.get(name, default)


def _refuse(env: Mapping[str, str], message: str) -> None:
    """Collect the problem when reading for `from_env`, raise it otherwise."""
    if isinstance(env, _Env):
        env.errors.append(message)
        return
    raise SettingsError(message)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        _refuse(env, f"{name} must be an integer, got {raw!r}")
        return default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        _refuse(env, f"{name} must be a number, got {raw!r}")
        return default


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in TRUE or raw in FALSE:
        return raw in TRUE
    _refuse(env, f"{name} must be one of {'/'.join(TRUE + FALSE)}, got {raw!r}")
    return default


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    _refuse(env, f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return default


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        _refuse(env, f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
                     f"got {_masked_url(raw)!r}")
        return None
    return raw


def _redis_url(env: Mapping[str, str]) -> str | None:
    """Redis (redis://, rediss://, unix://) or a Redis Cluster (redis+cluster://
    host:port,host:port...), whose node list is checked here rather than at the
    first connect."""
    url = _url(env, "HUB_REDIS_URL", ("redis", "rediss", "unix", "redis+cluster"))
    if url and url.lower().startswith("redis+cluster://"):
        from hub.backends.redis import cluster_nodes

        try:
            cluster_nodes(url)
        except ValueError as exc:
            _refuse(env, f"HUB_REDIS_URL: {exc} (in {_masked_url(url)!r})")
            return None
    return url


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    raw = env.get(name)
    if not raw:
        return None
    origins = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+/?", origin):
            _refuse(env, f"{name}: {origin!r} is not an origin (scheme://host[:port], no path), nor *")
    return origins


def _masked_url(url: str) -> str:
    """The URL with its password, if any, replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Names read outside the hub: the test suite's.
_NOT_SETTINGS = ("HUB_TEST_",)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None = None
    redis_prefix: str = "hub"
    # On Redis: each instance reads only the bus channels of the rooms it has a socket
    # in. Off: one channel that every instance reads whole (what instances of an
    # earlier version expect: turn it off to roll an upgrade over them).
    bus_per_room: bool = True
    jwt_secret: str | None = None
    cors_origins: tuple[str, ...] | None = None
    log_level: str = "INFO"
    log_format: str = "text"
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
    # Per account, across addresses and instances: after this many failed logins in
    # a row each further one locks the account's logins for 1 s, 2 s, 4 s, ...
    login_free_failures: int = 5
    login_backoff_max: int = 900
    # Operations per user (service, visitor) over all sockets, HTTP routes and
    # instances: user_op_limit in any user_op_window seconds (docs/security.md).
    user_op_limit: int = 600
    user_op_window: int = 10
    # Attachment quotas per user over the last 24 hours, and the age at which an
    # upload never attached to a message is removed (seconds).
    attachments_per_day: int = 200
    attachment_bytes_per_day: int = 500 * 1024 * 1024
    orphan_attachment_age: float = 24 * 3600.0
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
    # The Socket.IO Admin UI (/admin namespace, /admin-ui/ page; docs/operations.md).
    admin_ui: bool = False
    # Seconds between two runs of the /sns scheduler (publishes due scheduled posts).
    scheduler_interval: float = 1.0
    # Operator presence and handoff (docs/handoff.md): a console is live while it
    # heartbeats within presence_timeout; an operator with no live console turns
    # offline presence_grace seconds later, and their dialogs are requeued
    # requeue_delay seconds after that.
    presence_timeout: float = 60.0
    presence_grace: float = 10.0
    # Users' presence in /chat (same grace): changes are looked at and announced
    # together every this many seconds (a batch; a reload within it is never seen).
    user_presence_batch: float = 0.5
    requeue_delay: float = 0.0
    max_active_chats: int = 5
    handoff_threshold: float = 0.7
    widget_sessions_per_minute: int = 20
    visitor_token_ttl: int = 7 * 24 * 3600
    # Seconds an Engine.IO session may stay without a namespace (none joined yet, or
    # it left its last one) before it is closed.
    connect_timeout: float = 45.0
    # Seconds a request body may take to arrive in full; then the connection is closed (0: off).
    body_timeout: float = 60.0
    # Concurrent requests and websockets of one client address (HUB_TRUST_PROXY
    # decides what the address is); more are answered `rate_limited` (0: off).
    max_connections_per_address: int = 256
    # When set, GET /metrics needs `Authorization: Bearer <this>`.
    metrics_token: str | None = None
    # Seconds from SIGTERM to the process's end, whatever hangs (hub/shutdown.py).
    shutdown_timeout: float = 15.0
    # A transfer offered to an operator returns to its holder after this many seconds.
    transfer_timeout: float = 60.0
    # Widget sessions a native app may start per app key and minute (docs/handoff.md).
    app_key_sessions_per_minute: int = 60
    # Streamed bot replies: at most this many characters in one (the in-flight
    # buffer's bound), and a stream without a delta this long (seconds) ends.
    stream_max_chars: int = 4000
    stream_timeout: float = 30.0
    instance_id: str = field(default_factory=lambda: secrets.token_hex(6))
    # What from_env noticed but did not refuse (unknown HUB_* names), logged at start.
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = _Env(os.environ if env is None else env)
        data_dir = Path(env.get("HUB_DATA_DIR") or "data").resolve()
        database_url = env.get("HUB_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'hub.db'}"
        if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
            database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]
        if database_url.startswith("sqlite:///"):
            database_url = "sqlite+aiosqlite:///" + database_url[len("sqlite:///"):]
        if not database_url.startswith(("sqlite+aiosqlite:///", "postgresql+asyncpg://")):
            _refuse(env, "HUB_DATABASE_URL must start with sqlite:/// or postgresql://, "
                         f"got {_masked_url(database_url)!r}")
        settings = cls(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=_redis_url(env),
            redis_prefix=env.get("HUB_REDIS_PREFIX") or "hub",
            bus_per_room=_bool(env, "HUB_BUS_PER_ROOM", True),
            jwt_secret=env.get("HUB_JWT_SECRET") or None,
            cors_origins=_origins(env, "HUB_CORS_ORIGINS"),
            log_level=_choice(env, "HUB_LOG_LEVEL", "INFO", LOG_LEVELS),
            log_format=_choice(env, "HUB_LOG_FORMAT", "text", ("text", "json")),
            access_token_ttl=_int(env, "HUB_ACCESS_TOKEN_TTL", 15 * 60),
            refresh_token_ttl=_int(env, "HUB_REFRESH_TOKEN_TTL", 30 * 24 * 3600),
            service_token_ttl=_int(env, "HUB_SERVICE_TOKEN_TTL", 365 * 24 * 3600),
            max_payload_bytes=_int(env, "HUB_MAX_PAYLOAD_BYTES", 64 * 1024),
            max_message_chars=_int(env, "HUB_MAX_MESSAGE_CHARS", 4000),
            max_attachment_bytes=_int(env, "HUB_MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024),
            event_rate=_float(env, "HUB_EVENT_RATE", 20.0),
            event_burst=_int(env, "HUB_EVENT_BURST", 40),
            register_per_minute=_int(env, "HUB_REGISTER_PER_MINUTE", 5),
            login_per_minute=_int(env, "HUB_LOGIN_PER_MINUTE", 10),
            login_free_failures=_int(env, "HUB_LOGIN_FREE_FAILURES", 5),
            login_backoff_max=_int(env, "HUB_LOGIN_BACKOFF_MAX", 900),
            user_op_limit=_int(env, "HUB_USER_OP_LIMIT", 600),
            user_op_window=_int(env, "HUB_USER_OP_WINDOW", 10),
            attachments_per_day=_int(env, "HUB_ATTACHMENTS_PER_DAY", 200),
            attachment_bytes_per_day=_int(env, "HUB_ATTACHMENT_BYTES_PER_DAY", 500 * 1024 * 1024),
            orphan_attachment_age=_float(env, "HUB_ORPHAN_ATTACHMENT_AGE", 24 * 3600.0),
            trust_proxy=_bool(env, "HUB_TRUST_PROXY", False),
            recovery_window=_float(env, "HUB_RECOVERY_WINDOW", 120.0),
            max_replay=_int(env, "HUB_MAX_REPLAY", 10000),
            published_retention=_float(env, "HUB_PUBLISHED_RETENTION", 7 * 24 * 3600.0),
            ws_compression=_bool(env, "HUB_WS_COMPRESSION", False),
            admin_ui=_bool(env, "HUB_ADMIN_UI", False),
            scheduler_interval=_float(env, "HUB_SCHEDULER_INTERVAL", 1.0),
            presence_timeout=_float(env, "HUB_PRESENCE_TIMEOUT", 60.0),
            presence_grace=_float(env, "HUB_PRESENCE_GRACE", 10.0),
            user_presence_batch=_float(env, "HUB_USER_PRESENCE_BATCH", 0.5),
            requeue_delay=_float(env, "HUB_REQUEUE_DELAY", 0.0),
            max_active_chats=_int(env, "HUB_MAX_ACTIVE_CHATS", 5),
            handoff_threshold=_float(env, "HUB_HANDOFF_THRESHOLD", 0.7),
            widget_sessions_per_minute=_int(env, "HUB_WIDGET_SESSIONS_PER_MINUTE", 20),
            visitor_token_ttl=_int(env, "HUB_VISITOR_TOKEN_TTL", 7 * 24 * 3600),
            connect_timeout=_float(env, "HUB_CONNECT_TIMEOUT", 45.0),
            body_timeout=_float(env, "HUB_BODY_TIMEOUT", 60.0),
            max_connections_per_address=_int(env, "HUB_MAX_CONNECTIONS_PER_ADDRESS", 256),
            metrics_token=env.get("HUB_METRICS_TOKEN") or None,
            shutdown_timeout=_float(env, "HUB_SHUTDOWN_TIMEOUT", 15.0),
            transfer_timeout=_float(env, "HUB_TRANSFER_TIMEOUT", 60.0),
            app_key_sessions_per_minute=_int(env, "HUB_APP_KEY_SESSIONS_PER_MINUTE", 60),
            stream_max_chars=_int(env, "HUB_STREAM_MAX_CHARS", 4000),
            stream_timeout=_float(env, "HUB_STREAM_TIMEOUT", 30.0),
        )
        return settings._checked(env)

    def _checked(self, env: _Env) -> "Settings":
        """Refuse every bad value at once (one line each), and keep a warning for each
        HUB_* name that nothing read (a misspelling, most likely)."""
        errors = list(env.errors)
        for name, (low, high, strict) in LIMITS.items():
            value = getattr(self, name)
            if value < low or (strict and value == low) or (high is not None and value > high):
                wanted = (f"greater than {low}" if strict else f"at least {low}") + \
                    (f" and at most {high}" if high is not None else "")
                errors.append(f"HUB_{name.upper()} must be {wanted}, got {value}")
        if errors:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(errors))
        unknown = []
        for name in sorted(set(env) - env.read):
            if name.startswith("HUB_") and not name.startswith(_NOT_SETTINGS):
                close = difflib.get_close_matches(name, sorted(env.read), n=1)
                unknown.append(f"unknown setting {name} ignored" + (f" (did you mean {close[0]}?)" if close else ""))
        return replace(self, warnings=tuple(unknown))

    def effective(self) -> dict[str, str]:
        """Every setting as `HUB_NAME: value`, secrets masked (`hub config`)."""
        shown = {}
        for f in fields(self):
            if f.name in ("warnings", "instance_id"):
                continue
            value = getattr(self, f.name)
            if f.name == "jwt_secret":
                value = "*** (set)" if value else "(not set: generated on first start)"
            elif f.name in ("database_url", "redis_url") and value:
                value = _masked_url(value)
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            shown[f"HUB_{f.name.upper()}"] = "" if value is None else str(value)
        return shown

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


# Bounds of the numeric settings: field -> (low, high or None, low itself refused).
# Limits, rates, TTLs and intervals must be positive; a zero TTL or rate would make
# the hub refuse everything, a negative one is a typo.
POSITIVE, NOT_NEGATIVE = (0, None, True), (0, None, False)
LIMITS: dict[str, tuple[float, float | None, bool]] = {
    "access_token_ttl": POSITIVE,
    "refresh_token_ttl": POSITIVE,
    "service_token_ttl": POSITIVE,
    "visitor_token_ttl": POSITIVE,
    "max_payload_bytes": POSITIVE,
    "max_message_chars": POSITIVE,
    "max_attachment_bytes": POSITIVE,
    "event_rate": POSITIVE,
    "event_burst": POSITIVE,
    "register_per_minute": POSITIVE,
    "login_per_minute": POSITIVE,
    "widget_sessions_per_minute": POSITIVE,
    "scheduler_interval": POSITIVE,
    "presence_timeout": POSITIVE,
    "max_active_chats": POSITIVE,
    "recovery_window": NOT_NEGATIVE,  # 0: recovery off
    "max_replay": POSITIVE,
    "published_retention": POSITIVE,
    "presence_grace": NOT_NEGATIVE,
    "user_presence_batch": POSITIVE,
    "requeue_delay": NOT_NEGATIVE,
    "handoff_threshold": (0, 1, False),
    "login_free_failures": POSITIVE,
    "login_backoff_max": POSITIVE,
    "connect_timeout": POSITIVE,
    "body_timeout": NOT_NEGATIVE,  # 0: off
    "max_connections_per_address": NOT_NEGATIVE,  # 0: off
    "shutdown_timeout": POSITIVE,
    "user_op_limit": POSITIVE,
    "user_op_window": POSITIVE,
    "attachments_per_day": POSITIVE,
    "attachment_bytes_per_day": POSITIVE,
    "orphan_attachment_age": POSITIVE,
    "transfer_timeout": POSITIVE,
    "app_key_sessions_per_minute": POSITIVE,
    "stream_max_chars": POSITIVE,
    "stream_timeout": POSITIVE,
}
