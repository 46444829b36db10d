"""Auth routes of CONTRACT §4 and token checks at the Socket.IO edge."""
import asyncio
import stat
import time
from dataclasses import replace

import jwt
import pytest
import socketio

from hub.settings import Settings, SettingsError
from tests.support.clients import Api
from tests.support.servers import SECRET, make_settings


async def test_register_login_me(api):
    status, user = await api.request("POST", "/auth/register", json={
        "email": "Ann@Example.com", "password": "correct horse", "first_name": "Ann"})
    assert status == 201
    assert user["email"] == "ann@example.com" and user["role"] == "user" and "password_hash" not in user
    status, body = await api.request("POST", "/auth/register", json={"email": "ann@example.com", "password": "x" * 8})
    assert status == 409 and body["error"]["code"] == "conflict"

    status, login = await api.request("POST", "/auth/login", json={"email": "ann@example.com", "password": "correct horse"})
    assert status == 200
    assert login["token_type"] == "bearer" and login["expires_in"] == 15 * 60 and login["user"]["id"] == user["id"]
    claims = jwt.decode(login["access_token"], SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 15 * 60 and claims["sub"] == str(user["id"])

    status, me = await api.request("GET", "/auth/me", token=login["access_token"])
    assert status == 200 and me == user

    status, body = await api.request("POST", "/auth/login", json={"email": "ann@example.com", "password": "wrong password"})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.request("GET", "/auth/me")
    assert status == 401 and body == {"error": {"code": "unauthorized", "message": "missing token"}, "detail": "missing token"}


@pytest.mark.parametrize("body", [
    {"email": "not-an-email", "password": "long enough"},
    {"email": "a@b.co", "password": "short"},
    {"email": "a@b.co", "password": "long enough", "role": "admin"},  # roles are never self-assigned
    {"email": 5, "password": "long enough"},
])
async def test_register_rejects_bad_input(api, body):
    status, reply = await api.request("POST", "/auth/register", json=body)
    assert status == 422 and reply["error"]["code"] == "validation_error" and reply["error"]["details"]


async def test_malformed_json_and_unknown_route(api):
    status, reply = await api.request("POST", "/auth/login", data=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 422 and reply["error"]["code"] == "validation_error"
    status, reply = await api.request("GET", "/no/such/route")
    assert status == 404 and reply["error"]["code"] == "not_found"


async def test_refresh_rotates_and_reuse_ends_the_family(api):
    login = await api.user()
    status, pair = await api.request("POST", "/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert status == 200 and pair["refresh_token"] != login["refresh_token"]
    assert (await api.request("GET", "/auth/me", token=pair["access_token"]))[0] == 200
    # The rotated token no longer works, and presenting it ends the newer pair too.
    status, body = await api.request("POST", "/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert status == 401
    status, _ = await api.request("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 401
    assert (await api.request("GET", "/auth/me", token=pair["access_token"]))[0] == 401
    # An access token is not a refresh token.
    status, _ = await api.request("POST", "/auth/refresh", json={"refresh_token": login["access_token"]})
    assert status == 401


async def test_logout_revokes_access_and_refresh_and_disconnects_sockets(server, api, connect):
    login = await api.user()
    other = await api.user()
    client = await connect(server.url, "/chat", login["access_token"])
    bystander = await connect(server.url, "/chat", other["access_token"])
    disconnected = asyncio.Event()
    client.sio.on("disconnect", lambda *a: disconnected.set(), namespace="/chat")
    status, _ = await api.request("POST", "/auth/logout", token=login["access_token"])
    assert status == 200
    await asyncio.wait_for(disconnected.wait(), 5)
    assert bystander.sio.connected
    assert (await api.request("GET", "/auth/me", token=login["access_token"]))[0] == 401
    assert (await api.request("POST", "/auth/refresh", json={"refresh_token": login["refresh_token"]}))[0] == 401
    again = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await again.connect(server.url, namespaces=["/chat"], auth={"token": login["access_token"]}, wait_timeout=3)


async def test_register_and_login_are_rate_limited(api):
    for i in range(5):
        status, _ = await api.request("POST", "/auth/register", json={"email": f"r{i}@rl.io", "password": "password1"})
        assert status == 201
    status, body = await api.request("POST", "/auth/register", json={"email": "r9@rl.io", "password": "password1"})
    assert status == 429 and body["error"]["code"] == "rate_limited" and body["error"]["details"]["retry_after"] > 0
    # Per address: ten tries a minute, whichever accounts (per account: tests/app/test_login_throttle.py).
    codes = [(await api.request("POST", "/auth/login", json={"email": f"r{i}@rl.io", "password": "bad password"}))[0]
             for i in range(11)]
    assert codes == [401] * 10 + [429]


async def test_socket_connect_refuses_bad_expired_and_missing_tokens(server, api, connect):
    login = await api.user()
    expired = jwt.encode({"typ": "access", "jti": "x", "sub": str(login["user"]["id"]), "role": "user",
                          "iat": int(time.time()) - 100, "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    forged = jwt.encode({"typ": "access", "jti": "y", "sub": "1", "role": "admin",
                         "iat": int(time.time()), "exp": int(time.time()) + 100}, "another-secret" * 4, algorithm="HS256")
    for token, message in [(None, "missing token"), ("garbage", "invalid token"), (expired, "token expired"),
                           (forged, "invalid token"), (login["refresh_token"], "wrong kind of token")]:
        errors = []
        client = socketio.AsyncClient(reconnection=False)
        client.on("connect_error", lambda data: errors.append(data), namespace="/chat")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(server.url, namespaces=["/chat"], auth={"token": token} if token else None,
                                 wait_timeout=3)
        assert errors == [{"message": message, "data": {"code": "unauthorized", "message": message}}]
    # ?token= in the query string is accepted for clients that cannot send auth.
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(f"{server.url}?token={login['access_token']}", namespaces=["/chat"], wait_timeout=3)
    assert client.connected
    await client.disconnect()


def test_jwt_secret_is_generated_once_beside_the_database(tmp_path):
    settings = Settings.from_env({"HUB_DATA_DIR": str(tmp_path)})
    first = settings.with_jwt_secret()
    path = tmp_path / "jwt_secret"
    assert first.jwt_secret and path.read_text() == first.jwt_secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.with_jwt_secret().jwt_secret == first.jwt_secret


def test_several_instances_refuse_to_start_without_a_secret(tmp_path):
    settings = Settings.from_env({"HUB_DATA_DIR": str(tmp_path), "HUB_REDIS_URL": "redis://127.0.0.1:6379"})
    with pytest.raises(SettingsError, match="HUB_JWT_SECRET"):
        settings.with_jwt_secret()
    with pytest.raises(SettingsError, match="32"):
        replace(settings, jwt_secret="short").with_jwt_secret()


async def test_token_issued_by_cli_works(tmp_path, start_server, http):
    import os
    import subprocess
    import sys

    settings = make_settings(tmp_path)
    server = await start_server(settings)
    api = Api(server.url, http)
    login = await api.user(email="cli@example.com")
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path), "HUB_JWT_SECRET": SECRET}
    out = subprocess.run([sys.executable, "-m", "hub.cli", "token", "issue", "--user", "cli@example.com"],
                         env=env, capture_output=True, text=True, check=True)
    status, me = await api.request("GET", "/auth/me", token=out.stdout.strip())
    assert status == 200 and me["id"] == login["user"]["id"]
    out = subprocess.run([sys.executable, "-m", "hub.cli", "users", "create", "op@example.com",
                          "--password", "operator-pw", "--role", "operator"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    status, body = await api.request("POST", "/auth/login", json={"email": "op@example.com", "password": "operator-pw"})
    assert status == 200 and body["user"]["role"] == "operator"
    out = subprocess.run([sys.executable, "-m", "hub.cli", "token", "issue", "--role", "service", "--name", "billing"],
                         env=env, capture_output=True, text=True, check=True)
    claims = jwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["role"] == "service" and claims["name"] == "billing"
