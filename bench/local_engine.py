"""How accurate and how fast is the local engine (provider ``local``, the bundled tiny.en), and what does it cost?

    .venv/bin/python bench/local_engine.py [--scenarios 1x1,4x4] [--clips 8] [--beam-size 5] [--cores 0,1]

Makes spoken clips with known text (espeak-ng, resampled to 16 kHz mono with sox: Debian packages), starts
``bifrost-stt serve`` with only ``providers.local`` configured (1 uvicorn worker), and for each scenario
``CLIENTSxPOOL`` (POOL = ``providers.local.concurrency``, the decodes run at once; CLIENTS = requests kept
in flight) sends every clip once through ``POST /v1/audio/transcriptions`` (``local/tiny.en``, json).

Printed per scenario: word error rate over all clips (Levenshtein on lower-cased words, punctuation
dropped, 0-12 spelled out), real-time factor (seconds of audio per wall-clock second: higher is faster),
latency per request (p50, max), the gateway's CPU (% of one core, and CPU seconds per audio second), its RSS
before the model loads, once loaded, and at peak while decoding, and other processes' CPU on the machine
during the run (the figures are only as quiet as the machine). The report goes to
``bench/results/local_engine.md``. Exit status 1 if a request failed, 2 if the gateway could not start.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import _harness as h

RESULTS = h.BENCH_DIR / "results" / "local_engine.md"
MODEL = "local/tiny.en"
SENTENCES = [
    "Our meeting starts at nine and ends before lunch.",
    "The library will be closed on Monday for repairs.",
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring the quarterly report and your laptop.",
    "The train to the city leaves from platform four every hour.",
    "She planted tomatoes, beans and carrots in the garden last spring.",
    "A good night of sleep helps the brain store new memories.",
    "The museum opens a new exhibition about ancient ships next week.",
    "He fixed the old bicycle and rode it to the market.",
    "Children learn languages quickly when they hear them every day.",
    "Fresh bread from the bakery smells wonderful in the morning.",
    "The river flows slowly through the valley towards the sea.",
    "Our team finished the project two days ahead of schedule.",
    "Mountains look blue from far away because of the air.",
    "The doctor asked him to drink more water and rest.",
    "We watched the sunset from the top of the hill.",
]
_WORD = re.compile(r"[a-z0-9']+")
_NUMBERS = dict(enumerate("zero one two three four five six seven eight nine ten eleven twelve".split()))


@dataclass
class Clip:
    text: str
    wav: bytes
    seconds: float


@dataclass
class Outcome:
    latency: float
    transcript: str
    ok: bool
    detail: str = ""


def words(text: str) -> list[str]:
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in _WORD.findall(text.lower())]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, w in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != w))
    return row[-1]


def make_clips(count: int, workdir: Path) -> list[Clip]:
    """``count`` clips of two sentences each, 0.5 s of silence between them and around."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if not espeak or not sox:
        raise h.BenchError("espeak-ng and sox are needed (apt-get install -y espeak-ng sox)")
    clips = []
    for i in range(count):
        pair = [SENTENCES[(2 * i) % len(SENTENCES)], SENTENCES[(2 * i + 1) % len(SENTENCES)]]
        parts = []
        for j, sentence in enumerate(pair):
            raw, part = workdir / f"raw{i}-{j}.wav", workdir / f"part{i}-{j}.wav"
            subprocess.run([espeak, "-w", str(raw), sentence], check=True, capture_output=True, timeout=60)
            subprocess.run([sox, str(raw), "-r", "16000", "-c", "1", "-b", "16", str(part), "pad", "0.5", "0.5"],
                           check=True, capture_output=True, timeout=60)
            parts.append(str(part))
        out = workdir / f"clip{i}.wav"
        subprocess.run([sox, *parts, str(out)], check=True, capture_output=True, timeout=60)
        data = out.read_bytes()
        clips.append(Clip(" ".join(pair), data, (len(data) - 44) / 32000))
    return clips


def multipart(clip: Clip) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{MODEL}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + clip.wav + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def transcribe(port: int, clip: Clip) -> Outcome:
    body, content_type = multipart(clip)
    started = time.perf_counter()
    status, _, answer = h.http_post(f"http://127.0.0.1:{port}/v1/audio/transcriptions", body,
                                    {"Content-Type": content_type}, timeout=600)
    latency = time.perf_counter() - started
    if status != 200:
        return Outcome(latency, "", False, f"HTTP {status}: {answer[:300]!r}")
    return Outcome(latency, str(json.loads(answer)["text"]), True)


