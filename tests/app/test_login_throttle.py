"""Login throttling per account (across addresses and instances), and `Retry-After`
on every 429 (`retry_after` in the error details of socket acks). Real servers,
real clients."""
from __future__ import annotations

import asyncio
import secrets

from tests.support.clients import Api
from tests.support.servers import make_settings


async def login(api: Api, email: str, password: str, address: str):
    """POST /auth/login from `address` (the server trusts X-Forwarded-For)."""
    async with api.session.post(api.url + "/auth/login", json={"email": email, "password": password},
                                headers={"X-Forwarded-For": address}) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def check_backoff(apis: list[Api]) -> None:
    email = f"victim{secrets.token_hex(4)}@example.com"
    status, _ = await apis[0].request("POST", "/auth/register", json={"email": email, "password": "right password"})
    assert status == 201
    # Five wrong passwords, each from another address and alternately on each instance.
    for i in range(5):
        status, body, _ = await login(apis[i % len(apis)], email, "wrong password", f"10.0.0.{i}")
        assert status == 401, body
    # Now the account is locked for everyone, even with the right password, anywhere.
    for i, api in enumerate(apis):
        status, body, retry_after = await login(api, email, "right password", f"10.0.1.{i}")
        assert status == 429 and body["error"]["code"] == "rate_limited", body
        assert int(retry_after) >= 1 and body["error"]["details"]["retry_after"] == int(retry_after)
    # Another account is not affected.
    other = f"other{secrets.token_hex(4)}@example.com"
    await apis[-1].request("POST", "/auth/register", json={"email": other, "password": "right password"})
    assert (await login(apis[-1], other, "right password", "10.0.2.1"))[0] == 200
    # Once the lock has passed, the right password works and the count starts over.
    await asyncio.sleep(int(retry_after))
    assert (await login(apis[-1], email, "right password", "10.0.3.1"))[0] == 200
    assert (await login(apis[0], email, "wrong password", "10.0.3.2"))[0] == 401
    assert (await login(apis[0], email, "right password", "10.0.3.3"))[0] == 200


async def test_failed_logins_back_off_per_account_across_addresses(start_server, tmp_path, http):
    server = await start_server(make_settings(tmp_path, trust_proxy=True))
    await check_backoff([Api(server.url, http)])


async def test_account_backoff_is_shared_by_instances(start_server, tmp_path, pg_url, redis_url, redis_prefix, http):
    settings = make_settings(tmp_path, trust_proxy=True, database_url=pg_url, redis_url=redis_url,
                             redis_prefix=redis_prefix)
    one, two = await start_server(settings), await start_server(settings)
    await check_backoff([Api(one.url, http), Api(two.url, http)])


async def test_every_429_says_when_to_retry(start_server, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, register_per_minute=1, event_rate=0.1, event_burst=2))
    api = Api(server.url, http)
    login = await api.user()
    async with http.post(server.url + "/auth/register", json={"email": "x@example.com", "password": "password1"}) as resp:
        body = await resp.json()
        assert resp.status == 429 and int(resp.headers["Retry-After"]) == body["error"]["details"]["retry_after"] >= 1
    client = await connect(server.url, "/chat", login["access_token"])
    replies = [await client.call("unread:count") for _ in range(3)]
    assert [r["ok"] for r in replies] == [True, True, False]
    error = replies[2]["error"]
    assert error["code"] == "rate_limited" and error["details"]["retry_after"] >= 1
