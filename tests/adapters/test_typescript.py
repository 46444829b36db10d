"""`hub types` declares every namespace's events for socket.io-client's typed sockets:
an example (tests/js/typed_client.ts) compiles with `tsc --strict` against them,
mistakes in it are refused, and the compiled example works against a live hub."""
import json
import subprocess
import sys

from tests.support.node import run_node
from tests.support.paths import JS_DIR, ROOT

TSCONFIG = {"compilerOptions": {"strict": True, "target": "es2022", "module": "nodenext",
                                "moduleResolution": "nodenext", "outDir": "out", "types": ["node"]},
            "files": ["typed_client.ts"]}


async def test_typed_client_compiles_strictly_and_runs(node, server, api, tmp_path):
    generated = subprocess.run([sys.executable, "-m", "hub.cli", "types"], cwd=ROOT, capture_output=True,
                               text=True, env={"HUB_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
                               timeout=60)
    assert generated.returncode == 0, generated.stderr
    (tmp_path / "hub.d.ts").write_text(generated.stdout)
    (tmp_path / "typed_client.ts").write_text((JS_DIR / "typed_client.ts").read_text())
    (tmp_path / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")
    tsc = subprocess.run([str(JS_DIR / "node_modules" / ".bin" / "tsc"), "-p", str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr

    ann, bob = await api.user(), await api.user()
    out = await run_node(str(tmp_path / "out" / "typed_client.js"), server.url, ann["access_token"],
                         bob["access_token"], str(bob["user"]["id"]))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sent"] == "typed hello"
    assert result["received"].startswith("typed hello (")
    assert result["edit"] == "validation_error"
