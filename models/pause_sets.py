"""Requests with a pause in the middle: evaluation sets for the end-pointers.

People pause inside requests ("play some jazz ... in the kitchen"), and a final end-pointer
that takes such a pause for the end cuts the request in two. For any manifest this builds
two sets of the same utterances (items the renderer already spoke with pauses left out):

- `eoq_<set>`: each utterance as it was, with at least `TAIL_S` of its own background after
  it, so that every final end-point is a decision and not the end of the input;
- `eoq_<set>_pause`: the same with one pause of 0.3-0.8 s spliced in at the quietest point
  of the middle of the speech (mostly a gap between words), filled with the recording's own
  noise floor.

With `--noise KIND:SNR` (music:10, babble:10, any kind of models/noise.py) both are made
again with that noise throughout, pauses and tail too, at SNR dB under the speech:
`eoq_<set>_<KIND><SNR>` and `eoq_<set>_<KIND><SNR>_pause`, the same utterances and pauses.
Music and babble fill the pauses with sound the VAD takes for speech, as in a living room.

Both carry speech_start and speech_end (`edge-asr eval` scores premature cuts and end-point
latency against speech_end); where a manifest has no times, as the recorded corpora, they
are measured from the signal's level. Each row also carries `longest_pause_s`, the longest
silence inside its speech as the daemon's VAD hears it in the clean audio: the spliced pause
joins any pause the speaker made at that point (readers of speechocean762 pause for a second
and more), and the end-of-query targets are stated for pauses up to `SHORT_PAUSE_S`. The
same splicing makes the learned end-of-query model's training pauses
(models/query_end_train.py).

    python -m edge_asr.models.pause_sets --data DATA --sets test_voices test_speechocean762
    python -m edge_asr.models.pause_sets --data DATA --sets test_voices --noise music:10
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.pipeline import PipelineConfig
from edge_asr.models.levels import add_noise
from edge_asr.models.noise import NOISE_KINDS, make_babble, make_noise

FRAME = SAMPLE_RATE // 100  # 10 ms level frames
PAUSE_S = (0.3, 0.8)  # the pauses spliced in
SHORT_PAUSE_S = 0.7  # premature cuts <= 1% is the target for pauses up to this long
TAIL_S = 1.6  # background after the speech: longer than any end-pointer waits
MIN_SPEECH_S = 0.6  # shorter utterances (one word) have no middle to pause in
SEED = 33
BACKGROUND_KINDS = (*NOISE_KINDS, "babble")
BABBLE_POOL = 40  # clips of the set's own speakers that babble is made of


def frame_db(samples: np.ndarray) -> np.ndarray:
    """Level of each 10 ms frame in dB (full scale 0)."""
    n = len(samples) // FRAME
    frames = samples[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


def noise_floor_db(levels: np.ndarray) -> float:
    return float(np.percentile(levels, 10)) if levels.size else -100.0


def speech_bounds(samples: np.ndarray) -> tuple[float, float] | None:
    """First and last second of speech by level: frames within 35 dB of the loud frames and
    10 dB over the noise floor, in runs of at least 30 ms (a click is not speech)."""
    levels = frame_db(samples)
    if levels.size == 0:
        return None
    threshold = max(float(np.percentile(levels, 95)) - 35.0, noise_floor_db(levels) + 10.0)
    loud = levels > threshold
    runs = np.convolve(loud.astype(int), np.ones(3, int), mode="same") >= 3
    idx = np.flatnonzero(runs)
    if idx.size == 0:
        return None
    return (max(0, idx[0] - 1) * FRAME / SAMPLE_RATE,
            min(levels.size, idx[-1] + 2) * FRAME / SAMPLE_RATE)


def longest_pause(samples: np.ndarray, speech_start: float, speech_end: float,
                  config: PipelineConfig | None = None) -> float:
    """The longest silence between two stretches of speech inside [speech_start,
    speech_end], in seconds, as the end-pointer counts it from the daemon's VAD: a voiced
    run shorter than `resume_speech` does not end it. 0 for speech without a pause."""
    config = config or PipelineConfig()
    frame_s = config.vad_frame_ms / 1000
    resume = max(1, round(config.endpoint.resume_speech / frame_s))
    flags = config.new_vad().process(samples)
    first, last = int(speech_start / frame_s), int(np.ceil(speech_end / frame_s))
    longest, silence, voiced, spoken = 0, 0, 0, False
    for flag in flags[first:last]:
        if not flag:  # a voiced run too short to end the silence is part of it (endpoint.py)
            silence, voiced = silence + 1 + (voiced if silence else 0), 0
            continue
        voiced += 1
        if voiced >= resume:  # speech goes on: the silence before it, if any, was a pause
            if spoken:
                longest = max(longest, silence)
            spoken, silence = True, 0
    return round(longest * frame_s, 3)


def quiet_point(samples: np.ndarray, start: float, end: float,
                span: tuple[float, float] = (0.25, 0.8)) -> float:
    """The second, between `span` of the way through the speech, where the level over 50 ms
    is lowest: most often a gap between words, where a pause sounds natural."""
    levels = np.convolve(frame_db(samples), np.ones(5) / 5, mode="same")
    lo = int((start + span[0] * (end - start)) * 100)
    hi = max(lo + 1, int((start + span[1] * (end - start)) * 100))
    return (lo + int(np.argmin(levels[lo:hi]))) * FRAME / SAMPLE_RATE


def background(samples: np.ndarray, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of noise at the recording's floor (digital silence for rendered speech)."""
    n = int(round(seconds * SAMPLE_RATE))
    floor = noise_floor_db(frame_db(samples))
    if floor < -90.0:
        return np.zeros(n, np.float32)
    return (rng.standard_normal(n) * 10 ** (floor / 20)).astype(np.float32)


