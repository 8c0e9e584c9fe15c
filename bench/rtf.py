"""Real-time factor of streaming recognition on one thread (printed, never asserted).

Recognizer alone (greedy and modified beam search) and the daemon's whole pipeline.

    python bench/rtf.py [--model DIR] [--clips DIR] [--repeats N]

Feeds every bundled clip in 20 ms pieces, as the device does, and reports the median over
repeats of CPU seconds per audio second, for greedy and modified beam search side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from edge_asr.daemon.audio import read_audio
from edge_asr.daemon.evaluate import recognize_samples, run_pipeline
from edge_asr.daemon.features import SAMPLE_RATE, compute_fbank
from edge_asr.daemon.pipeline import Pipeline
from edge_asr.daemon.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--clips", type=Path, default=ROOT / "tests" / "data")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    clips = [read_audio(f) for f in sorted(args.clips.glob("*.flac"))]
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    figures: dict[str, object] = {"machine": f"{cpu_name()}, {os.cpu_count()} cores",
                                  "audio_seconds": round(audio_s, 2), "threads": 1}
    # Features alone, to show where the time goes.
    runs = []
    for _ in range(args.repeats):
        t = time.process_time()
        for c in clips:
            compute_fbank(c)
        runs.append((time.process_time() - t) / audio_s)
    figures["rtf_features"] = round(statistics.median(runs), 5)
    for method in ("greedy_search", "modified_beam_search"):
        rec = Recognizer(RecognizerConfig(model_dir=args.model, decoding_method=method, threads=1))
        recognize_samples(rec, clips[0])  # warm-up: first runs allocate
        runs = []
        for _ in range(args.repeats):
            t = time.process_time()
            for c in clips:
                recognize_samples(rec, c)
            runs.append((time.process_time() - t) / audio_s)
        figures[f"rtf_{method}"] = round(statistics.median(runs), 5)
        figures[f"rtf_{method}_runs"] = [round(r, 5) for r in runs]
    # The whole per-stream pipeline (VAD, features, model, beam search, end-pointers,
    # lattices), as the daemon runs it.
    rec = Recognizer(RecognizerConfig(model_dir=args.model, threads=1))
    runs = []
    for _ in range(args.repeats):
        t = time.process_time()
        for c in clips:
            run_pipeline(Pipeline(rec), c)
        runs.append((time.process_time() - t) / audio_s)
    figures["rtf_pipeline_modified_beam_search"] = round(statistics.median(runs), 5)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
