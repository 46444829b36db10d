"""The attacker's audit, re-run: a real `hub serve` process, real Socket.IO and HTTP
clients, and thousands of fuzzed requests on every request event of every namespace
(enumerated from the registry, so a new operation is fuzzed without a line here) and
on every HTTP route (enumerated from the app's router).

Asserts the hub's side of the contract under hostile input: every request is
answered, never with `internal_error` (or `unavailable` on a healthy hub), and the
server's log holds no Traceback."""
from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
import socketio

from handlers.registry import REGISTRY
from storage.jsoncodec import MAX_DEPTH, nesting
from tests.support.business import service_token
from tests.support.paths import ROOT
from tests.support.servers import SECRET, make_settings

# HUB_FUZZ_SEED replays a failed run; HUB_FUZZ_SCALE shrinks the volume while debugging.
SEED = int(os.environ.get("HUB_FUZZ_SEED") or int.from_bytes(secrets.token_bytes(4), "big"))
SCALE = float(os.environ.get("HUB_FUZZ_SCALE", "1"))
BAD_CODES = {"internal_error", "unavailable"}

# --- hostile values ---------------------------------------------------------------------

DEEP = 3000  # beyond the stack of a recursive decoder or validator
BIG_INTS = [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, -(10**30)]
STRINGS = ["", "\x00", "a\x00b", "²", "١٢٣", "𝟙𝟚", "\ud800", "x" * 5000, "0" * 5000, "' OR 1=1 --",
           "<script>alert(1)</script>", "../../etc/passwd", "\u202e\u200b", "NaN", "-1", "1e400",
           "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0000-00-00", "2026-13-45T99:99:99",
           "1970-01-01T00:00:00Z", "  ", "null"]
ODD = [None, True, False, 0, -1, 1.5, -0.0, 1e308, [], {}, [1, 2], {"$gt": 1}, [2**64], {"a": {"b": [None]}}]


def deep(kind: str, levels: int = DEEP) -> object:
    out: object = 1
    for _ in range(levels):
        out = [out] if kind == "list" else {"a": out}
    return out


def hostile(rng: random.Random) -> object:
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(BIG_INTS)
    if pick < 0.6:
        return rng.choice(STRINGS)
    if pick < 0.97:
        return rng.choice(ODD)
    return deep(rng.choice(["list", "dict"]), rng.choice([DEEP, 40]))


def _types(prop: dict, defs: dict) -> list[dict]:
    if "$ref" in prop:
        return [defs[prop["$ref"].rsplit("/", 1)[-1]]]
    if "anyOf" in prop:
        return [t for p in prop["anyOf"] for t in _types(p, defs)]
    return [prop]


def plausible(prop: dict, defs: dict, rng: random.Random, known_ids: list[int]) -> object:
    """A value of the right shape, so that requests also get past validation into
    the handlers and the database."""
    kind = rng.choice(_types(prop, defs))
    if "enum" in kind:
        return rng.choice(kind["enum"])
    if "const" in kind:
        return kind["const"]
    t = kind.get("type")
    if t == "integer":
        return rng.choice(known_ids + [1, 2, 3, 2**63 - 1])
    if t == "number":
        return rng.choice([0.5, 1.0])
    if t == "boolean":
        return rng.choice([True, False])
    if t == "string":
        if kind.get("format") in ("date-time", "date"):
            stamp = datetime.now(timezone.utc).isoformat()
            return stamp[:10] if kind["format"] == "date" else stamp
        return rng.choice(["hello", "fuzz text", "https://example.com/a.png", "x"])
    if t == "array":
        return [plausible(kind.get("items", {}), defs, rng, known_ids) for _ in range(rng.randint(0, 2))]
    if t == "object":
        if "properties" in kind:
            return payload_for(kind, defs, rng, known_ids, 0.2)
        return {"k": "v"}
    return None


def payload_for(schema: dict, defs: dict, rng: random.Random, known_ids: list[int], hostility: float):
    props = schema.get("properties", {})
    out = {}
    for name, prop in props.items():
        if rng.random() < 0.15:
            continue  # a missing field
        out[name] = hostile(rng) if rng.random() < hostility else plausible(prop, defs, rng, known_ids)
    if rng.random() < 0.05:
        out[rng.choice(["extra", "__proto__", "\x00"])] = hostile(rng)
    return out


def fuzzed(schema: dict, rng: random.Random, known_ids: list[int]):
    """One event payload: mostly objects of the input's fields, some not objects at all."""
    if rng.random() < 0.03:
        return rng.choice([None, 1, "x", [1], 2**64, deep("list")])
    return payload_for(schema, schema.get("$defs", {}), rng, known_ids, hostility=rng.choice([0.2, 0.5, 1.0]))


# --- the server ---------------------------------------------------------------------------

FUZZ_ENV = {
    # Limits high enough that the fuzzer's volume is not refused wholesale.
    "HUB_EVENT_RATE": "100000", "HUB_EVENT_BURST": "100000", "HUB_USER_OP_LIMIT": "10000000",
    "HUB_REGISTER_PER_MINUTE": "100000", "HUB_LOGIN_PER_MINUTE": "100000", "HUB_WIDGET_SESSIONS_PER_MINUTE": "100000",
    "HUB_ATTACHMENTS_PER_DAY": "100000", "HUB_LOG_LEVEL": "WARNING",
}


