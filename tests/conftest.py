"""Shared fixtures: fake upstreams (tests.fakes) and a real gateway on loopback (tests.support)."""

pytest_plugins = ["tests.fakes.fixtures", "tests.fakes.fixtures_speech", "tests.fakes.fixtures_hosted", "tests.fakes.fixtures_media", "tests.support"]
