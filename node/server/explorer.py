"""The live explorer: a static page (HTML, vanilla JS, CSS shipped in node/server/explorer_static/)
served at /explorer, which polls the node's public read API and draws blocks, batches, jobs,
rounds and settlements. It adds no read of its own: whatever it shows, the API answers too.

The page runs under a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script, no plugins, fetches to this origin only), and its script builds the
DOM with textContent / createElement, so data from the chain can never become markup."""

from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from node.core.door import Rejected

PREFIX = "/explorer"
_STATIC = files("node.server") / "explorer_static"
# name -> content type; anything else under the prefix is a 404, so no path ever reaches the
# file system from a request.
ASSETS = {
    "index.html": "text/html",
    "explorer.js": "text/javascript",
    "explorer.css": "text/css",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def asset_response(name: str) -> web.Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        raise Rejected(404, "not_found", f"no explorer asset {name!r}")
    body = (_STATIC / name).read_bytes()
    return web.Response(
        body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS
    )


async def get_page(request: web.Request) -> web.Response:
    return asset_response("index.html")


async def get_asset(request: web.Request) -> web.Response:
    return asset_response(request.match_info["name"])


EXPLORER_ROUTES: list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    (PREFIX, get_page),
    (PREFIX + "/", get_page),
    (PREFIX + "/{name}", get_asset),
]


def add_explorer_routes(app: web.Application) -> None:
    """A page, not part of the JSON API: kept out of ROUTES and /openapi.json."""
    for path, handler in EXPLORER_ROUTES:
        app.router.add_get(path, handler)
