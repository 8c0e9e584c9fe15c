"""The daemon as a process: time from start to serving, resident memory, and the CPU it
spends per second of pushed audio (printed, never asserted).

    python bench/daemon.py [--model DIR] [--repeats N]

Starts `edge-asr daemon --source none` on a temporary Unix socket, waits for gRPC health
to say SERVING, pushes every bundled clip through `Recognize` (16 kHz int16, 20 ms
messages, as fast as the daemon takes them) and reads the daemon's own CPU time and RSS
from /proc; then pushes a clip with each of 8 distinct contexts at the API's limits and reads
the peak RSS again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc
from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR
from edge_asr.simulator.process_stats import process_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS), or the most it has been (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_serving(socket: str, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if os.path.exists(socket):
            try:
                with grpc.insecure_channel(f"unix:{socket}") as ch:
                    reply = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - start
            except grpc.RpcError:
                pass
        time.sleep(0.01)
    raise RuntimeError("daemon did not start serving")


def push(stub, samples: np.ndarray, context: edge_asr_pb2.ContextLists | None = None) -> int:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    piece = 640  # 20 ms of int16

    def requests():
        yield edge_asr_pb2.RecognizeRequest(config=edge_asr_pb2.RecognizeConfig(
            sample_rate=16000, encoding=edge_asr_pb2.PCM_S16LE, partials=True,
            context=context))
        for i in range(0, len(pcm), piece):
            yield edge_asr_pb2.RecognizeRequest(audio=pcm[i:i + piece])

    return sum(1 for _ in stub.Recognize(requests(), timeout=120))


def largest_contexts(n: int) -> list[edge_asr_pb2.ContextLists]:
    """`n` distinct contexts at the API's limits: 1,000 contacts, 16,000 characters in all,
    all distinct words, so each builds a graph of its own (a hostile client's worst case)."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out = []
    for _ in range(n):
        names = ["".join(rng.choice(letters, 7)) + " " + "".join(rng.choice(letters, 8))
                 for _ in range(1000)]
        out.append(edge_asr_pb2.ContextLists(contacts=names))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    clips = [read_audio(f) for f in sorted((ROOT / "tests" / "data").glob("*.flac"))]
    audio_s = sum(len(c) for c in clips) / 16000
    contexts = largest_contexts(8)
    starts, rss, peaks, rtfs, ctx_rss = [], [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            socket = os.path.join(tmp, "d.sock")
            proc = subprocess.Popen([sys.executable, "-m", "edge_asr.daemon.cli", "daemon",
                                     "--source", "none", "--socket", socket,
                                     "--model", str(args.model)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                t0 = time.monotonic()
                wait_serving(socket)
                starts.append(time.monotonic() - t0)
                with grpc.insecure_channel(f"unix:{socket}") as ch:
                    stub = edge_asr_pb2_grpc.EdgeAsrStub(ch)
                    cpu0 = process_cpu_seconds(proc.pid)
                    for clip in clips:
                        push(stub, clip)
                    rtfs.append((process_cpu_seconds(proc.pid) - cpu0) / audio_s)
                rss.append(rss_bytes(proc.pid))
                peaks.append(rss_bytes(proc.pid, "VmHWM"))
                with grpc.insecure_channel(f"unix:{socket}") as ch:
                    stub = edge_asr_pb2_grpc.EdgeAsrStub(ch)
                    for context in contexts:  # each builds its graph for the call
                        push(stub, clips[0], context)
                ctx_rss.append(rss_bytes(proc.pid, "VmHWM"))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(json.dumps({
        "start_to_serving_s_median": round(statistics.median(starts), 3),
        "rss_mb_median": round(statistics.median(rss) / 2**20, 1),
        "peak_rss_mb_median": round(statistics.median(peaks) / 2**20, 1),
        "daemon_cpu_rtf_median": round(statistics.median(rtfs), 4),
        "peak_rss_mb_after_8_largest_contexts_median": round(statistics.median(ctx_rss) / 2**20,
                                                             1),
        "audio_seconds_per_run": round(audio_s, 1), "runs": args.repeats,
        "note": "RTF = daemon process CPU seconds (all threads) per audio second",
    }, indent=2))


if __name__ == "__main__":
    main()