def hub_cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hub.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def request(session, url: str, method: str, path: str, token: str | None = None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with session.request(method, url + path, headers=headers, **kw) as resp:
        text = await resp.text(errors="replace")
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


class Roles:
    """A token of each role, and ids of a few real things to aim at."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.ids: list[int] = []


async def make_roles(hub_url: str, env: dict, session) -> Roles:
    roles = Roles()
    email = f"op{secrets.token_hex(4)}@example.com"
    hub_cli(env, "users", "create", email, "--password", "password123", "--role", "operator")
    roles.tokens["operator"] = hub_cli(env, "token", "issue", "--user", email)
    for name in ("user", "other"):
        mail = f"{name}{secrets.token_hex(4)}@example.com"
        status, body = await request(session, hub_url, "POST", "/auth/register",
                                     json={"email": mail, "password": "password123"})
        assert status == 201, body
        status, body = await request(session, hub_url, "POST", "/auth/login",
                                     json={"email": mail, "password": "password123"})
        assert status == 200, body
        roles.tokens[name] = body["access_token"]
        roles.ids.append(body["user"]["id"])
    roles.tokens["service"] = service_token("fuzz")
    status, body = await request(session, hub_url, "POST", "/api/assistants", roles.tokens["operator"],
                                 json={"name": "Fuzz", "allowed_origins": ["https://shop.example"]})
    assert status == 201, body
    roles.ids.append(body["id"])
    status, body = await request(session, hub_url, "POST", "/api/widget/sessions",
                                 json={"assistant_id": body["id"]}, headers={"Origin": "https://shop.example"})
    assert status == 201, body
    roles.tokens["visitor"] = body["visitor_token"]
    roles.ids.append(body["dialog_id"])
    # Something to aim at: a thread with a message, an order, a post.
    user = roles.tokens["user"]
    status, body = await request(session, hub_url, "POST", "/api/orders", user,
                                 json={"items": [{"product_id": 1, "quantity": 1, "price_krw": 100}],
                                       "billing_address": "a", "shipping_address": "b"})
    if status == 201:
        roles.ids.append(body.get("order_id") or body.get("id"))
    return roles


def log_problems(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    return [block[:1500] for block in text.split("Traceback")[1:]]


# --- Socket.IO ----------------------------------------------------------------------------

async def fuzz_namespace(url: str, namespace: str, token: str, count: int, rng: random.Random,
                         known_ids: list[int], bad: list) -> int:
    """Send `count` fuzzed events over every request event of `namespace`; returns
    how many were answered (an ack, or for a packet nested beyond the decoder's
    limit, the connection closed like any undecodable packet)."""
    ops = sorted(REGISTRY.operations_of(namespace).items())
    schemas = {event: op.input.model_json_schema() for event, op in ops}
    sio = socketio.AsyncClient(reconnection=False)
    closed = asyncio.Event()
    sio.on("disconnect", closed.set, namespace=namespace)

    async def connect() -> None:
        closed.clear()
        await sio.connect(url, namespaces=[namespace], auth={"token": token}, transports=["websocket"],
                          wait_timeout=10)

    await connect()
    answered = 0
    try:
        for i in range(count):
            event = ops[i % len(ops)][0]
            payload = fuzzed(schemas[event], rng, known_ids)
            if not sio.connected:
                await sio.disconnect()
                await connect()
            if nesting(json.dumps([event, payload])) > MAX_DEPTH:
                await sio.emit(event, payload, namespace=namespace)
                try:
                    await asyncio.wait_for(closed.wait(), 10)
                    answered += 1
                except asyncio.TimeoutError:
                    bad.append((namespace, event, "too deep a packet, yet not closed", ""))
                await sio.disconnect()
                continue
            try:
                reply = await sio.call(event, payload, namespace=namespace, timeout=10)
            except socketio.exceptions.TimeoutError:
                bad.append((namespace, event, "no answer", repr(payload)[:300]))
                continue
            answered += 1
            if not isinstance(reply, dict) or "ok" not in reply:
                bad.append((namespace, event, "not an envelope", repr(reply)[:300]))
            elif not reply["ok"] and reply["error"]["code"] in BAD_CODES:
                bad.append((namespace, event, reply["error"], repr(payload)[:300]))
    finally:
        await sio.disconnect()
    return answered


async def fuzz_events(url: str, roles: Roles, total: int, seed: int) -> tuple[int, list]:
    bad: list = []
    jobs = []
    plan = [(role, ns) for ns, spec in sorted(REGISTRY.namespaces.items()) for role in sorted(roles.tokens)
            if (role if role != "other" else "user") in spec.roles]
    per = total // len(plan) + 1
    for n, (role, ns) in enumerate(plan):
        jobs.append(fuzz_namespace(url, ns, roles.tokens[role], per, random.Random(seed + n), roles.ids, bad))
    answered = 0
    for chunk in range(0, len(jobs), 8):  # a few sockets at a time
        answered += sum(await asyncio.gather(*jobs[chunk:chunk + 8]))
    return answered, bad


# --- HTTP -------------------------------------------------------------------------------

def http_routes() -> list[tuple[str, str]]:
    from hub.app import create_app

    app = create_app(make_settings(Path("/nonexistent-fuzz")))
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method not in ("HEAD", "OPTIONS", "*") and not path.startswith("/socket.io"):
            out.append((route.method, path))
    return sorted(set(out))


PATH_IDS = ["1", "0", "-1", "²", "١", "9" * 5000, str(2**63), str(2**64), "abc", "%00", "1.5", "1e3"]


def fuzz_path(path: str, rng: random.Random) -> str:
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + rng.choice(PATH_IDS) + path[end + 1:]
    return path


async def fuzz_http(url: str, roles: Roles, count: int, seed: int) -> tuple[int, list]:
    rng = random.Random(seed)
    routes = http_routes()
    bad: list = []
    sent = 0
    tokens = [None, "garbage", *roles.tokens.values()]
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            nonlocal sent
            method, path = routes[i % len(routes)]
            kw: dict = {}
            body_kind = rng.random()
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                if body_kind < 0.7:
                    kw["json"] = payload_for({"properties": {k: {} for k in rng.sample(
                        ["email", "password", "user_id", "user_ids", "namespace", "event", "to", "data", "title",
                         "message", "type", "name", "items", "status", "assistant_id", "refresh_token",
                         "content", "platforms", "scheduled_at", "text", "member_ids", "visitor_id"], 6)}},
                        {}, rng, roles.ids, 1.0)
                elif body_kind < 0.8:
                    kw["data"] = "[" * 20000 + "]" * 20000
                elif body_kind < 0.9:
                    kw["data"] = b"\xff\xfe{\x00"
                else:  # a multipart upload, its filename in raw bytes (Latin-1 among them)
                    name = rng.choice([b"a.txt", "\u00e9t\u00e9.txt".encode("latin-1"), "\u00e9".encode(), b"a\\b"])
                    kw["data"] = (b"--fuzz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name
                                  + b"\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--fuzz--\r\n")
                    kw["headers"] = {"Content-Type": "multipart/form-data; boundary=fuzz"}
            else:
                kw["params"] = {k: str(hostile(rng))[:300] for k in rng.sample(
                    ["limit", "offset", "page", "page_size", "since", "date_from", "date_to", "user_id",
                     "status", "search"], 3)}
            status, body = await request(session, url, method, fuzz_path(path, rng), rng.choice(tokens), **kw)
            sent += 1
            error = body.get("error") if isinstance(body, dict) else None
            if status >= 500 or (isinstance(error, dict) and error.get("code") in BAD_CODES):
                bad.append((method, path, status, repr(body)[:300]))
            elif status >= 400 and path.startswith(("/api", "/auth")) and not isinstance(error, dict):
                bad.append((method, path, status, "not the contract's error: " + repr(body)[:200]))

        for chunk in range(0, count, 20):
            await asyncio.gather(*(one(i) for i in range(chunk, min(chunk + 20, count))))
    return sent, bad


# --- the tests -----------------------------------------------------------------------------

async def audit(spawn_hubs, env: dict, events: int, requests: int) -> None:
    events, requests = int(events * SCALE), int(requests * SCALE)
    hub, = await spawn_hubs(1, {**FUZZ_ENV, **env})
    async with aiohttp.ClientSession() as session:
        roles = await make_roles(hub.url, hub.env, session)
    # The clients walk (and encode) a payload recursively before sending it.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * DEEP))
    try:
        answered, bad_events = await fuzz_events(hub.url, roles, events, SEED)
        sent, bad_http = await fuzz_http(hub.url, roles, requests, SEED)
    finally:
        sys.setrecursionlimit(limit)
    traces = log_problems(hub.log)
    assert answered >= events, f"only {answered} of {events} events answered (seed {SEED})"
    assert sent >= requests
    assert not bad_events, f"seed {SEED}: {len(bad_events)} bad answers, e.g. {bad_events[:5]}"
    assert not bad_http, f"seed {SEED}: {len(bad_http)} bad HTTP answers, e.g. {bad_http[:5]}"
    assert not traces, f"seed {SEED}: {len(traces)} Tracebacks in the log, e.g.\n" + "\n---\n".join(traces[:3])


@pytest.mark.timeout(600)
async def test_fuzzed_events_and_routes_never_fail_inside(spawn_hubs):
    """10,000+ fuzzed events on every request event of every namespace under every
    role, and fuzzed requests on every HTTP route, on SQLite."""
    await audit(spawn_hubs, {}, events=10_000, requests=2_000)


@pytest.mark.timeout(600)
async def test_fuzzed_events_on_postgresql_and_redis(spawn_hubs, pg_url, redis_url, redis_prefix):
    await audit(spawn_hubs, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                             "HUB_REDIS_PREFIX": redis_prefix}, events=3_000, requests=600)
