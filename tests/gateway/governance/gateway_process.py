"""A gateway in a process of its own, for the tests that need several instances: prints its URL, then
serves until its stdin closes. ``python -m tests.gateway.governance.gateway_process CONFIG.json``"""

from __future__ import annotations

import sys

from bifrost_stt.gateway.config.load import load_config
from tests.support import serve, strict_app


def main() -> None:
    config = load_config(sys.argv[1], {})
    with serve(strict_app(config)) as url:
        print(url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
