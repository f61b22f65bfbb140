"""The data directory: content-addressed checkpoint files, job results, and a SQLite index.

    <data_dir>/index.sqlite3              checkpoints and jobs tables
    <data_dir>/checkpoints/<sha256>.<ext> the uploaded bytes, named by their hash
    <data_dir>/results/<key>.json         job results, key = hash(checkpoint bytes, request)
    <data_dir>/probes/<sha256>.jsonl      prompt-pair probes (token ids), named by their hash
    <data_dir>/tmp/                       uploads in flight; emptied at every start

File names from clients never become paths: checkpoints are stored under their sha256,
results under a hash. Every file appears by `os.replace` of a fsynced temp file, so a
crash leaves either the whole file or none. A file is renamed into place before its row
is inserted and its row deleted before the file, so the only inconsistency a crash can
leave is a file without a row, which `recover()` removes at the next start.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..models.files import fsync_dir, write_atomic

SCHEMA_VERSION = 1
UNFINISHED = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    blob TEXT NOT NULL,
    name TEXT NOT NULL,
    filename TEXT NOT NULL,
    arch TEXT NOT NULL,
    config TEXT NOT NULL,
    task TEXT NOT NULL,
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    extra TEXT,
    sites TEXT NOT NULL,
    parameters INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    format TEXT NOT NULL,
    source TEXT,
    created_at TEXT NOT NULL,
    verdict TEXT,
    reliance_score REAL,
    report_job_id TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    checkpoint_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT,
    error TEXT,
    cached INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS probes (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    filename TEXT NOT NULL,
    pairs INTEGER NOT NULL,
    patchable INTEGER NOT NULL,
    max_tokens INTEGER NOT NULL,
    max_id INTEGER NOT NULL,
    tokenized INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key);
CREATE INDEX IF NOT EXISTS jobs_checkpoint ON jobs(checkpoint_id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""
_JSON_COLUMNS = {"config", "task", "metrics", "extra", "sites", "request"}
_JOB_FIELDS = {"status", "progress", "message", "error", "started_at", "finished_at", "cached"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, obj: Any) -> int:
    data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    write_atomic(path, data)
    return len(data)


class Store:
    """Thread-safe access to the data directory (one SQLite connection behind a lock;
    only the server process writes, worker processes only write result files)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.checkpoint_dir = self.root / "checkpoints"
        self.result_dir = self.root / "results"
        self.tmp_dir = self.root / "tmp"
        self.probe_dir = self.root / "probes"
        for d in (self.root, self.checkpoint_dir, self.result_dir, self.tmp_dir, self.probe_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "index.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(f"{self.root}: index schema version {version}, this server knows {SCHEMA_VERSION}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- start-up ---------------------------------------------------------------------------
    def migrate_analysis(self, version: int) -> int:
        """Verdict badges come from report jobs; when the analysis engine's version changed
        since they were computed, clear them (the checkpoints show "not analysed" until a
        new report runs) rather than show a verdict the engine would no longer give.
        Returns how many badges were cleared."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='analysis_version'").fetchone()
            cleared = 0
            if row is None or row[0] != str(version):
                cleared = self._db.execute(
                    "UPDATE checkpoints SET verdict=NULL, reliance_score=NULL, report_job_id=NULL "
                    "WHERE verdict IS NOT NULL OR report_job_id IS NOT NULL").rowcount
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('analysis_version', ?)",
                                 (str(version),))
            return cleared

    def recover(self, reason: str = "the server stopped while this job was running; submit it again") -> dict:
        """Bring the directory back to a consistent state after a crash or stop: empty
        tmp/, drop checkpoint files without a row and rows without a file, mark unfinished
        jobs failed, drop result files no job refers to."""
        report = {"tmp_removed": 0, "orphan_files": 0, "orphan_rows": 0, "jobs_failed": 0, "orphan_results": 0}
        with self._lock:
            for entry in self.tmp_dir.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
                report["tmp_removed"] += 1
            blobs = {row["blob"]: row["id"] for row in self._db.execute("SELECT id, blob FROM checkpoints")}
            for entry in self.checkpoint_dir.iterdir():
                if entry.name not in blobs:
                    entry.unlink(missing_ok=True)
                    report["orphan_files"] += 1
            for blob, ck_id in blobs.items():
                if not (self.checkpoint_dir / blob).is_file():
                    self._delete_checkpoint_rows(ck_id)
                    report["orphan_rows"] += 1
            probes = {self._probe_file(row["sha256"]): row["id"] for row in self._db.execute("SELECT id, sha256 FROM probes")}
            for entry in self.probe_dir.iterdir():
                if entry.name not in probes:
                    entry.unlink(missing_ok=True)
                    report["orphan_files"] += 1
            for name, probe_id in probes.items():
                if not (self.probe_dir / name).is_file():
                    self._db.execute("DELETE FROM probes WHERE id=?", (probe_id,))
                    report["orphan_rows"] += 1
            cur = self._db.execute(
                "UPDATE jobs SET status='failed', error=?, finished_at=? WHERE status IN ('queued','running')",
                (reason, now()),
            )
            report["jobs_failed"] = cur.rowcount
            keys = {row[0] for row in self._db.execute("SELECT DISTINCT key FROM jobs WHERE status='done'")}
            for entry in self.result_dir.iterdir():
                if entry.suffix != ".json" or entry.stem not in keys:
                    entry.unlink(missing_ok=True)
                    report["orphan_results"] += 1
            # a done job whose result vanished cannot be shown; say so instead of pretending
            for row in self._db.execute("SELECT id, key FROM jobs WHERE status='done'").fetchall():
                if not self.result_path(row["key"]).is_file():
                    self._db.execute(
                        "UPDATE jobs SET status='failed', error='the stored result is missing; submit the job again' WHERE id=?",
                        (row["id"],),
                    )
        return report

    # -- paths --------------------------------------------------------------------------------
    def new_tmp_path(self, suffix: str = "") -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}{suffix}"

    def checkpoint_path(self, record: dict) -> Path:
        return self.checkpoint_dir / record["blob"]

    def result_path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"bad result key {key!r}")
        return self.result_dir / f"{key}.json"

    # -- checkpoints --------------------------------------------------------------------------
    def get_checkpoint(self, checkpoint_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM checkpoints WHERE id=?", (checkpoint_id,)).fetchone()
        return _decode(row)

    def get_checkpoint_by_sha(self, sha256: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM checkpoints WHERE sha256=?", (sha256,)).fetchone()
        return _decode(row)

    def list_checkpoints(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM checkpoints ORDER BY created_at, id").fetchall()
        return [_decode(r) for r in rows]

    def add_checkpoint(self, tmp_file: Path, record: dict) -> tuple[dict, bool]:
        """Move the validated `tmp_file` into the store and index it. Returns
        (record, created); when the same bytes are already stored the temp file is
        dropped and the existing record returned with created=False."""
        with self._lock:
            existing = self.get_checkpoint_by_sha(record["sha256"])
            if existing is not None:
                tmp_file.unlink(missing_ok=True)
                return existing, False
            target = self.checkpoint_dir / record["blob"]
            os.replace(tmp_file, target)
            fsync_dir(self.checkpoint_dir)
            cols = list(record)
            values = [json.dumps(record[c]) if c in _JSON_COLUMNS else record[c] for c in cols]
            try:
                self._db.execute(
                    f"INSERT INTO checkpoints ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", values
                )
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return self.get_checkpoint(record["id"]), True

    def delete_checkpoint(self, checkpoint_id: str) -> dict | None:
        """Remove a checkpoint, its jobs and their results. Returns the removed record."""
        with self._lock:
            record = self.get_checkpoint(checkpoint_id)
            if record is None:
                return None
            keys = [r[0] for r in self._db.execute("SELECT DISTINCT key FROM jobs WHERE checkpoint_id=?", (checkpoint_id,))]
            self._delete_checkpoint_rows(checkpoint_id)
            self.checkpoint_path(record).unlink(missing_ok=True)
            for key in keys:
                self.result_path(key).unlink(missing_ok=True)
            return record

    def _delete_checkpoint_rows(self, checkpoint_id: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM jobs WHERE checkpoint_id=?", (checkpoint_id,))
            self._db.execute("DELETE FROM checkpoints WHERE id=?", (checkpoint_id,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def set_verdict(self, checkpoint_id: str, verdict: str | None, score: float | None, job_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE checkpoints SET verdict=?, reliance_score=?, report_job_id=? WHERE id=?",
                (verdict, score, job_id, checkpoint_id),
            )

    # -- jobs -----------------------------------------------------------------------------------
    def add_job(self, record: dict) -> dict:
        cols = list(record)
        values = [json.dumps(record[c]) if c in _JSON_COLUMNS else record[c] for c in cols]
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", values)
            return self.get_job(record["id"])

    def get_job(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _decode(row)

    def list_jobs(self, checkpoint_id: str | None = None, status: str | None = None,
                  kind: str | None = None, limit: int = 100) -> list[dict]:
        where, args = [], []
        for col, value in (("checkpoint_id", checkpoint_id), ("status", status), ("kind", kind)):
            if value is not None:
                where.append(f"{col}=?")
                args.append(value)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_decode(r) for r in rows]

    def update_job(self, job_id: str, *, only_if: Iterable[str] | None = None, **fields) -> bool:
        """Set job fields; with `only_if`, only while the job's status is one of those
        (so a late 'done' from a worker never overwrites 'cancelled')."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        sql = f"UPDATE jobs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?"
        args: list[Any] = [*fields.values(), job_id]
        if only_if is not None:
            states = tuple(only_if)
            sql += f" AND status IN ({','.join('?' * len(states))})"
            args += states
        with self._lock:
            return self._db.execute(sql, args).rowcount > 0

    def find_job_by_key(self, key: str, statuses: Iterable[str]) -> dict | None:
        states = tuple(statuses)
        with self._lock:
            row = self._db.execute(
                f"SELECT * FROM jobs WHERE key=? AND status IN ({','.join('?' * len(states))}) "
                "ORDER BY created_at DESC LIMIT 1",
                (key, *states),
            ).fetchone()
        return _decode(row)

    def read_result(self, key: str) -> Any:
        path = self.result_path(key)
        with open(path, "rb") as f:
            return json.loads(f.read())

    def counts(self) -> dict:
        with self._lock:
            checkpoints = self._db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
            jobs = dict(self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        return {"checkpoints": checkpoints, "jobs": jobs}

    # -- probes (prompt pairs) ------------------------------------------------------------------
    @staticmethod
    def _probe_file(sha256: str) -> str:
        if not sha256 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"bad probe hash {sha256!r}")
        return f"{sha256}.jsonl"

    def probe_path(self, record: dict) -> Path:
        return self.probe_dir / self._probe_file(record["sha256"])

    def add_probe(self, data: bytes, record: dict) -> tuple[dict, bool]:
        """Store a validated probe's bytes under its sha256 and index it. Returns (record,
        created); the same bytes stored before give the existing record, created=False.
        The file is in place (atomically) before its row, as for checkpoints."""
        with self._lock:
            row = self._db.execute("SELECT * FROM probes WHERE sha256=?", (record["sha256"],)).fetchone()
            if row is not None:
                return dict(row), False
            target = self.probe_path(record)
            write_atomic(target, data)
            cols = list(record)
            try:
                self._db.execute(f"INSERT INTO probes ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                                 [record[c] for c in cols])
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            return self.get_probe(record["id"]), True

    def get_probe(self, probe_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM probes WHERE id=?", (probe_id,)).fetchone()
        return None if row is None else dict(row)

    def list_probes(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM probes ORDER BY created_at, id").fetchall()
        return [dict(r) for r in rows]

    def delete_probe(self, probe_id: str) -> dict | None:
        """Remove a probe (row first, then its file). Jobs that used it keep their results:
        their requests hold the pairs themselves."""
        with self._lock:
            record = self.get_probe(probe_id)
            if record is None:
                return None
            self._db.execute("DELETE FROM probes WHERE id=?", (probe_id,))
            self.probe_path(record).unlink(missing_ok=True)
            return record

    # -- checks ---------------------------------------------------------------------------------
    def consistency_problems(self) -> list[str]:
        """Every row has its file, every file its row, every done job its result, no temp files."""
        problems = []
        with self._lock:
            rows = {r["blob"]: r["id"] for r in self._db.execute("SELECT id, blob FROM checkpoints")}
            done_keys = {r[0] for r in self._db.execute("SELECT key FROM jobs WHERE status='done'")}
            ck_ids = set(rows.values())
            job_cks = {r[0] for r in self._db.execute("SELECT DISTINCT checkpoint_id FROM jobs")}
        files = {p.name for p in self.checkpoint_dir.iterdir()}
        problems += [f"row {rows[b]} has no file {b}" for b in sorted(set(rows) - files)]
        problems += [f"file {f} has no row" for f in sorted(files - set(rows))]
        problems += [f"done job result {k}.json is missing" for k in sorted(done_keys)
                     if not self.result_path(k).is_file()]
        problems += [f"jobs refer to missing checkpoint {c}" for c in sorted(job_cks - ck_ids)]
        problems += [f"temp file left: {p.name}" for p in self.tmp_dir.iterdir()]
        probe_files = {self._probe_file(r["sha256"]) for r in self.list_probes()}
        present = {p.name for p in self.probe_dir.iterdir()}
        problems += [f"probe file {f} is missing" for f in sorted(probe_files - present)]
        problems += [f"probe file {f} has no row" for f in sorted(present - probe_files)]
        return problems


def _decode(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out
