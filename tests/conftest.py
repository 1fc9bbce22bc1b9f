"""Shared fixtures: fake upstreams (tests.fakes.fixtures) and a real gateway on loopback (tests.support)."""

pytest_plugins = ["tests.fakes.fixtures", "tests.support", "tests.services"]
