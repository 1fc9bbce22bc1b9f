"""``bifrost-stt spec-sync``: regenerate the document from upstream, or check it is in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bifrost_stt.server.cli import main

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "reference" / "bifrost-openapi.json"
needs_upstream = pytest.mark.skipif(not UPSTREAM.exists(), reason="the upstream document is not beside the repo")


@needs_upstream
def test_check_passes_for_the_bundled_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec-sync", str(UPSTREAM), "--check"]) == 0
    assert "in sync" in capsys.readouterr().out


@needs_upstream
def test_writes_a_document_and_check_catches_drift(tmp_path: Path) -> None:
    out = tmp_path / "bifrost.yaml"
    assert main(["spec-sync", str(UPSTREAM), "--out", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["openapi"].startswith("3.1") and len(doc["paths"]) == 8
    assert main(["spec-sync", str(UPSTREAM), "--out", str(out), "--check"]) == 0
    doc["components"]["schemas"]["TranscriptionRequest"]["properties"]["response_format"]["enum"].append("mp3")
    out.write_text(yaml.safe_dump(doc))
    assert main(["spec-sync", str(UPSTREAM), "--out", str(out), "--check"]) == 1


def test_missing_upstream_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec-sync", str(tmp_path / "nope.json")]) == 2
    assert "spec-sync" in capsys.readouterr().err
