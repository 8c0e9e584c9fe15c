"""Train the wake-word verifier (daemon/wakeword/verifier.py) for a model and a phrase.

    python -m edge_asr.models.wake_verifier --model models/rnnt-v4-int4 \
        --manifests DATA/manifests [--phrase "hey marvin"]

The spotter runs as the daemon runs it, with a low threshold so that it reports many
candidates, over three kinds of audio, all of training voices and training speakers only:
- the phrase, then a request, said by the training voices (models/synth.py's three training
  renderings), half of them in kitchen, fan, music, pink or white noise at 5-20 dB: positives
  when the detection lies on the phrase;
- confusable phrases ("hey martin", "hey mervyn", "heavy marbles" ...) before or after a
  request, by the same voices and in the same noise: negatives;
- the training manifests' speech (`train`, `speechocean762_train`) played back to back through
  spotters that start every second, as the daemon's: negatives.
Each candidate's pooled encoder features go to a logistic regression (L2, Newton's method);
the verifier, with `--threshold`, is written to the model folder as wake_verifier.json and
described in its model card. The threshold is chosen on the development voices and
recordings with `python bench/wakeword.py --voices dev`, never on test audio.
"""

from __future__ import annotations

import argparse
import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.daemon.wakeword.spotter import Detection, KeywordSpotter, WakeWordConfig
from edge_asr.daemon.wakeword.verifier import VERIFIER_FILE, WakeVerifier
from edge_asr.models.levels import active_rms
from edge_asr.models.noise import make_noise

CANDIDATE_THRESHOLD = 0.02  # the spotter's score threshold while collecting candidates
CONFUSABLE = ("hey martin", "hey marty", "hey mark", "hey man", "hey mom", "hey marcus",
              "hey marvel", "hey melvin", "hey kevin", "hey mervyn", "the marvel movie",
              "heavy marbles", "hey there", "hey can you", "they are moving", "a marathon",
              "hey marlon", "hey margin", "hey mary", "hey marion", "hey arvind", "hay barn",
              "hey garden", "they marched in")
NOISES = ("kitchen", "fan", "music", "pink", "white")
_worker: dict = {}


def _spotter(model: str, phrase: str) -> KeywordSpotter:
    if "recognizer" not in _worker:
        _worker["recognizer"] = Recognizer.from_model_dir(model)
    config = WakeWordConfig(phrase=phrase, threshold=CANDIDATE_THRESHOLD, verify=False)
    return KeywordSpotter(_worker["recognizer"], config)


def _spot(model: str, phrase: str, audio: np.ndarray) -> tuple[Detection, list] | None:
    spotter = _spotter(model, phrase)
    for i in range(0, len(audio), 320):
        found = spotter.accept(audio[i:i + 320])
        if found is not None:
            return found, spotter.features(found).tolist()
    return None


def _room(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 10 ** (-70 / 20)).astype(
        np.float32)


def _in_noise(audio: np.ndarray, speech: np.ndarray, k: int, rng: np.random.Generator
              ) -> np.ndarray:
    if k % 2:  # half of them in noise at 5-20 dB under the speech
        noise = make_noise(NOISES[k % len(NOISES)], len(audio), rng)
        gain = active_rms(speech) / max(float(np.sqrt(np.mean(noise ** 2))), 1e-9)
        audio = audio + noise * np.float32(gain * 10 ** (-rng.uniform(5, 20) / 20))
    peak = float(np.abs(audio).max())
    return (audio * (0.9 / peak) if peak > 0.99 else audio).astype(np.float32)


def _said(job: tuple) -> dict | None:
    """One synthesised item: the phrase (or a confusable one) and a request."""
    model, phrase, k, text, confusable = job
    from edge_asr.models.synth import (
        more_training_voices,
        random_timbre_voices,
        synthesize,
        training_voices,
    )

    rng = np.random.default_rng([k, int(confusable)])
    voices = training_voices() + more_training_voices() + random_timbre_voices()
    voice = voices[(k * (11 if confusable else 7)) % len(voices)]
    if confusable:
        other = CONFUSABLE[k % len(CONFUSABLE)]
        said = synthesize(f"{other} {text}" if k % 3 else f"{text} {other}", voice, rng)
        said_phrase = said
    else:
        said_phrase = synthesize(phrase, voice, rng)
        pause = np.zeros(int(rng.uniform(0.0, 0.6) * SAMPLE_RATE), np.float32)
        said = np.concatenate((said_phrase, pause, synthesize(text, voice, rng)))
    start = _room(rng.uniform(0.3, 1.0), rng)
    audio = _in_noise(np.concatenate((start, said, _room(1.0, rng))), said, k, rng)
    found = _spot(model, phrase, audio)
    if found is None:
        return None
    d, features = found
    begin = len(start) / SAMPLE_RATE
    on_phrase = not confusable and d.start <= begin + len(said_phrase) / SAMPLE_RATE + 0.3 \
        and d.end >= begin
    return {"label": int(on_phrase), "features": features}


