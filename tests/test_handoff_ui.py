"""The operator console and the website widget, driven in headless Chromium with
Playwright: a visitor writes in the widget embedded on another website (a bot
answers), asks for a human, two operators see it in their queues, one accepts (it
leaves the other's queue), and visitor and operator see each other's messages live.

Needs Chromium at /usr/bin/chromium (Debian: `apt-get install chromium`),
web/node_modules (`npm ci --prefix web`) and tests/js/node_modules. Skipped with a
reason when one is missing, except under CI, where that is a failure."""
import json
import os
import shutil
from pathlib import Path

import pytest
import socketio
from aiohttp import web
from sqlalchemy import update

from hub.auth import hash_password
from storage import users
from tests.conftest import JS_DIR, ROOT, Api, _unavailable, free_port, make_settings, run_node
from tests.dialog_helpers import account, assistant, bot_token

CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def browser_deps(node):
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _unavailable(f"Chromium ({CHROMIUM}; apt-get install chromium)", FileNotFoundError(CHROMIUM))
    if not (JS_DIR / "node_modules" / "playwright-core").exists():
        _unavailable("playwright-core (npm ci --prefix tests/js)", FileNotFoundError("playwright-core"))
    if not (ROOT / "web" / "node_modules" / "socket.io-client" / "dist").exists():
        _unavailable("web/node_modules (npm ci --prefix web)", FileNotFoundError("socket.io-client"))
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


SHOP = """<!doctype html><html><head><meta charset="utf-8"><title>Another site</title></head>
<body><h1>A shop on another origin</h1>
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


@pytest.mark.parametrize("where", ["another site", "the demo page"])
async def test_widget_on_another_site_and_console_in_chromium(browser_deps, start_server, tmp_path, http,
                                                              shop_site, where):
    """On another site, or on the hub's own demo page under its Content-Security-Policy
    (as the console is under its own): no page logs an error, a policy violation included."""
    site, page = shop_site
    # Nothing to configure on the hub: the assistant's allowed origins are enough.
    server = await start_server(make_settings(tmp_path))
    api = Api(server.url, http)
    db = server.hub.db
    _, owner = await account(db)
    # The owner allows the shop's site (or the hub's own, for the demo) for their assistant.
    a = await assistant(api, owner, origins=[site if where == "another site" else server.url])
    page.update(hub=server.url, assistant_id=a["id"])
    visitor_page = f"{site}/shop.html" if where == "another site" else \
        f"{server.url}/widget/demo?assistant_id={a['id']}"
    password = "operator-password"
    emails, ids = [], []
    for name in ("anna", "boris"):
        op_id, _ = await account(db, "operator")
        ids.append(op_id)
        emails.append(f"{name}{op_id}@example.com")
        async with db.transaction() as tx:
            await tx.execute(update(users.User).where(users.User.id == op_id)
                             .values(email=emails[-1], password_hash=await hash_password(password)))

    # the assistant's bot: answers every visitor message it hears
    bot = socketio.AsyncClient(reconnection=False)
    heard = []

    async def on_message(ev, *_offset):
        heard.append(ev["message"]["text"])
        await bot.call("dialog:send", {"dialog_id": ev["dialog_id"], "text": f"Bot: I got '{ev['message']['text']}'"},
                       namespace="/dialogs")

    bot.on("message:added", on_message, namespace="/dialogs")
    await bot.connect(server.url, namespaces=["/dialogs"], auth={"token": bot_token(a["id"])}, wait_timeout=5)
    try:
        out = await run_node("handoff_ui.mjs", server.url, visitor_page, emails[0], password, emails[1],
                             browser_deps, timeout=120)
    finally:
        await bot.disconnect()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["logs"] == []
    assert "I got 'Hello bot, where is my parcel?'" in seen["botReply"]
    assert "#1 in line" in seen["waiting"]
    assert "operator has joined" in seen["joined"]
    assert "Hi, I am Anna from support." in seen["seenByVisitor"]
    assert "Thank you, Anna!" in seen["seenByOperator"]
    assert "visitor is typing" in seen["typing"]
    assert "back with our assistant" in seen["released"]
    assert seen["presence"] == "online"
    assert seen["colleagueQueue"] == 0  # the accepted dialog left the other operator's queue live
    assert seen["loggedOut"] == f"#{ids[0]}offline"  # logging out showed Anna offline to Boris
    # the bot heard the visitor before the handoff, and nothing while the operator held the dialog
    assert heard == ["Hello bot, where is my parcel?"]
    # what the browsers showed is what the hub stored
    status, history = await api.request("GET", f"/api/dialogs/{seen['dialogId']}/messages", token=owner)
    assert status == 200
    assert [(m["sender"], m["text"]) for m in history] == [
        ("visitor", "Hello bot, where is my parcel?"),
        ("assistant", "Bot: I got 'Hello bot, where is my parcel?'"),
        ("operator", "Hi, I am Anna from support."),
        ("visitor", "Thank you, Anna!"),
    ]


async def test_pages_are_served(server, api, browser_deps):
    for path, needle in [("/console", "Operator console"), ("/widget/demo", "/widget.js"),
                         ("/widget.js", "api/widget/sessions"), ("/web/console.js", "handoff:accept"),
                         ("/vendor/socket.io.min.js", "io")]:
        async with api.session.get(api.url + path) as resp:
            assert resp.status == 200, path
            assert needle in await resp.text(), path
    for path in ("/web/package.json", "/web/..%2Fpyproject.toml", "/vendor/package.json"):
        async with api.session.get(api.url + path) as resp:
            assert resp.status == 404, path
