"""The dashboard's only way to the numbers: a small client of mnemoscope's REST API.

    api = ApiClient("http://127.0.0.1:8000", token=None)
    ckpts = api.checkpoints()
    trace = api.trace(ckpts[0]["id"], params={"min_length": 8, "max_length": 8}, seed=3,
                      sites=["memory.read_weights"])
    job = api.start_ablation(ckpts[0]["id"], {"sites": ["memory.read"], "mode": "resample"})
    api.job(job["id"])["status"]         # queued / running / done / failed / cancelled
    api.kinds()                          # the job kinds this server runs: routes and request limits

Every failure is an `ApiError` whose message a person can read (the server's own
`detail`, a validation problem spelled out, or "cannot reach the API at ..."), so the
pages can show it instead of a traceback.
"""
from __future__ import annotations

import ssl
from urllib.parse import quote
from typing import Any, Iterable, Mapping

import httpx

# Building an SSL context costs ~50 ms; httpx would build one per client, and the
# dashboard makes a client per callback. The context holds no request state.
_SSL_CONTEXT = ssl.create_default_context()

FINISHED = ("done", "failed", "cancelled")


class ApiError(Exception):
    """A request that did not give the expected answer; `str(err)` is for people."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


def describe_error(status: int, body: Any, text: str = "") -> str:
    """The server's `detail` as one readable line (FastAPI's 422 lists become
    "field: problem; field: problem")."""
    detail = body.get("detail") if isinstance(body, Mapping) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
                msg = str(item.get("msg", "invalid"))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    if not detail:
        plain = "" if isinstance(body, Mapping) else (text or "").strip()[:300]
        detail = plain or _REASONS.get(status, "unexpected answer")
    return f"{detail} (HTTP {status})"


_REASONS = {
    401: "this server needs a token: enter it at the top of the page",
    403: "not allowed",
    404: "not found",
    413: "the file is larger than the server accepts",
    422: "the server could not use this request",
    429: "the server's job queue is full; try again in a minute",
    500: "the server failed on this request",
    503: "the server is busy; try again in a moment",
}


class ApiClient:
    """Synchronous client. Use one per callback (`with ApiClient(...) as api:`); it holds
    only its connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport, verify=_SSL_CONTEXT
        )
        self._kinds: list[dict] | None = None

    # -- plumbing -----------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping | None = None,
                files: Mapping | None = None, data: Mapping | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params, files=files, data=data)
        except httpx.TimeoutException:
            raise ApiError(f"the API at {self.base_url} did not answer {method} {path} in time") from None
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the mnemoscope API at {self.base_url} ({exc.__class__.__name__}: {exc})") from None
        if response.status_code == 204 or not response.content:
            if response.is_success:
                return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            raise ApiError(describe_error(response.status_code, body, response.text), response.status_code)
        if body is None:
            raise ApiError(f"{method} {path}: the API answered with something other than JSON")
        return body

    # -- checkpoints ----------------------------------------------------------------------
    def health(self) -> dict:
        return self.request("GET", "/api/health")

    def checkpoints(self) -> list[dict]:
        body = self.request("GET", "/api/checkpoints")
        return _items(body, "checkpoints")

    def checkpoint(self, checkpoint_id: str) -> dict:
        return self.request("GET", f"/api/checkpoints/{_seg(checkpoint_id)}")

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        self.request("DELETE", f"/api/checkpoints/{_seg(checkpoint_id)}")

    def sites(self, checkpoint_id: str) -> list[dict]:
        """The model's site specs: name, kind, shape, axes, on_request, distribution, doc."""
        body = self.request("GET", f"/api/checkpoints/{_seg(checkpoint_id)}/sites")
        if isinstance(body, Mapping) and "sites" in body:
            body = body["sites"]
        if isinstance(body, Mapping):  # {name: spec}
            return [{"name": name, **spec} for name, spec in body.items()]
        return list(body or [])

    def trace(
        self,
        checkpoint_id: str,
        *,
        task: str | None = None,
        params: Mapping[str, Any] | None = None,
        seed: int = 0,
        samples: int = 1,
        sites: Iterable[str] = (),
        max_points: int | None = None,
        window: tuple[int, int] | None = None,
    ) -> dict:
        """The trace; a long one max-pooled to `max_points` bins (`reduce`) and cut to
        steps `window` = (t0, t1), its bin edges in the answer's `time`."""
        body: dict[str, Any] = {"seed": int(seed), "samples": int(samples), "sites": list(sites)}
        if max_points:
            body["reduce"] = {"max_points": int(max_points)}
        if window is not None:
            body["window"] = [int(window[0]), int(window[1])]
        task_body: dict[str, Any] = {}
        if task:
            task_body["name"] = task
        if params:
            task_body["params"] = dict(params)
        if task_body:
            body["task"] = task_body
        return self.request("POST", f"/api/checkpoints/{_seg(checkpoint_id)}/trace", json=body)

    # -- probes (prompt pairs) ---------------------------------------------------------------
    def probes(self) -> list[dict]:
        return _items(self.request("GET", "/api/probes"), "probes")

    def probe(self, probe_id: str) -> dict:
        return self.request("GET", f"/api/probes/{_seg(probe_id)}")

    def upload_probe(self, filename: str, content: bytes, *, name: str | None = None,
                     tokenizer: bytes | None = None) -> dict:
        """POST a JSONL of prompt pairs (and the tokenizer.json its strings need)."""
        files = {"file": (filename, content, "application/jsonl")}
        if tokenizer is not None:
            files["tokenizer"] = ("tokenizer.json", tokenizer, "application/json")
        return self.request("POST", "/api/probes", files=files, data={"name": name} if name else None)

    def delete_probe(self, probe_id: str) -> None:
        self.request("DELETE", f"/api/probes/{_seg(probe_id)}")

    # -- jobs -------------------------------------------------------------------------------
    def kinds(self) -> list[dict]:
        """What the server runs: `[{"name", "summary", "route", "method", "limits":
        {field: {"minimum", "maximum", "default"}}, "task_param_max"}]` for every job kind
        and "trace". Asked once per client (a client lives for one callback)."""
        if self._kinds is None:
            body = self.request("GET", "/api/kinds")
            self._kinds = list(body.get("kinds", []) if isinstance(body, Mapping) else body or [])
        return self._kinds

    def start_job(self, checkpoint_id: str, kind: str, body: Mapping[str, Any] | None = None) -> dict:
        """Submit a job on the route the server gives for its kind."""
        entry = kind_entry(self.kinds(), kind)
        path = str(entry["route"]).replace("{checkpoint_id}", _seg(checkpoint_id))
        return self.request(str(entry.get("method") or "POST"), path, json=dict(body or {}))

    def start_ablation(self, checkpoint_id: str, body: Mapping[str, Any]) -> dict:
        return self.start_job(checkpoint_id, "ablations", body)

    def start_patching(self, checkpoint_id: str, body: Mapping[str, Any]) -> dict:
        return self.start_job(checkpoint_id, "patching", body)

    def start_gradients(self, checkpoint_id: str, body: Mapping[str, Any]) -> dict:
        return self.start_job(checkpoint_id, "gradients", body)

    def start_report(self, checkpoint_id: str, body: Mapping[str, Any] | None = None) -> dict:
        return self.start_job(checkpoint_id, "report", body)

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/api/jobs/{_seg(job_id)}")

    def jobs(self, *, checkpoint_id: str | None = None, kind: str | None = None, status: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Jobs, newest first, without results; the filters narrow the list (one request
        polls a whole batch of jobs)."""
        filters = {"checkpoint_id": checkpoint_id, "kind": kind, "status": status, "limit": limit}
        params = {key: value for key, value in filters.items() if value is not None}
        return _items(self.request("GET", "/api/jobs", params=params or None), "jobs")

    def cancel_job(self, job_id: str) -> Any:
        return self.request("DELETE", f"/api/jobs/{_seg(job_id)}")


def kind_entry(kinds: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    """One entry of `ApiClient.kinds()`; an ApiError (shown as a sentence) when the server
    does not offer that kind."""
    kinds = list(kinds)
    for entry in kinds:
        if entry.get("name") == kind:
            return entry
    offered = ", ".join(str(k.get("name")) for k in kinds) or "nothing"
    raise ApiError(f"this server does not offer {kind!r} (it offers {offered})")


def _seg(value: str) -> str:
    """One path segment: ids come from URLs people can edit."""
    value = str(value)
    if not value or value in (".", ".."):
        raise ApiError(f"not a valid id: {value!r}")
    return quote(value, safe="")


def _items(body: Any, key: str) -> list[dict]:
    if isinstance(body, Mapping):
        body = body.get(key, body.get("items", []))
    return list(body or [])
