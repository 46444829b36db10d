"""Mixed, realistic load on a running hub: chat users, operators, website-widget
visitors and publishing backend services (CONTRACT.md §4-5).

    .venv/bin/python -m loadtests.prepare --url http://127.0.0.1:8000 --out loadtests/accounts.json
    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless \
        -u 200 -r 20 --run-time 2m --stop-timeout 10

Locust's --run-time and -u bound every run. Socket.IO requests (acked events) are
reported with request type "sio" and the event name; events received are counted
under "recv". HUB_LOCUST_ACCOUNTS names the accounts file (default
loadtests/accounts.json). The hub under test should allow the rates used here
(HUB_EVENT_RATE, HUB_USER_OP_LIMIT, HUB_WIDGET_SESSIONS_PER_MINUTE: every widget visitor comes from
127.0.0.1)."""
from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import time

import socketio
from locust import HttpUser, User, between, events, task

ACCOUNTS_FILE = os.environ.get("HUB_LOCUST_ACCOUNTS", "loadtests/accounts.json")
_accounts: dict | None = None
_next = {"users": itertools.count(), "operators": itertools.count()}


def accounts() -> dict:
    global _accounts
    if _accounts is None:
        with open(ACCOUNTS_FILE) as fh:
            _accounts = json.load(fh)
    return _accounts


def take(kind: str) -> dict:
    pool = accounts()[kind]
    return pool[next(_next[kind]) % len(pool)]


class SocketIOUser(User):
    """A locust user holding Socket.IO connections (python-socketio's client, websocket)."""

    abstract = True

    def on_start(self):
        self.conns: dict[str, socketio.Client] = {}

    def on_stop(self):
        for sio in self.conns.values():
            try:
                sio.disconnect()
            except Exception:
                pass

    def connect(self, namespace: str, token: str) -> socketio.Client:
        sio = socketio.Client(reconnection=False)
        fire = self.environment.events.request.fire

        def record(event, *args):
            fire(request_type="recv", name=f"{namespace} {event}", response_time=0, response_length=0,
                 exception=None, context={})

        sio.on("*", record, namespace=namespace)
        started = time.perf_counter()
        try:
            sio.connect(self.host, namespaces=[namespace], auth={"token": token}, transports=["websocket"],
                        wait_timeout=10)
            exc = None
        except Exception as e:  # refused or unreachable
            exc = e
        fire(request_type="connect", name=namespace, response_time=(time.perf_counter() - started) * 1000,
             response_length=0, exception=exc, context={})
        if exc is None:
            self.conns[namespace] = sio
        return sio

    def call(self, namespace: str, event: str, data: dict | None = None):
        """An acked request; returns the ack's data, or None if it failed."""
        sio = self.conns.get(namespace)
        started = time.perf_counter()
        result, exc = None, None
        if sio is None:
            exc = RuntimeError(f"not connected to {namespace}")
        else:
            try:
                reply = sio.call(event, data or {}, namespace=namespace, timeout=10)
                if reply.get("ok"):
                    result = reply["data"]
                else:
                    exc = RuntimeError(f"{reply['error']['code']}: {reply['error']['message']}")
            except Exception as e:
                exc = e
        self.environment.events.request.fire(
            request_type="sio", name=f"{namespace} {event}", response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exc, context={})
        return result


class ChatUser(SocketIOUser):
    """A user of /chat: sends messages to a few peers, reads history and threads,
    types, and keeps a /notifications connection open."""

    weight = 6
    wait_time = between(1, 5)

    def on_start(self):
        super().on_start()
        me = take("users")
        self.me = me["id"]
        others = [u["id"] for u in accounts()["users"] if u["id"] != self.me]
        self.peers = random.sample(others, min(5, len(others)))
        self.talked: set[int] = set()
        self.connect("/chat", me["token"])
        self.connect("/notifications", me["token"])

    @task(6)
    def send(self):
        peer = random.choice(self.peers)
        if self.call("/chat", "message:send", {"recipient_id": peer, "message": "hello " + secrets.token_hex(8),
                                               "client_msg_id": secrets.token_hex(8)}) is not None:
            self.talked.add(peer)

    @task(2)
    def typing(self):
        if self.talked:
            self.call("/chat", "typing:set", {"other_user_id": random.choice(list(self.talked)), "is_typing": True})

    @task(2)
    def threads(self):
        self.call("/chat", "threads:list", {"limit": 20})

    @task(2)
    def history(self):
        if self.talked:
            self.call("/chat", "thread:history", {"other_user_id": random.choice(list(self.talked)), "page_size": 20})

    @task(1)
    def unread(self):
        self.call("/chat", "unread:count")
        self.call("/notifications", "notifications:unread-count")


