"""``bifrost-stt transcribe FILE…``: transcripts of local files, through a running gateway or one started here.

Each file goes to the async route (``POST /v1/async/audio/transcriptions``) and its job is polled, so a long
recording shows how far it is on stderr: the upload in bytes, then the pieces the gateway split it into.
Without ``--url`` a gateway is started in-process on a free loopback port from the same configuration
``serve`` reads (``--config``, the environment), and stopped when the files are done.

Output: text, srt and vtt as plain text, json and verbose_json as JSON; to stdout, to ``--output FILE`` (one
input), or into ``--output DIR`` as ``<name>.<format>``. Exit status 0 when every file was transcribed, 1 when
any failed (each failure is one line on stderr with the gateway's message), 2 for usage or configuration errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
JOBS = "/v1/async/audio/transcriptions"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
EXTENSIONS = {"json": "json", "verbose_json": "json", "text": "txt", "srt": "srt", "vtt": "vtt"}
POLL_SECONDS = 0.5


class Failed(Exception):
    """One file could not be transcribed; the message is for the user."""


def add_parser(commands: Any) -> None:
    cmd = commands.add_parser(
        "transcribe",
        help="transcribe audio files through a gateway (a running one, or one started here)",
        description="Transcribe each FILE (any length: the gateway splits long audio) and write the transcript. "
        "Progress goes to stderr when it is a terminal.",
    )
    cmd.add_argument("files", nargs="+", metavar="FILE", help="audio files to transcribe")
    cmd.add_argument("--url", help="a running gateway's base URL (default: start one in-process from --config "
                     "or the environment)")
    cmd.add_argument("--config", metavar="PATH", help="config file for the in-process gateway (as `serve`)")
    cmd.add_argument("--model", default="openai/whisper-1", help="provider/model (default openai/whisper-1)")
    cmd.add_argument("--response-format", choices=FORMATS, default="text", help="default text")
    cmd.add_argument("--language", help="ISO-639-1 language of the audio")
    cmd.add_argument("--prompt", help="text to guide the model")
    cmd.add_argument("--output", "-o", metavar="PATH", help="a file (one input) or a directory; default stdout")
    cmd.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    cmd.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for each file (default 3600)")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"bifrost-stt transcribe: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    output = Path(args.output) if args.output else None
    if output is not None and len(files) > 1 and not output.is_dir():
        print("bifrost-stt transcribe: with several files, --output must be an existing directory", file=sys.stderr)
        return EXIT_USAGE
    with _gateway(args) as url:
        status = EXIT_OK
        for path in files:
            try:
                text = transcribe(url, path, args, show=not args.quiet and sys.stderr.isatty())
            except Failed as exc:
                print(f"bifrost-stt transcribe: {path}: {exc}", file=sys.stderr)
                status = EXIT_FAILED
                continue
            _write(text, path, output, args.response_format)
    return status


def transcribe(url: str, path: Path, args: argparse.Namespace, *, show: bool = False) -> str:
    """The transcript of ``path`` in ``args.response_format`` (JSON formats as pretty JSON text)."""
    fields = {"model": args.model, "response_format": args.response_format}
    fields.update({k: v for k, v in (("language", args.language), ("prompt", args.prompt)) if v})
    with _Progress(show, path.name) as bar, httpx.Client(base_url=url, timeout=httpx.Timeout(300.0)) as client:
        with path.open("rb") as raw:
            upload = cast(BinaryIO, _Counting(raw, path.stat().st_size, bar.uploaded))
            try:
                submitted = client.post(JOBS, data=fields, files={"file": (path.name, upload)})
            except httpx.HTTPError as exc:
                raise Failed(f"could not reach the gateway at {url} ({exc})") from None
        if submitted.status_code != 202:
            raise Failed(_message(submitted))
        where = submitted.headers.get("location") or f"{JOBS}/{submitted.json()['id']}"
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                polled = client.get(where)
            except httpx.HTTPError as exc:
                raise Failed(f"lost the gateway at {url} ({exc})") from None
            job = polled.json() if polled.headers.get("content-type", "").startswith("application/json") else {}
            if polled.status_code not in (200, 202) or not job:
                raise Failed(_message(polled))
            progress = job.get("progress")
            if progress:
                bar.pieces(progress["pieces_done"], progress["pieces_total"])
            if job.get("status") == "completed":
                return _render(job["result"], args.response_format)
            if job.get("status") == "failed":
                error = job.get("error") or {}
                raise Failed(f"{(error.get('error') or {}).get('message', 'failed')} (HTTP {job.get('status_code')})")
            if time.monotonic() > deadline:
                raise Failed(f"not done after {args.timeout:g} s (job {job.get('id')})")
            time.sleep(POLL_SECONDS)


def _render(result: dict[str, Any], fmt: str) -> str:
    if fmt in ("text", "srt", "vtt"):
        return str(result.get("text", ""))
    body = {k: v for k, v in result.items() if k != "extra_fields"}
    return json.dumps(body, ensure_ascii=False, indent=2)


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        error = response.text[:200] or "no answer"
    return f"{error} (HTTP {response.status_code})"


def _write(text: str, source: Path, output: Path | None, fmt: str) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    target = output / f"{source.stem}.{EXTENSIONS[fmt]}" if output.is_dir() else output
    target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


class _Counting:
    """A file object that reports how many bytes were read from it (the upload's progress)."""

    def __init__(self, raw: BinaryIO, size: int, report: Callable[[int, int], None]) -> None:
        self._raw, self._size, self._report, self._done = raw, size, report, 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._done += len(data)
        self._report(self._done, self._size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Progress:
    """A rich progress bar on stderr (or nothing): the upload in bytes, then the pieces transcribed."""

    def __init__(self, show: bool, name: str) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._name = name
        self._show = show

    def __enter__(self) -> _Progress:
        if self._show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self._name, total=None, detail="uploading")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def uploaded(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total,
                             detail=f"uploading {done / 1e6:.1f}/{total / 1e6:.1f} MB")

    def pieces(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total, detail=f"{done}/{total} pieces")


@contextlib.contextmanager
def _gateway(args: argparse.Namespace) -> Iterator[str]:
    """``--url``, or a gateway started here on a free loopback port for the duration of the block."""
    if args.url:
        yield args.url.rstrip("/")
        return
    import uvicorn

    from bifrost_stt.gateway.config.load import CONFIG_ENV, load_config
    from bifrost_stt.server.app import create_app

    config = load_config(args.config or os.environ.get(CONFIG_ENV) or None, os.environ)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(config), lifespan="on", log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        if not server.started:
            raise SystemExit(EXIT_USAGE)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
