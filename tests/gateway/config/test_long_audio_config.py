"""The ``long_audio`` section and ``client.spool_dir``: read, defaulted, and mistakes named with their path."""

from __future__ import annotations

import pytest

from bifrost_stt.gateway.config.load import ConfigError, from_document
from bifrost_stt.kernel.settings import AudioLimit, LongAudioConfig
from tests.gateway.config.test_config import ENV, KINDS


def test_defaults_when_absent() -> None:
    config = from_document({}, ENV, KINDS)
    assert config.long_audio == LongAudioConfig()
    assert config.client.max_request_body_size_mb == 1024 and config.client.spool_dir is None


def test_the_section_and_its_limits() -> None:
    config = from_document({
        "client": {"spool_dir": "/var/spool/bifrost"},
        "long_audio": {"enabled": False, "max_parallel_chunks": 8, "piece_format": "opus",
                       "limits": {"vllm": {"max_duration_seconds": 60}, "openai/whisper-1": {"max_file_mb": 20}}},
    }, ENV, KINDS)
    la = config.long_audio
    assert (la.enabled, la.max_parallel_chunks, la.piece_format) == (False, 8, "opus")
    assert la.limit_for("vllm", "any") == AudioLimit(max_duration_seconds=60.0)
    assert la.limit_for("openai", "whisper-1") == AudioLimit(max_file_mb=20)
    assert la.limit_for("openai", "gpt-4o-transcribe") is None
    assert config.client.spool_dir == "/var/spool/bifrost"


@pytest.mark.parametrize("section,says", [
    ({"max_paralel_chunks": 2}, "long_audio.max_paralel_chunks"),
    ({"piece_format": "mp3"}, "long_audio.piece_format"),
    ({"max_parallel_chunks": 0}, "long_audio.max_parallel_chunks"),
    ({"limits": {"openai": {"max_file_mb": "25"}}}, "long_audio.limits.openai.max_file_mb"),
])
def test_mistakes_name_their_path(section: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_document({"long_audio": section}, ENV, KINDS)
    assert says in str(caught.value)
