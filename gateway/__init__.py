"""Composition of the gateway: configuration, contract loading, app factory, CLI, routing policy, formats."""
