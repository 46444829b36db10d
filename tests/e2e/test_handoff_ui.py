"""The operator console and the website widget, driven in headless Chromium with
Playwright over two hub instances sharing PostgreSQL and Redis: the whole support
desk story (tests/js/handoff_ui.mjs): the hub's demo page without an assistant id,
then a visitor on another website, bot, handoff, queue, canned reply,
internal note, typing, reload on both sides, transfer, transcript, close, the
silent bot, the bot's handoff with nobody online and the offline form, logout; what is visible is asserted (the login form
over the console fails it), axe-core finds no serious or critical violation on
either page, and the screenshots are kept in tmp/artifacts/handoff_ui/ (the ones in
docs/img/ are copies).

Needs Chromium at /usr/bin/chromium (Debian: `apt-get install chromium`),
web/node_modules (`npm ci --prefix web`) and tests/js/node_modules. Skipped with a
reason when one is missing, except under CI, where that is a failure."""
import json
import re
import shutil
from dataclasses import replace

import socketio

from tests.support.clients import Api
from tests.support.dialogs import account, assistant, bot_token, operator
from tests.support.node import run_node
from tests.support.paths import ROOT
from tests.support.servers import make_settings

ARTIFACTS = ROOT / "tmp" / "artifacts" / "handoff_ui"


async def test_support_desk_story_in_chromium(browser_deps, start_server, tmp_path, http, shop_site, pg_url,
                                              redis_url, redis_prefix):
    site, page = shop_site
    # Two instances sharing PostgreSQL and Redis: the widget and Boris on one, Anna on the other.
    base = make_settings(tmp_path, database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    hub_a = await start_server(base)
    hub_b = await start_server(replace(base, instance_id="b" + base.instance_id))
    api = Api(hub_a.url, http)
    db = hub_a.hub.db
    _, owner = await account(db)
    # The owner allows the shop's site and sets the widget's title, colour and greeting.
    a = await assistant(api, owner, origins=[site], name="Tea shop helper")
    status, _ = await api.request("PUT", f"/api/assistants/{a['id']}/settings", token=owner, json={
        "title": "Tea shop support", "color": "#2e4a3b", "greeting": "Hello! Ask me about your order."})
    assert status == 200
    page.update(hub=hub_a.url, assistant_id=a["id"])
    password = "operator-password"
    _, anna = await operator(db, "Anna", "Ivanova", password)
    _, boris = await operator(db, "Boris", "Petrov", password)

    # the assistant's bot: answers what it knows about (parcels), and is silent otherwise
    bot = socketio.AsyncClient(reconnection=False)
    heard = []

    async def on_message(ev, *_offset):
        heard.append(ev["message"]["text"])
        if "parcel" in ev["message"]["text"]:
            await bot.call("dialog:send", {"dialog_id": ev["dialog_id"],
                                           "text": f"Bot: I got '{ev['message']['text']}'"}, namespace="/dialogs")
        elif "person" in ev["message"]["text"]:
            await bot.call("dialog:handoff", {"dialog_id": ev["dialog_id"], "reason": "asked for a person"},
                           namespace="/dialogs")

    bot.on("message:added", on_message, namespace="/dialogs")
    await bot.connect(hub_a.url, namespaces=["/dialogs"], auth={"token": bot_token(a["id"])}, wait_timeout=5)
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    config = {"hubA": hub_a.url, "hubB": hub_b.url, "shop": f"{site}/shop.html", "noIdPage": f"{hub_a.url}/widget/demo",
              "anna": {"email": anna, "name": "Anna Ivanova"}, "boris": {"email": boris, "name": "Boris Petrov"},
              "password": password, "artifacts": str(ARTIFACTS), "chromium": browser_deps}
    try:
        out = await run_node("handoff_ui.mjs", json.dumps(config), timeout=200)
    finally:
        await bot.disconnect()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["logs"] == []
    assert "not set up" in seen["noAssistant"]
    assert seen["greeting"].endswith("Hello! Ask me about your order.")
    assert seen["title"] == "Tea shop support" and seen["accent"] == "rgb(46, 74, 59)"
    assert "I got 'Hello bot, where is my parcel?'" in seen["botReply"] and ":" in seen["timestamp"]
    assert re.search(r"#\d+ in line", seen["waiting"]), seen["waiting"]
    assert "Visitor" in seen["queueItem"] and site in seen["queueItem"]
    assert "where is my parcel" in seen["queueItem"] and "waiting" in seen["queueItem"]
    assert seen["headerTop"] == 0  # accepting did not scroll the header off screen
    assert "operator has joined" in seen["joined"]
    assert "Anna from support" in seen["seenByVisitor"]
    assert "visitor is typing" in seen["typingToOperator"] and "Typing" in seen["typingToVisitor"]
    assert seen["noteLeaked"] is False
    assert seen["reloadedChats"] == 1
    assert "assistant: Bot: I got" in seen["transcript"] and "VIP customer" in seen["transcript"]
    assert "ended" in seen["ended"]
    assert "not answering" in seen["noBot"]
    assert "No operator is online" in seen["offlineIntro"]
    assert "Ann Example" in seen["offlineItem"] and "left a message" in seen["offlineItem"]
    # alerts on: the bot's handoff, then the message left, notified Boris
    assert seen["notified"] == ["A visitor is waiting", "A visitor left a message"]
    assert "online" not in seen["badgeAfterLogout"]
    assert seen["axe_console"] == [] and seen["axe_widget"] == [] and seen["axe_console_phone"] == []
    assert seen["phonePanel"] == [390, 844]
    # the bot heard the visitor before the handoff and in the new conversation, nothing while operators held it
    assert heard == ["Hello bot, where is my parcel?", "Is anyone there?", "I want a person"]
    # what the browsers showed is what the hub stored
    status, history = await api.request("GET", f"/api/dialogs/{seen['dialogId']}/messages", token=owner)
    assert status == 200
    assert [(m["sender"], m["text"]) for m in history] == [
        ("visitor", "Hello bot, where is my parcel?"),
        ("assistant", "Bot: I got 'Hello bot, where is my parcel?'"),
        ("operator", "Hi, I am Anna from support. How can I help?"),
        ("visitor", "Thank you, Anna!"),
        ("operator", "Let me check that"),
        ("operator", "Hi, Boris here: your parcel arrives tomorrow."),
    ]
    assert sorted(p.name for p in ARTIFACTS.glob("*.png")) == [
        "01-widget-bot.png", "02-console-queue.png", "03-console-chat.png", "04-widget-operator.png",
        "05-console-transcript.png", "06-widget-closed.png", "07-widget-offline-form.png",
        "08-widget-phone.png", "09-console-phone.png"]


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
