"""Rendering canonical results into the response formats the contract offers."""
