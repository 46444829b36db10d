"""The README's tour, run as written against a live `hub serve`: its shell blocks in
order in one bash, its JavaScript block saved as tour.mjs beside them. Only the
address changes (the hub listens on a free port, not 8000), and `npm install
socket.io-client` is not run: tests/js/node_modules is linked in instead."""
import os
import re
import subprocess

from tests.support.paths import JS_DIR, ROOT

PORT_IN_README = "127.0.0.1:8000"


def tour_blocks() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    tour = readme[readme.index("## A short tour"):]
    tour = tour[:tour.index("\n## ", 1)]
    return re.findall(r"```(sh|js)\n(.*?)```", tour, re.S)


async def test_the_readme_tour_runs_as_written(node, spawn_hubs, tmp_path):
    [hub] = await spawn_hubs(1, {})
    here = tmp_path / "tour"
    here.mkdir()
    (here / "node_modules").symlink_to(JS_DIR / "node_modules")
    (here / ".venv").symlink_to(ROOT / ".venv")
    address = f"127.0.0.1:{hub.port}"
    scripts = []
    for kind, text in tour_blocks():
        text = text.replace(PORT_IN_README, address)
        if kind == "js":
            (here / "tour.mjs").write_text(text)
        else:
            scripts.append("\n".join(line for line in text.splitlines()
                                     if not line.startswith("npm install socket.io-client")))
    assert (here / "tour.mjs").exists() and len(scripts) == 3
    env = {k: v for k, v in hub.env.items() if k != "HUB_LOG_LEVEL"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(scripts)], cwd=here, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Bob got: Hi Bob!" in done.stdout.splitlines(), done.stdout
    assert re.search(r"ok: true,\s+data: \{", done.stdout), done.stdout
    assert "created operator op@example.com" in done.stdout
    tokens = [line for line in done.stdout.splitlines() if re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", line)]
    assert len(tokens) == 2, done.stdout  # billing's and Ann's; the bot's went to bot.token
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+\n", (here / "bot.token").read_text())
