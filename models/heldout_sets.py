"""Evaluation-only sets from speakers and voices that no training set uses.

    python -m edge_asr.models.heldout_sets fsdd PATH --data DATA [--per-speaker 50]
    python -m edge_asr.models.heldout_sets hibari --data DATA [--n 300] [--voices NAME ...]
    python -m edge_asr.models.heldout_sets kal --data DATA [--n 300]

test_fsdd: digit strings dialled by the six real speakers of the Free Spoken Digit Dataset
(PATH: its `recordings` folder), one recording per digit with short gaps between them.
test_hibari: the held-out corpus sentences spoken by hibari-tts's voices (Kokoro students).
test_kal_festival: the same sentences in festival's kal_diphone, whose recordings flite's
kal voices share, which is why no training set uses those.

Each set is 16 kHz mono int16 WAV under DATA/audio/<set>/ with a manifest in
DATA/manifests/<set>.jsonl, padded like the other evaluation sets (lead and trail silence
with a quiet microphone's self-noise, exact speech_start / speech_end) and tagged
`speaker:NAME` or `voice:ID` for per-speaker WER. A set whose manifest exists is left as it is.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge_asr.daemon.manifest import write_manifest
from edge_asr.daemon.text import normalize_text
from edge_asr.models import real_speech
from edge_asr.models.corpus_utterance import Utterance
from edge_asr.models.prepare import MIC_NOISE_DBFS, context_by_kind, load_split, render_set
from edge_asr.models.synth import SAMPLE_RATE, Voice, check_engines, synthesize, trim_silence

FSDD_SET = "test_fsdd"
HIBARI_SET = "test_hibari"
KAL_SET = "test_kal_festival"
KAL_VOICE = Voice("festival", "kal_diphone")

# As prepare.render_set pads synthetic evaluation clips, and with its pause draw (seed 3, the
# one test_voices uses), so the held-out sentences pause where test_voices' do.
SYNTH_LEAD_S = (0.3, 0.8)
SYNTH_TRAIL_S = 1.2
SENTENCE_SEED = 3
PAUSE_PROB = 0.3
PAUSE_S = (0.25, 0.7)

# How a user dials: short gaps between digits, now and then a longer pause (reading on).
DIGITS_PER_STRING = (3, 7)
DIGIT_GAP_S = (0.08, 0.30)
LONG_PAUSE_S = (0.30, 0.60)
LONG_PAUSE_PROB = 0.15
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")


# --------------------------------------------------------------------------- shared


def _manifest_path(data: Path, name: str) -> Path:
    return data / "manifests" / f"{name}.jsonl"


def pad_for_eval(speech: np.ndarray, rng: np.random.Generator, lead_s: tuple[float, float],
                 trail_s: float) -> tuple[np.ndarray, float]:
    """(clip, speech_start): speech between silences of a quiet microphone's self-noise, so
    that the end-pointers fire as they would live. Loud speech is scaled to a 0.9 peak."""
    peak = float(np.abs(speech).max()) if speech.size else 0.0
    if peak > 0.9:
        speech = speech * np.float32(0.9 / peak)
    lead = int(rng.uniform(*lead_s) * SAMPLE_RATE)
    trail = int(trail_s * SAMPLE_RATE)
    audio = np.concatenate([np.zeros(lead, np.float32), speech.astype(np.float32),
                            np.zeros(trail, np.float32)])
    audio += rng.standard_normal(audio.size).astype(np.float32) * np.float32(
        10 ** (MIC_NOISE_DBFS / 20))
    return np.clip(audio, -1.0, 1.0), lead / SAMPLE_RATE


def write_eval_clip(path: Path, manifest: Path, speech: np.ndarray, rng: np.random.Generator,
                    lead_s: tuple[float, float] = SYNTH_LEAD_S,
                    trail_s: float = SYNTH_TRAIL_S) -> dict:
    """Pads `speech` (16 kHz), writes it as int16 WAV; the manifest keys of its timing."""
    audio, start = pad_for_eval(speech, rng, lead_s, trail_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    return {"audio_filepath": os.path.relpath(path, manifest.parent),
            "duration": round(audio.size / SAMPLE_RATE, 3),
            "speech_start": round(start, 3),
            "speech_end": round(start + speech.size / SAMPLE_RATE, 3)}


def _heldout_sentences(data: Path, n: int) -> list[dict]:
    sentences = load_split(data / "corpus", "test_sentences")[:n]
    if not sentences:
        raise ValueError(f"{data / 'corpus' / 'test_sentences.jsonl'} has no sentences")
    return sentences


def _pause_draws(sentences: Sequence[dict], seed: int, prob: float) -> list[bool]:
    """Which sentences are spoken with pauses: render_set's draw for the same seed."""
    rng = np.random.default_rng(seed)
    return [bool(s.get("pause_after")) and rng.random() < prob for s in sentences]


