"""Reading Server-Sent Events from an aiohttp response."""
from __future__ import annotations

import asyncio
import json


async def read_sse(resp, count: int) -> list[dict]:
    """The next `count` events of an SSE response: {id, event, data}."""
    events, current = [], {}
    while len(events) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if not line:
            if "event" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events
