"""What callbacks need besides their inputs: how to reach the API, and the URL prefixes.

One frozen `Context` per Dash app, made in `app.create_dash_app`; callbacks ask it for a
fresh `ApiClient`, so no callback keeps state between requests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode

from .api import ApiClient


@dataclass(frozen=True)
class Context:
    prefix: str = "/dashboard/"  # where the browser sees the dashboard
    api_url: str | None = None  # None: the server that is answering this request
    api_path: str = "/api"  # the API's path as the browser sees it (uploads go there directly)
    token_required: bool = False
    timeout: float = 60.0
    transport: Any = None  # httpx transport, for tests

    def base_url(self) -> str:
        if self.api_url:
            return self.api_url
        return base_url_from_request()

    def client(self, token: str | None = None) -> ApiClient:
        return ApiClient(self.base_url(), token=token or None, timeout=self.timeout, transport=self.transport)

    def href(self, page: str, params: Mapping[str, Any] | None = None) -> str:
        """Link to a page with its query string (empty values left out)."""
        path = self.prefix + (page.strip("/") if page else "")
        query = encode_query(params or {})
        return f"{path}?{query}" if query else path


def base_url_from_request() -> str:
    """This process's own address, from the request being answered: the dashboard runs
    inside the API server, so its callbacks call back into the same process."""
    import flask

    env = flask.request.environ
    scope = env.get("asgi.scope") or {}
    server = scope.get("server")
    scheme = env.get("wsgi.url_scheme", "http")
    if server and server[0]:
        host, port = server[0], server[1]
    else:
        host, port = env.get("SERVER_NAME", "127.0.0.1"), env.get("SERVER_PORT", "80")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in str(host) and not str(host).startswith("["):
        host = f"[{host}]"
    # the dashboard is mounted at <root>/dashboard; the API lives at <root>/api
    script = env.get("SCRIPT_NAME", "")
    root = script[: -len("/dashboard")] if script.endswith("/dashboard") else ""
    return f"{scheme}://{host}:{port}{root}"


def parse_query(search: str | None) -> dict[str, str]:
    """`?a=1&b=x` -> {"a": "1", "b": "x"} (last value wins)."""
    return dict(parse_qsl((search or "").lstrip("?"), keep_blank_values=False))


def encode_query(params: Mapping[str, Any]) -> str:
    clean = {}
    for key, value in params.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        clean[key] = value
    return urlencode(clean)
