"""Accounts and tokens for the locust scenarios (loadtests/locustfile.py).

    HUB_DATABASE_URL=... HUB_JWT_SECRET=... .venv/bin/python -m loadtests.prepare \
        --url http://127.0.0.1:8000 --users 200 --operators 10 --out loadtests/accounts.json

Run it with the same HUB_* environment as the hub under test (it writes the users
straight into that database, as `hub users create` does, without the HTTP
register rate limit, and mints tokens with HUB_JWT_SECRET, as `hub token issue`
does). Over HTTP it then creates one assistant whose allowed origin is the one the
widget visitors send. The file it writes holds bearer tokens: keep it private, and
delete it after the test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets

import aiohttp

WIDGET_ORIGIN = "http://loadtest.localhost"


async def prepare(url: str, users: int, operators: int, ttl: int) -> dict:
    from hub.auth import Tokens, hash_password
    from hub.settings import Settings
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    settings = Settings.from_env().with_jwt_secret()
    tokens = Tokens(settings.jwt_secret, access_ttl=ttl, refresh_ttl=ttl, service_ttl=ttl)
    db = Database(settings.database_url)
    run = secrets.token_hex(3)
    try:
        await upgrade(db.engine)
        pw = await hash_password(secrets.token_urlsafe(12))
        made = {"user": [], "operator": []}
        async with db.transaction() as tx:
            for role, count in (("user", users), ("operator", operators)):
                for i in range(count):
                    u = await users_store.create_user(tx, email=f"load{run}-{role}{i}@example.com",
                                                      password_hash=pw, role=role, first_name="Load")
                    made[role].append(u)
    finally:
        await db.close()
    out = {
        "url": url,
        "users": [{"id": u.id, "token": tokens.access(u.id, "user").token} for u in made["user"]],
        "operators": [{"id": u.id, "token": tokens.access(u.id, "operator").token} for u in made["operator"]],
        "service_token": tokens.service(f"loadtest-{run}").token,
        "widget_origin": WIDGET_ORIGIN,
    }
    owner = out["users"][0]["token"]
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/api/assistants", headers={"Authorization": f"Bearer {owner}"},
                             json={"name": f"load {run}", "allowed_origins": [WIDGET_ORIGIN]}) as resp:
            body = await resp.json(content_type=None)
            if resp.status >= 300:
                raise SystemExit(f"could not create the assistant: {resp.status} {body}")
            out["assistant_id"] = body.get("id") or body.get("data", {}).get("id")
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--operators", type=int, default=10)
    p.add_argument("--ttl", type=int, default=6 * 3600, help="token lifetime, seconds")
    p.add_argument("--out", default="loadtests/accounts.json")
    args = p.parse_args()
    data = asyncio.run(prepare(args.url, args.users, args.operators, args.ttl))
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    print(f"wrote {args.out}: {len(data['users'])} users, {len(data['operators'])} operators, "
          f"a service token, assistant {data['assistant_id']}")


if __name__ == "__main__":
    main()
