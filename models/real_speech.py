"""Recorded human speech into the recipe: corpus folders -> 16 kHz WAV + manifests.

    python -m edge_asr.models.real_speech PATH [PATH ...] --data DATA

A corpus is read into `Utterance`s (corpus_formats.py picks the reader of each published
layout; the Kaldi data-directory reader is here because speechocean762, the real
speech this project trains on by default, uses it), split by whole speakers, and written as
16 kHz mono int16 WAV under DATA/audio/<set>/ with a manifest in DATA/manifests/<set>.jsonl.
Training clips keep the corpus's own audio; evaluation clips get lead and trail silence (a
quiet microphone's self-noise) so the end-pointers can fire as they would on a microphone,
and an evaluation copy in 10 dB babble made of other held-out speakers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.models.augment import add_noise, make_babble
from edge_asr.models.corpus_formats import read_corpus
from edge_asr.models.corpus_utterance import Utterance, read_kaldi_dir

MIC_NOISE_DBFS = -70.0  # a quiet microphone's self-noise: "silence" is never all zeros
EVAL_LEAD_S = (0.3, 0.6)
EVAL_TRAIL_S = 1.2
# A corpus of fewer speakers than this trains whole: held out, one or two speakers would
# say little about people in general, and training needs their voices more.
MIN_SPEAKERS_TO_SPLIT = 5


def load_utterance(utt: Utterance) -> np.ndarray:
    """The utterance's samples, mono float32 at 16 kHz."""
    with sf.SoundFile(str(utt.audio)) as f:
        rate = f.samplerate
        f.seek(int(round(utt.offset * rate)))
        frames = -1 if utt.duration is None else int(round(utt.duration * rate))
        audio = f.read(frames, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    return audio


def split_speakers(utts: Sequence[Utterance], n_dev: int, seed: int = 0
                   ) -> tuple[list[Utterance], list[Utterance]]:
    """(train, dev) with `n_dev` whole speakers in dev: no speaker is on both sides."""
    speakers = sorted({u.speaker for u in utts})
    if n_dev >= len(speakers):
        raise ValueError(f"{n_dev} dev speakers asked for, the corpus has {len(speakers)}")
    dev_speakers = set(random.Random(seed).sample(speakers, n_dev))
    return ([u for u in utts if u.speaker not in dev_speakers],
            [u for u in utts if u.speaker in dev_speakers])


def per_speaker(utts: Sequence[Utterance], n: int, seed: int = 0) -> list[Utterance]:
    """At most `n` utterances of each speaker, drawn reproducibly: every speaker counts."""
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_speaker[u.speaker].append(u)
    rng = random.Random(seed)
    out = []
    for speaker in sorted(by_speaker):
        group = by_speaker[speaker]
        out += rng.sample(group, min(n, len(group)))
    return out


def write_set(name: str, utts: Sequence[Utterance], data: Path, evaluation: bool,
              babble_snr_db: float | None = None, seed: int = 0) -> Path:
    """Writes DATA/audio/<name>/*.wav and DATA/manifests/<name>.jsonl; returns the manifest.

    With `babble_snr_db`, each clip is mixed with babble of 3-7 other speakers of the same
    set (never the clip's own speaker) at that SNR over the speech, before the padding.
    """
    audio_dir = data / "audio" / name
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifest = data / "manifests" / f"{name}.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool: dict[str, list[np.ndarray]] = defaultdict(list)
    if babble_snr_db is not None:
        for u in per_speaker(utts, 2, seed + 1):
            pool[u.speaker].append(load_utterance(u))
    rows = []
    for u in utts:
        speech = load_utterance(u)
        if speech.size == 0:
            continue
        if babble_snr_db is not None:
            others = [c for s, clips in pool.items() if s != u.speaker for c in clips]
            speech = add_noise(speech, make_babble(others, speech.size, rng), babble_snr_db)
        row = {"text": u.text, "speaker": u.speaker, "corpus": u.corpus,
               "tags": [u.corpus, f"speaker:{u.speaker}"]}
        if evaluation:
            lead = int(rng.uniform(*EVAL_LEAD_S) * SAMPLE_RATE)
            trail = int(EVAL_TRAIL_S * SAMPLE_RATE)
            noise = 10 ** (MIC_NOISE_DBFS / 20)
            audio = np.concatenate([np.zeros(lead, np.float32), speech,
                                    np.zeros(trail, np.float32)])
            audio += rng.standard_normal(audio.size).astype(np.float32) * np.float32(noise)
            row["speech_start"] = round(lead / SAMPLE_RATE, 3)
        else:
            audio = speech
        peak = float(np.abs(audio).max())
        if peak > 0.99:  # a mix can exceed full scale: scale down, never clip
            audio = audio * np.float32(0.99 / peak)
        path = audio_dir / f"{u.id}.wav"
        sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
        row["audio_filepath"] = os.path.relpath(path, manifest.parent)
        row["duration"] = round(audio.size / SAMPLE_RATE, 3)
        rows.append(row)
    with manifest.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return manifest


def hours(utts: Iterable[Utterance]) -> float:
    total = 0.0
    for u in utts:
        if u.duration is None:
            info = sf.info(str(u.audio))
            total += info.frames / info.samplerate - u.offset
        else:
            total += u.duration
    return total / 3600


def detect_layout(path: Path) -> str:
    """The published layout of the corpus at `path`: "kaldi-split" (a folder with train/ and
    test/ Kaldi data directories, as speechocean762 ships), "kaldi", "librispeech",
    "commonvoice", "nemo" (a .json/.jsonl manifest), "lhotse", "lhotse-cuts",
    "speech-commands" (word folders of `*_nohash_*.wav`), "vctk" (txt/ and wav48*/) or,
    checked last so that the others win, "paired-text" (a folder, or its data/ subfolder,
    where most .wav files have a .txt twin)."""
    path = Path(path)
    if path.is_file():
        if "cuts" in path.name:
            return "lhotse-cuts"
        if "recordings" in path.name:
            return "lhotse"
        if path.suffix in (".json", ".jsonl"):
            return "nemo"
    elif all((path / split / "text").is_file() for split in ("train", "test")):
        return "kaldi-split"
    elif (path / "text").is_file() and (path / "wav.scp").is_file():
        return "kaldi"
    elif (path / "clips").is_dir() and any(path.glob("*.tsv")):
        return "commonvoice"
    elif any(path.glob("recordings*.jsonl*")):
        return "lhotse"
    elif next(path.glob("*/*_nohash_*.wav"), None) is not None:
        return "speech-commands"
    elif (path / "txt").is_dir() and any(p.is_dir() for p in path.glob("wav48*")):
        return "vctk"
    elif next(path.glob("**/*.trans.txt"), None) is not None:
        return "librispeech"
    else:  # checked last, so that the layouts above win
        for folder in (path, path / "data"):
            wavs = ([p for p in folder.iterdir() if p.suffix.lower() == ".wav"]
                    if folder.is_dir() else [])
            if wavs and 2 * sum(w.with_suffix(".txt").is_file() for w in wavs) > len(wavs):
                return "paired-text"  # most .wav files have a .txt transcript beside them
    raise ValueError(f"{path}: not a corpus layout the recipe reads (a Kaldi data directory, "
                     "or one with train/ and test/, LibriSpeech, Common Voice, a NeMo or "
                     "Lhotse manifest, Speech Commands, VCTK, or .wav files with .txt "
                     "transcripts beside them)")


@dataclass(frozen=True)
class Provenance:
    source: str
    licence: str


# Where the recorded corpora the shipped models trained on come from, by corpus name, so that
# a model card can say it. A corpus not listed here is reported as the user's own.
KNOWN_CORPORA = {
    "speechocean762": Provenance(
        "speechocean762 (OpenSLR 101, github.com/jimbozhang/speechocean762): English read by "
        "Mandarin speakers aged 6 to 43", "free for commercial and non-commercial use "
        "(its README); cite arXiv:2104.01378"),
    "speech_commands_test_v002": Provenance(
        "Google Speech Commands v0.02, test split (as in github.com/thegtagamer/"
        "PICO-tinyML-benchmark): one command word per clip", "CC BY 4.0"),
    "vctk_p239": Provenance(
        "CSTR VCTK, speaker p239 (as in github.com/avgaydashenko/speech-recognition-hw)",
        "ODC-By 1.0"),
    "rhasspy_cathy": Provenance(
        "github.com/rhasspy/dataset-voice-cathy: one speaker reading CMU ARCTIC prompts",
        "CC0 1.0"),
}


def provenance(set_name: str) -> Provenance:
    """Where a recorded set's corpus comes from, by its set name (NAME_train, test_NAME)."""
    name = set_name.removeprefix("test_").removesuffix("_babble10")
    for suffix in ("_train", "_dev"):
        name = name.removesuffix(suffix)
    return KNOWN_CORPORA.get(name, Provenance(f"{name}: a corpus given with --real",
                                              "as its owner states"))


def corpus_name(path: Path) -> str:
    """A set-name prefix from the corpus's path: its folder or file name, in [a-z0-9_]."""
    stem = Path(path).name.split(".")[0].lower()
    return "".join(c if c.isalnum() else "_" for c in stem) or "corpus"


def prepare_corpus(path: Path, data: Path, n_dev_speakers: int = 10,
                   test_per_speaker: int = 4, test_share: float = 0.1) -> dict[str, Path]:
    """A corpus into four sets, split by whole speakers: NAME_train (training),
    NAME_dev (for choosing weights), test_NAME and test_NAME_babble10 (held out, evaluated
    clean and in 10 dB babble of other held-out speakers, `test_per_speaker` each).

    A corpus that publishes a speaker-disjoint train/test split keeps it (speechocean762);
    otherwise `test_share` of its speakers are drawn for the test sets. Sets already written
    are kept, so an interrupted recipe picks up where it was.
    """
    name, layout = corpus_name(path), detect_layout(path)
    if layout == "kaldi-split":
        train_all = read_kaldi_dir(path / "train", name, root=path)
        test_all = read_kaldi_dir(path / "test", name, root=path)
        overlap = {u.speaker for u in train_all} & {u.speaker for u in test_all}
        if overlap:
            raise ValueError(f"{path}: speakers on both sides of the published split: "
                             f"{sorted(overlap)[:5]}")
    else:
        utts = read_corpus(layout, path, corpus=name)
        speakers = len({u.speaker for u in utts})
        if speakers < MIN_SPEAKERS_TO_SPLIT:  # no speaker to spare: all of it trains
            return {f"{name}_train": _written_or(f"{name}_train", data, lambda: write_set(
                f"{name}_train", utts, data, evaluation=False))}
        train_all, test_all = split_speakers(utts, max(1, round(test_share * speakers)), seed=1)
    train, dev = split_speakers(train_all, min(n_dev_speakers,
                                               len({u.speaker for u in train_all}) // 10 or 1))
    test = per_speaker(test_all, test_per_speaker)
    jobs = {
        f"{name}_train": (train, {"evaluation": False}),
        f"{name}_dev": (dev, {"evaluation": True, "seed": 1}),
        f"test_{name}": (test, {"evaluation": True, "seed": 2}),
        f"test_{name}_babble10": (test, {"evaluation": True, "babble_snr_db": 10.0, "seed": 3}),
    }
    return {set_name: _written_or(set_name, data, lambda s=set_name, u=utts, o=options:
                                  write_set(s, u, data, **o))
            for set_name, (utts, options) in jobs.items()}


def _written_or(set_name: str, data: Path, write) -> Path:
    """The set's manifest if an earlier run wrote it, else what `write` writes."""
    manifest = data / "manifests" / f"{set_name}.jsonl"
    return manifest if manifest.exists() else write()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path, nargs="+",
                   help="corpus folders or manifests as published (layout detected)")
    p.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    p.add_argument("--dev-speakers", type=int, default=10)
    p.add_argument("--test-per-speaker", type=int, default=4)
    args = p.parse_args()
    for corpus in args.corpus:
        sets = prepare_corpus(corpus, args.data, args.dev_speakers, args.test_per_speaker)
        for name, path in sets.items():
            rows = [json.loads(line) for line in path.open()]
            print(f"{name}: {len(rows)} utterances, {len({r['speaker'] for r in rows})} "
                  f"speakers, {sum(r['duration'] for r in rows) / 3600:.2f} h -> {path}")


if __name__ == "__main__":
    main()