# --------------------------------------------------------------------------- FSDD


@dataclass(frozen=True)
class DigitRecording:
    """One FSDD file: `{digit}_{speaker}_{index}.wav`."""

    digit: int
    speaker: str
    index: int
    path: Path


def read_fsdd(folder: Path) -> dict[str, dict[int, list[DigitRecording]]]:
    """speaker -> digit -> that speaker's recordings of it (by index, so draws reproduce)."""
    table: dict[str, dict[int, list[DigitRecording]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(folder).iterdir()):
        match = _FSDD_NAME.match(path.name)
        if match:
            digit, speaker, index = int(match[1]), match[2], int(match[3])
            table[speaker][digit].append(DigitRecording(digit, speaker, index, path))
    if not table:
        raise FileNotFoundError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{n}}.wav)")
    return {s: {d: sorted(r, key=lambda x: x.index) for d, r in sorted(by_digit.items())}
            for s, by_digit in sorted(table.items())}


def draw_digit_string(by_digit: dict[int, list[DigitRecording]],
                      rng: np.random.Generator) -> list[DigitRecording]:
    """3-7 digits of one speaker, each a recording of theirs (none twice in one string)."""
    digits = sorted(by_digit)
    count = int(rng.integers(DIGITS_PER_STRING[0], DIGITS_PER_STRING[1] + 1))
    chosen: list[DigitRecording] = []
    for _ in range(count):
        options = by_digit[digits[int(rng.integers(len(digits)))]]
        unused = [r for r in options if r not in chosen] or options
        chosen.append(unused[int(rng.integers(len(unused)))])
    return chosen


def _load_digit(rec: DigitRecording) -> np.ndarray:
    """The recording at 16 kHz (soxr) without the silence around it, so bounds are exact."""
    utt = Utterance(id=rec.path.stem, audio=rec.path, text=str(rec.digit),
                                speaker=rec.speaker, corpus="fsdd")
    return trim_silence(real_speech.load_utterance(utt))


