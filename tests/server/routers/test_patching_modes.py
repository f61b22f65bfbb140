"""The patching job's modes: exact (as before), attribution, attribution+verify."""
from __future__ import annotations

from mnemoscope.server.services.jobs import result_key

BODY = {"pairs": 2, "sites": ["controller.*"], "direction": "denoise"}


def test_exact_requests_normalise_as_before_modes(client, uploaded, job_waiter):
    cid = uploaded["id"]
    plain = client.post(f"/api/checkpoints/{cid}/patching", json=BODY).json()
    explicit = client.post(f"/api/checkpoints/{cid}/patching", json={**BODY, "mode": "exact"}).json()
    assert "mode" not in plain["request"] and explicit["request"] == plain["request"]
    assert explicit["id"] == plain["id"] or explicit["cached"]  # the same job, or its stored result
    before = {"task": plain["request"]["task"], "seed": 0, "pairs": 2, "sites": ["controller.cell", "controller.output", "controller.state"],
              "direction": "denoise", "per_element": None, "memory_budget_mb": 512}
    assert plain["request"] == before  # so result keys of exact jobs stored before modes still match
    done = job_waiter(client, plain["id"])
    assert done["status"] == "done", done
    assert done["result"]["data"]["label"] == "exact"
    assert result_key(uploaded["sha256"], "patching", before) == result_key(uploaded["sha256"], "patching",
                                                                             plain["request"])


def test_attribution_modes_run_to_done(client, uploaded, job_waiter):
    cid = uploaded["id"]
    exact = job_waiter(client, client.post(f"/api/checkpoints/{cid}/patching", json=BODY).json()["id"])
    jobs = {mode: client.post(f"/api/checkpoints/{cid}/patching", json={**BODY, "mode": mode}).json()
            for mode in ("attribution", "attribution+verify")}
    assert {j["request"]["mode"] for j in jobs.values()} == {"attribution", "attribution+verify"}
    assert len({j["id"] for j in jobs.values()} | {exact["id"]}) == 3  # each mode its own job and result
    done = {mode: job_waiter(client, j["id"]) for mode, j in jobs.items()}
    assert all(j["status"] == "done" for j in done.values()), done
    e = exact["result"]["data"]
    for mode, job in done.items():
        d = job["result"]["data"]
        assert d["label"] == "estimated" and d["method"] == "AtP*"
        # the layout of the exact result, so the dashboard draws either
        assert d["sites"] == e["sites"] and d["steps"] == e["steps"] and len(d["scores"]) == len(e["scores"])
        assert [len(r) for r in d["scores"]] == [len(r) for r in e["scores"]]
        assert d["differs_per_step"] == e["differs_per_step"] and set(e) <= set(d)
    assert done["attribution"]["result"]["data"]["verify"] is None
    v = done["attribution+verify"]["result"]["data"]["verify"]
    assert v["cells"] == len(v["checked"]) > 0 and {"spearman", "top10_recall", "cells"} <= set(v)
    exact_scores = {(s, t): e["scores"][i][t] for i, s in enumerate(e["sites"]) for t in range(e["steps"])}
    for cell in v["checked"]:  # verified against the exact job's own values
        want = exact_scores[(cell["site"], cell["t"])]
        assert (cell["exact"] is None and want is None) or abs(cell["exact"] - want) < 1e-4


def test_unknown_mode_is_422(client, uploaded):
    r = client.post(f"/api/checkpoints/{uploaded['id']}/patching", json={**BODY, "mode": "guess"})
    assert r.status_code == 422 and "mode" in r.text
