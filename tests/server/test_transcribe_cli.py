"""``bifrost-stt transcribe``: files in, transcripts out, through a running gateway or one started in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bifrost_stt.server.cli import main
from tests.fakes.listener import FakeListener
from tests.gateway.longaudio.test_longaudio import GAP, LEAD, SENTENCES, gateway, in_order_once, voices
from tests.speech import speech_wav
from bifrost_stt.kernel.settings import AudioLimit


@pytest.fixture
def listener() -> Any:
    with FakeListener() as fake:
        fake.voices = voices()
        yield fake


def test_a_long_file_through_a_running_gateway(run_gateway: Any, listener: FakeListener, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = gateway(run_gateway, listener, max_parallel_chunks=3, limits={"openai": AudioLimit(max_duration_seconds=14.0)})
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD)

    status = main(["transcribe", str(audio), "--url", url, "--response-format", "srt", "--output", str(tmp_path)])

    assert status == 0, capsys.readouterr().err
    srt = (tmp_path / f"{audio.stem}.srt").read_text()
    assert srt.startswith("1\n00:00:00,")
    in_order_once(" ".join(line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit()))
    assert len(listener.pieces) >= 3


def test_in_process_gateway_from_a_config_file(listener: FakeListener, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = {
        "providers": {"openai": {"keys": [{"name": "k", "value": listener.key().value.reveal(), "models": ["*"]}],
                                 "network_config": {"base_url": listener.base_url}}},
        "client": {"job_store_path": str(tmp_path / "jobs.sqlite3")},
        "long_audio": {"min_piece_seconds": 5, "max_parallel_chunks": 3,
                       "limits": {"openai": {"max_duration_seconds": 14}}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD)

    status = main(["transcribe", str(audio), "--config", str(path), "--response-format", "verbose_json"])

    out, err = capsys.readouterr()
    assert status == 0, err
    body = json.loads(out)
    assert [s["text"].strip() for s in body["segments"]] == SENTENCES
    assert "extra_fields" not in body


def test_a_failure_is_one_line_and_exit_status_1(run_gateway: Any, listener: FakeListener, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    listener.fail_when = "Bread rises slowly."
    url = gateway(run_gateway, listener, max_parallel_chunks=3, limits={"openai": AudioLimit(max_duration_seconds=14.0)})
    audio = speech_wav(SENTENCES, gap=GAP, lead=LEAD)

    status = main(["transcribe", str(audio), "--url", url])

    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and f"{audio}: piece " in err and "the model failed on this audio (HTTP 500)" in err


def test_a_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", "/nonexistent.wav", "--url", "http://127.0.0.1:9"]) == 2
    assert "no such file: /nonexistent.wav" in capsys.readouterr().err
