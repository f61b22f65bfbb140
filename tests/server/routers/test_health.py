"""GET /api/health."""
from __future__ import annotations

import mnemoscope


def test_health(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["version"] == mnemoscope.__version__
    assert body["uptime_s"] >= 0
    assert body["workers"] == {"size": 1, "alive": 0, "busy": 0, "queued": 0}  # workers start with the first job
