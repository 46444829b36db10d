"""The contract of the in-flight buffer of streamed bot replies (docs/live-state.md,
"Streamed bot replies"): only the text so far is kept (never the deltas one by one),
so a widget reconnecting mid-stream, on any instance, gets it at once. Each stream is
bounded (`max_chars`), a dialog has at most one open stream, and `close` is atomic:
of the bot's end, an operator's takeover and the timeout sweep on every instance,
exactly one gets the text and stores the reply. A closed stream leaves a tombstone
for a while, so a late delta learns why (conflict)."""
from __future__ import annotations

import secrets
from abc import ABC, abstractmethod

from handlers.ports import OpenStream, StreamError  # the types handlers see

__all__ = ["OpenStream", "StreamError", "Streams", "TOMBSTONE_SECONDS", "new_stream_id"]

TOMBSTONE_SECONDS = 600


def new_stream_id() -> str:
    return "s" + secrets.token_urlsafe(12)


class Streams(ABC):
    @abstractmethod
    async def open(self, dialog_id: int, assistant_id: int) -> str:
        """A new stream of the dialog; StreamError("busy:<id>") if one is open."""

    @abstractmethod
    async def append(self, stream_id: str, assistant_id: int, text: str, max_chars: int) -> OpenStream:
        """Add a delta of the assistant's stream (another's is "missing"); the
        delta with its `seq`."""

    @abstractmethod
    async def get(self, stream_id: str) -> OpenStream:
        """The open stream; StreamError if missing or closed."""

    @abstractmethod
    async def close(self, stream_id: str, reason: str) -> OpenStream | None:
        """End the stream; its final state to the one caller that ended it, else None."""

    @abstractmethod
    async def of_dialog(self, dialog_id: int) -> list[OpenStream]: ...

    @abstractmethod
    async def idle(self, seconds: float, limit: int = 100) -> list[str]:
        """Open streams without a delta for `seconds`."""

    async def start(self) -> None:
        pass

    async def close_all(self) -> None:
        pass
