"""Fixtures of the end-to-end tests only."""
import pytest
from aiohttp import web

from tests.support.services import free_port

SHOP = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Another site</title></head>
<body><main><h1>A shop on another origin</h1><p>Tea and teapots.</p></main>
<script src="{hub}/widget.js" data-assistant-id="{assistant_id}" async></script></body></html>"""


async def no_icon(request):
    return web.Response(status=204)


@pytest.fixture
async def shop_site():
    """Another website (another origin): a page embedding the widget with one script tag."""
    page = {}

    async def shop(request):
        return web.Response(text=SHOP.format(**page), content_type="text/html")

    app = web.Application()
    app.router.add_get("/shop.html", shop)
    app.router.add_get("/favicon.ico", no_icon)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", page
    await runner.cleanup()
