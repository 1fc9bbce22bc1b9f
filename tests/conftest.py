"""Shared fixtures: fake upstreams (tests.fakes.fixtures) and a real gateway on loopback (tests.support).

Every test session gets a private temporary directory (``TMPDIR`` for the gateways it starts too), so the
per-user defaults that live in the temp directory (the async job store, spooled uploads, metrics files)
are never shared with another run on the same machine, whatever version of the code that run was.
"""

from __future__ import annotations

import os
import shutil
import tempfile

pytest_plugins = ["tests.fakes.fixtures", "tests.support", "tests.services"]

_PRIVATE_TMP = tempfile.mkdtemp(prefix="bifrost-stt-tests-")
os.environ["TMPDIR"] = _PRIVATE_TMP
tempfile.tempdir = _PRIVATE_TMP


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_PRIVATE_TMP, ignore_errors=True)
