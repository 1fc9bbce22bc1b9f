"""The wheel a user installs: one import package, the contract inside it, and a gateway that runs from anywhere.

Builds the wheel from this checkout, installs it (without its dependencies) into a fresh venv outside the
checkout, and runs the installed ``bifrost-stt`` from another directory. The fresh venv finds the
dependencies in the test environment's site-packages through a ``.pth`` line (a plain path: the test
environment's editable hook for this checkout is not loaded), so the test needs no network and what it
exercises is the installed wheel alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audio import wav_bytes
from tests.fakes.openai import OPENAI_KEY, TRANSCRIPT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Built from a copy: setuptools keeps a build/ directory in the source tree, and files deleted since an
    # earlier build would otherwise ride along in build/lib. The links into the package are kept as links.
    source = tmp_path_factory.mktemp("src") / "bifrost-stt"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".pytest_cache", "tests", "bench"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("bifrost_stt-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (outside the checkout) with only the wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=False)
    bin_dir = root / "bin"
    site = Path(subprocess.run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-deps",
                           "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "no such option: --python" in done.stderr:  # pip < 22.3
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                               "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
        (bin_dir / "bifrost-stt").write_text(f"#!{bin_dir / 'python'}\nfrom bifrost_stt.server.cli import main\n"
                                             "raise SystemExit(main())\n")
        (bin_dir / "bifrost-stt").chmod(0o755)
    assert done.returncode == 0, done.stdout + done.stderr
    return bin_dir


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and
            not k.startswith(("BIFROST_STT_", "PYTHON"))}
    return keep | extra


def test_the_wheel_holds_one_package_and_the_contract(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"bifrost_stt"}
    for expected in ("bifrost_stt/openapi/bifrost.yaml", "bifrost_stt/openapi/overlay.yaml",
                     "bifrost_stt/providers/registry.py", "bifrost_stt/handlers/__init__.py",
                     "bifrost_stt/kernel/errors.py", "bifrost_stt/server/cli.py"):
        assert expected in names


def test_installed_check_config_runs_from_another_directory(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(installed / "bifrost-stt"), "check-config"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout
    where = subprocess.run([str(installed / "python"), "-c", "import bifrost_stt; print(bifrost_stt.__file__)"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert str(installed.parent) in where.stdout and str(REPO) not in where.stdout


def test_installed_spec_sync_never_writes_into_the_package(installed: Path, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream.json"
    upstream.write_text(json.dumps({"openapi": "3.1.0", "paths": {}}))
    done = subprocess.run([str(installed / "bifrost-stt"), "spec-sync", str(upstream)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    package = Path(subprocess.run([str(installed / "python"), "-c", "import bifrost_stt; print(bifrost_stt.__file__)"],
                                  cwd=tmp_path, env=_env(), capture_output=True, text=True).stdout.strip()).parent
    assert (package / "openapi" / "bifrost.yaml").read_bytes() == (REPO / "openapi" / "bifrost.yaml").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(url: str, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within 60 s")


def test_installed_serve_answers_health_contract_and_a_transcription(
    installed: Path, tmp_path: Path, fake_openai: Any
) -> None:
    port = _free_port()
    env = _env(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake_openai.url)
    process = subprocess.Popen([str(installed / "bifrost-stt"), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{base}/health", process)
        health = httpx.get(f"{base}/health").json()
        # the local engine, when installed (the test environment's site-packages have the [local] extra), is
        # added beside providers configured from the environment (for fallbacks=local/...)
        local = ["local"] if importlib.util.find_spec("faster_whisper") is not None else []
        assert health["providers"] == [*local, "openai"]
        contract = httpx.get(f"{base}/openapi.json").json()
        assert contract["openapi"].startswith("3.1") and "/v1/audio/transcriptions" in contract["paths"]
        answer = httpx.post(f"{base}/v1/audio/transcriptions", data={"model": "openai/whisper-1"},
                            files={"file": ("a.wav", wav_bytes(), "audio/wav")}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == TRANSCRIPT
        assert len(fake_openai.requests) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
