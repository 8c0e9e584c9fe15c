"""Speech that goes on after a sentence ends: two utterances of a manifest back to back in
one stream, decoded without end-pointing, against each decoded alone (printed, never
asserted).

    python bench/continuous.py MANIFEST.jsonl [--model DIR] [--pairs 100] [--gap 0.3 1.0]

A model trained only on single sentences learns that nothing follows one, and drops the
second (the daemon opens a fresh stream at each onset the VAD finds, but a television, a
wake phrase said straight after other words, or a pause too short for the VAD put two in
one stream). WER is over the joined references; "second" is the WER of the words after the
first utterance's, aligned by the first utterance's own decode.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.text import normalize_text
from edge_asr.models.evaluate import word_error_rate


def decode(recognizer: Recognizer, audio: np.ndarray) -> str:
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 0.99:
        audio = audio * np.float32(0.9 / peak)
    stream = recognizer.create_stream()
    stream.accept_waveform(16000, audio.astype(np.float32))
    stream.input_finished()
    recognizer.decode(stream)
    return recognizer.result(stream).text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", type=Path)
    p.add_argument("--model", type=Path, default=Path("models/rnnt-v4-int4"))
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--gap", type=float, nargs="+", default=[0.3, 1.0])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    recognizer = Recognizer.from_model_dir(args.model)
    entries = list(read_manifest(args.manifest))[: 2 * args.pairs]
    clips = [read_audio(e.audio_filepath) for e in entries]
    refs = [normalize_text(e.text) for e in entries]
    alone = [decode(recognizer, c) for c in clips]
    report = {"model": args.model.name, "manifest": args.manifest.name,
              "pairs": len(entries) // 2,
              "wer_each_alone": round(word_error_rate(refs, alone), 4)}
    for gap in args.gap:
        silence = np.zeros(int(gap * 16000), np.float32)
        joined_refs, joined_hyps, second_refs, second_hyps = [], [], [], []
        for a in range(0, len(entries) - 1, 2):
            hyp = decode(recognizer, np.concatenate([clips[a], silence, clips[a + 1]]))
            joined_refs.append(f"{refs[a]} {refs[a + 1]}")
            joined_hyps.append(hyp)
            words, first = hyp.split(), alone[a].split()
            # What follows the first utterance's own words (as decoded alone), if they lead.
            rest = words[len(first):] if words[:len(first)] == first else words
            second_refs.append(refs[a + 1])
            second_hyps.append(" ".join(rest))
        report[f"gap {gap}"] = {"wer_joined": round(word_error_rate(joined_refs, joined_hyps), 4),
                                "wer_second": round(word_error_rate(second_refs, second_hyps), 4)}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
