"""ASGI middleware that refuses requests before any route sees them.

`BodyLimit`: a size limit on /api request bodies other than checkpoint uploads (which
stream to disk under their own cap): a JSON request is small, so a huge one is refused
with 413 before it is held in memory. The dashboard's own routes are left alone.

`HostAndOriginGuard`: what a web page in the user's browser must not be able to do to a
server on their machine (403 with a JSON `detail`):
- DNS rebinding: a page on evil.example re-points its name to 127.0.0.1 and then reads
  and writes the API as "its own" origin. Its requests still say `Host: evil.example`,
  so only Host names this server is known by are answered: 127.0.0.1, localhost,
  [::1], the bind host, and `settings.allowed_hosts`.
- cross-site writes: any page may POST to any address (a "no-cors" fetch or a form needs
  no CORS permission; the page just cannot read the answer). Browsers name the page in
  the `Origin` header of every such request, so a POST or DELETE whose Origin is neither
  this server (the host and port the request was sent to) nor in `settings.cors_origins`
  is refused. Requests without an Origin (curl, scripts, the dashboard's own server-side
  calls) are not from a web page and pass.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import Settings

MAX_JSON_BODY = 1 << 20


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_JSON_BODY, prefix: str = "/api/",
                 exempt: tuple[tuple[str, str], ...] = ()):
        self.app, self.max_bytes, self.prefix, self.exempt = app, max_bytes, prefix, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or \
                not scope["path"].startswith(self.prefix) or (scope["method"], scope["path"].rstrip("/")) in self.exempt:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        # read (at most max_bytes of) the body here, then replay it to the app
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, receive), send)

    async def _refuse(self, send: Send) -> None:
        await _send_json(send, 413, f"the request body is larger than {self.max_bytes} bytes; "
                                    "only checkpoint uploads may be larger", close=True)


async def _send_json(send: Send, status: int, detail: str, *, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # read-only: what a page gets from them it cannot read
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """`Host` header -> (lower-case name without brackets or trailing dot, port or None);
    None when it is not a host[:port] at all."""
    try:
        parts = urlsplit("//" + value.strip())
        port = parts.port
    except ValueError:  # "[::1" and other broken brackets, a port that is not a number
        return None
    name = (parts.hostname or "").rstrip(".")
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return name, port


def _configured_name(entry: str) -> str | None:
    """A host from the settings ("::1", "[::1]", "example.org", "example.org:8000") as
    `split_host` names it; the port, if any, does not matter."""
    entry = entry.strip()
    if entry.count(":") > 1 and not entry.startswith("["):  # a bare IPv6 address
        entry = f"[{entry}]"
    found = split_host(entry)
    return found[0] if found else None


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """`scheme://host[:port]` -> (scheme, host, port with the scheme's default filled in)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.rstrip("."), port if port is not None else _DEFAULT_PORTS[scheme]


class HostAndOriginGuard:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        names = {*LOOPBACK_HOSTS, settings.host, *settings.allowed_hosts}
        self.any_host = "*" in names
        self.hosts = {name for name in map(_configured_name, names - {"*"}) if name}
        self.cors_origins = {key for key in map(_origin_key, settings.cors_origins) if key}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = split_host(headers.get("host", ""))
        if not self.any_host and (host is None or host[0] not in self.hosts):
            await self._refuse(scope, send, (
                f"Host {headers.get('host', '')[:100]!r} is not a name this server answers to (a guard against "
                "DNS rebinding); use 127.0.0.1 or localhost, or list the name in MNEMOSCOPE_ALLOWED_HOSTS"))
            return
        origin = headers.get("origin")
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and origin is not None \
                and not self._origin_allowed(origin, host):
            await self._refuse(scope, send, (
                f"cross-site request refused: the page at Origin {origin[:100]!r} is not this server and not in "
                f"MNEMOSCOPE_CORS_ORIGINS, so it may not {scope['method']} here"))
            return
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, host: tuple[str, int | None] | None) -> bool:
        key = _origin_key(origin)
        if key is None:  # "null" (sandboxed frames, file: pages) or garbage
            return False
        if key in self.cors_origins:
            return True
        # Same origin: the page came from the host and port this request was sent to. A Host
        # without a port means the default port of the scheme the browser used (the Origin's),
        # which also holds behind a TLS-terminating proxy that forwards Host unchanged.
        scheme, name, port = key
        return host is not None and host[0] == name and (host[1] or _DEFAULT_PORTS[scheme]) == port

    @staticmethod
    async def _refuse(scope: Scope, send: Send, detail: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return
        await _send_json(send, 403, detail)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()  # after the body: wait for the disconnect like the real receive
        return {"type": "http.disconnect"}

    return receive
