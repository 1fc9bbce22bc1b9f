"""The spool directory: an upload that cannot fit is refused before it is read; a disk that fills mid-upload
is a clean 503 naming the directory, with nothing left behind (no file, no open descriptor)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from bifrost_stt.gateway.contract import multipart
from tests.audio import wav_of_size
from tests.support import config_with

URL = "/v1/audio/transcriptions"


def spooled_files() -> list[str]:
    """Open descriptors of this process that point at a spooled upload."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "bifrost-upload-" in target:
            out.append(target)
    return out


def test_an_upload_larger_than_the_free_space_is_refused_before_it_is_read(
    run_gateway: Any, fake_openai: Any, tmp_path: Path
) -> None:
    url = run_gateway(config_with(fake_openai.provider_config(), spool_dir=str(tmp_path),
                                  max_request_body_size_mb=1 << 30))
    declared = shutil.disk_usage(tmp_path).free + (1 << 30)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode() + b"--b\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:200]
    assert str(tmp_path).encode() in body and b"spool_full" in body
    assert fake_openai.requests == []


def test_a_disk_that_fills_during_the_upload_is_a_clean_error(
    run_gateway: Any, fake_openai: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = run_gateway(config_with(fake_openai.provider_config(), spool_dir=str(tmp_path), spool_threshold_kb=64))
    written = 0
    real = multipart._write_all

    def filling(fd: int, data: memoryview) -> None:
        nonlocal written
        if written + len(data) > 256 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        written += len(data)
        real(fd, data)

    monkeypatch.setattr(multipart, "_write_all", filling)

    response = httpx.post(url + URL, data={"model": "openai/whisper-1"},
                          files={"file": ("big.wav", wav_of_size(1 << 20), "audio/wav")}, timeout=30)

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "spool_full" and str(tmp_path) in error["message"]
    assert response.headers["retry-after"] == "30"
    assert spooled_files() == [] and list(tmp_path.iterdir()) == []
    assert fake_openai.requests == []
    monkeypatch.setattr(multipart, "_write_all", real)
    ok = httpx.post(url + URL, data={"model": "openai/whisper-1"},
                    files={"file": ("big.wav", wav_of_size(1 << 20), "audio/wav")}, timeout=30)
    assert ok.status_code == 200, ok.text
