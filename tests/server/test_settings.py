"""Settings from arguments and MNEMOSCOPE_* variables; the bind check."""
from __future__ import annotations

import pytest

from mnemoscope.server.settings import GiB, Settings, check_bind, is_loopback


def test_defaults():
    s = Settings(_env_file=None)
    assert (s.host, s.port, s.max_upload_bytes, s.token, s.cors_origins, s.allow_remote) == (
        "127.0.0.1", 8000, 2 * GiB, None, [], False)


def test_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MNEMOSCOPE_PORT", "9001")
    monkeypatch.setenv("MNEMOSCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MNEMOSCOPE_TOKEN", "s3cret")
    monkeypatch.setenv("MNEMOSCOPE_CORS_ORIGINS", "https://a.org, https://b.org")
    monkeypatch.setenv("MNEMOSCOPE_MAX_UPLOAD_BYTES", "1024")
    s = Settings()
    assert s.port == 9001 and s.data_dir == tmp_path and s.token_value == "s3cret"
    assert s.cors_origins == ["https://a.org", "https://b.org"] and s.max_upload_bytes == 1024
    assert "s3cret" not in repr(s)  # the token never shows up in logs
    monkeypatch.setenv("MNEMOSCOPE_CORS_ORIGINS", '["https://c.org"]')
    monkeypatch.setenv("MNEMOSCOPE_TOKEN", "  ")
    s = Settings()
    assert s.cors_origins == ["https://c.org"] and s.token is None


def test_arguments_win_over_environment(monkeypatch):
    monkeypatch.setenv("MNEMOSCOPE_PORT", "9001")
    assert Settings(port=9002).port == 9002


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("192.168.1.20", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_check_bind():
    assert check_bind(Settings(host="127.0.0.1")) is None
    refusal = check_bind(Settings(host="0.0.0.0"))
    assert "MNEMOSCOPE_TOKEN" in refusal and "--allow-remote" in refusal
    assert check_bind(Settings(host="0.0.0.0", token="t")) is None
    assert check_bind(Settings(host="0.0.0.0", allow_remote=True)) is None