def join_digits(clips: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The digits in a row with dialling gaps between them."""
    out = [clips[0]]
    for clip in clips[1:]:
        gap = LONG_PAUSE_S if rng.random() < LONG_PAUSE_PROB else DIGIT_GAP_S
        out += [np.zeros(int(rng.uniform(*gap) * SAMPLE_RATE), np.float32), clip]
    return np.concatenate(out)


def digit_text(recs: Sequence[DigitRecording]) -> str:
    return normalize_text(" ".join(str(r.digit) for r in recs))


def _speaker_rng(seed: int, speaker: str) -> np.random.Generator:
    # One stream per speaker by name: adding a speaker changes no other speaker's strings.
    return np.random.default_rng([seed, zlib.crc32(speaker.encode())])


def build_fsdd(recordings: Path, data: Path, per_speaker: int = 50, seed: int = 0,
               name: str = FSDD_SET) -> Path:
    """`per_speaker` digit strings of each FSDD speaker; returns the manifest."""
    manifest = _manifest_path(data, name)
    if manifest.exists():
        return manifest
    rows = []
    for speaker, by_digit in read_fsdd(recordings).items():
        rng = _speaker_rng(seed, speaker)
        for i in range(per_speaker):
            recs = draw_digit_string(by_digit, rng)
            speech = join_digits([_load_digit(r) for r in recs], rng)
            row = {"text": digit_text(recs), "speaker": speaker, "corpus": "fsdd",
                   "tags": ["fsdd", "digits", f"speaker:{speaker}"],
                   "sources": [r.path.name for r in recs]}
            path = data / "audio" / name / f"{speaker}_{i:03d}.wav"
            row |= write_eval_clip(path, manifest, speech, rng, real_speech.EVAL_LEAD_S,
                                   real_speech.EVAL_TRAIL_S)
            rows.append(row)
    write_manifest(manifest, rows)
    return manifest


# --------------------------------------------------------------------------- hibari


def hibari_voices() -> list[str]:
    """Every voice of the installed hibari-tts (American and British)."""
    from hibari.voices import VOICES

    return list(VOICES)


def local_hibari_voices() -> list[str]:
    """The hibari voices usable offline: in the package or already in hibari's cache (the
    others are fetched from a model hub on first use, which a build machine may not reach)."""
    from hibari.voices import voice_path

    found = []
    for name in hibari_voices():
        try:
            voice_path(name, download_missing=False)
        except FileNotFoundError:
            continue
        found.append(name)
    return found


@functools.cache
def _hibari(name: str):
    from hibari import Hibari

    return Hibari(voice=name, threads=1)  # one core: the recipe trains beside it


def _split_at(text: str, pause_after: Sequence[int]) -> list[str]:
    """The text in pieces cut after the `pause_after` word indices (as synth.synthesize)."""
    words = text.split()
    bounds = [0, *sorted(i + 1 for i in pause_after if 0 <= i < len(words) - 1), len(words)]
    return [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def speak_hibari(text: str, voice: str, rng: np.random.Generator,
                 pause_after: Sequence[int] = (),
                 pause_s: tuple[float, float] | None = None) -> np.ndarray:
    """16 kHz speech for `text` without surrounding silence; with `pause_s`, spoken in pieces
    with silent pauses between them, as synth.synthesize does for the other engines."""
    tts = _hibari(voice)
    speed = float(rng.uniform(0.9, 1.1))  # the per-utterance rate jitter the others get
    pieces = _split_at(text, pause_after) if pause_s else [text]
    out = []
    for k, piece in enumerate(pieces):
        if k:
            out.append(np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32))
        audio = tts(piece, speed=speed, seed=int(rng.integers(2**31)))
        audio = soxr.resample(audio, tts.sample_rate, SAMPLE_RATE, quality="HQ")
        out.append(trim_silence(audio.astype(np.float32)))
    return np.concatenate(out)


def build_hibari(data: Path, n: int = 300, voices: Sequence[str] | None = None,
                 seed: int = SENTENCE_SEED, pause_prob: float = PAUSE_PROB,
                 name: str = HIBARI_SET) -> Path:
    """The first `n` held-out sentences, hibari's voices taking turns (default: every voice
    available offline); returns the manifest."""
    manifest = _manifest_path(data, name)
    if manifest.exists():
        return manifest
    voices = list(voices or local_hibari_voices())
    missing = sorted(set(hibari_voices()) - set(voices))
    if missing:
        print(f"hibari voices left out (not downloaded): {', '.join(missing)}", flush=True)
    sentences = _heldout_sentences(data, n)
    rows = []
    for i, (utt, pause) in enumerate(zip(sentences, _pause_draws(sentences, seed, pause_prob),
                                         strict=True)):
        voice = Voice("hibari", voices[i % len(voices)])
        rng = np.random.default_rng(seed * 1_000_003 + i)
        speech = speak_hibari(utt["text"], voice.name, rng, utt.get("pause_after", ()),
                              PAUSE_S if pause else None)
        if speech.size == 0:
            continue
        rows.append(_sentence_row(utt, voice, pause) |
                    write_eval_clip(data / "audio" / name / f"{i:06d}.wav", manifest, speech, rng))
    write_manifest(manifest, rows)
    return manifest


def _sentence_row(utt: dict, voice: Voice, pause: bool) -> dict:
    """The keys render_set gives a corpus sentence, and the voice's tag."""
    tags = [*utt.get("tags", ()), voice.engine, f"voice:{voice.id}", "clean"]
    row = {"text": utt["text"], "voice": voice.id, "tags": tags + (["pause"] if pause else [])}
    if utt.get("context"):
        row["context"] = context_by_kind(utt["context"])
    row["intent"] = utt.get("intent", "")
    return row


