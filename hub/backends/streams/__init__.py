"""The in-flight buffer of streamed bot replies: in memory (one instance) or on Redis."""
from hub.backends.streams.base import TOMBSTONE_SECONDS, OpenStream, StreamError, Streams, new_stream_id
from hub.backends.streams.memory import MemoryStreams
from hub.backends.streams.redis import RedisStreams

__all__ = ["MemoryStreams", "OpenStream", "RedisStreams", "StreamError", "Streams", "TOMBSTONE_SECONDS",
           "new_stream_id"]
