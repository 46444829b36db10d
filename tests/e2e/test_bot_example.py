"""examples/bot.py against a real server: it answers visitors, hands off when
auto-detect says so, stays quiet while an operator holds the dialog, and answers
again after release."""
import asyncio
import sys

from tests.support.dialogs import account, assistant, bot_token, next_where, visitor
from tests.support.paths import ROOT


async def test_example_bot_answers_and_hands_off(server, api, connect):
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    v = await visitor(api, a["id"])
    vis = await connect(server.url, "/dialogs", v["visitor_token"])
    did = v["dialog_id"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "bot.py"), "--url", server.url, "--token", bot_token(a["id"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await _ready(proc)
        await vis.ok("dialog:send", {"dialog_id": did, "text": "hello! what are your opening hours?"})
        reply = await next_where(vis, "message:added", lambda e: e["message"]["sender"] == "assistant")
        assert "Hello!" in reply["message"]["text"] or "9:00" in reply["message"]["text"]
        # streamed: word by word before the stored message (whose client_msg_id is the stream's)
        deltas = [vis.queue("message:delta").get_nowait() for _ in range(vis.queue("message:delta").qsize())]
        assert len(deltas) > 3 and {d["stream_id"] for d in deltas} == {reply["message"]["client_msg_id"]}
        assert "".join(d["text"] for d in deltas) == reply["message"]["text"]

        await vis.ok("dialog:send", {"dialog_id": did, "text": "I want to talk to a real person please"})
        status = await next_where(vis, "handoff:status", lambda e: e["status"] == "requested")
        assert status["reason"].startswith("auto-detect: ") and "explicit_request" in status["reason"]
        text = (await next_where(vis, "message:added", lambda e: e["message"]["sender"] == "assistant"))
        assert "human" in text["message"]["text"]

        op_id, op = await account(server.hub.db, "operator")
        console = await connect(server.url, "/operators", op)
        await console.ok("handoff:accept", {"dialog_id": did})
        await vis.ok("dialog:send", {"dialog_id": did, "text": "hello, is anyone there?"})
        await console.ok("handoff:release", {"dialog_id": did})
        await vis.ok("dialog:send", {"dialog_id": did, "text": "how long does delivery take?"})
        # The bot stayed quiet while the operator held the dialog: the first answer since is
        # to the question asked after the release (the bot answers in order).
        reply = await next_where(vis, "message:added", lambda e: e["message"]["sender"] == "assistant")
        assert "Delivery" in reply["message"]["text"]
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, out.decode()


async def _ready(proc, timeout: float = 15) -> None:
    """Wait for the bot's "ready" log line (it is connected to both namespaces)."""
    async def read():
        seen = []
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError("the bot exited: " + "".join(seen))
            seen.append(line.decode())
            if b"bot ready" in line:
                return
    await asyncio.wait_for(read(), timeout)
