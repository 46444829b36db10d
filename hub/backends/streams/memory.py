"""The streams buffer of one instance, in memory."""
from __future__ import annotations

import time

from hub.backends.streams.base import TOMBSTONE_SECONDS, OpenStream, StreamError, Streams, new_stream_id


class MemoryStreams(Streams):
    def __init__(self) -> None:
        self._open: dict[str, dict] = {}
        self._by_dialog: dict[int, str] = {}
        self._closed: dict[str, tuple[str, float]] = {}  # id -> (reason, expiry)

    def _state(self, stream_id: str) -> dict:
        s = self._open.get(stream_id)
        if s is None:
            reason, until = self._closed.get(stream_id, (None, 0))
            raise StreamError(f"closed:{reason}" if reason and until > time.monotonic() else "missing")
        return s

    @staticmethod
    def _view(stream_id: str, s: dict) -> OpenStream:
        return OpenStream(stream_id, s["d"], s["a"], s["s"], "".join(s["t"]))

    async def open(self, dialog_id: int, assistant_id: int) -> str:
        if dialog_id in self._by_dialog:
            raise StreamError(f"busy:{self._by_dialog[dialog_id]}")
        stream_id = new_stream_id()
        self._open[stream_id] = {"d": dialog_id, "a": assistant_id, "s": 0, "t": [], "n": 0,
                                 "at": time.monotonic()}
        self._by_dialog[dialog_id] = stream_id
        return stream_id

    async def append(self, stream_id: str, assistant_id: int, text: str, max_chars: int) -> OpenStream:
        s = self._state(stream_id)
        if s["a"] != assistant_id:
            raise StreamError("missing")
        if s["n"] + len(text) > max_chars:
            raise StreamError("too_long")
        s["t"].append(text)
        s["n"] += len(text)
        s["s"] += 1
        s["at"] = time.monotonic()
        return OpenStream(stream_id, s["d"], s["a"], s["s"], text)

    async def get(self, stream_id: str) -> OpenStream:
        return self._view(stream_id, self._state(stream_id))

    async def close(self, stream_id: str, reason: str) -> OpenStream | None:
        s = self._open.pop(stream_id, None)
        if s is None:
            return None
        self._by_dialog.pop(s["d"], None)
        now = time.monotonic()
        self._closed[stream_id] = (reason, now + TOMBSTONE_SECONDS)
        if len(self._closed) > 10000:
            self._closed = {k: v for k, v in self._closed.items() if v[1] > now}
        return self._view(stream_id, s)

    async def of_dialog(self, dialog_id: int) -> list[OpenStream]:
        stream_id = self._by_dialog.get(dialog_id)
        return [self._view(stream_id, self._open[stream_id])] if stream_id else []

    async def idle(self, seconds: float, limit: int = 100) -> list[str]:
        before = time.monotonic() - seconds
        return [k for k, s in self._open.items() if s["at"] <= before][:limit]
