"""Soak: the daemon for an hour on a microphone-like source with a subscriber; its memory
and whether every utterance it started was closed exactly once (printed, never asserted).

    python bench/soak.py [--minutes 60] [--warmup-minutes 3] [--model DIR] [--json OUT]

Starts `edge-asr daemon --local-only` whose source is the bundled clips (tests/data) looped
in real time: the playlist source hands each 20 ms piece over when a microphone would have
it, to the same recognition worker, pipeline, finisher and event bus as the microphone's.
One client subscribes over the Unix socket (partials on, as a UI would) and keeps a ledger
per utterance id: SPEECH_STARTED opens one, ON_DEVICE_FINAL or RESCORED closes it
(ARCHITECTURE.md, "Events and the two end-pointers"). RSS comes from /proc (bench/daemon.py's
helpers) at the start, after the warm-up, every few seconds and at the end. At the end the
daemon gets SIGTERM, which closes the open utterance and ends the subscription.

- lost: utterances started and never closed, once the stream has ended;
- duplicated: closings beyond the first for one utterance;
- unopened: closings of an utterance never seen starting;
- unseen starts: utterances the daemon counted (GetStatus, just before SIGTERM) whose
  SPEECH_STARTED never reached the subscriber.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc
from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR
from edge_asr.simulator.process_stats import process_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted((ROOT / "tests" / "data").glob("*.flac"))
GAP_S = 1.5  # silence between clips: the playlist source's default
PIECE = SAMPLE_RATE * 20 // 1000
CLOSING = ("ON_DEVICE_FINAL", "RESCORED")
MB = 2**20


def _bench_daemon():
    """bench/daemon.py by its path: a plain `import daemon` would find the repository's
    daemon/ package first whenever the repository root is on sys.path."""
    spec = importlib.util.spec_from_file_location("bench_daemon", Path(__file__).with_name(
        "daemon.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_daemon_bench = _bench_daemon()
rss_bytes, wait_serving = _daemon_bench.rss_bytes, _daemon_bench.wait_serving


@dataclass
class Ledger:
    """Every event the subscriber received, per type and per utterance."""

    events: Counter = field(default_factory=Counter)
    started: set[str] = field(default_factory=set)
    closings: Counter = field(default_factory=Counter)  # utterance id -> closing events
    dropped_partials: int = 0

    def add(self, kind: str, utterance_id: str, dropped_partials_before: int = 0) -> None:
        self.events[kind] += 1
        self.dropped_partials += dropped_partials_before
        if kind == "SPEECH_STARTED":
            self.started.add(utterance_id)
        elif kind in CLOSING:
            self.closings[utterance_id] += 1

    @property
    def closed(self) -> int:
        return sum(self.events[k] for k in CLOSING)

    @property
    def lost(self) -> list[str]:
        return sorted(u for u in self.started if not self.closings[u])

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.closings.values() if n > 1)

    @property
    def unopened(self) -> list[str]:
        return sorted(u for u in self.closings if u not in self.started)


class Subscriber(threading.Thread):
    """One Subscribe call, every event into the ledger, until the daemon ends the stream."""

    def __init__(self, socket: str, ledger: Ledger) -> None:
        super().__init__(name="soak-subscriber", daemon=True)
        self.socket, self.ledger = socket, ledger
        self.error: str | None = None  # how the stream ended, when not cleanly

    def run(self) -> None:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            stream = edge_asr_pb2_grpc.EdgeAsrStub(channel).Subscribe(
                edge_asr_pb2.SubscribeRequest(partials=True))
            try:
                for event in stream:
                    self.ledger.add(edge_asr_pb2.EventType.Name(event.type),
                                    event.utterance_id, event.dropped_partials_before)
            except grpc.RpcError as e:
                self.error = f"{e.code().name}: {e.details()}"


def clip_starts(paths: list[Path], gap_s: float = GAP_S) -> np.ndarray:
    """Audio second at which each clip of one pass starts, as the playlist plays them (each
    clip padded to whole pieces, then the gap), and the pass's length last."""
    lengths = [-(-len(read_audio(p)) // PIECE) * PIECE / SAMPLE_RATE + gap_s for p in paths]
    return np.concatenate(([0.0], np.cumsum(lengths)))


def clips_played(starts: np.ndarray, audio_s: float) -> int:
    """Clips begun within `audio_s` seconds of the looping playlist."""
    passes, rest = divmod(audio_s, starts[-1])
    return int(passes) * (len(starts) - 1) + bisect.bisect_right(starts[:-1], rest)


def status(socket: str) -> edge_asr_pb2.Status:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        return edge_asr_pb2_grpc.EdgeAsrStub(channel).GetStatus(
            edge_asr_pb2.GetStatusRequest(), timeout=10)


def soak(model: Path, minutes: float, warmup_minutes: float, sample_s: float = 5.0,
         progress_s: float = 300.0, clips: list[Path] | None = None) -> dict:
    """Runs the daemon for `minutes` of wall time; its figures as a dict."""
    clips = clips or CLIPS
    with tempfile.TemporaryDirectory(prefix="ea-soak-") as tmp:
        socket, log = f"{tmp}/d.sock", Path(tmp) / "daemon.log"
        config = Path(tmp) / "soak.toml"
        config.write_text('[source]\nkind = "files"\nloop = true\nrealtime = true\n'
                          f"gap_s = {GAP_S}\nfiles = {json.dumps([str(c) for c in clips])}\n")
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config",
                 str(config), "--model", str(model), "--socket", socket, "--local-only",
                 "--wait-for-subscriber"], stdout=out, stderr=subprocess.STDOUT)
        try:
            return _measure(proc, socket, clips, minutes, warmup_minutes, sample_s,
                            progress_s)
        except BaseException:
            print(log.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _measure(proc: subprocess.Popen, socket: str, clips: list[Path], minutes: float,
             warmup_minutes: float, sample_s: float, progress_s: float) -> dict:
    starts = clip_starts(clips)
    wait_serving(socket, timeout=120)
    rss_start = rss_bytes(proc.pid)
    ledger = Ledger()
    subscriber = Subscriber(socket, ledger)
    subscriber.start()
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = []  # (seconds since the subscription, RSS)
    warm: tuple[float, int, float, float] | None = None  # after the warm-up: time, RSS,
    # the daemon's CPU seconds and audio seconds
    next_progress = progress_s
    while (now := time.monotonic() - t0) < minutes * 60:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited early with status {proc.returncode}")
        samples.append((now, rss_bytes(proc.pid)))
        if warm is None and now >= warmup_minutes * 60:
            warm = (now, samples[-1][1], process_cpu_seconds(proc.pid),
                    status(socket).counters["audio_seconds"])
        if now >= next_progress:
            next_progress += progress_s
            print(f"soak: {now / 60:5.1f} min  RSS {samples[-1][1] / MB:6.1f} MB  "
                  f"started {len(ledger.started)}  closed {ledger.closed}",
                  file=sys.stderr, flush=True)
        time.sleep(min(sample_s, max(0.0, minutes * 60 - now)))
    if warm is None:
        raise ValueError("the warm-up must end before the run does")
    before_stop = status(socket)
    cpu_end = process_cpu_seconds(proc.pid)
    rss_end, rss_peak = rss_bytes(proc.pid), rss_bytes(proc.pid, "VmHWM")
    proc.send_signal(signal.SIGTERM)  # closes the open utterance, then the subscription
    exit_code = proc.wait(timeout=60)
    subscriber.join(timeout=30)
    audio_s = before_stop.counters["audio_seconds"]
    after_warm = [(t, r) for t, r in samples if t >= warm[0]] + [(time.monotonic() - t0,
                                                                   rss_end)]
    slope = np.polyfit([t / 3600 for t, _ in after_warm], [r / MB for _, r in after_warm], 1)[0]
    return {
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "warmup_minutes": warmup_minutes,
        "model": proc.args[proc.args.index("--model") + 1],
        "rss_start_mb": round(rss_start / MB, 1),
        "rss_after_warmup_mb": round(warm[1] / MB, 1),
        "rss_end_mb": round(rss_end / MB, 1),
        "rss_growth_after_warmup_mb": round((rss_end - warm[1]) / MB, 2),
        "rss_max_after_warmup_mb": round(max(r for _, r in after_warm) / MB, 1),
        "rss_slope_after_warmup_mb_per_h": round(float(slope), 2),
        # The kernel updates VmHWM lazily: a sample may stand above it.
        "rss_peak_mb": round(max(rss_peak, *(r for _, r in samples)) / MB, 1),
        "audio_seconds": round(audio_s, 1),
        "clips_played": clips_played(starts, audio_s),
        "utterances_daemon_counted": before_stop.utterances,
        "utterances_started": len(ledger.started),
        "utterances_closed": ledger.closed,
        "closed_on_device": ledger.events["ON_DEVICE_FINAL"],
        "closed_rescored": ledger.events["RESCORED"],
        "lost": len(ledger.lost),
        "lost_ids": ledger.lost[:20],
        "duplicated": ledger.duplicated,
        "unopened": len(ledger.unopened),
        "unseen_starts": max(0, before_stop.utterances - len(ledger.started)),
        # Real-time files reach recognition through a capture ring, as a microphone's audio
        # does: what it lost when recognition fell behind.
        "overruns": before_stop.overruns,
        "audio_lost_s": round(before_stop.counters.get("audio_lost_s", 0.0), 2),
        "partials": ledger.events["PARTIAL"],
        "dropped_partials": ledger.dropped_partials,
        "events": dict(ledger.events),
        "daemon_cpu_rtf_after_warmup": round((cpu_end - warm[2]) / max(1e-9, audio_s - warm[3]),
                                             4),
        "daemon_exit_code": exit_code,
        "subscription_error": subscriber.error if not subscriber.is_alive()
        else "still open after the daemon stopped",
    }


ROWS = [
    ("RSS at start (serving)", "rss_start_mb", "MB"),
    ("RSS after warm-up", "rss_after_warmup_mb", "MB"),
    ("RSS at end", "rss_end_mb", "MB"),
    ("growth after warm-up", "rss_growth_after_warmup_mb", "MB"),
    ("highest RSS after warm-up", "rss_max_after_warmup_mb", "MB"),
    ("trend after warm-up (least squares)", "rss_slope_after_warmup_mb_per_h", "MB/h"),
    ("peak RSS (VmHWM or the highest sample)", "rss_peak_mb", "MB"),
    ("audio played", "audio_seconds", "s"),
    ("clips played (requests in)", "clips_played", ""),
    ("utterances the daemon counted", "utterances_daemon_counted", ""),
    ("utterances started (SPEECH_STARTED)", "utterances_started", ""),
    ("utterances closed (finals out)", "utterances_closed", ""),
    ("  of which ON_DEVICE_FINAL", "closed_on_device", ""),
    ("lost (started, never closed)", "lost", ""),
    ("duplicated closings", "duplicated", ""),
    ("closings without a start", "unopened", ""),
    ("starts never delivered", "unseen_starts", ""),
    ("overruns / audio lost", "overruns", ""),
    ("partials / dropped", "partials", ""),
    ("daemon CPU s per audio s after warm-up", "daemon_cpu_rtf_after_warmup", ""),
    ("daemon exit code", "daemon_exit_code", ""),
]


def table(result: dict) -> str:
    lines = [f"soak: {result['minutes']} min, warm-up {result['warmup_minutes']} min, "
             f"model {result['model']}, local-only, 1 subscriber"]
    for label, key, unit in ROWS:
        value = result[key]
        if key == "partials":
            value = f"{value} / {result['dropped_partials']}"
        if key == "overruns":
            value = f"{value} / {result['audio_lost_s']} s"
        lines.append(f"  {label:<42} {value} {unit}".rstrip())
    if result["subscription_error"]:
        lines.append(f"  subscription ended with {result['subscription_error']}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    # 3 minutes: more than one pass of the playlist (about 143 s), so every clip's length
    # has been decoded once and ONNX Runtime's and the allocator's pools have grown to fit.
    p.add_argument("--warmup-minutes", type=float, default=3.0)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling interval")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args()
    if not 0 < args.warmup_minutes < args.minutes:
        p.error("--warmup-minutes must be above 0 and below --minutes")
    result = soak(args.model, args.minutes, args.warmup_minutes, args.sample_seconds)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