# --------------------------------------------------------------------------- festival kal


@functools.cache
def kal_available() -> bool:
    """Whether festival speaks with kal_diphone here (apt-get install festvox-kallpc16k)."""
    try:
        check_engines(("festival",))
        return synthesize("one", KAL_VOICE, np.random.default_rng(0)).size > 0
    except (RuntimeError, OSError):
        return False


def build_kal(data: Path, n: int = 300, seed: int = SENTENCE_SEED,
              name: str = KAL_SET) -> Path:
    """The first `n` held-out sentences in festival's kal_diphone, rendered by render_set
    (one worker process); returns the manifest."""
    manifest = _manifest_path(data, name)
    if manifest.exists():
        return manifest
    if not kal_available():
        raise RuntimeError("festival cannot speak with kal_diphone: "
                           "apt-get install festival festvox-kallpc16k")
    tag = f"voice:{KAL_VOICE.id}"
    sentences = [{**u, "tags": [*u.get("tags", ()), tag]}
                 for u in _heldout_sentences(data, n)]
    return render_set(name, sentences, [KAL_VOICE] * len(sentences), data, "clean", seed,
                      PAUSE_PROB, workers=1)


# --------------------------------------------------------------------------- CLI


def summarize(manifest: Path) -> str:
    """Utterances, hours (clips and speech alone) and speakers or voices of a built set."""
    rows = [json.loads(line) for line in manifest.open(encoding="utf-8") if line.strip()]
    who = Counter(t for r in rows for t in r["tags"] if t.startswith(("speaker:", "voice:")))
    clip_h = sum(r["duration"] for r in rows) / 3600
    speech_h = sum(r["speech_end"] - r["speech_start"] for r in rows) / 3600
    each = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(who.items()))
    return (f"{manifest.stem}: {len(rows)} utterances, {clip_h:.3f} h ({speech_h:.3f} h speech), "
            f"{len(who)} speakers/voices ({each})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="set", required=True)
    fsdd = sub.add_parser("fsdd", help="FSDD digit strings (test_fsdd)")
    fsdd.add_argument("path", type=Path, help="FSDD's recordings folder")
    fsdd.add_argument("--per-speaker", type=int, default=50)
    fsdd.add_argument("--seed", type=int, default=0)
    hibari = sub.add_parser("hibari", help="hibari-tts voices (test_hibari)")
    hibari.add_argument("--n", type=int, default=300)
    hibari.add_argument("--voices", nargs="+", help="default: every voice available offline")
    kal = sub.add_parser("kal", help="festival kal_diphone (test_kal_festival)")
    kal.add_argument("--n", type=int, default=300)
    for sp in (fsdd, hibari, kal):
        sp.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    args = p.parse_args()
    builders: dict[str, Callable[[], Path]] = {
        "fsdd": lambda: build_fsdd(args.path, args.data, args.per_speaker, args.seed),
        "hibari": lambda: build_hibari(args.data, args.n, args.voices),
        "kal": lambda: build_kal(args.data, args.n),
    }
    start = time.perf_counter()
    manifest = builders[args.set]()
    print(f"{summarize(manifest)} -> {manifest} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
