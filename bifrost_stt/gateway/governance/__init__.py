"""Governance: virtual keys, budgets, rate limits (requests and audio seconds) and the price table.

    decide.py      the decision for one request: which key, allowed or not, which fallbacks remain
    service.py     Governance: wires the config store, the counters and the price table; admit/settle
    configstore.py virtual keys, budgets and rate limits in SQLite or PostgreSQL (SQLAlchemy), synced
    counters.py    budget and rate-limit counters: embedded SQLite, or Redis shared by instances (Lua)
    pricing.py     the price table: USD per audio second or per audio token, per provider/model
    durations.py   "1m 1h 1d 1w 1M" windows
    errors.py      401/402/403/429/503 in the Bifrost envelope
"""