class Operator(SocketIOUser):
    """A support operator's console: heartbeats, watches the handoff queue, takes
    a waiting dialog, answers in it through /dialogs and releases it."""

    weight = 1
    wait_time = between(2, 5)

    def on_start(self):
        super().on_start()
        op = take("operators")
        self.connect("/operators", op["token"])
        self.connect("/dialogs", op["token"])
        self.call("/operators", "presence:update", {"status": "online", "max_active_chats": 5})
        self.held: list[int] = []

    @task(3)
    def heartbeat(self):
        self.call("/operators", "presence:heartbeat")

    @task(3)
    def queue(self):
        waiting = self.call("/operators", "handoff:queue") or []
        if waiting and len(self.held) < 3:
            dialog_id = waiting[0]["dialog_id"]
            # Racing operators: exactly one wins; the others get `conflict`, which
            # is the contract, so only the winner goes on.
            sio = self.conns.get("/operators")
            if sio is None:
                return
            started, exc = time.perf_counter(), None
            try:
                reply = sio.call("handoff:accept", {"dialog_id": dialog_id}, namespace="/operators", timeout=10)
                if not reply.get("ok") and reply["error"]["code"] != "conflict":
                    exc = RuntimeError(reply["error"]["code"])
            except Exception as e:
                reply, exc = {}, e
            self.environment.events.request.fire(
                request_type="sio", name="/operators handoff:accept (lost races count as ok)",
                response_time=(time.perf_counter() - started) * 1000, response_length=0, exception=exc, context={})
            if reply.get("ok"):
                self.held.append(dialog_id)
                self.call("/dialogs", "dialog:join", {"dialog_id": dialog_id})

    @task(4)
    def answer(self):
        if self.held:
            self.call("/dialogs", "dialog:send", {"dialog_id": random.choice(self.held),
                                                  "text": "an operator's answer " + secrets.token_hex(4)})

    @task(1)
    def release(self):
        if self.held:
            dialog_id = self.held.pop(0)
            self.call("/operators", "handoff:release", {"dialog_id": dialog_id})

    @task(1)
    def active(self):
        self.call("/operators", "chats:active")


class WidgetVisitor(SocketIOUser):
    """An anonymous visitor of a website: opens a widget session over HTTP, then
    talks in its dialog over /dialogs, and sometimes asks for a human."""

    weight = 3
    wait_time = between(2, 8)

    def on_start(self):
        super().on_start()
        import requests

        acc = accounts()
        started = time.perf_counter()
        exc = None
        try:
            resp = requests.post(self.host + "/api/widget/sessions", json={"assistant_id": acc["assistant_id"]},
                                 headers={"Origin": acc["widget_origin"]}, timeout=10)
            resp.raise_for_status()
            body = resp.json()
        except Exception as e:
            exc, body = e, None
        self.environment.events.request.fire(request_type="POST", name="/api/widget/sessions",
                                             response_time=(time.perf_counter() - started) * 1000,
                                             response_length=0, exception=exc, context={})
        self.dialog_id = body and body["dialog_id"]
        if body:
            self.connect("/dialogs", body["visitor_token"])
        self.asked = False

    @task(6)
    def say(self):
        if self.dialog_id:
            self.call("/dialogs", "dialog:send", {"dialog_id": self.dialog_id, "text": "a visitor asks " +
                                                  secrets.token_hex(4), "client_msg_id": secrets.token_hex(8)})

    @task(2)
    def typing(self):
        if self.dialog_id:
            self.call("/dialogs", "typing:set", {"dialog_id": self.dialog_id, "is_typing": True})

    @task(1)
    def handoff(self):
        if self.dialog_id and not self.asked:
            self.asked = self.call("/dialogs", "dialog:handoff", {"dialog_id": self.dialog_id,
                                                                   "reason": "wants a human"}) is not None


class PublishingService(HttpUser):
    """A backend service: publishes order events and creates notifications over HTTP."""

    weight = 1
    wait_time = between(0.5, 2)

    def on_start(self):
        self.headers = {"Authorization": f"Bearer {accounts()['service_token']}"}
        self.user_ids = [u["id"] for u in accounts()["users"]]

    @task(3)
    def publish(self):
        self.client.post("/api/publish", headers=self.headers, name="/api/publish", json={
            "namespace": "/orders", "event": "payment:received",
            "to": {"user_ids": random.sample(self.user_ids, min(3, len(self.user_ids)))},
            "data": {"payment_id": random.randint(1, 10**9), "invoice_id": random.randint(1, 10**9),
                     "amount_krw": random.randint(1000, 100000)}})

    @task(1)
    def notify(self):
        self.client.post("/api/notifications", headers=self.headers, name="/api/notifications", json={
            "user_id": random.choice(self.user_ids), "type": "info", "title": "Load test",
            "message": "a notification from a backend service"})


@events.init_command_line_parser.add_listener
def _(parser):
    parser.add_argument("--hub-accounts", default=ACCOUNTS_FILE, help="accounts file of loadtests.prepare")


@events.test_start.add_listener
def _(environment, **kw):
    global ACCOUNTS_FILE
    opts = environment.parsed_options
    if opts is not None and getattr(opts, "hub_accounts", None):
        ACCOUNTS_FILE = opts.hub_accounts
    accounts()
