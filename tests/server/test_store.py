"""The store: content addressing, atomic moves, recovery after a crash, consistency checks."""
from __future__ import annotations

import threading

import pytest

from mnemoscope.server.store import Store, now, write_atomic


def _record(sha: str, **kw) -> dict:
    return {"id": sha[:16], "sha256": sha, "blob": f"{sha}.safetensors", "name": "n", "filename": "n.safetensors",
            "arch": "lstm", "config": {"hidden_size": 8}, "task": {}, "step": 0, "metrics": {}, "extra": None,
            "sites": [], "parameters": 1, "size_bytes": 3, "format": "safetensors", "source": None,
            "created_at": now(), **kw}


def _staged(store: Store, data: bytes = b"abc"):
    path = store.new_tmp_path(".safetensors")
    path.write_bytes(data)
    return path


def test_add_get_list_delete(tmp_path):
    store = Store(tmp_path)
    rec, created = store.add_checkpoint(_staged(store), _record("a" * 64))
    assert created and rec["config"] == {"hidden_size": 8}  # JSON columns come back decoded
    assert (tmp_path / "checkpoints" / ("a" * 64 + ".safetensors")).read_bytes() == b"abc"
    assert list((tmp_path / "tmp").iterdir()) == []
    same, created = store.add_checkpoint(_staged(store), _record("a" * 64, name="other"))
    assert not created and same["name"] == "n"
    assert list((tmp_path / "tmp").iterdir()) == []  # the duplicate's temp file is gone too
    assert [r["id"] for r in store.list_checkpoints()] == ["a" * 16]
    assert store.delete_checkpoint("a" * 16)["id"] == "a" * 16
    assert store.list_checkpoints() == [] and list((tmp_path / "checkpoints").iterdir()) == []
    assert store.delete_checkpoint("a" * 16) is None
    assert store.consistency_problems() == []


def test_concurrent_adds_of_the_same_bytes_store_one(tmp_path):
    store = Store(tmp_path)
    results = []

    def add():
        results.append(store.add_checkpoint(_staged(store), _record("b" * 64))[1])

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.consistency_problems() == []


def test_recover_cleans_up_after_a_crash(tmp_path):
    store = Store(tmp_path)
    store.add_checkpoint(_staged(store), _record("c" * 64))
    store.add_checkpoint(_staged(store), _record("d" * 64))
    store.add_job({"id": "j1", "checkpoint_id": "c" * 16, "kind": "report", "request": {}, "key": "e" * 64,
                   "status": "running", "progress": 0.5, "cached": 0, "created_at": now()})
    store.add_job({"id": "j2", "checkpoint_id": "c" * 16, "kind": "report", "request": {}, "key": "f" * 64,
                   "status": "done", "progress": 1.0, "cached": 0, "created_at": now()})
    (tmp_path / "results" / ("f" * 64 + ".json")).write_text("{}")
    (tmp_path / "results" / ("9" * 64 + ".json")).write_text("{}")  # nobody's result
    (tmp_path / "tmp" / "x.part").write_bytes(b"half")  # an upload cut short
    (tmp_path / "checkpoints" / ("0" * 64 + ".safetensors")).write_bytes(b"renamed, not indexed")
    (tmp_path / "checkpoints" / ("d" * 64 + ".safetensors")).unlink()  # a file lost
    assert len(store.consistency_problems()) == 3  # file without row, row without file, temp file

    report = store.recover()
    assert report == {"tmp_removed": 1, "orphan_files": 1, "orphan_rows": 1, "jobs_failed": 1, "orphan_results": 1}
    assert [r["id"] for r in store.list_checkpoints()] == ["c" * 16]
    assert store.get_job("j1")["status"] == "failed" and "submit it again" in store.get_job("j1")["error"]
    assert store.get_job("j2")["status"] == "done"
    assert store.consistency_problems() == []


def test_update_job_only_if(tmp_path):
    store = Store(tmp_path)
    store.add_job({"id": "j", "checkpoint_id": "x", "kind": "report", "request": {}, "key": "a" * 64,
                   "status": "cancelled", "progress": 0.2, "cached": 0, "created_at": now()})
    assert not store.update_job("j", only_if=("running",), status="done")
    assert store.get_job("j")["status"] == "cancelled"
    with pytest.raises(ValueError):
        store.update_job("j", key="b")


def test_result_keys_are_never_paths(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(ValueError):
        store.result_path("../../etc/passwd")


def test_write_atomic_leaves_old_or_new(tmp_path):
    target = tmp_path / "f.json"
    write_atomic(target, b"old")

    with pytest.raises(TypeError):
        write_atomic(target, object())  # type: ignore[arg-type]  # fails mid-write
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_verdicts_of_an_older_analysis_engine_are_cleared_once(tmp_path):
    store = Store(tmp_path / "data")
    store.add_checkpoint(_staged(store), _record("a" * 64))
    store.set_verdict("a" * 16, "functional", 0.9, "job1")
    assert store.migrate_analysis(1) == 1  # a directory from before versions were recorded
    assert store.get_checkpoint("a" * 16)["verdict"] is None
    store.set_verdict("a" * 16, "partial", 0.4, "job2")
    assert store.migrate_analysis(1) == 0  # same engine: the new badge stays
    assert store.get_checkpoint("a" * 16)["verdict"] == "partial"
    store.close()
    reopened = Store(tmp_path / "data")
    assert reopened.migrate_analysis(2) == 1  # a newer engine, after a restart
    assert reopened.get_checkpoint("a" * 16)["report_job_id"] is None