def _stream(job: tuple) -> list[dict]:
    """Training speech back to back through spotters started every second, 3 s each."""
    model, phrase, paths = job
    audio = np.concatenate([np.concatenate((read_audio(p), _room(0.5, np.random.default_rng(i))))
                            for i, p in enumerate(paths)])
    out, spotters, t, next_start = [], [], 0.0, 0.0
    for i in range(0, len(audio), 320):
        if t >= next_start:
            spotters.append((t, _spotter(model, phrase)))
            next_start = t + 1.0
        spotters = [(s0, s) for s0, s in spotters if t - s0 < 3.0]
        t += 320 / SAMPLE_RATE
        for s0, spotter in list(spotters):
            d = spotter.accept(audio[i:i + 320])
            if d is not None:
                out.append({"label": 0, "features": spotter.features(d).tolist()})
                spotters.remove((s0, spotter))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 30
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Standardisation (mean, scale) and the weights and bias of an L2 logistic regression,
    by Newton's method (a few hundred features: the Hessian is small)."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack(((x - mean) / scale, np.ones((len(x), 1))))
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2 * len(x))
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -60, 60)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return mean, scale, w[:-1], float(w[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--manifests", type=Path, required=True)
    p.add_argument("--phrase", default="hey marvin")
    p.add_argument("--positives", type=int, default=1600)
    p.add_argument("--confusable", type=int, default=2000)
    p.add_argument("--speech", type=int, nargs=2, default=[1200, 800], metavar=("SYNTH", "REAL"),
                   help="utterances of train and speechocean762_train for the streams")
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--threshold", type=float, default=0.05,
                   help="lowest probability that confirms (chosen on dev: bench/wakeword.py)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    model, phrase = str(args.model), args.phrase
    text = Recognizer.from_model_dir(model).spell(phrase)[0]
    train = read_manifest(args.manifests / "train.jsonl")
    requests = [e.text for e in train if "marvin" not in e.text]
    said = [(model, phrase, k, requests[k % len(requests)], False)
            for k in range(args.positives)]
    said += [(model, phrase, k, requests[-1 - k % len(requests)], True)
             for k in range(args.confusable)]
    paths = [e.audio_filepath for e in train[: args.speech[0]]]
    real = args.manifests / "speechocean762_train.jsonl"
    if real.is_file():
        paths += [e.audio_filepath for e in read_manifest(real)[: args.speech[1]]]
    streams = [(model, phrase, paths[i:i + 20]) for i in range(0, len(paths), 20)]
    with Pool(args.workers) as pool:
        rows = [r for r in pool.imap(_said, said, chunksize=8) if r is not None]
        rows += [r for rs in pool.imap(_stream, streams) for r in rs]
    x = np.array([r["features"] for r in rows])
    y = np.array([r["label"] for r in rows], np.float64)
    mean, scale, weights, bias = fit_logistic(x, y, args.l2)
    verifier = WakeVerifier(text, mean, scale, weights, bias, args.threshold)
    kept = [float(np.mean([verifier.probability(f) >= args.threshold for f in x[y == c]]))
            for c in (1, 0)]
    (args.model / VERIFIER_FILE).write_text(json.dumps(verifier.to_json()) + "\n")
    entry = {"file": VERIFIER_FILE, "phrase": text, "threshold": args.threshold,
             "l2": args.l2, "candidates": {"positive": int(y.sum()),
                                           "negative": int(len(y) - y.sum())},
             "training": {"phrase_said": args.positives, "confusable_said": args.confusable,
                          "speech_utterances": len(paths),
                          "voices": "models/synth.py training renderings (1, 2 and 3)",
                          "speakers": "train, speechocean762_train"},
             "kept_on_training": {"positive": round(kept[0], 4),
                                  "negative": round(kept[1], 4)}}
    card_path = args.model / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.setdefault("sha256", {})[VERIFIER_FILE] = sha256_of(args.model / VERIFIER_FILE)
    card["wake_verifier"] = entry
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
