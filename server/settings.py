"""Server settings: one object, filled from arguments and `MNEMOSCOPE_*` environment variables.

    MNEMOSCOPE_DATA_DIR=/srv/mnemoscope MNEMOSCOPE_TOKEN=s3cret mnemoscope serve --host 0.0.0.0

Lists (`cors_origins`, `allowed_hosts`) may be given as JSON (`["https://a.org"]`) or comma-separated.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import json
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024**2
GiB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MNEMOSCOPE_", extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(Path(".mnemoscope"), description="checkpoints, job results and the SQLite index")
    max_upload_bytes: int = Field(2 * GiB, ge=1, description="uploads larger than this are refused (413) while reading")
    token: SecretStr | None = Field(None, description="when set, mutating routes need `Authorization: Bearer <token>`")
    workers: int = Field(2, ge=1, le=64, description="worker processes for ablation/patching/gradient/report jobs")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="CORS is off unless origins are listed")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header names answered besides 127.0.0.1, localhost, [::1] and the bind host "
                    "(others get 403: DNS rebinding); '*' answers any")
    allow_remote: bool = Field(False, description="bind a non-loopback address without a token anyway")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    # limits that keep one request from monopolising the server
    trace_max_samples: int = Field(16, ge=1, description="most sequences one trace may ask for")
    max_task_param: int = Field(4096, ge=1, description="largest integer task parameter (sequence lengths) a request may set")
    job_timeout_s: float = Field(3600.0, gt=0, description="a job running longer is stopped and marked failed")
    cancel_grace_s: float = Field(3.0, ge=0, description="how long a cancelled job may take to stop before its worker is killed")
    worker_threads: int = Field(1, ge=1, description="torch threads per worker process")
    worker_nice: int = Field(5, ge=0, le=19, description="workers run at lower CPU priority so the API stays responsive")
    dashboard: bool = Field(True, description="mount the dashboard at /dashboard/ when it is installed")

    # -- budgets: what one request may cost, estimated before it runs (server/budget.py) ----------
    # The defaults let every documented example, the dashboard and the benchmarks through on a
    # 2-core machine and refuse requests that would run for minutes or take gigabytes.
    max_steps: int = Field(4096, ge=1, description="longest sequence (timesteps) the task of a trace or job may produce")
    trace_max_bytes: int = Field(16 * MiB, ge=1024, description="largest trace answer: estimated before, checked after")
    trace_max_work: float = Field(2e9, gt=0, description="most sequences x steps x model parameters one trace may run")
    trace_timeout_s: float = Field(30.0, gt=0, description="a trace still running after this is stopped (its sandbox worker killed)")
    trace_workers: int = Field(2, ge=1, le=16, description="sandbox processes that run traces and validate uploads")
    trace_queue: int = Field(32, ge=0, description="traces and uploads that may wait for a busy sandbox; more are refused with 503")
    trace_cache_models: int = Field(2, ge=1, description="models each sandbox process keeps loaded between traces")
    trace_forward_cache_mb: int = Field(
        32, ge=0, description="whole traces each sandbox process keeps (MB of tensors), so zooming into a window of a "
                              "long trace does not run the forward again; keep it under worker_recycle_mb")
    job_max_work: float = Field(1e13, gt=0, description="most sequences x passes x steps x model parameters one job may run")
    job_max_values: int = Field(64_000_000, ge=1, description="most site values one job may record at once")
    max_queued_jobs: int = Field(64, ge=1, description="jobs that may wait for a worker; more are refused with 429")
    upload_timeout_s: float = Field(120.0, gt=0, description="validating one uploaded file may take this long (in a sandbox process)")
    worker_memory_mb: int = Field(4096, ge=256, description="memory limit (RLIMIT_DATA) of each job worker and sandbox process; "
                                                           "loading a checkpoint takes about twice its size")
    # uploaded archives (a Hugging Face save_pretrained folder as .zip / .tar / .tar.gz): checked
    # member by member before anything is unpacked, and counted again while unpacking
    archive_max_members: int = Field(1000, ge=1, description="most files and folders an uploaded archive may hold")
    archive_max_member_bytes: int = Field(2 * GiB, ge=1, description="largest unpacked file in an uploaded archive")
    archive_max_unpacked_bytes: int = Field(4 * GiB, ge=1, description="most bytes an uploaded archive may unpack to, all members together")
    archive_max_ratio: float = Field(100.0, ge=1, description="most unpacked bytes per archive byte (a compression bomb's ratio is far higher; "
                                                             "weights barely compress)")
    upload_max_layers: int = Field(256, ge=1, description="most decoder layers the config of an uploaded Hugging Face "
                                                         "folder may declare (the deepest memory models have about 120)")
    worker_recycle_mb: int = Field(64, ge=1, description="a worker whose memory grew this much since it started is replaced after its call or job")

    # where job workers run the model
    device: str = Field("cpu", description='torch device for jobs: "cpu", "cuda" or "cuda:N" (checked at start)')

    # where report jobs compute (server/remote_jobs.py): the time limit, cancellation and budgets stay the server's
    executor: Literal["local", "ray"] = Field(
        "local", description="local: the job workers compute reports themselves; ray: they send each report job "
                             "to the Ray cluster at ray_address and wait for it (pip install 'mnemoscope[ray]')")
    ray_address: str | None = Field(None, description="the Ray cluster report jobs go to with executor=ray "
                                                      "(e.g. head:6379 or ray://head:10001)")

    # uploads get their verdict without a click, as the zoo's do
    auto_analyze: bool = Field(True, description="queue a report job (the reliance verdict) for every new upload")

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value):
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("device")
    @classmethod
    def _device_exists(cls, value: str) -> str:
        if value.strip() == "cpu":
            return "cpu"
        from mnemoscope.analysis.device import resolve_device  # imports torch: only when a device is asked for

        return str(resolve_device(value.strip()))

    @model_validator(mode="after")
    def _executor_needs_its_address(self) -> "Settings":
        if self.executor == "ray" and not self.ray_address:
            raise ValueError("executor=ray needs ray_address: the Ray cluster report jobs go to "
                             "(`ray start --head` prints it)")
        if self.executor == "local" and self.ray_address:
            raise ValueError("ray_address goes with executor=ray")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError("executor=ray needs Ray: pip install 'mnemoscope[ray]'")
        return self

    @property
    def token_value(self) -> str | None:
        token = self.token
        if token is None:
            return None
        # model_copy(update=...) skips validation, so a plain str can end up here
        return token.get_secret_value() if isinstance(token, SecretStr) else str(token)


def is_loopback(host: str) -> bool:
    """True when `host` only ever means this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host.lower() == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_bind(settings: Settings) -> str | None:
    """Why binding `settings.host` is refused, or None when it is allowed."""
    if is_loopback(settings.host) or settings.token is not None or settings.allow_remote:
        return None
    return (
        f"refusing to listen on {settings.host!r} without a token: anyone who can reach this address "
        "could upload checkpoints, start jobs and delete data. Set MNEMOSCOPE_TOKEN=<secret> (clients then send "
        "'Authorization: Bearer <secret>'), or pass --allow-remote if the network is trusted, or bind 127.0.0.1."
    )
