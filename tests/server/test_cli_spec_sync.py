"""``bifrost-stt spec-sync``: edit the document in place from upstream (a small diff), report what changed."""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bifrost_stt.gateway.contract.loading import OPENAPI_DIR
from bifrost_stt.gateway.contract.operations import FROM_UPSTREAM
from bifrost_stt.gateway.contract.sync import sync
from bifrost_stt.gateway.contract.sync_edit import edit
from bifrost_stt.gateway.contract.sync_report import change_report, overlay_moves
from bifrost_stt.server.cli import main

UPSTREAM = Path(os.environ.get("BIFROST_STT_UPSTREAM_DOC") or (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "bifrost-openapi.json"))
needs_upstream = pytest.mark.skipif(not UPSTREAM.exists(), reason="the upstream document is not beside the repo")
COMMITTED = (OPENAPI_DIR / "bifrost.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def upstream() -> dict[str, Any]:
    return dict(json.loads(UPSTREAM.read_text(encoding="utf-8")))


def _diff(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


# ------------------------------------------------------------------ against the reference document


@needs_upstream
def test_check_passes_for_the_bundled_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec-sync", str(UPSTREAM), "--check"]) == 0
    assert "in sync" in capsys.readouterr().out


@needs_upstream
def test_an_unchanged_upstream_leaves_the_file_byte_identical(upstream: dict[str, Any]) -> None:
    assert edit(COMMITTED, sync(upstream)) == COMMITTED


@needs_upstream
def test_a_one_field_change_is_a_small_diff_and_a_readable_report(
    upstream: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = copy.deepcopy(upstream)
    properties = moved["components"]["schemas"]["TranscriptionRequest"]["properties"]
    properties["diarize"] = {"type": "boolean", "description": "UPSTREAM PROSE, never copied"}
    source = tmp_path / "upstream.json"
    source.write_text(json.dumps(moved))
    out = tmp_path / "bifrost.yaml"
    out.write_text(COMMITTED)

    assert main(["spec-sync", str(source), "--out", str(out), "--check"]) == 1
    report = capsys.readouterr().out
    assert "schema TranscriptionRequest: + field diarize (boolean): validated and passed on to the provider" in report
    assert out.read_text() == COMMITTED  # --check writes nothing

    assert main(["spec-sync", str(source), "--out", str(out)]) == 0
    assert "+ field diarize" in capsys.readouterr().out
    changed = _diff(COMMITTED, out.read_text())
    assert changed == ["+        diarize:", "+          type: boolean"], changed
    assert "UPSTREAM PROSE" not in out.read_text()
    assert main(["spec-sync", str(source), "--out", str(out), "--check"]) == 0  # deterministic, idempotent


@needs_upstream
def test_a_change_to_one_aliased_route_does_not_change_the_others(upstream: dict[str, Any]) -> None:
    moved = copy.deepcopy(upstream)
    moved["paths"]["/litellm/v1/audio/transcriptions"]["post"]["requestBody"]["required"] = False
    doc = yaml.safe_load(edit(COMMITTED, sync(moved)))
    assert doc["paths"]["/litellm/v1/audio/transcriptions"]["post"]["requestBody"]["required"] is False
    for path in ("/openai/v1/audio/transcriptions", "/langchain/v1/audio/transcriptions"):
        assert doc["paths"][path]["post"]["requestBody"]["required"] is True


@needs_upstream
def test_report_names_operations_parameters_enums_required_and_types(upstream: dict[str, Any]) -> None:
    moved = copy.deepcopy(upstream)
    schemas = moved["components"]["schemas"]
    schemas["OpenAITranscriptionRequest"]["properties"]["response_format"]["enum"].append("diarized_json")
    schemas["OpenAITranscriptionRequest"]["properties"]["stream"]["type"] = "string"
    schemas["TranscriptionRequest"]["required"] = ["file"]
    schemas["TranscriptionRequest"]["properties"]["sample"] = {"type": "string", "format": "binary"}
    schemas["TranscriptionResponse"]["properties"]["speakers"] = {"type": "array", "items": {"type": "string"}}
    del schemas["BifrostCacheDebug"]["properties"]["threshold"]
    azure = moved["paths"]["/openai/openai/deployments/{deployment-id}/audio/transcriptions"]["post"]
    azure["parameters"].append({"name": "x-region", "in": "header", "required": True, "schema": {"type": "integer"}})
    moved["paths"]["/v1/models"] = {"get": {"operationId": "listModels", "responses": {"200": {"description": "x"}}}}
    ids = FROM_UPSTREAM + ("listModels",)
    new = yaml.safe_load(edit(COMMITTED, sync(moved, ids)))
    report = change_report(yaml.safe_load(COMMITTED), new, handled={"createTranscription"},
                           read_fields=frozenset({"model", "file"}))
    assert report == [
        "operations: + GET /v1/models (listModels): handler none yet (needs code)",
        "parameters azureCreateTranscription: + header x-region (integer) required",
        "schema TranscriptionRequest: + field sample (string(binary)): needs code: a file part the handlers do not read",
        "schema TranscriptionRequest: ~ required - model",
        "schema OpenAITranscriptionRequest: ~ field response_format: enum + diarized_json",
        "schema OpenAITranscriptionRequest: ~ field stream: type boolean -> string",
        "schema TranscriptionResponse: + field speakers (array<string>): needs code: a response field the gateway "
        "does not produce yet",
        "schema BifrostCacheDebug: - field threshold",
    ]
    assert new["paths"]["/v1/models"]["get"]["responses"]["200"]["description"] == "OK"  # our words, valid OpenAPI


# ------------------------------------------------------------------ without the reference document


def test_overlay_targets_that_moved_are_named() -> None:
    old = yaml.safe_load(COMMITTED)
    new = copy.deepcopy(old)
    del new["components"]["schemas"]["ModelProvider"]
    new["components"]["schemas"]["BifrostErrorExtraFields"]["properties"]["provider"] = {"type": "string"}
    overlay = yaml.safe_load((OPENAPI_DIR / "overlay.yaml").read_text(encoding="utf-8"))
    moves = overlay_moves(old, new, overlay)
    assert any("$.components.schemas.ModelProvider.enum matched before and matches nothing now" in m for m in moves)


def test_sync_keeps_working_with_hand_added_operations(tmp_path: Path) -> None:
    """Others hand-add operations to bifrost.yaml and FROM_UPSTREAM: the edit keeps them, with our prose."""
    doc = yaml.safe_load(COMMITTED)
    upstream = copy.deepcopy(doc)
    upstream["paths"]["/widgets"] = {"get": {"operationId": "getWidgets", "summary": "THEIR WORDS",
                                             "responses": {"200": {"description": "THEIR WORDS"}}}}
    ours = COMMITTED.replace("\ncomponents:\n", "\n  /widgets:\n    get:\n      operationId: getWidgets\n"
                             "      summary: Our words\n      responses:\n        '200':\n"
                             "          description: Our words\n\ncomponents:\n", 1)
    ids = FROM_UPSTREAM + ("getWidgets",)
    assert edit(ours, sync(upstream, ids)) == ours


def test_a_new_file_is_valid_and_holds_no_upstream_prose(tmp_path: Path) -> None:
    upstream = yaml.safe_load(COMMITTED)
    upstream["paths"]["/v1/audio/transcriptions"]["post"]["summary"] = "THEIR WORDS"
    source = tmp_path / "upstream.yaml"
    source.write_text(yaml.safe_dump(upstream))
    out = tmp_path / "bifrost.yaml"
    assert main(["spec-sync", str(source), "--out", str(out)]) == 0
    text = out.read_text()
    assert "THEIR WORDS" not in text and "Transcribes audio" not in text
    doc = yaml.safe_load(text)
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"]
    assert sorted(doc["paths"]) == sorted(yaml.safe_load(COMMITTED)["paths"])


def test_missing_upstream_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec-sync", str(tmp_path / "nope.json")]) == 2
    assert "spec-sync" in capsys.readouterr().err
