"""`edge-asr eval`: run a manifest through the recognition pipeline and score it.

Audio is fed in 20 ms pieces exactly as a microphone would deliver it, so what eval
measures is what the device does. Writes one JSON line per utterance (DESIGN.md
"Evaluation output") and returns a summary with WER per tag.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from edge_asr.daemon.audio import read_audio
from edge_asr.daemon.features import SAMPLE_RATE
from edge_asr.daemon.manifest import Entry, read_manifest
from edge_asr.daemon.recognizer import Context, Recognizer, Result
from edge_asr.daemon.text import normalize_text

PIECE_SECONDS = 0.02


def recognize_samples(recognizer: Recognizer, samples: np.ndarray,
                      on_partial=None, context: Context | None = None) -> Result:
    """Stream samples through a fresh stream in microphone-sized pieces; final result.

    `context` (the utterance's biasing list) is checked before any audio is decoded.
    """
    stream = recognizer.create_stream(context=context)
    piece = int(PIECE_SECONDS * SAMPLE_RATE)
    for start in range(0, len(samples), piece):
        stream.accept_waveform(samples[start : start + piece])
        if recognizer.decode(stream) and on_partial is not None:
            on_partial(recognizer.result(stream), (start + piece) / SAMPLE_RATE)
    stream.input_finished()
    recognizer.decode(stream)
    return recognizer.result(stream)


@dataclass
class Summary:
    utterances: int = 0
    wer: float = 0.0
    wer_by_tag: dict[str, float] = field(default_factory=dict)
    count_by_tag: dict[str, int] = field(default_factory=dict)
    rtf: float = 0.0
    audio_seconds: float = 0.0
    errors: int = 0  # utterances whose audio could not be read (reported, not scored)

    def format(self) -> str:
        lines = [f"utterances {self.utterances}  WER {100 * self.wer:.2f}%  RTF {self.rtf:.4f}"
                 f"  audio {self.audio_seconds / 60:.1f} min"
                 + (f"  unreadable {self.errors}" if self.errors else "")]
        for tag in sorted(self.wer_by_tag):
            lines.append(f"  {tag:<16} {100 * self.wer_by_tag[tag]:6.2f}%  "
                         f"({self.count_by_tag[tag]} utts)")
        return "\n".join(lines)


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER (errors / reference words); an empty hypothesis counts all deletions."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return 0.0
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    errors = out.substitutions + out.deletions + out.insertions
    return errors / sum(len(r.split()) for r, _ in pairs)


def evaluate_entry(recognizer: Recognizer, entry: Entry, use_context: bool) -> dict:
    samples = read_audio(entry.audio_filepath)
    context = entry.context if use_context and entry.context else None
    cpu = time.process_time()  # building a context graph is part of the device's work
    result = recognize_samples(recognizer, samples, context=context)
    cpu = time.process_time() - cpu
    return {
        "audio_filepath": entry.audio_filepath,
        "text": normalize_text(entry.text),
        "hypothesis": normalize_text(result.text),
        "nbest": [normalize_text(t) for t in result.nbest],
        "rescored": None,  # filled when a cloud is reachable (cloud issue)
        "speculative_endpoint": None,  # filled by the daemon's end-pointers (daemon issue)
        "final_endpoint": None,
        "reset": False,
        "lattice_bytes": None,
        "cpu_seconds": round(cpu, 4),
        "duration": round(len(samples) / SAMPLE_RATE, 3),
        "tags": entry.tags,
        "context_used": context is not None,
    }


def summarize(rows: list[dict], errors: int = 0) -> Summary:
    by_tag: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        for tag in row.get("tags") or []:
            by_tag[tag].append(row)
    audio = sum(r["duration"] for r in rows)
    return Summary(
        utterances=len(rows),
        wer=word_error_rate([r["text"] for r in rows], [r["hypothesis"] for r in rows]),
        wer_by_tag={t: word_error_rate([r["text"] for r in rs], [r["hypothesis"] for r in rs])
                    for t, rs in by_tag.items()},
        count_by_tag={t: len(rs) for t, rs in by_tag.items()},
        rtf=sum(r["cpu_seconds"] for r in rows) / audio if audio else 0.0,
        audio_seconds=audio,
        errors=errors,
    )


def evaluate(recognizer: Recognizer, manifest: Path, output: Path | None,
             use_context: bool = True, progress: bool = False) -> Summary:
    entries = read_manifest(manifest)
    rows, errors = [], 0
    out = output.open("w", encoding="utf-8") if output else None
    try:
        for i, entry in enumerate(entries):
            try:
                row = evaluate_entry(recognizer, entry, use_context)
            except (OSError, ValueError) as e:
                errors += 1
                print(f"skipping {entry.audio_filepath}: {e}")
                continue
            rows.append(row)
            if out:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            if progress and (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(entries)}", flush=True)
    finally:
        if out:
            out.close()
    return summarize(rows, errors)
