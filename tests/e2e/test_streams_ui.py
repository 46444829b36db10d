"""Streamed bot replies rendered in headless Chromium (tests/js/streams_ui.mjs): the
widget on another website and the operator console, on two hub instances sharing
PostgreSQL and Redis, show the reply growing, then the stored message in its place;
a widget reloaded mid-stream shows the text so far, then the rest, nothing twice."""
import asyncio
import json
from dataclasses import replace

import socketio

from tests.support.clients import Api
from tests.support.dialogs import account, assistant, bot_token, operator
from tests.support.node import run_node
from tests.support.servers import make_settings

STORY = " ".join(f"w{i}" for i in range(24))
AGAIN = " ".join(f"x{i}" for i in range(40))


async def stream(bot: socketio.AsyncClient, dialog_id: int, text: str, pause: float) -> None:
    call = lambda event, data: bot.call(event, data, namespace="/dialogs")  # noqa: E731
    started = await call("message:stream-start", {"dialog_id": dialog_id})
    stream_id = started["data"]["stream_id"]
    for word in text.split():
        await call("message:stream-delta", {"stream_id": stream_id, "text": word + " "})
        await asyncio.sleep(pause)
    await call("message:stream-end", {"stream_id": stream_id})


async def test_widget_and_console_render_streams_as_they_grow(browser_deps, start_server, tmp_path, http,  # noqa: F811
                                                              shop_site, pg_url, redis_url, redis_prefix):
    site, page = shop_site
    base = make_settings(tmp_path, database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    hub_a = await start_server(base)
    hub_b = await start_server(replace(base, instance_id="b" + base.instance_id))
    api = Api(hub_a.url, http)
    _, owner = await account(hub_a.hub.db)
    a = await assistant(api, owner, origins=[site], name="Storyteller")
    page.update(hub=hub_a.url, assistant_id=a["id"])
    password = "operator-password"
    _, anna = await operator(hub_a.hub.db, "Anna", "Ivanova", password)

    bot = socketio.AsyncClient(reconnection=False)
    tasks = []

    async def on_message(ev, *_offset):
        text, did = ev["message"]["text"], ev["dialog_id"]
        if ev["message"]["sender"] != "visitor":
            return
        if "person" in text:
            await bot.call("dialog:handoff", {"dialog_id": did, "reason": "asked"}, namespace="/dialogs")
        elif "story" in text:
            tasks.append(asyncio.create_task(stream(bot, did, STORY, 0.12)))
        elif "Again" in text:
            tasks.append(asyncio.create_task(stream(bot, did, AGAIN, 0.15)))

    bot.on("message:added", on_message, namespace="/dialogs")
    await bot.connect(hub_a.url, namespaces=["/dialogs"], auth={"token": bot_token(a["id"])}, wait_timeout=5)
    config = {"hubA": hub_a.url, "hubB": hub_b.url, "shop": f"{site}/shop.html", "operator": anna,
              "password": password, "story": STORY, "again": AGAIN, "chromium": browser_deps}
    try:
        out = await run_node("streams_ui.mjs", json.dumps(config), timeout=120)
        await asyncio.gather(*tasks)
    finally:
        await bot.disconnect()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["logs"] == []
    story = STORY + " "
    # seen growing: a part of the reply, not yet all of it, on both pages
    for partial in (seen["widgetPartial"], seen["consolePartial"]):
        assert story.startswith(partial) and 0 < len(partial) < len(story), partial
    assert seen["widgetFinal"] == STORY + " " and seen["consoleFinal"] == STORY + " "
    assert seen["streamingLeft"] == 0
    again = AGAIN + " "
    assert again.startswith(seen["afterReload"]) and seen["afterReload"].startswith("x0 x1 x2 x3 x4 ")
    assert seen["reloadedFinal"] == again  # the rest, nothing twice
    assert seen["widgetLines"] == 2
    status, history = await api.request("GET", f"/api/dialogs/{await dialog_of(api, owner)}/messages", token=owner)
    assert status == 200
    assert [m["text"] for m in history if m["sender"] == "assistant"] == [story, again]


async def dialog_of(api, owner) -> int:
    status, page = await api.request("GET", "/api/dialogs", token=owner)
    assert status == 200 and page["total"] == 1
    return page["items"][0]["dialog_id"]
