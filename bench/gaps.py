"""End-point delay in one long stream of requests, by what fills the gaps between them:
digital zeros (a paused stream, a playlist's padding) or faint room noise (printed, never
asserted).

    python bench/gaps.py [--model DIR] [--gap-s 1.0] [--clips 12]

The bundled clips play back to back, each followed by a gap, through one `Pipeline`
(greedy search, as the daemon's defaults otherwise). The delay is the first final
end-point decision (CONFIRMED or FINAL_ENDPOINT) after each clip's speech_end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import run_pipeline
from edge_asr.daemon.pipeline import EventType, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
GAPS = {"zeros": None, "noise -70 dBFS": -70.0}


def gap(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    level = GAPS[kind]
    if level is None:
        return np.zeros(n, np.float32)
    return (rng.standard_normal(n) * 10 ** (level / 20)).astype(np.float32)


def final_delays(recognizer: Recognizer, entries: list[dict], kind: str, gap_s: float
                 ) -> np.ndarray:
    rng = np.random.default_rng(0)
    parts, speech_ends, t = [], [], 0.0
    for entry in entries:
        audio = read_audio(DATA / entry["audio_filepath"])
        parts += [audio, gap(kind, gap_s, rng)]
        speech_ends.append(t + entry["speech_end"])
        t += len(audio) / SAMPLE_RATE + gap_s
    pipeline = Pipeline(recognizer, PipelineConfig(model_version="bench", partials=False))
    finals = [e.audio_time for e in run_pipeline(pipeline, np.concatenate(parts))
              if e.type in (EventType.CONFIRMED, EventType.FINAL_ENDPOINT)]
    delays = [min((f - end for f in finals if f >= end - 0.3), default=np.nan)
              for end in speech_ends]
    return np.array(delays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=RecognizerConfig().model_dir)
    parser.add_argument("--gap-s", type=float, default=1.0)
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args()
    entries = [json.loads(line) for line in open(DATA / "manifest.jsonl")][: args.clips]
    recognizer = Recognizer(RecognizerConfig(model_dir=args.model,
                                             decoding_method="greedy_search"))
    print(f"{len(entries)} clips, {args.gap_s:g} s gaps, model {args.model}")
    for kind in GAPS:
        d = final_delays(recognizer, entries, kind, args.gap_s)
        print(f"  gaps of {kind:<15} final end-point after speech end: "
              f"p50 {np.nanpercentile(d, 50):.2f} s, p90 {np.nanpercentile(d, 90):.2f} s, "
              f"missed {int(np.isnan(d).sum())}")


if __name__ == "__main__":
    main()
