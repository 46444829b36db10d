"""Hubs under test: the settings they start with, an in-process server on a loopback
port, and a `hub serve` process."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

from hub.adapters.http.common import HUB
from hub.settings import Settings
from tests.support.paths import ROOT

SECRET = "test-secret-" + "x" * 40


def make_settings(data_dir: Path, **overrides) -> Settings:
    base = Settings.from_env({"HUB_DATA_DIR": str(data_dir), "HUB_JWT_SECRET": SECRET})
    return replace(base, **overrides)


class Server:
    """A hub app running in the test's process (see the `start_server` fixture)."""

    def __init__(self, app: web.Application, runner: web.AppRunner, port: int):
        self.app, self.runner, self.port = app, runner, port
        self.url = f"http://127.0.0.1:{port}"
        self.hub = app[HUB]


class HubProcess:
    """A `hub serve` process (see the `spawn_hubs` fixture)."""

    def __init__(self, port: int, env: dict, log: Path):
        self.port, self.env, self.log = port, env, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "HubProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--port", str(self.port)],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        )
        return self

    async def ready(self, timeout: float = 30) -> "HubProcess":
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited: {self.log.read_text()[-3000:]}")
                try:
                    async with session.get(self.url + "/ready") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)  # polling /ready: a starting process has no other signal
        raise TimeoutError(f"hub on {self.port} not ready: {self.log.read_text()[-3000:]}")

    def stop(self, sig=None) -> None:
        if self.proc and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
