"""``python -m bifrost_stt``: the same as the ``bifrost-stt`` command."""

from bifrost_stt.server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
