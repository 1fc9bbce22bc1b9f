"""The capability matrix is generated from the registry: docs/providers.md (and a README block) must match it.

Regenerate after changing a provider's capabilities or the registry: UPDATE_DOCS=1 ./dev test tests/providers/test_matrix.py
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from bifrost_stt.kernel.settings import ProviderConfig
from bifrost_stt.providers import registry
from bifrost_stt.kernel.capabilities import Capabilities
from bifrost_stt.providers.matrix import MARKERS, render_document, render_matrix, sync

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "providers.md"
README = ROOT / "README.md"
UPDATE = os.environ.get("UPDATE_DOCS") == "1"


@pytest.mark.parametrize("kind", sorted(registry.known()))
async def test_every_kind_declares_capabilities_and_its_provider_uses_them(kind: str) -> None:
    caps = registry.capabilities(kind)
    assert isinstance(caps, Capabilities)
    async with httpx.AsyncClient() as client:  # never used: building makes no call
        impl = registry.build(ProviderConfig(id=kind, kind=kind), client)
    assert getattr(impl, "capabilities") == caps


def test_unknown_kind_and_undeclared_capabilities_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LookupError, match="unknown provider kind"):
        registry.capabilities("nonesuch")
    monkeypatch.setattr(registry, "PROVIDERS", {**registry.PROVIDERS, "bare": "bifrost_stt.providers.http:make_client"})
    with pytest.raises(LookupError, match="add a module constant BARE = Capabilities"):
        registry.capabilities("bare")
    assert registry.constant_name("opencode-go") == "OPENCODE_GO"


def test_matrix_has_one_row_per_kind() -> None:
    rows = render_matrix().splitlines()[2:]
    assert [row.split("|")[1].strip(" `") for row in rows] == sorted(registry.known())
    assert "| `openai` | json, text, srt, verbose_json, vtt | yes | yes | yes | — | 25 MB | — |" in rows
    assert "| `vllm` | json, text, verbose_json | — | — | yes | — | 25 MB | 30 s |" in rows


def test_sync_rewrites_only_the_marked_block(tmp_path: Path) -> None:
    start, end = MARKERS
    page = tmp_path / "README.md"
    page.write_text(f"intro\n{start}\nstale\n{end}\noutro\n")
    assert sync(page) and page.read_text() == f"intro\n{start}\n{render_matrix()}{end}\noutro\n"
    assert not sync(page)
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not sync(plain) and plain.read_text() == "no markers\n"


def test_docs_providers_md_is_current() -> None:
    expected = render_document()
    if UPDATE:
        DOC.write_text(expected, encoding="utf-8")
    assert DOC.exists() and DOC.read_text(encoding="utf-8") == expected, (
        "docs/providers.md is stale: UPDATE_DOCS=1 ./dev test tests/providers/test_matrix.py"
    )


def test_readme_matrix_block_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    if MARKERS[0] not in text:
        pytest.skip("README.md has no capability-matrix block (markers in providers.matrix.MARKERS)")
    if UPDATE:
        sync(README)
        text = README.read_text(encoding="utf-8")
    assert f"{MARKERS[0]}\n{render_matrix()}{MARKERS[1]}" in text, (
        "README.md's capability matrix is stale: UPDATE_DOCS=1 ./dev test tests/providers/test_matrix.py"
    )
