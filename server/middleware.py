"""A size limit on /api request bodies other than checkpoint uploads (which stream to disk
under their own cap): a JSON request is small, so a huge one is refused with 413 before
it is held in memory. The dashboard's own routes are left alone."""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        body = json.dumps({"detail": f"the request body is larger than {self.max_bytes} bytes; "
                                     "only checkpoint uploads may be larger"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()  # after the body: wait for the disconnect like the real receive
        return {"type": "http.disconnect"}

    return receive