def run_scenario(clients: int, pool: int, clips: list[Clip], args: argparse.Namespace, workdir: Path,
                 cpus: list[int]) -> dict[str, object]:
    config = workdir / f"config-{clients}x{pool}.json"
    config.write_text(json.dumps({"providers": {"local": {
        "concurrency": pool, "preload": False, "beam_size": args.beam_size,
        "concurrency_and_buffer_size": {"concurrency": pool, "buffer_size": max(16, clients)}}}}))
    procs = h.Processes()
    try:
        port = h.free_port()
        argv = h.taskset(cpus) + [str(h.gateway_binary()), "serve", "--config", str(config), "--port", str(port),
                                  "--workers", "1", "--log-level", "warning"]
        log = workdir / f"gateway-{clients}x{pool}.log"
        proc = procs.start(argv, log, cwd=workdir)
        h.wait_http_ok(f"http://127.0.0.1:{port}/health", proc, 60, "gateway", log)
        bare_kb = h.settled_rss_kb(proc.pid)
        warm = transcribe(port, clips[0])  # loads the model (once per process), then decodes once
        if not warm.ok:
            raise h.BenchError(f"warm-up request failed: {warm.detail}\n" + h.tail(log))
        loaded_kb = h.settled_rss_kb(proc.pid)
        outcomes: list[Outcome | None] = [None] * len(clips)
        queue = list(range(len(clips)))
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop(0)
                outcomes[index] = transcribe(port, clips[index])

        cpu_before = h.cpu_seconds(proc.pid)
        with h.OtherCpuWatcher() as other, h.RssSampler(proc.pid) as rss:
            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
        cpu = h.cpu_seconds(proc.pid) - cpu_before
        done = [o for o in outcomes if o is not None]
        failed = [o.detail for o in done if not o.ok]
        audio = sum(c.seconds for c in clips)
        ref_words = sum(len(words(c.text)) for c in clips)
        errors = sum(edit_distance(words(c.text), words(o.transcript)) for c, o in zip(clips, done))
        latencies = sorted(o.latency for o in done)
        return {
            "scenario": f"{clients} client{'s' if clients > 1 else ''}, pool {pool}",
            "clips": len(clips), "audio_s": audio, "wall_s": wall, "rtf": audio / wall,
            "wer": errors / ref_words, "p50_s": statistics.median(latencies), "max_s": latencies[-1],
            "cpu_pct": 100 * cpu / wall, "cpu_per_audio_s": cpu / audio,
            "rss_bare_mb": h.mb(bare_kb), "rss_loaded_mb": h.mb(loaded_kb), "rss_peak_mb": h.mb(rss.peak_kb),
            "other_cpu_pct": other.percent(procs.started_pids | {proc.pid}), "failed": failed,
            "sample": done[0].transcript if done else "",
        }
    finally:
        procs.close()


def report(rows: list[dict[str, object]], machine: h.Machine, args: argparse.Namespace) -> str:
    lines = ["# Local engine: bundled tiny.en (int8, CPU)", ""]
    lines += machine.lines()
    lines += [f"- clips: {args.clips} x 2 espeak-ng sentences (16 kHz mono WAV), beam_size {args.beam_size}, "
              f"VAD on; model {MODEL}", ""]
    lines += ["| scenario | audio | wall | real-time factor | WER | latency p50 / max | gateway CPU | CPU s per audio s "
              "| RSS before model / loaded / peak | other CPU on the machine |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['audio_s']:.1f} s | {r['wall_s']:.1f} s | {r['rtf']:.1f}x | {100 * r['wer']:.1f} % "
            f"| {r['p50_s']:.2f} / {r['max_s']:.2f} s | {r['cpu_pct']:.0f} % | {r['cpu_per_audio_s']:.3f} "
            f"| {r['rss_bare_mb']:.0f} / {r['rss_loaded_mb']:.0f} / {r['rss_peak_mb']:.0f} MB | {r['other_cpu_pct']:.0f} % |")
    lines += ["", f"First transcript: {rows[0]['sample']!r}" if rows else ""]
    for r in rows:
        for failure in r["failed"]:  # type: ignore[attr-defined]
            lines.append(f"- FAILED in {r['scenario']}: {failure}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="1x1,4x4", help="CLIENTSxPOOL,... (default 1x1,4x4)")
    parser.add_argument("--clips", type=int, default=8, help="clips of two sentences each (default 8)")
    parser.add_argument("--beam-size", type=int, default=5, help="providers.local.beam_size (default 5)")
    parser.add_argument("--cores", default="", help="CPUs for the gateway, e.g. 0,1 (default: any)")
    args = parser.parse_args()
    h.install_signal_handlers()
    cpus = [int(c) for c in args.cores.split(",") if c.strip()]
    scenarios = [tuple(int(n) for n in s.lower().split("x")) for s in args.scenarios.split(",") if s.strip()]
    machine = h.machine_facts()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        workdir = Path(tmp)
        try:
            clips = make_clips(args.clips, workdir)
            for clients, pool in scenarios:
                print(f"running {clients} client(s) against pool {pool} ...", file=sys.stderr)
                rows.append(run_scenario(clients, pool, clips, args, workdir, cpus))
        except h.BenchError as exc:
            print(f"bench/local_engine.py: {exc}", file=sys.stderr)
            return 2
    text = report(rows, machine, args)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
