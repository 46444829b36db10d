"""Logging of a `hub` process: text or JSON lines (HUB_LOG_FORMAT), libraries kept
quiet, and a repeated warning said once per window with the count held back (a
Redis outage would otherwise log the same failure many times a second)."""
from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone

import orjson

from hub.settings import Settings

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has; anything else was passed as `extra=` and goes
# into the JSON line as a field of its own.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class RepeatFilter(logging.Filter):
    """Lets a warning (or worse) through once per `window` seconds per logger and
    message (its text, arguments filled in: the same failure repeated is held back,
    while a line about another connection or key still passes); the next one let
    through says how many were held back. INFO and below (the access log) always pass."""

    def __init__(self, window: float = 30.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        now = time.monotonic()
        until, held = self._seen.get(key, (0.0, 0))
        if now < until:
            self._seen[key] = (until, held + 1)
            return False
        self._seen[key] = (now + self.window, 0)
        if held:
            record.repeated = held
            record.msg = f"{record.msg} [{held} more like this in the last {self.window:.0f} s]"
        return True


def setup(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Alembic says which revision it checked at every start and CLI command; only
    # its warnings are worth a line (the hub logs the upgrades it ran itself).
    logging.getLogger("alembic").setLevel(logging.WARNING)