def splice(samples: np.ndarray, at: float, seconds: float,
           rng: np.random.Generator) -> np.ndarray:
    """`samples` with `seconds` of background inserted at second `at`."""
    cut = int(round(at * SAMPLE_RATE))
    return np.concatenate([samples[:cut], background(samples, seconds, rng), samples[cut:]])


def mix(samples: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator,
        pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    """`samples` with `kind` noise throughout, `snr_db` under the speech's active frames;
    babble is made of the clips in `pool`."""
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown noise {kind!r}; known: {', '.join(BACKGROUND_KINDS)}")
    n = len(samples)
    noise = make_babble(pool, n, rng) if kind == "babble" else make_noise(kind, n, rng)
    return np.clip(add_noise(samples, noise, snr_db), -1.0, 1.0).astype(np.float32)


@dataclass
class Utterance:
    """One recording with where its speech lies (seconds)."""

    samples: np.ndarray
    speech_start: float
    speech_end: float

    @classmethod
    def read(cls, path: str | Path, speech_start: float | None = None,
             speech_end: float | None = None) -> Utterance | None:
        samples = read_audio(path)
        bounds = speech_bounds(samples)
        if bounds is None:
            return None
        start = bounds[0] if speech_start is None else speech_start
        end = bounds[1] if speech_end is None else speech_end
        return cls(samples, start, min(end, len(samples) / SAMPLE_RATE))

    @property
    def speech_s(self) -> float:
        return self.speech_end - self.speech_start

    def with_tail(self, rng: np.random.Generator, tail_s: float = TAIL_S) -> Utterance:
        """Cut after the speech and followed by `tail_s` of background."""
        head = self.samples[: int(round(self.speech_end * SAMPLE_RATE))]
        tail = background(self.samples, tail_s, rng)
        return Utterance(np.concatenate([head, tail]), self.speech_start, self.speech_end)

    def with_pause(self, seconds: float, rng: np.random.Generator) -> tuple[Utterance, float]:
        """A pause of `seconds` at the quietest point of the middle; and where it begins."""
        at = quiet_point(self.samples, self.speech_start, self.speech_end)
        out = splice(self.samples, at, seconds, rng)
        return Utterance(out, self.speech_start, self.speech_end + seconds), at


def build(manifest: Path, out_dir: Path, audio_dir: Path, name: str, seed: int = SEED,
          pause_s: tuple[float, float] = PAUSE_S,
          noise: tuple[str, float] | None = None) -> tuple[int, int]:
    """Write eoq_NAME.jsonl and eoq_NAME_pause.jsonl (and their audio); returns the numbers
    of utterances in each. With `noise` (kind, SNR dB) the sets are eoq_NAME_KINDSNR[_pause]:
    the same utterances and pauses (the noise draws from its own generator), noise added."""
    rng = np.random.default_rng(seed)
    rows_in = _rows(manifest)
    noisy = None
    if noise is not None:
        kind, snr_db = noise
        pool = (babble_pool([_path(manifest, r) for r in rows_in], np.random.default_rng(seed + 2))
                if kind == "babble" else [])
        noise_rng = np.random.default_rng(seed + 1)
        name = noisy_name(name, noise)

        def noisy(samples: np.ndarray) -> np.ndarray:
            return mix(samples, kind, snr_db, noise_rng, pool)
    whole_rows, pause_rows = [], []
    whole_dir, pause_dir = audio_dir / f"eoq_{name}", audio_dir / f"eoq_{name}_pause"
    whole_dir.mkdir(parents=True, exist_ok=True)
    pause_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows_in):
        if "pause" in (row.get("tags") or []):
            continue  # spoken with pauses already: neither a whole nor a one-pause request
        utt = Utterance.read(_path(manifest, row), row.get("speech_start"), row.get("speech_end"))
        if utt is None or utt.speech_s < MIN_SPEECH_S:
            continue
        whole = utt.with_tail(rng)
        paused, at = whole.with_pause(float(rng.uniform(*pause_s)), rng)
        for out, folder, rows, extra in (
                (whole, whole_dir, whole_rows, {}),
                (paused, pause_dir, pause_rows,
                 {"pause_at": round(at, 3), "pause_s": round(paused.speech_s - whole.speech_s, 3),
                  "tags": [*(row.get("tags") or []), "mid_pause"]})):
            # Heard in the clean audio: with music the VAD hears no pause at all.
            extra = {**extra, "longest_pause_s": longest_pause(out.samples, out.speech_start,
                                                               out.speech_end)}
            wav = folder / f"{i:06d}.wav"
            samples = out.samples if noisy is None else noisy(out.samples)
            sf.write(wav, samples, SAMPLE_RATE, subtype="PCM_16")
            relative = Path("..") / wav.relative_to(audio_dir.parent)  # from DATA/manifests
            rows.append({**row, "audio_filepath": str(relative),
                         "duration": round(len(out.samples) / SAMPLE_RATE, 3),
                         "speech_start": round(out.speech_start, 3),
                         "speech_end": round(out.speech_end, 3), **extra})
    for rows, suffix in ((whole_rows, ""), (pause_rows, "_pause")):
        with (out_dir / f"eoq_{name}{suffix}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return len(whole_rows), len(pause_rows)


def babble_pool(paths: Sequence[Path | str], rng: np.random.Generator) -> list[np.ndarray]:
    """BABBLE_POOL clips drawn from `paths`: a set's own speakers (never another split's) to
    make its babble of."""
    picked = rng.choice(len(paths), size=min(BABBLE_POOL, len(paths)), replace=False)
    return [read_audio(paths[int(i)]) for i in picked]


def noisy_name(name: str, noise: tuple[str, float]) -> str:
    """The set name `build` gives NAME made again with `noise` (kind, SNR dB): NAME_music10."""
    kind, snr_db = noise
    return f"{name}_{kind}{snr_db:g}"


def _path(manifest: Path, row: dict) -> Path:
    path = Path(row["audio_filepath"])
    return path if path.is_absolute() else manifest.parent / path


def _rows(manifest: Path) -> list[dict]:
    with manifest.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True,
                   help="the recipe's data folder (reads and writes DATA/manifests, DATA/audio)")
    p.add_argument("--sets", nargs="+", required=True,
                   help="manifest names in DATA/manifests, e.g. test_voices test_speechocean762")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--noise", type=_noise_arg, metavar="KIND:SNR",
                   help=f"add noise throughout ({', '.join(BACKGROUND_KINDS)}), e.g. music:10")
    args = p.parse_args(argv)
    manifests = args.data / "manifests"
    for name in args.sets:
        n_whole, n_pause = build(manifests / f"{name}.jsonl", manifests, args.data / "audio",
                                 name, args.seed, noise=args.noise)
        if args.noise:
            name = noisy_name(name, args.noise)
        print(f"eoq_{name}: {n_whole} utterances; eoq_{name}_pause: {n_pause}")


def _noise_arg(text: str) -> tuple[str, float]:
    kind, _, snr = text.partition(":")
    if kind not in BACKGROUND_KINDS:
        raise argparse.ArgumentTypeError(f"{kind!r}: not one of {', '.join(BACKGROUND_KINDS)}")
    try:
        return kind, float(snr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give KIND:SNR, e.g. music:10") from None


if __name__ == "__main__":
    main()
