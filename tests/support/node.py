"""The official JavaScript client, run by node from tests/js: whole scripts, or a
driver process commanded line by line."""
from __future__ import annotations

import asyncio
import json

from tests.support.paths import JS_DIR


async def run_node(script: str, *args: str, timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / script), *args, cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}"
    return out.decode()


class JsDriver:
    """An official JS client in a node process, driven command by command
    (tests/js/driver.mjs), behind a proxy the test can drop and resume."""

    def __init__(self, proc):
        self.proc = proc

    async def do(self, op: str, **args):
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        answer = json.loads(line)
        assert answer["ok"], answer
        return answer["value"]
