"""The web pages the hub serves: the operator console, the website widget and its demo.

Our own files live in `web/`; the official socket.io-client comes from the npm
registry through web/package-lock.json (`npm ci --prefix web`) and is served from
web/node_modules — no third-party code is committed."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from handlers.errors import NotFound, Unavailable


def _web_dir() -> Path:
    """web/ beside the source tree (editable install, `make run`), else ./web (an
    installed package run from a directory holding web/, as in a container image)."""
    candidates = [Path(__file__).resolve().parents[3] / "web", Path.cwd() / "web"]
    return next((c for c in candidates if (c / "console.html").is_file()), candidates[0])


WEB = _web_dir()
CLIENT_DIST = WEB / "node_modules" / "socket.io-client" / "dist"
# Only these files are served from web/ (never node_modules or anything else there).
ASSETS = {"console.js", "console.css", "lib.js"}
NO_CACHE = {"Cache-Control": "no-cache"}


# Every response: no MIME sniffing, and no framing. No page of the hub is meant to
# be framed: the widget embeds with a <script> tag (its UI lives in the host
# page's DOM), so only widget.js must load on other origins, and it does (a script
# is not governed by the frame headers). Responses that are not pages get a policy
# that allows nothing, in case one is ever opened as a document.
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
}
# The pages load only the hub's own scripts, styles and connections. The console
# has no inline code at all; the widget demo has an inline stylesheet, and the
# widget's shadow root one.
_PAGE_POLICY = ("default-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CONSOLE_POLICY = _PAGE_POLICY + "; style-src 'self'"
DEMO_POLICY = _PAGE_POLICY + "; style-src 'self' 'unsafe-inline'"


async def security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers of BASE_HEADERS a response did not set itself."""
    for name, value in BASE_HEADERS.items():
        response.headers.setdefault(name, value)


def _file(path: Path, content_type: str | None = None, policy: str | None = None) -> web.FileResponse:
    if not path.is_file():
        raise NotFound("no such page")
    headers = dict(NO_CACHE)
    if content_type:
        headers["Content-Type"] = content_type
    if policy:
        headers["Content-Security-Policy"] = policy
    return web.FileResponse(path, headers=headers)


async def console(request: web.Request) -> web.FileResponse:
    return _file(WEB / "console.html", policy=CONSOLE_POLICY)


async def demo(request: web.Request) -> web.FileResponse:
    return _file(WEB / "demo.html", policy=DEMO_POLICY)


async def widget_js(request: web.Request) -> web.FileResponse:
    response = _file(WEB / "widget.js", "application/javascript")
    # Embedded by other sites with a plain <script> tag.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound("no such file")
    response = _file(WEB / name)
    response.headers["Access-Control-Allow-Origin"] = "*"  # the widget's stylesheet, on other sites
    return response


async def socketio_client(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ("socket.io.min.js", "socket.io.min.js.map"):
        raise NotFound("no such file")
    path = CLIENT_DIST / name
    if not path.is_file():
        raise Unavailable("socket.io-client is not installed: run `npm ci --prefix web`")
    response = web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600",
                                               "Content-Type": "application/javascript"})
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/favicon.ico", favicon),
        web.get("/console", console),
        web.get("/widget/demo", demo),
        web.get("/widget.js", widget_js),
        web.get("/web/{name}", asset),
        web.get("/vendor/{name}", socketio_client),
    ]
