"""Run ``bifrost-stt serve`` on bench/run.py's config with the request-log store on (a SQLite file beside it).

    .venv/bin/python bench/run.py --sizes 100k --concurrency 1,16 \
        --gateway-cmd '.venv/bin/python bench/with_logs.py {config} {port}'

Compare with the same command without ``--gateway-cmd`` (no log store): the difference in the gateway's
CPU per request is what logging costs. ``BENCH_LOG_FORMAT=json`` also turns the request line on (the
default bench runs at --log-level warning, where it is off).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    config_path, port = Path(sys.argv[1]), sys.argv[2]
    config = json.loads(config_path.read_text())
    config["logs_store"] = {"enabled": True, "type": "sqlite",
                            "config": {"path": str(config_path.with_name("logs.db"))}}
    with_logs = config_path.with_name("gateway-config-logs.json")
    with_logs.write_text(json.dumps(config))
    binary = Path(sys.executable).with_name("bifrost-stt")
    level = os.environ.get("BENCH_LOG_LEVEL", "warning")
    os.execv(str(binary), [str(binary), "serve", "--config", str(with_logs), "--port", port, "--workers", "1",
                           "--log-level", level, "--log-format", os.environ.get("BENCH_LOG_FORMAT", "text")])


if __name__ == "__main__":
    main()
