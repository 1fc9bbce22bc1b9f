"""bifrost_stt.server.cli: `check-config` run as a real subprocess (exit codes, stderr, no secret in any output), and
`serve` up to the point where it hands over to uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bifrost_stt.gateway.contract.loading import OPENAPI_DIR

from bifrost_stt.server import cli
from bifrost_stt.gateway.config.load import config_from_environ

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-cli-5ecret-never-printed"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bifrost_stt.server.cli ARGS` with a clean environment (no stray *_API_KEY from the host)."""
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-m", "bifrost_stt.server.cli", *args], cwd=REPO, env=base | (env or {}),
                          capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, doc: Any, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else doc)
    return str(path)


UPSTREAM = {
    "providers": {
        "openai": {"keys": [{"name": "primary", "value": "env.MY_OPENAI_KEY", "models": ["*"], "weight": 1.0}],
                   "network_config": {"insecure_skip_verify": True}},
        "groq": {"keys": [{"name": "groq-a", "value": SECRET, "models": ["whisper-large-v3"], "weight": 1}]},
    },
    "config_store": {"enabled": False},
    "governance": {},
}


def test_check_config_valid_file(tmp_path: Path) -> None:
    result = run("check-config", "--config", write(tmp_path, UPSTREAM), env={"MY_OPENAI_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "provider openai" in out and "key primary" in out and "key groq-a" in out
    assert "whisper-large-v3" in out
    assert "governance: off (no governance section, config_store" in out
    assert "providers.openai.network_config.insecure_skip_verify" in out
    assert SECRET not in out + result.stderr


def test_check_config_yaml_file(tmp_path: Path) -> None:
    text = "providers:\n  groq:\n    keys:\n      - name: y\n        value: " + SECRET + "\n"
    result = run("check-config", "--config", write(tmp_path, text, "c.yml"))
    assert result.returncode == 0, result.stderr
    assert "key y" in result.stdout and SECRET not in result.stdout


def test_check_config_missing_env_var(tmp_path: Path) -> None:
    result = run("check-config", "--config", write(tmp_path, UPSTREAM))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "providers.openai.keys[0].value: environment variable MY_OPENAI_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_misspelt_field(tmp_path: Path) -> None:
    doc = {"providers": {"openai": {"keys": [{"name": "k", "value": SECRET, "wieght": 1}]}}}
    result = run("check-config", "--config", write(tmp_path, doc))
    assert result.returncode == 2
    assert 'providers.openai.keys[0].wieght: unknown field (did you mean "weight"?)' in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_check_config_from_environment() -> None:
    result = run("check-config", env={"OPENAI_API_KEY": SECRET, "BIFROST_STT_PORT": "9100"})
    assert result.returncode == 0, result.stderr
    assert "environment variables (no file)" in result.stdout
    assert "key OPENAI_API_KEY" in result.stdout and ":9100" in result.stdout
    assert SECRET not in result.stdout


def test_check_config_uses_bifrost_stt_config_variable(tmp_path: Path) -> None:
    result = run("check-config", env={"BIFROST_STT_CONFIG": write(tmp_path, {"providers": {"nope": {}}})})
    assert result.returncode == 2
    assert "providers.nope: unknown provider" in result.stderr and "known kinds:" in result.stderr


def test_help_and_version() -> None:
    for args in (("--help",), ("serve", "--help"), ("check-config", "--help")):
        result = run(*args)
        assert result.returncode == 0 and "usage: bifrost-stt" in result.stdout
    assert "--spec-dir" in run("serve", "--help").stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("bifrost-stt ")


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    assert run("serve", "--port", "http").returncode == 2
    assert run("serve", "--log-level", "loud").returncode == 2


def test_console_script_installed() -> None:
    script = Path(sys.executable).with_name("bifrost-stt")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "bifrost-stt" in result.stdout


# --- serve, in process, stopping at uvicorn.run ------------------------------------------------------------------


def test_serve_rejects_bad_config_before_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("uvicorn must not start"))
    path = write(tmp_path, {"providers": {"openai": {"keys": [{"name": "k", "weight": -1}]}}})
    assert cli.main(["serve", "--config", path]) == 2
    assert "providers.openai.keys[0].weight: must be greater than 0" in capsys.readouterr().err


def test_serve_hands_config_and_overrides_to_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: calls.append((a, k)))
    for var in ("BIFROST_STT_CONFIG", "BIFROST_STT_OVERRIDES", "BIFROST_STT_HOST", "BIFROST_STT_PORT"):
        monkeypatch.setenv(var, "")  # empty = unset for the gateway; monkeypatch restores what serve writes
    monkeypatch.setenv("MY_OPENAI_KEY", SECRET)
    path = write(tmp_path, UPSTREAM)
    spec_dir = str(OPENAPI_DIR)  # a real document: serve refuses a spec dir it cannot serve
    status = cli.main(["serve", "--config", path, "--port", "9123", "--workers", "2", "--spec-dir", spec_dir])
    assert status == 0
    (args, kwargs), = calls
    assert args == ("bifrost_stt.server.app:app_factory",)
    assert kwargs["factory"] is True and kwargs["lifespan"] == "on"
    assert (kwargs["host"], kwargs["port"], kwargs["workers"], kwargs["log_level"]) == ("127.0.0.1", 9123, 2, "info")
    assert kwargs["timeout_graceful_shutdown"] > 30
    assert os.environ["BIFROST_STT_CONFIG"] == path
    assert json.loads(os.environ["BIFROST_STT_OVERRIDES"]) == {"port": 9123, "workers": 2, "spec_dir": spec_dir}
    worker = config_from_environ(os.environ)  # what app_factory sees in each worker
    assert worker.server.port == 9123 and worker.server.spec_dir == spec_dir
    assert sorted(worker.providers) == ["groq", "openai"]
    assert SECRET not in os.environ["BIFROST_STT_OVERRIDES"]


def test_start_up_mistakes_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bifrost_stt.server.cli import main

    bad_store = tmp_path / "c.json"
    bad_store.write_text(json.dumps({"providers": {"openai": {"keys": [{"name": "k", "value": "v", "weight": 1}]}},
                                     "client": {"job_store_path": "/proc/nope/jobs.sqlite3"}}))
    assert main(["check-config", "--config", str(bad_store)]) == 2
    assert "client.job_store_path: cannot open" in capsys.readouterr().err
    assert main(["serve", "--config", str(bad_store), "--spec-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "server.spec_dir" in err and "Traceback" not in err
