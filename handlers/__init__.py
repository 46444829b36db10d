"""Operations: one async function per REST-mirroring request, over a Context.

No aiohttp or socketio import belongs in this package."""
