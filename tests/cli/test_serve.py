"""`mnemoscope serve` argument handling (the running server is tested in test_live_server.py)."""
from __future__ import annotations

import pytest

from mnemoscope import cli
from mnemoscope.cli.commands import serve


def test_non_loopback_without_token_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MNEMOSCOPE_TOKEN", raising=False)
    started = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(a))
    code = cli.main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert code == 2 and started == []
    err = capsys.readouterr().err
    assert "refusing to listen on '0.0.0.0'" in err and "MNEMOSCOPE_TOKEN" in err and "--allow-remote" in err


@pytest.mark.parametrize("extra, env", [(["--allow-remote"], {}), ([], {"MNEMOSCOPE_TOKEN": "t"})])
def test_remote_bind_with_token_or_flag_starts(monkeypatch, tmp_path, extra, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append((app, kw)))
    monkeypatch.setenv("MNEMOSCOPE_DASHBOARD", "false")
    code = cli.main(["serve", "--host", "0.0.0.0", "--port", "8123", "--data-dir", str(tmp_path), *extra])
    assert code == 0
    [(app, kw)] = started
    assert kw["host"] == "0.0.0.0" and kw["port"] == 8123
    assert app.state.settings.data_dir == tmp_path


def test_bad_settings_are_a_cli_error(capsys, tmp_path):
    assert cli.main(["serve", "--port", "99999", "--data-dir", str(tmp_path)]) == 2
    assert "port" in capsys.readouterr().err


def test_parser_lists_the_options():
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--host", "::1", "--workers", "3"])
    assert args.host == "::1" and args.workers == 3 and args.allow_remote is None
    assert serve.settings_from_args(args).workers == 3
