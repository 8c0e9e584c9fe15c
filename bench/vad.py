"""How often the VAD calls a frame speech inside and outside the requests of a sim run.

    edge-asr sim run music_other_device --fast --no-compare --out sim-reports/mod
    python bench/vad.py sim-reports/mod

reads the microphone the daemon heard (session.wav) and where each request was spoken
(timeline.jsonl), and runs the daemon's VAD over it, webrtcvad with its gates alone and with
Silero's network beside it (daemon/frontend/speech_gate.py): the share of 30 ms frames
inside requests called speech (recall) and the share of the frames between them (music,
television, room) called speech. Frames within 50 ms of a request's edges count as inside.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.vad import SpeechSmoother
from edge_asr.daemon.pipeline import PipelineConfig

EDGE_S = 0.05


def requests(report: Path) -> list[tuple[float, float]]:
    with (report / "timeline.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["start"], r["end"]) for r in rows if r.get("kind") == "request"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path, help="an `edge-asr sim run` report folder")
    args = p.parse_args()
    samples = read_audio(args.report / "session.wav")
    spans = requests(args.report)
    print(f"{args.report}: {len(samples) / SAMPLE_RATE:.1f} s, {len(spans)} requests")
    for gate in (False, True):
        config = dataclasses.replace(PipelineConfig(), vad_speech_model=gate)
        vad, smoother = config.new_vad(), SpeechSmoother()
        start = time.process_time()
        flags = np.array(smoother.process(
            [f for i in range(0, len(samples), 320) for f in vad.process(samples[i:i + 320])]))
        cpu = time.process_time() - start
        mid = (np.arange(flags.size) + 0.5) * vad.frame_s
        inside = np.zeros(flags.size, bool)
        for a, b in spans:
            inside |= (mid >= a - EDGE_S) & (mid <= b + EDGE_S)
        name = "webrtcvad + gates + Silero" if gate else "webrtcvad + gates"
        print(f"  {name:28s} speech in requests {flags[inside].mean():6.1%}   "
              f"between them {flags[~inside].mean():6.1%}   "
              f"CPU per audio second {cpu / (len(samples) / SAMPLE_RATE):.4f}")


if __name__ == "__main__":
    main()
