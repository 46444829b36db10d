"""The `hub` command (CONTRACT §6)."""
from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import signal
import sys

from aiohttp import web

from hub import logs
from hub.settings import Settings, SettingsError
from hub.shutdown import Shutdown

log = logging.getLogger("hub")


def serve(settings: Settings, args) -> None:
    from hub.app import create_app
    from hub.adapters.http.common import HUB

    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        pass
    app = create_app(settings)
    # What exists now (modules, the app) lives as long as the process: move it out of
    # the collector's sight, and collect the young generation less often. The hub
    # makes many short-lived objects per event; this cut ~10% of its CPU per chat
    # message in loadtests/bench.py (docs/performance.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 1_000)
    stopping = app[HUB].stopping
    try:
        asyncio.run(_serve(app, args.host, args.port, stopping))
    finally:
        stopping.finish()  # after the loop's own teardown, which the watchdog bounds too


async def _serve(app: web.Application, host: str, port: int, stopping: Shutdown) -> None:
    """Run until SIGTERM or SIGINT, then shut down within `stopping.bound` seconds
    (aiohttp's run_app, with the signal arming the watchdog before anything that
    could hang)."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=stopping.requests_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"hub listening on http://{host}:{port}", flush=True)
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await signalled.wait()
        stopping.arm("signal received")
    finally:
        await runner.cleanup()


async def _with_db(settings: Settings, work):
    from storage.db import Database
    from storage.migrate import upgrade

    db = Database(settings.database_url)
    try:
        await upgrade(db.engine)
        return await work(db)
    finally:
        await db.close()


def migrate(settings: Settings, args) -> None:
    async def nothing(db):
        return None

    asyncio.run(_with_db(settings, nothing))
    print("schema is up to date")


def create_user(settings: Settings, args) -> None:
    from hub.auth import hash_password
    from storage import users

    password = args.password or getpass.getpass("password: ")
    if len(password) < 8:
        raise SettingsError("the password must have at least 8 characters")

    async def work(db):
        async with db.transaction() as tx:
            return await users.create_user(tx, email=args.email, password_hash=await hash_password(password),
                                           role=args.role, first_name=args.first_name, last_name=args.last_name)

    try:
        user = asyncio.run(_with_db(settings, work))
    except users.EmailTaken:
        raise SettingsError(f"{args.email} is already registered") from None
    print(f"created {user.role} {user.email} (id {user.id})")


def _tokens(settings: Settings):
    from hub.auth import Tokens

    return Tokens(settings.jwt_secret, access_ttl=settings.access_token_ttl,
                  refresh_ttl=settings.refresh_token_ttl, service_ttl=settings.service_token_ttl)


def issue_token(settings: Settings, args) -> None:
    from storage import tokens as token_store
    from storage import users

    settings = settings.with_jwt_secret()
    tokens = _tokens(settings)
    if args.user:
        async def find(db):
            async with db.transaction() as tx:
                return await users.by_email(tx, args.user)

        user = asyncio.run(_with_db(settings, find))
        if user is None:
            raise SettingsError(f"no user {args.user}")
        print(tokens.access(user.id, user.role).token)
        return
    if args.role != "service" or not args.name:
        raise SettingsError("give --user EMAIL, or --role service --name NAME")
    issued = tokens.service(args.name, args.assistant_id)

    async def record(db):
        # Recorded, so that `hub token list` shows it and `hub token revoke` ends it.
        async with db.transaction() as tx:
            await token_store.add_service(tx, jti=issued.jti, name=args.name, assistant_id=args.assistant_id,
                                          expires_at=token_store.expiry(issued.expires_at))

    asyncio.run(_with_db(settings, record))
    print(issued.token)


def list_tokens(settings: Settings, args) -> None:
    from storage import tokens as token_store
    from storage.base import aware

    async def work(db):
        async with db.transaction() as tx:
            return await token_store.services(tx)

    def when(value) -> str:
        return aware(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"

    rows = asyncio.run(_with_db(settings, work))
    print("\t".join(("id", "role", "name", "assistant", "issued", "expires", "revoked")))
    for token, revoked in rows:
        role = "bot" if token.assistant_id is not None else "service"
        print("\t".join((token.jti, role, token.name, str(token.assistant_id or "-"), when(token.issued_at),
                         when(token.expires_at), when(revoked))))


def revoke_token(settings: Settings, args) -> None:
    """Revoke a listed service/bot token by id, or any hub token given whole. Running
    instances refuse it within seconds and disconnect its sockets."""
    from handlers.errors import Unauthorized
    from storage import tokens as token_store
    from storage import users

    given = args.token
    claims = None
    if "." in given:  # a whole token: any kind the hub issued
        try:
            claims = _tokens(settings.with_jwt_secret()).decode(
                given, typ=("access", "refresh", "service", "visitor"))
        except Unauthorized as exc:
            raise SettingsError(f"not a token of this hub: {exc.message}") from None

    async def work(db):
        async with db.transaction() as tx:
            if claims is not None:
                jti, expires_at = claims["jti"], token_store.expiry(claims["exp"])
                if claims["typ"] == "refresh":  # refresh tokens are refused by their own record
                    await users.revoke_refresh(tx, jti=jti)
            else:
                row = await token_store.get_service(tx, given)
                if row is None:
                    raise SettingsError(f"no service token {given} (see `hub token list`)")
                jti, expires_at = row.jti, row.expires_at
            return jti, await token_store.revoke(tx, jti, expires_at)

    jti, revoked = asyncio.run(_with_db(settings, work))
    print(f"revoked {jti}" if revoked else f"{jti} was already revoked")


def show_config(settings: Settings, args) -> None:
    for name, value in settings.effective().items():
        print(f"{name}={value}")


def types(settings: Settings, args) -> None:
    from hub.adapters.typescript import build

    print(build(), end="")


def conformance_server(settings: Settings, args) -> None:
    from hub.adapters.conformance import run

    run(settings, args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hub", description="The real-time messaging hub.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run an instance")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(run=serve)

    k = sub.add_parser("conformance-server", help="the transport with the protocol test suites' reference behaviour")
    k.add_argument("--host", default="127.0.0.1")
    k.add_argument("--port", type=int, default=3000)
    k.add_argument("--parser", choices=["default", "msgpack"], default="default")
    k.set_defaults(run=conformance_server)

    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(run=migrate)
    sub.add_parser("config", help="print the effective settings, secrets masked").set_defaults(run=show_config)
    sub.add_parser("types", help="print TypeScript declarations of every namespace's events "
                                 "(for socket.io-client)").set_defaults(run=types)

    u = sub.add_parser("users", help="manage accounts").add_subparsers(dest="users_command", required=True)
    c = u.add_parser("create", help="create an account (staff roles included)")
    c.add_argument("email")
    c.add_argument("--password", help="prompted for when omitted")
    c.add_argument("--role", default="user", choices=["user", "operator", "admin"])
    c.add_argument("--first-name")
    c.add_argument("--last-name")
    c.set_defaults(run=create_user)

    t = sub.add_parser("token", help="issue, list and revoke tokens").add_subparsers(dest="token_command",
                                                                                    required=True)
    i = t.add_parser("issue", help="print a service/bot token, or an access token for a user")
    i.add_argument("--role", choices=["service"])
    i.add_argument("--name")
    i.add_argument("--assistant-id", type=int)
    i.add_argument("--user", metavar="EMAIL")
    i.set_defaults(run=issue_token)
    t.add_parser("list", help="list the issued service and bot tokens").set_defaults(run=list_tokens)
    r = t.add_parser("revoke", help="revoke a service/bot token by id (or any token, given whole)")
    r.add_argument("token", metavar="ID_OR_TOKEN")
    r.set_defaults(run=revoke_token)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logs.setup(settings)
        for warning in settings.warnings:
            log.warning(warning)
        args.run(settings, args)
    except SettingsError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
