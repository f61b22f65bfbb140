"""The app shell: routing, the URL as state, mounting inside the API server."""
from __future__ import annotations

import json

import pytest
from dash._utils import to_json
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mnemoscope.dashboard import app as dash_app
from mnemoscope.dashboard.context import Context, encode_query, parse_query
from mnemoscope.dashboard.pages import ablate, checkpoints, compare, explore, gradients, patch


@pytest.fixture(scope="module")
def dash_instance():
    return dash_app.create_dash_app(Context(api_url="http://127.0.0.1:9"))


@pytest.mark.parametrize("path, page", [
    ("/dashboard/", checkpoints), ("/dashboard", checkpoints), ("/dashboard/checkpoints", checkpoints),
    ("/dashboard/explore", explore), ("/dashboard/ablate/", ablate), ("/dashboard/patch", patch),
    ("/dashboard/gradients", gradients), ("/dashboard/compare", compare), ("/dashboard/nope", None),
])
def test_page_for(path, page):
    assert dash_app.page_for(path) is page


def test_the_url_seeds_the_page_controls():
    content, classes = dash_app.render_page("/dashboard/ablate", "?checkpoint=c1&mode=zero&steps=2-4&sites=a,b",
                                            Context())
    boot = find(content, "ablate-boot")
    assert boot.data == {"checkpoint": "c1", "mode": "zero", "steps": "2-4", "sites": "a,b"}
    assert find(content, "ablate-mode").value == "zero" and find(content, "ablate-steps").value == "2-4"
    assert find(content, "ablate-sites").value == ["a", "b"] and find(content, "ablate-checkpoint").value == "c1"
    assert classes[PAGES_INDEX["ablate"]].endswith("ms-nav-active")


def find(component, component_id):
    """The component with this id in a layout tree."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if child is not None and hasattr(child, "to_plotly_json"):
            hit = find(child, component_id)
            if hit is not None:
                return hit
    return None


PAGES_INDEX = {p.__name__.rsplit(".", 1)[-1]: i for i, p in enumerate(dash_app.PAGES)}


def test_unknown_pages_say_so():
    content, classes = dash_app.render_page("/dashboard/secret", "", Context())
    assert "Page not found" in to_json(content)
    assert not any("active" in c for c in classes)


def test_query_round_trip():
    params = {"checkpoint": "c1", "sites": ["memory.read", "memory.add"], "t": 3, "empty": "", "none": None}
    assert parse_query("?" + encode_query(params)) == {"checkpoint": "c1", "sites": "memory.read,memory.add", "t": "3"}
    assert Context().href("explore", {"checkpoint": "c 1"}) == "/dashboard/explore?checkpoint=c+1"


def test_every_page_has_unique_ids_and_registered_callbacks(dash_instance):
    client = dash_instance.server.test_client()
    deps = json.loads(client.get("/_dash-dependencies").data)
    outputs = " ".join(d["output"] for d in deps)
    for needed in ("explore-read.figure", "explore-weights-t.figure", "ablate-verdict.children",
                   "patch-heatmap.figure", "gradients-series.figure", "compare-table.children", "checkpoints-table.children"):
        assert needed in outputs
    clientside = [d for d in deps if d.get("clientside_function")]
    assert {d["clientside_function"]["function_name"] for d in clientside} >= {"scrub", "stepTo", "togglePlay", "syncUrl",
                                                                                "exportResult", "uploadProgress"}
    # ids are unique across the whole app (every page is in the validation layout)
    ids = []

    def walk(node):
        if isinstance(node, dict):
            props = node.get("props", {})
            if isinstance(props.get("id"), str):
                ids.append(props["id"])
            for v in props.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for page in dash_app.PAGES:
        ids_before = len(ids)
        walk(json.loads(to_json(page.layout({}, Context()))))
        assert len(ids) > ids_before
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_first_layout_holds_the_page_the_browser_opens(dash_instance):
    client = dash_instance.server.test_client()
    body = client.get("/_dash-layout", headers={"Referer": "http://localhost/dashboard/explore?checkpoint=c1&seed=4"}).data
    assert b'"explore-boot"' in body and b'"checkpoint": "c1"' in body.replace(b'":"', b'": "')
    assert b'"rendered-path"' in body
    bare = client.get("/_dash-layout").data  # no referrer: the router renders it
    assert b'"explore-boot"' not in bare


def test_mounted_in_fastapi_with_a_redirect_from_root():
    api = FastAPI()
    dash_app.mount_dashboard(api, None)
    with TestClient(api) as client:
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/dashboard/"
        r = client.get("/dashboard/explore?checkpoint=c1")
        assert r.status_code == 200 and b"_dash-renderer" in r.content.replace(b"dash_renderer", b"_dash-renderer")
        assert b'<script src="/dashboard/assets/mnemoscope.js?m=' in r.content  # under the mount, not /assets
        assert client.get("/dashboard/_dash-layout").status_code == 200
        assert client.get("/dashboard/assets/mnemoscope.css").status_code == 200


@pytest.mark.parametrize("path", ["/dashboard/_dash-component-suites/..%2F..%2Fetc%2Fpasswd",
                                  "/dashboard/_dash-component-suites/dash/..%2F..%2F..%2Fserver%2Fapp.py",
                                  "/dashboard/_dash-component-suites/dash/no-such-file.js"])
def test_unknown_or_traversing_script_paths_are_404_not_500(path):
    api = FastAPI()
    dash_app.mount_dashboard(api, None)
    with TestClient(api, raise_server_exceptions=False) as client:
        r = client.get(path)
        assert r.status_code == 404, r.text[:200]


def test_the_upload_zone_posts_next_to_the_dashboard():
    assert dash_app._api_path("/dashboard/") == "/api"
    assert dash_app._api_path("/lab/mnemoscope/dashboard/") == "/lab/mnemoscope/api"
    zone = find(checkpoints.layout({}, Context(api_path="/lab/api")), "upload-zone")
    assert zone.to_plotly_json()["props"]["data-api"] == "/lab/api"


def test_the_server_mounts_the_dashboard(tmp_path):
    from mnemoscope.server.app import create_app
    from mnemoscope.server.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", workers=1))
    with TestClient(app) as client:
        assert client.get("/", follow_redirects=False).headers["location"].endswith("/dashboard/")
        assert client.get("/dashboard/").status_code == 200
        assert client.get("/api/health").status_code == 200


def test_token_field_only_when_the_server_needs_one():
    def token_box(shell):
        header = next(c for c in shell.children if getattr(c, "className", "") == "ms-header")
        return next(c for c in header.children if getattr(c, "className", "") == "ms-token")

    open_shell = dash_app.shell(Context(token_required=False))
    guarded = dash_app.shell(Context(token_required=True))
    assert find(open_shell, "token-input") is not None  # callbacks read it either way
    assert token_box(open_shell).hidden is True and token_box(guarded).hidden is False


def test_callbacks_send_the_token_the_user_entered():
    import httpx

    seen = []
    transport = httpx.MockTransport(lambda r: (seen.append(r), httpx.Response(200, json=[]))[1])
    ctx = Context(api_url="http://api.test", transport=transport)
    with ctx.client("s3cret") as api:
        api.checkpoints()
    with ctx.client(None) as api:
        api.checkpoints()
    assert seen[0].headers["Authorization"] == "Bearer s3cret" and "Authorization" not in seen[1].headers
