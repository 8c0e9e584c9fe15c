"""Render the corpus to audio: training set, dev set and the evaluation sets.

Everything lands in a cache folder outside git (`make train` uses ~/.cache/edge-asr):
  corpus/      sentences per split (corpus.py)
  audio/<set>/ 16 kHz int16 WAV files
  manifests/   one manifest per set (ARCHITECTURE.md)
Training clips are stored without surrounding silence (the augmenter adds it); evaluation
clips carry leading and trailing silence and exact speech_start / speech_end.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from edge_asr.daemon.manifest import write_manifest
from edge_asr.models import augment
from edge_asr.models.corpus_lexicon import load_lexicon
from edge_asr.models.synth import (
    SAMPLE_RATE,
    Voice,
    check_engines,
    dev_voices,
    espeak_scratch,
    heldout_voices,
    more_training_voices,
    other_engine_voices,
    random_timbre_voices,
    synthesize,
    training_voices,
)

# Share of training utterances per engine: espeak-ng is fast and has many voices; flite and
# piper add more natural prosody and timbre.
ENGINE_SHARE = {"espeak": 0.72, "flite": 0.16, "piper": 0.12}
# The second rendering leans on the engines whose voices sound most like people: the test
# voice the model hears worst is flite's rms (25% WER against 8-20% for espeak's).
MORE_ENGINE_SHARE = {"espeak": 0.45, "flite": 0.30, "festival": 0.12, "piper": 0.13}
MIC_NOISE_DBFS = -70.0  # self-noise of a quiet microphone, so "silence" is never all zeros


@dataclass(frozen=True)
class Job:
    index: int
    text: str
    voice: Voice
    seed: int
    pause_after: tuple[int, ...]
    pause: bool  # speak with pauses of 250-700 ms after pause_after words
    condition: str | None  # None: a training clip (no padding); else an evaluation condition
    out: str


def _render(job: Job) -> dict | None:
    rng = np.random.default_rng(job.seed)
    try:
        speech = synthesize(job.text, job.voice, rng, job.pause_after,
                            pause_s=(0.25, 0.7) if job.pause else None)
    except Exception as e:  # a TTS engine can fail on an odd string: skip it, say which
        print(f"synthesis failed for {job.text!r} ({job.voice.id}): {e}", flush=True)
        return None
    if speech.size == 0:
        return None
    peak = float(np.abs(speech).max())
    speech = speech * (0.9 / peak) if peak > 0.9 else speech
    row = {"text": job.text, "voice": job.voice.id, "tags": [job.voice.engine]}
    if job.condition is None:
        audio, start = speech, 0.0
    else:
        lead = int(rng.uniform(0.3, 0.8) * SAMPLE_RATE)
        trail = int(1.2 * SAMPLE_RATE)
        audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
        audio += rng.standard_normal(audio.size).astype(np.float32) * 10 ** (MIC_NOISE_DBFS / 20)
        audio = augment.apply_condition(audio, job.condition, rng)
        start = lead / SAMPLE_RATE
        row["tags"].append(job.condition)
    if job.pause:
        row["tags"].append("pause")
    audio = np.clip(audio, -1.0, 1.0)
    sf.write(job.out, audio, SAMPLE_RATE, subtype="PCM_16")
    row.update(audio_filepath=str(Path(job.out).name), duration=round(audio.size / SAMPLE_RATE, 3),
               speech_start=round(start, 3), speech_end=round(start + speech.size / SAMPLE_RATE, 3))
    return row


def _cycle(voices: list[Voice], n: int) -> list[Voice]:
    """`n` voices, taking turns: each speaks an equal share of a set."""
    return [voices[i % len(voices)] for i in range(n)]


def pick_voices(n: int, rng: np.random.Generator, voices: list[Voice] | None = None,
                share: dict[str, float] | None = None) -> list[Voice]:
    """`n` voices: an engine drawn by its share, then one of its voices uniformly."""
    voices, share = voices or training_voices(), share or ENGINE_SHARE
    by_engine = {e: [v for v in voices if v.engine == e] for e in share}
    engines = rng.choice(list(share), size=n, p=list(share.values()))
    return [by_engine[e][rng.integers(len(by_engine[e]))] for e in engines]


def render_set(name: str, utts: list[dict], voices: list[Voice], data_dir: Path,
               condition: str | None, seed: int, pause_prob: float, workers: int = 2) -> Path:
    """Synthesise one set in parallel; returns its manifest. Skips work already on disk."""
    audio_dir = data_dir / "audio" / name
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifest = data_dir / "manifests" / f"{name}.jsonl"
    if manifest.exists():
        split_contexts(manifest)  # a cache made before contexts came by kind
        return manifest
    rng = np.random.default_rng(seed)
    jobs = []
    for i, (utt, voice) in enumerate(zip(utts, voices, strict=True)):
        pause_after = tuple(utt.get("pause_after", ()))
        jobs.append(Job(i, utt["text"], voice, seed * 1_000_003 + i, pause_after,
                        bool(pause_after) and rng.random() < pause_prob, condition,
                        str(audio_dir / f"{i:06d}.wav")))
    rows = []
    with espeak_scratch(), mp.get_context("fork").Pool(workers) as pool:
        for job, row in zip(jobs, tqdm(pool.imap(_render, jobs, chunksize=16), total=len(jobs),
                                       desc=f"synth {name}", mininterval=5), strict=True):
            if row is None:
                continue
            utt = utts[job.index]
            row["audio_filepath"] = f"../audio/{name}/{row['audio_filepath']}"
            row["tags"] = list(utt.get("tags", ())) + row["tags"]
            if utt.get("context"):
                row["context"] = context_by_kind(utt["context"])
            row["intent"] = utt.get("intent", "")
            rows.append(row)
    write_manifest(manifest, rows)
    return manifest


@cache
def _device_names() -> frozenset[str]:
    return frozenset(p.display for p in load_lexicon().device_names)


def context_by_kind(entries: Sequence[str]) -> dict[str, list[str]]:
    """A corpus context list as a user's device would send it (SetContext's kinds): the
    lexicon's device names under "devices", the people under "contacts". The kind matters:
    only contacts are boosted more where the grammar expects a name."""
    devices = _device_names()
    return {"contacts": [e for e in entries if e not in devices],
            "devices": [e for e in entries if e in devices]}


def split_contexts(manifest: Path) -> bool:
    """Rewrites a manifest whose contexts are flat lists with contexts by kind; True if it
    changed anything (the audio and every other key stay as they are)."""
    rows = [json.loads(line) for line in manifest.open(encoding="utf-8") if line.strip()]
    flat = [r for r in rows if isinstance(r.get("context"), list)]
    for row in flat:
        row["context"] = context_by_kind(row["context"])
    if flat:
        write_manifest(manifest, rows)
    return bool(flat)


def load_split(corpus_dir: Path, split: str) -> list[dict]:
    with (corpus_dir / f"{split}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# The sets prepare_more_voices renders (recipe --more-voices).
MORE_VOICES_SETS = ("train_voices2", "dev_voices")
# The set prepare_random_voices renders (recipe --random-voices).
RANDOM_VOICES_SETS = ("train_voices3",)
OTHER_ENGINES_SETS = ("train_voices4",)
# The evaluation sets prepare_all renders besides train (what the recipe may report on).
RENDERED_SETS = ("dev", "test_voices", "test_snr10", "test_band8k", "test_sentences",
                 "test_names", "dev_snr10", "dev_names")


def prepare_all(data_dir: Path, n_train: int, n_eval: int = 300, workers: int = 2) -> dict:
    """Every set the recipe trains and reports on. Returns {set name: manifest path}."""
    corpus_dir = data_dir / "corpus"
    rng = np.random.default_rng(7)
    train = load_split(corpus_dir, "train")[:n_train]
    dev = load_split(corpus_dir, "dev")[:n_eval]
    sentences = load_split(corpus_dir, "test_sentences")[:n_eval]
    names = load_split(corpus_dir, "test_names")
    names, spare_names = names[:n_eval], names[n_eval:]
    held = heldout_voices()
    train_voices = pick_voices(len(train), rng)
    dev_voices = pick_voices(len(dev), rng)
    sets = {
        "train": render_set("train", train, train_voices, data_dir, None, 1, 0.4, workers),
        "dev": render_set("dev", dev, dev_voices, data_dir, "clean", 2, 0.3, workers),
        # Held-out voices speaking held-out sentences: the figure the targets are set on.
        "test_voices": render_set("test_voices", sentences, _cycle(held, len(sentences)),
                                  data_dir, "clean", 3, 0.3, workers),
        "test_snr10": render_set("test_snr10", sentences, _cycle(held, len(sentences)),
                                 data_dir, "snr10", 3, 0.3, workers),
        "test_band8k": render_set("test_band8k", sentences, _cycle(held, len(sentences)),
                                  data_dir, "band8k", 3, 0.3, workers),
        # Training voices, held-out sentences: isolates generalisation over sentences.
        "test_sentences": render_set("test_sentences", sentences,
                                     pick_voices(len(sentences), rng), data_dir, "clean", 4, 0.3,
                                     workers),
        # Held-out person names, held-out voices: what biasing must fix.
        "test_names": render_set("test_names", names, _cycle(held, len(names)), data_dir,
                                 "clean", 5, 0.3, workers),
        # The dev sentences and voices again at 10 dB SNR, so that what is tuned on dev (the
        # cloud's weights, end-pointer thresholds) is not tuned for clean speech alone.
        "dev_snr10": render_set("dev_snr10", dev, dev_voices, data_dir, "snr10", 2, 0.3,
                                workers),
        # The held-out-name sentences test_names leaves over, in training voices: where the
        # name rescue's settings are tuned (the names come from the same held-out pool as
        # test_names', the sentences and voices do not). Its own voice draw, so the sets
        # above keep theirs.
        "dev_names": render_set("dev_names", spare_names,
                                pick_voices(len(spare_names), np.random.default_rng(8)),
                                data_dir, "clean", 6, 0.3, workers),
    }
    return sets


def prepare_more_voices(data_dir: Path, n: int, n_train: int, workers: int = 2) -> dict:
    """A second training rendering by more and other voices, and the held-out-voice dev set.

    train_voices2: `n` training sentences that train.jsonl does not have (after its first
    `n_train`), spoken by `more_training_voices()`, for `--extra-train train_voices2`.
    dev_voices: the dev sentences spoken by `dev_voices()`, speakers no training rendering
    and no test set uses: where a continuation is judged (`--dev-set dev_voices`) now that
    dev, spoken by training voices, stopped predicting the test sets.
    """
    check_engines(("espeak", "flite", "festival"))
    corpus_dir = data_dir / "corpus"
    sentences = load_split(corpus_dir, "train")[n_train : n_train + n]
    if len(sentences) < n:
        raise ValueError(f"the corpus has {len(sentences)} training sentences after the first "
                         f"{n_train}; build it with a larger --n-corpus")
    dev = load_split(corpus_dir, "dev")[:300]
    rng = np.random.default_rng(21)
    voices = pick_voices(n, rng, more_training_voices(), MORE_ENGINE_SHARE)
    # festival's ked, the one natural-sounding dev speaker, speaks a fifth (as rms does in
    # the test sets, a sixth); espeak's dev variants share the rest.
    held = dev_voices()
    held += [v for v in held if v.engine == "festival"] * 6
    return {
        "train_voices2": render_set("train_voices2", sentences, voices, data_dir, None, 21,
                                    0.4, workers),
        "dev_voices": render_set("dev_voices", dev, _cycle(held, len(dev)), data_dir, "clean",
                                 22, 0.3, workers),
    }


def prepare_random_voices(data_dir: Path, n: int, workers: int = 2) -> dict:
    """A third training rendering: `n` training sentences (drawn from the whole training
    corpus, so mostly sentences heard before) spoken by `random_timbre_voices()`, made-up
    espeak-ng speakers, for `--extra-train train_voices3`. New vocal tracts, not new words:
    the test speakers the model hears worst are unlike any voice it trained on."""
    check_engines(("espeak",))
    pool = load_split(data_dir / "corpus", "train")
    if len(pool) < n:
        raise ValueError(f"the corpus has {len(pool)} training sentences, {n} asked for")
    rng = np.random.default_rng(31)
    sentences = [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
    cast = random_timbre_voices()
    voices = [cast[i] for i in rng.integers(0, len(cast), n)]
    return {"train_voices3": render_set("train_voices3", sentences, voices, data_dir, None, 31,
                                        0.4, workers)}


# The fourth rendering's engines by share: RHVoice has the most voices, Pico two.
OTHER_ENGINE_SHARE = {"espeak": 0.35, "rhvoice": 0.4, "pico": 0.25}


def prepare_other_engines(data_dir: Path, n: int, workers: int = 2) -> dict:
    """A fourth training rendering: `n` training sentences (drawn from the whole training
    corpus) spoken by `other_engine_voices()`, MBROLA, RHVoice and Pico, for `--extra-train
    train_voices4`. More ways of making speech, so that what the model learns is less any
    one engine's."""
    check_engines(("espeak", "mbrola", "rhvoice", "pico"))
    pool = load_split(data_dir / "corpus", "train")
    if len(pool) < n:
        raise ValueError(f"the corpus has {len(pool)} training sentences, {n} asked for")
    rng = np.random.default_rng(41)
    sentences = [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
    voices = pick_voices(n, rng, other_engine_voices(), OTHER_ENGINE_SHARE)
    return {"train_voices4": render_set("train_voices4", sentences, voices, data_dir, None, 41,
                                        0.4, workers)}


def bundle_test_clips(data_dir: Path, out_dir: Path, n: int = 24, seed: int = 0) -> Path:
    """Copy a few held-out-voice evaluation clips into the repo (FLAC) for tests and the demo.

    Drawn from test_voices (held-out voices, held-out sentences) so that CI measures the
    shipped model on speakers and sentences it never trained on; the manifest keeps
    speech_start / speech_end and the context lists.
    """
    rows = [json.loads(line) for line in (data_dir / "manifests" / "test_voices.jsonl").open()]
    rng = np.random.default_rng(seed)
    # One clip per voice first, then a varied rest, so every held-out voice is represented.
    by_voice: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_voice.setdefault(row["voice"], []).append(i)
    chosen = [int(rng.choice(ix)) for ix in by_voice.values()]
    rest = [i for i in rng.permutation(len(rows)) if i not in chosen]
    chosen += [int(i) for i in rest[: max(0, n - len(chosen))]]
    out_dir.mkdir(parents=True, exist_ok=True)
    out_rows = []
    for k, i in enumerate(sorted(chosen)):
        row = dict(rows[i])
        audio, rate = sf.read(str(data_dir / "manifests" / row["audio_filepath"]), dtype="int16")
        name = f"clip{k:02d}.flac"
        sf.write(out_dir / name, audio, rate, format="FLAC")
        row["audio_filepath"] = name
        out_rows.append(row)
    manifest = out_dir / "manifest.jsonl"
    write_manifest(manifest, out_rows)
    return manifest
