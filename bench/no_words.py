"""How much of the n-best says "no words", for speech and for the sound after it.

    python bench/no_words.py DATA/manifests/eoq_dev_voices_music10.jsonl \
        DATA/manifests/eoq_dev_voices.jsonl --answers 20

runs each utterance through the daemon's pipeline with every word kept (no_words_share 1.0)
and records, at each utterance's end-points, the share of the n-best's acoustic probability
held by hypotheses without words (daemon/recognition/hypotheses.py, `no_words_share`). An
utterance that starts before the manifest's end of speech is speech; one that starts after
it was made by what followed (music, babble, the room). `--answers N` also renders N one-
and two-word answers ("yes", "stop", "go ahead") by the development voices, clean and with
music 10 dB under them: real speech at its shortest. What RecognizerConfig.no_words_share's
default was chosen on; development sets and voices only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import run_pipeline
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.pipeline import EventType, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.config import DEFAULT_MODEL_DIR, RecognizerConfig
from edge_asr.daemon.recognition.hypotheses import no_words_share
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.models import pause_sets

ANSWERS = ("yes", "no", "stop", "cancel", "next", "pause", "go ahead", "thanks", "louder",
           "play")


class _Recording(Pipeline):
    """The pipeline, recording the share at each of its utterances' end-points."""

    def __init__(self, recognizer: Recognizer) -> None:
        super().__init__(recognizer, PipelineConfig(partials=False))
        self.shares: dict[str, float] = {}

    def _no_words(self, has_words: list[bool], log_probs: list[float]) -> bool:
        self.shares[self._utterance_id] = no_words_share(has_words, log_probs)
        return super()._no_words(has_words, log_probs)


def utterance_shares(recognizer: Recognizer, samples: np.ndarray,
                     speech_end: float) -> tuple[list[float], list[float]]:
    """(shares of the utterances of speech, of those that began after `speech_end`)."""
    pipeline = _Recording(recognizer)
    starts = {e.utterance_id: e.speech_start for e in run_pipeline(pipeline, samples)
              if e.type is EventType.SPEECH_STARTED}
    speech, after = [], []
    for utt, share in pipeline.shares.items():
        (after if (starts.get(utt) or 0.0) >= speech_end else speech).append(share)
    return speech, after


def answers(n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """`n` short answers by the development voices, each clean and in music 10 dB."""
    from edge_asr.models.synth import dev_voices, synthesize

    rng = np.random.default_rng(seed)
    voices, out = dev_voices(), []
    for i in range(n):
        word = ANSWERS[i % len(ANSWERS)]
        spoken = synthesize(word, voices[i % len(voices)], rng)
        clip = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), spoken,
                               np.zeros(SAMPLE_RATE, np.float32)])
        clip = np.clip(clip + rng.normal(scale=3e-4, size=clip.size), -1, 1).astype(np.float32)
        out += [(f"{word} (clean)", clip),
                (f"{word} (music 10 dB)", pause_sets.mix(clip, "music", 10.0, rng))]
    return out


def describe(name: str, shares: list[float], limit: float) -> str:
    if not shares:
        return f"{name}: none"
    q = np.quantile(shares, [0.5, 0.9])
    return (f"{name}: {len(shares)} utterances, median {q[0]:.3f}, 90th percentile "
            f"{q[1]:.3f}, max {max(shares):.3f}; at or above {limit}: "
            f"{np.mean(np.asarray(shares) >= limit):.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifests", type=Path, nargs="*")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--limit", type=int, default=None, help="utterances per manifest")
    p.add_argument("--answers", type=int, default=0, help="short answers to render")
    args = p.parse_args()
    recognizer = Recognizer(RecognizerConfig(model_dir=args.model, no_words_share=1.0))
    limit = RecognizerConfig.no_words_share
    for manifest in args.manifests:
        speech, after = [], []
        for entry in read_manifest(manifest)[: args.limit]:
            got = utterance_shares(recognizer, read_audio(entry.audio_filepath),
                                   entry.speech_end)
            speech, after = speech + got[0], after + got[1]
        print(manifest.name)
        print("  " + describe("speech", speech, limit))
        print("  " + describe("after the speech", after, limit))
    if args.answers:
        shares = [s for _, clip in answers(args.answers)
                  for s in utterance_shares(recognizer, clip, len(clip) / SAMPLE_RATE)[0]]
        print(describe(f"{args.answers} short answers, clean and in music", shares, limit))


if __name__ == "__main__":
    main()
