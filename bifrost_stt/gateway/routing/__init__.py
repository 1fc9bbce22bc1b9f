"""Routing policy: model strings, key choice, admission, retries and fallbacks."""
