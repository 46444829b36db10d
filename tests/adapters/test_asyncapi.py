"""GET /asyncapi.json: generated from the registry, valid for the official parser,
and following the registry as namespaces are added."""
from __future__ import annotations

import json

from pydantic import BaseModel

from handlers.registry import REGISTRY, namespace, operation, server_event
from handlers.schema import Input, Output
from hub.adapters.asyncapi import build
from tests.support.node import run_node


class Ping(Input):
    text: str


class Pong(Output):
    text: str


def resolve(doc: dict, ref: str):
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def all_refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def channel_of(doc: dict, ns: str) -> tuple[str, dict]:
    (found,) = [(key, ch) for key, ch in doc["channels"].items() if ch["address"] == ns]
    return found


def ops_by_title(doc: dict, chan: str, action: str) -> dict[str, dict]:
    return {op["title"]: op for op in doc["operations"].values()
            if op["channel"]["$ref"] == f"#/channels/{chan}" and op["action"] == action}


async def test_document_covers_the_whole_registry(server, api):
    status, doc = await api.request("GET", "/asyncapi.json")
    assert status == 200 and doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["hub"]["host"] == f"127.0.0.1:{server.port}"
    assert {ch["address"] for ch in doc["channels"].values()} == set(REGISTRY.namespaces) | {"/ws"}
    plain = doc["channels"]["plain"]
    assert plain["bindings"]["ws"]["method"] == "GET" and doc["servers"]["plain"]["pathname"] == "/ws"
    for ref in all_refs(doc):
        resolve(doc, ref)  # every reference points at something

    for ns, spec in REGISTRY.namespaces.items():
        chan, channel = channel_of(doc, ns)
        assert channel["description"] == spec.description
        assert channel["x-publish-rooms"] == list(spec.publish_rooms)
        sends = ops_by_title(doc, chan, "send")
        assert set(sends) == set(REGISTRY.operations_of(ns))
        for event, op in REGISTRY.operations_of(ns).items():
            entry = sends[event]
            request = resolve(doc, resolve(doc, entry["messages"][0]["$ref"])["$ref"])
            assert request["name"] == event
            schema = request["payload"]
            if "$ref" in schema:
                schema = resolve(doc, schema["$ref"])
            assert set(schema.get("properties", {})) == set(op.input.model_fields)
            ack = resolve(doc, resolve(doc, entry["reply"]["messages"][0]["$ref"])["$ref"])
            ok, failed = ack["payload"]["oneOf"]
            assert ok["properties"]["ok"] == {"const": True}
            assert resolve(doc, failed["$ref"])["properties"]["ok"]["const"] is False
            assert entry["x-roles"] == sorted(op.roles or spec.roles)
            assert entry.get("x-http") == ({"method": op.http[0], "path": op.http[1]} if op.http else None)
        receives = ops_by_title(doc, chan, "receive")
        assert set(receives) == set(REGISTRY.events_of(ns)) | {"error"}
        for event, ev in REGISTRY.events_of(ns).items():
            message = resolve(doc, resolve(doc, receives[event]["messages"][0]["$ref"])["$ref"])
            assert message["x-publishable"] is ev.publishable
            schema = resolve(doc, message["payload"]["$ref"])
            assert set(schema["properties"]) == set(ev.model.model_fields)

    errors = resolve(doc, "#/components/schemas/ErrorBody")
    assert "conflict" in errors["properties"]["code"]["enum"]


async def test_schemas_come_from_the_models(server, api):
    _, doc = await api.request("GET", "/asyncapi.json")
    create = doc["components"]["schemas"]["CreateOrder"]
    assert create["additionalProperties"] is False
    assert (create["properties"]["items"]["minItems"], create["properties"]["items"]["maxItems"]) == (1, 100)
    item = doc["components"]["schemas"]["Item"]
    assert item["properties"]["quantity"]["minimum"] == 1 and item["properties"]["price_krw"]["minimum"] == 0
    chan, _ = channel_of(doc, "/orders")
    receives = ops_by_title(doc, chan, "receive")
    assert receives["invoice:generated"]["x-publishable"] is True
    assert receives["order:created"]["x-publishable"] is False
    shipped = doc["components"]["schemas"]["OrderShipped"]
    assert {"order_id", "tracking_number", "estimated_delivery"} <= set(shipped["required"])


async def test_namespaces_added_at_runtime_are_picked_up(server, api):
    """Another module registering a namespace appears without touching the generator."""
    saved = (dict(REGISTRY.namespaces), dict(REGISTRY.operations), dict(REGISTRY.events))
    try:
        namespace("/zz-probe", "A namespace registered by a test.", roles={"user"}, publish_rooms=(r"probe:\d+",))

        @operation("/zz-probe", "probe:ping", http=("POST", "/api/probe"))
        async def ping(ctx, req: Ping) -> Pong:
            """Echo."""
            return Pong(text=req.text)

        @server_event("/zz-probe", "probe:echoed", publishable=True)
        class Echoed(Output):
            """Echoed something."""

            probe_id: int

        _, doc = await api.request("GET", "/asyncapi.json")
        chan, channel = channel_of(doc, "/zz-probe")
        assert channel["x-publish-rooms"] == [r"probe:\d+"]
        sends = ops_by_title(doc, chan, "send")
        assert sends["probe:ping"]["summary"] == "Echo." and sends["probe:ping"]["x-http"]["path"] == "/api/probe"
        receives = ops_by_title(doc, chan, "receive")
        assert receives["probe:echoed"]["x-publishable"] is True
        assert "probe_id" in doc["components"]["schemas"]["Echoed"]["properties"]
    finally:
        for target, old in zip((REGISTRY.namespaces, REGISTRY.operations, REGISTRY.events), saved):
            target.clear()
            target.update(old)
    _, doc = await api.request("GET", "/asyncapi.json")
    assert "/zz-probe" not in {ch["address"] for ch in doc["channels"].values()}


def test_same_named_models_of_different_namespaces_stay_apart():
    class Thing(BaseModel):
        a: int

    first = Thing

    class Thing(BaseModel):  # noqa: F811 - a second model with the same name
        b: str

    saved = (dict(REGISTRY.namespaces), dict(REGISTRY.events))
    try:
        namespace("/zz-one", "one", roles={"user"})
        namespace("/zz-two", "two", roles={"user"})
        server_event("/zz-one", "thing")(first)
        server_event("/zz-two", "thing")(Thing)
        doc = build(REGISTRY)
        payloads = []
        for ns in ("/zz-one", "/zz-two"):
            chan, _ = channel_of(doc, ns)
            message = resolve(doc, resolve(doc, ops_by_title(doc, chan, "receive")["thing"]["messages"][0]["$ref"])["$ref"])
            payloads.append(set(resolve(doc, message["payload"]["$ref"])["properties"]))
        assert payloads == [{"a"}, {"b"}]
    finally:
        for target, old in zip((REGISTRY.namespaces, REGISTRY.events), saved):
            target.clear()
            target.update(old)


async def test_the_official_asyncapi_parser_accepts_it(server, node):
    out = json.loads(await run_node("asyncapi_validate.mjs", server.url + "/asyncapi.json"))
    assert out["errors"] == [] and out["warnings"] == []
    assert set(out["channels"]) == set(REGISTRY.namespaces) | {"/ws"}
    assert "orders.order_create" in out["operations"]
