"""A file download that cannot fail half-way because the file went away.

`FileResponse` opens its path when the response is sent, after the route has returned:
a DELETE in between made the download a 500. Here the route opens the file itself (a
missing file is then a plain 404 it can raise), and the response sends from that open
file: on POSIX the bytes stay readable until it is closed, whatever happens to the path.
Everything else (Content-Length, ETag, Last-Modified, Range requests) is FileResponse's.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator, BinaryIO

import anyio
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send


class OpenedFileResponse(FileResponse):
    def __init__(self, file: BinaryIO, **kwargs) -> None:
        super().__init__(file.name, stat_result=os.fstat(file.fileno()), **kwargs)
        self._file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # "pathsend" hands the path to the server to open again: exactly the race to avoid
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self._file.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        self._file.seek(0)  # the range handlers seek where they need; the plain one reads from here
        yield anyio.wrap_file(self._file)
