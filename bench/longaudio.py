"""Long audio: one hour through a provider that takes 25 MB, pieces in parallel vs one at a time.

    .venv/bin/python bench/longaudio.py [--minutes 60] [--latency 0.02] [--parallel 8]

Starts a fake OpenAI-protocol upstream (this file, ``--serve-upstream``) that refuses files over 25 MiB
(413, as OpenAI does) and answers after ``latency`` seconds per second of audio it was sent, and the gateway
(``bifrost-stt serve``) in front of it. Then, each on a fresh gateway:

    1. ``--minutes`` of speech-like audio (noise bursts and pauses, 16 kHz mono WAV) with max_parallel_chunks 1
    2. the same with max_parallel_chunks ``--parallel``
    3. memory: a 2-minute and a 2-hour file (no upstream latency; a 1 MB limit, so both are split into
       ~30 s pieces, 8 in flight), the gateway's peak RSS over its settled RSS

and prints wall time, the gateway's CPU seconds and its peak RSS for each. Nothing else runs; the WAV files
are written to a temporary directory and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

LIMIT = 25 * 1024 * 1024
RATE = 16000


# -- the fake upstream ---------------------------------------------------------------------------------


def audio_seconds(data: bytes) -> float:
    """Seconds in a FLAC (STREAMINFO) or 16-bit mono WAV upload, from its header alone."""
    if data[:4] == b"fLaC":
        info = data[8:42]
        rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
        samples = ((info[13] & 0x0F) << 32) | int.from_bytes(info[14:18], "big")
        return samples / rate
    if data[:4] == b"RIFF":
        rate = int.from_bytes(data[24:28], "little")
        return (len(data) - 44) / (rate * 2)
    return 0.0


def serve_upstream(port: int, latency: float) -> None:
    from aiohttp import web

    async def transcribe(request: web.Request) -> web.Response:
        reader = await request.multipart()
        size, seconds = 0, 0.0
        async for part in reader:
            if part.name == "file":
                data = await part.read()
                size, seconds = len(data), audio_seconds(data)
            else:
                await part.read()
        if size > LIMIT:
            return web.json_response({"error": {"message": f"Maximum content size limit ({LIMIT}) exceeded "
                                                            f"({size} bytes read)", "type": "invalid_request_error"}},
                                     status=413)
        await asyncio.sleep(latency * seconds)
        return web.json_response({"task": "transcribe", "language": "english", "duration": seconds,
                                  "text": f"{seconds:.1f} seconds.",
                                  "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds,
                                                "text": f" {seconds:.1f} seconds."}]})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/audio/transcriptions", transcribe)
    app.router.add_get("/health", lambda _: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- audio ---------------------------------------------------------------------------------------------


def write_speechlike(path: Path, seconds: float, seed: int = 7) -> None:
    """Bursts of noise (2-5 s, like sentences) separated by pauses (0.3-0.9 s), written block by block."""
    import numpy as np

    rng = np.random.default_rng(seed)
    total = int(seconds * RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        written = 0
        while written < total:
            burst = int(rng.uniform(2, 5) * RATE)
            pause = int(rng.uniform(0.3, 0.9) * RATE)
            block = np.concatenate([rng.normal(0, 3000, burst).astype(np.int16), np.zeros(pause, np.int16)])
            block = block[: total - written]
            w.writeframes(block.tobytes())
            written += len(block)


# -- one run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    seconds: float
    wall: float
    cpu: float
    settled_mb: float
    peak_mb: float
    pieces: int


def run_once(label: str, workdir: Path, upstream_port: int, audio: Path, seconds: float, parallel: int,
             piece_limit_mb: int | None = None) -> Run:
    import httpx

    procs = h.Processes()
    try:
        config = workdir / "gateway-config.json"
        config.write_text(json.dumps({
            "providers": {"openai": {
                "keys": [{"name": "bench", "value": h.API_KEY, "models": ["*"]}],
                "network_config": {"base_url": f"http://127.0.0.1:{upstream_port}",
                                   "default_request_timeout_in_seconds": 900},
            }},
            "client": {"spool_dir": str(workdir)},
            "long_audio": {"max_parallel_chunks": parallel, "min_piece_seconds": 10,
                           "limits": {"openai": {"max_file_mb": piece_limit_mb}} if piece_limit_mb else {}},
        }))
        port = h.free_port()
        argv = [str(h.gateway_binary()), "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
        log = workdir / f"gateway-{label}.log"
        proc = procs.start(argv, log, cwd=workdir)
        h.wait_http_ok(f"http://127.0.0.1:{port}/health", proc, 60, "gateway", log)
        url = f"http://127.0.0.1:{port}{h.TRANSCRIPTIONS}"
        with httpx.Client(timeout=1800) as client:  # warm-up: the first request loads what requests need
            tiny = workdir / "tiny.wav"
            write_speechlike(tiny, 1.0)
            client.post(url, data={"model": "openai/whisper-1"}, files={"file": tiny.open("rb")}).raise_for_status()
            settled = h.settled_rss_kb(proc.pid)
            cpu0, started = h.cpu_seconds(proc.pid), time.perf_counter()
            with h.RssSampler(proc.pid) as rss, audio.open("rb") as f:
                response = client.post(url, data={"model": "openai/whisper-1", "response_format": "verbose_json"},
                                       files={"file": ("talk.wav", f, "audio/wav")})
            wall = time.perf_counter() - started
            cpu = h.cpu_seconds(proc.pid) - cpu0
        if response.status_code != 200:
            raise h.BenchError(f"{label}: HTTP {response.status_code}: {response.text[:300]}\n{h.tail(log)}")
        body = response.json()
        pieces = body["extra_fields"].get("pieces", 1)
        if abs(body["duration"] - seconds) > 1:
            raise h.BenchError(f"{label}: duration {body['duration']} for {seconds} s of audio")
        return Run(label, seconds, wall, cpu, h.mb(settled), h.mb(rss.peak_kb), pieces)
    finally:
        procs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--latency", type=float, default=0.02, help="upstream seconds per audio second")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--no-memory", action="store_true", help="skip the 2-minute / 2-hour memory runs")
    parser.add_argument("--serve-upstream", nargs=2, metavar=("PORT", "LATENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_upstream:
        serve_upstream(int(args.serve_upstream[0]), float(args.serve_upstream[1]))
        return 0
    h.install_signal_handlers()
    machine = h.machine_facts()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-longaudio-") as tmp:
        workdir = Path(tmp)
        procs = h.Processes()
        try:
            def upstream(latency: float) -> int:
                port = h.free_port()
                log = workdir / f"upstream-{latency}.log"
                proc = procs.start([sys.executable, __file__, "--serve-upstream", str(port), str(latency)], log)
                h.wait_http_ok(f"http://127.0.0.1:{port}/health", proc, 30, "upstream", log)
                return port

            slow = upstream(args.latency)
            seconds = args.minutes * 60
            audio = workdir / "long.wav"
            write_speechlike(audio, seconds)
            runs.append(run_once("one at a time", workdir, slow, audio, seconds, 1))
            runs.append(run_once(f"{args.parallel} in parallel", workdir, slow, audio, seconds, args.parallel))
            audio.unlink()
            if not args.no_memory:
                fast = upstream(0.0)
                for label, length in (("2 minutes", 120.0), ("2 hours", 7200.0)):
                    path = workdir / f"{length:.0f}.wav"
                    write_speechlike(path, length)
                    # pieces of ~30 s (1 MB) for both, so both go through the same path with 8 pieces in flight
                    runs.append(run_once(f"memory, {label}", workdir, fast, path, length, args.parallel, 1))
                    path.unlink()
        finally:
            procs.close()
    print(f"# long audio ({machine.cpu_model}, load {machine.loadavg}; "
          f"upstream latency {args.latency:g} s per audio second, 25 MiB limit)")
    print("| run | audio | pieces | wall | gateway CPU | settled RSS | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in runs:
        print(f"| {r.label} | {r.seconds / 60:.0f} min | {r.pieces} | {r.wall:.1f} s | {r.cpu:.1f} s | "
              f"{r.settled_mb:.0f} MB | {r.peak_mb:.0f} MB |")
    print(f"\nspeed-up at max_parallel_chunks {args.parallel}: {runs[0].wall / runs[1].wall:.1f}x")
    if len(runs) == 4:
        print(f"peak RSS over settled: 2 minutes {runs[2].peak_mb - runs[2].settled_mb:+.1f} MB, "
              f"2 hours {runs[3].peak_mb - runs[3].settled_mb:+.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
