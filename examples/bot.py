"""A small bot for the hub's website widget (docs/handoff.md, "Bot example").

It connects with a bot token (a service token scoped to one assistant), answers
visitors from a tiny FAQ, and hands the dialog to a human when the hub's
`handoff:auto-detect` says the visitor needs one. While an operator holds a
dialog the hub sends the bot none of its visitor messages, so it never talks
over the human; once the operator releases the dialog, the bot hears it again.
Answers are streamed word by word (`message:stream-*`), the way an LLM's tokens
would be: the widget shows them as they come; if an operator takes over mid-answer,
the hub keeps what was said, marked interrupted, and the bot stops.

    hub token issue --role service --name shop-bot --assistant-id 1 > bot.token
    python examples/bot.py --url http://127.0.0.1:8000 --token "$(cat bot.token)"

(`--token` may also come from HUB_BOT_TOKEN, `--url` from HUB_URL.)
Built on hubclient, the hub's Python client (calls that return data or raise
HubError, reconnection with recovery).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal

from hubclient import Client, HubError

log = logging.getLogger("bot")

# Keyword -> answer. A real bot would call an NLU service or an LLM here.
FAQ = {
    ("hours", "open", "часы", "работаете"): "We are open every day from 9:00 to 21:00.",
    ("delivery", "shipping", "parcel", "доставк", "посылк"): "Delivery takes 2-4 working days; "
                                                            "you get a tracking link by email.",
    ("refund", "return", "возврат"): "You can return anything within 30 days from the 'My orders' page.",
    ("hello", "hi", "привет", "здравствуйте"): "Hello! Ask me about opening hours, delivery or refunds.",
}
DONT_KNOW = "Sorry, I don't know the answer to that. You can ask for a human at any time."
HANDING_OFF = "Let me get a human colleague for you. Please stay with us."
WORD_PAUSE = 0.03  # seconds between streamed words (an LLM's pace; hubclient groups them)


def answer(text: str) -> str:
    lowered = text.lower()
    for words, reply in FAQ.items():
        if any(w in lowered for w in words):
            return reply
    return DONT_KNOW


class Bot:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.hub = Client(url, token, reconnect_delay_max=10)
        self.versions: dict[int, int] = {}  # dialog -> newest handoff version seen

    async def on_status(self, ev: dict) -> None:
        # Events may arrive out of order across reconnects: keep only the newest.
        if ev["version"] >= self.versions.get(ev["dialog_id"], 0):
            self.versions[ev["dialog_id"]] = ev["version"]
            log.info("dialog %s is now %s", ev["dialog_id"], ev["status"])

    async def on_message(self, ev: dict) -> None:
        msg = ev["message"]
        if msg["sender"] != "visitor":
            return
        dialog_id = ev["dialog_id"]
        try:
            verdict = await self.operators.call("handoff:auto-detect", {"dialog_id": dialog_id})
            if verdict["should_handoff"]:
                await self.dialogs.call("dialog:send", {"dialog_id": dialog_id, "text": HANDING_OFF,
                                                        "client_msg_id": f"handoff-{msg['id']}"})
                queued = await self.dialogs.call("dialog:handoff", {
                    "dialog_id": dialog_id, "reason": "auto-detect: " + ", ".join(verdict["reasons"]),
                    "request_id": f"auto-{msg['id']}"})
                log.info("dialog %s handed off (score %s), queue position %s", dialog_id, verdict["score"],
                         queued["queue_position"])
                return
            await self.stream(dialog_id, answer(msg["text"]))
        except HubError as exc:
            # e.g. `conflict`: an operator took the dialog meanwhile. The bot stays quiet.
            log.warning("dialog %s: %s", dialog_id, exc)

    async def stream(self, dialog_id: int, text: str) -> None:
        async with self.dialogs.stream(dialog_id) as reply:
            for word in re.findall(r"\S+\s*", text):
                await reply.send(word)
                await asyncio.sleep(WORD_PAUSE)
        if reply.interrupted:
            log.info("dialog %s: an operator took over mid-answer", dialog_id)

    async def run(self, stop: asyncio.Event) -> None:
        # hubclient reconnects by itself and recovers the visitor messages sent meanwhile.
        self.operators = await self.hub.connect("/operators")
        self.dialogs = await self.hub.connect("/dialogs", {"message:added": self.on_message,
                                                           "handoff:status": self.on_status})
        log.info("bot ready at %s: listening to its assistant's dialogs", self.url)
        await stop.wait()
        await self.hub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("HUB_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("HUB_BOT_TOKEN"),
                        help="bot token: hub token issue --role service --name NAME --assistant-id ID")
    args = parser.parse_args()
    if not args.token:
        parser.error("give --token or set HUB_BOT_TOKEN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Bot(args.url, args.token).run(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
