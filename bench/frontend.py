"""Noise suppression in front of the recogniser: WER of a manifest with each suppressor.

Every utterance goes through the daemon's own driver (daemon/driver.py) in 20 ms pieces,
its front end set to one suppressor (daemon/frontend/denoise.py), without context lists;
printed: WER per method, and the suppressor's share of the CPU time. A figure, not a test.

    python bench/frontend.py MANIFEST [--methods off webrtc rnnoise webrtc-noise-gain]
                             [--limit N] [--model DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import StreamDriver, microphone_pieces
from edge_asr.daemon.frontend.cleanup import FrontEndConfig, front_end
from edge_asr.daemon.frontend.denoise import METHODS
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.pipeline import EventType, Pipeline
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, Recognizer
from edge_asr.daemon.text import normalize_text
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.models.evaluate import word_error_rate

_FINALS = (EventType.CONFIRMED, EventType.FINAL_ENDPOINT)


def transcribe(recognizer: Recognizer, samples, method: str) -> tuple[str, float]:
    """The utterance's words (every final, in order) and the CPU seconds it took."""
    driver = StreamDriver(Pipeline(recognizer), Finisher(lambda _e: None),
                          front_end(FrontEndConfig(noise_suppression=method)))
    started = time.process_time()
    events = driver.feed_all(microphone_pieces(samples)) + driver.finish(0.0)
    words = " ".join(e.text for e in events if e.type in _FINALS and e.text)
    return normalize_text(words), time.process_time() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", type=Path)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--limit", type=int)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    args = p.parse_args()
    recognizer = Recognizer.from_model_dir(args.model)
    entries = read_manifest(args.manifest)[: args.limit]
    audio = [read_audio(e.audio_filepath) for e in entries]
    seconds = sum(len(a) for a in audio) / 16000
    refs = [normalize_text(e.text) for e in entries]
    print(f"{args.manifest.name}: {len(entries)} utterances, {seconds:.0f} s")
    print("| method | WER | CPU s per audio s (whole pipeline) |")
    print("|---|---|---|")
    for method in args.methods:
        results = [transcribe(recognizer, a, method) for a in audio]
        wer = word_error_rate(refs, [h for h, _ in results])
        cpu = sum(c for _, c in results) / seconds
        print(f"| {method} | {wer:.2%} | {cpu:.4f} |", flush=True)


if __name__ == "__main__":
    main()
