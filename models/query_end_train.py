"""Train the learned end-of-query model (daemon/endpointing/query_end.py) for a model folder.

1. Examples. Training utterances (synthetic requests and recorded speakers of the training
   split only) go through the daemon's own pipeline, the final end-pointer held open, and at
   every decoded chunk of a pause the classifier's features are recorded with the answer:
   more speech comes (a pause inside the request) or not (the request is over). Pauses come
   from the grammar (items rendered with pauses before names, numbers and digit groups and
   after "uh", `models/prepare.py`) and from `pause_sets.splice`: a 0.2-0.9 s pause at the
   quietest point of the middle of an utterance, to most of them. Two fifths get noise
   (steady, music or babble of the set's own speakers) throughout, pauses and tail too.
2. Fit. A one-layer tanh MLP by logistic loss, the two answers weighted equally.
3. Threshold. The same examples from development speakers (eoq_* sets of
   `models/pause_sets.py`) replay the final end-pointer's rule offline (`replay`): the lowest
   threshold whose premature cuts stay under `--max-premature` on the requests pausing at
   most `--pause-limit` (0.7 s, as the target; longer pauses are cut more, as printed).

    python -m edge_asr.models.query_end_train --data DATA --model models/rnnt-v4-int4 \
        --dev eoq_dev_voices eoq_dev_voices_pause eoq_speechocean762_dev \
              eoq_speechocean762_dev_pause

writes query_end.json into the model folder (and the model card's query_end entry).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_asr.daemon.driver import microphone_pieces
from edge_asr.daemon.endpointing.endpoint import Endpointer
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.endpointing.query_end import (
    FEATURES,
    QUERY_END_FILE,
    QueryEnd,
    QueryEndModel,
)
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.pipeline import Pipeline, PipelineConfig
from edge_asr.daemon.recognition.model_loading import load_device_lm
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.models import pause_sets

TRAIN_SETS = ("train", "train_voices4", "speechocean762_train", "vctk_p239_train",
              "rhasspy_cathy_train")
PAUSE_PROB = 0.6  # share of utterances given a spliced pause
NOISE_PROB = 0.4
# Steady noise, and music and babble, which the VAD hears as speech: in a living room the
# pause after a request is rarely silent, and a classifier that has heard only quiet pauses
# waits through it for silence that never comes (sim music_other_device). Music and babble
# twice: as likely as the four steady kinds together.
NOISE_KINDS = ("pink", "fan", "kitchen", "white", "music", "music", "babble", "babble")
NOISE_SNR_DB = (5.0, 20.0)
MIN_SILENCE_S = 0.3  # the final end-pointer asks from final_silence_min (0.35 s) on
END_SLACK_S = 0.05  # a decision this close before speech_end is already in the final pause
# Held open: asked from the first blank, never ends before the longest pause has passed.
_RECORDING = EndpointConfig(final_silence_min=0.01, final_silence=0.01, final_silence_max=0.01,
                            silence_timeout=2.5, speculative=False, max_utterance=60.0)
_RECORDING_PIPELINE = PipelineConfig(endpoint=_RECORDING, partials=False)


@dataclass
class DecisionPoints:
    """The decision points of one utterance: times, features, and when its speech ended."""

    speech_end: float
    times: list[float] = field(default_factory=list)
    silences: list[float] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return (np.asarray(self.times) >= self.speech_end - END_SLACK_S).astype(np.float32)


class _Recorder(QueryEnd):
    """Asked by the end-pointer as the trained model will be; records and says "not over".
    It has no weights: only the feature code of QueryEnd is used."""

    def __init__(self, recognizer: Recognizer) -> None:
        n = len(FEATURES)
        unused = QueryEndModel(np.zeros(n), np.ones(n), np.zeros((1, n)), np.zeros(1),
                               np.zeros(1), 0.0, 0.5)
        super().__init__(unused, recognizer.lm or load_device_lm(recognizer.model,
                                                                 "the end-of-query model"))
        self.pipeline: Pipeline | None = None
        self.utterance: DecisionPoints | None = None

    def probability(self, tokens, text, silence_s, blank_s, snr_db) -> float:
        if self.utterance is not None and self.pipeline is not None:
            self.utterance.times.append(self.pipeline.endpointer.now)
            self.utterance.silences.append(silence_s)
            self.utterance.features.append(
                self.features(tokens, text, silence_s, blank_s, snr_db).astype(np.float32))
        return 0.0


def record(recognizer: Recognizer, samples: np.ndarray, speech_end: float,
           context=None) -> DecisionPoints:
    """Run one utterance through the pipeline with the final end-pointer held open."""
    recorder = _Recorder(recognizer)
    pipeline = Pipeline(recognizer, _RECORDING_PIPELINE, query_end=recorder)
    pipeline.set_context(context)
    recorder.pipeline, recorder.utterance = pipeline, DecisionPoints(speech_end)
    for piece in microphone_pieces(samples):
        pipeline.accept(piece)
    return recorder.utterance


def training_examples(recognizer: Recognizer, manifests: Iterable[Path], per_set: int,
                      seed: int) -> list[DecisionPoints]:
    rng = np.random.default_rng(seed)
    out: list[DecisionPoints] = []
    for manifest in manifests:
        entries = read_manifest(manifest)
        picked = rng.choice(len(entries), size=min(per_set, len(entries)), replace=False)
        start = time.time()
        pool = pause_sets.babble_pool([e.audio_filepath for e in entries], rng)
        for i in picked:
            entry = entries[int(i)]
            utt = pause_sets.Utterance.read(entry.audio_filepath, entry.speech_start,
                                            entry.speech_end)
            if utt is None:
                continue
            utt = utt.with_tail(rng)
            if utt.speech_s >= pause_sets.MIN_SPEECH_S and rng.random() < PAUSE_PROB:
                utt, _ = utt.with_pause(float(rng.uniform(0.2, 0.9)), rng)
            samples = utt.samples
            if rng.random() < NOISE_PROB:
                samples = pause_sets.mix(samples, str(rng.choice(NOISE_KINDS)),
                                         float(rng.uniform(*NOISE_SNR_DB)), rng, pool)
            out.append(record(recognizer, samples, utt.speech_end))
        print(f"{manifest.name}: {len(picked)} utterances, {time.time() - start:.0f} s",
              flush=True)
    return out


def dev_examples(recognizer: Recognizer, manifests: Iterable[Path]) -> list[DecisionPoints]:
    """The eoq_* sets as they are (pauses and tails already in the audio)."""
    out = []
    for manifest in manifests:
        for entry in read_manifest(manifest):
            utt = pause_sets.Utterance.read(entry.audio_filepath, entry.speech_start,
                                            entry.speech_end)
            out.append(record(recognizer, utt.samples, utt.speech_end, entry.context or None))
    return out


def fit(utterances: Sequence[DecisionPoints], hidden: int = 16, epochs: int = 60,
        seed: int = 0, threshold: float = 0.5) -> QueryEndModel:
    """The MLP by full-batch Adam on the logistic loss, both answers weighted equally."""
    import torch

    x, y = _points(utterances)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    torch.manual_seed(seed)
    xt = torch.tensor((x - mean) / scale, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    positive = float(y.mean())
    weights = torch.where(yt > 0.5, 0.5 / max(positive, 1e-6), 0.5 / max(1 - positive, 1e-6))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(),
                              torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    for _ in range(epochs * 10):
        opt.zero_grad()
        loss = (loss_fn(net(xt).squeeze(1), yt) * weights).mean()
        loss.backward()
        opt.step()
    w1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    w2, b2 = net[2].weight.detach().double().numpy()[0], float(net[2].bias.detach()[0])
    return QueryEndModel(mean.astype(np.float64), scale.astype(np.float64), w1, b1, w2, b2,
                         threshold)


def _points(utterances: Sequence[DecisionPoints]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for u in utterances:
        keep = np.asarray(u.silences) >= MIN_SILENCE_S
        if keep.any():
            xs.append(np.stack(u.features)[keep])
            ys.append(u.labels[keep])
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


@dataclass(frozen=True)
class Replay:
    """The final end-pointer's outcome on recorded utterances at one threshold."""

    threshold: float
    premature: float  # share of utterances cut before their speech ended
    ep50: float | None  # final end-point after speech_end, seconds, of the others
    ep90: float | None
    premature_short: float | None = None  # ... of those with short pauses (`replay`)


def replay(model: QueryEndModel, utterances: Sequence[DecisionPoints], threshold: float,
           config: EndpointConfig | None = None, short: Sequence[bool] | None = None
           ) -> Replay:
    """The end-pointer's learned rule replayed on recorded decision points: the first point
    with at least final_silence_min of silence (and blanks, which recording required)
    whose P(over) reaches the threshold, or with silence_timeout of silence whatever it
    says (a pause that long cuts the request whatever the classifier thinks). `short` marks
    the utterances whose cuts Replay.premature_short counts."""
    config = config or EndpointConfig()
    return _replay(utterances, lambda silence, x: silence >= config.final_silence_min
                   and model.probability(x) >= threshold, threshold, config.silence_timeout,
                   short)


def _replay(utterances: Sequence[DecisionPoints], over, threshold: float,
            silence_timeout: float, short: Sequence[bool] | None = None) -> Replay:
    """The first recorded point where `over(silence, features)` or the silence timeout ends
    the utterance. One that nothing ends (noise kept the VAD from hearing silence long
    enough) counts as ending when the recording stopped waiting: a lower bound."""
    cut, latencies = [], []
    for u in utterances:
        end_at = None
        for t, silence, x in zip(u.times, u.silences, u.features, strict=True):
            if silence >= silence_timeout or over(silence, x):
                end_at = t
                break
        cut.append(end_at is not None and end_at < u.speech_end - END_SLACK_S)
        if end_at is None:
            latencies.append(_RECORDING.silence_timeout)
        elif not cut[-1]:
            latencies.append(end_at - u.speech_end)
    n = len(utterances)
    short_cuts = None if short is None else [c for c, s in zip(cut, short, strict=True) if s]
    return Replay(threshold, sum(cut) / n if n else 0.0,
                  float(np.percentile(latencies, 50)) if latencies else None,
                  float(np.percentile(latencies, 90)) if latencies else None,
                  sum(short_cuts) / len(short_cuts) if short_cuts else None)


def replay_rules(utterances: Sequence[DecisionPoints], config: EndpointConfig | None = None,
                 short: Sequence[bool] | None = None) -> Replay:
    """The completeness rules' wait replayed on the same points, for comparison: the rules'
    score and the noise flag are among the recorded features."""
    config = config or EndpointConfig()
    score = [0.5]  # the recorded rules' score of the point being replayed
    endpointer = Endpointer(config, completeness=lambda _text: score[0])
    rules, noisy = FEATURES.index("rules"), FEATURES.index("noisy")

    def over(silence: float, x: np.ndarray) -> bool:
        score[0] = float(x[rules])
        return silence >= endpointer.final_silence_for("", noisy=bool(x[noisy]))

    return _replay(utterances, over, 0.0, config.silence_timeout, short)


def tune(model: QueryEndModel, utterances: Sequence[DecisionPoints], max_premature: float,
         short: Sequence[bool] | None = None) -> tuple[float, list[Replay]]:
    """The lowest threshold (fastest end-points) whose premature cuts are <= max_premature:
    of the utterances `short` marks, if given, else of all."""
    replays = [replay(model, utterances, t, short=short)
               for t in np.round(np.arange(0.30, 0.991, 0.02), 2)]
    ok = [r for r in replays  # (none marked short: all count)
          if (r.premature if r.premature_short is None else r.premature_short) <= max_premature]
    best = ok[0] if ok else replays[-1]
    return float(best.threshold), replays


def short_pauses(p: argparse.ArgumentParser, manifests: Path, dev: Sequence[str],
                 limit: float) -> list[bool] | None:
    """Which development utterances (in dev_examples' order) pause for at most `limit`
    seconds, from their manifests' longest_pause_s; None with no limit."""
    if not limit:
        return None
    out: list[bool] = []
    for name in dev:
        for entry in read_manifest(manifests / f"{name}.jsonl"):
            pause = entry.extra.get("longest_pause_s")
            if pause is None:
                p.error(f"{name}: no longest_pause_s in its manifest (made by an older "
                        "pause_sets: build it again, or give --pause-limit 0)")
            out.append(pause <= limit)
    return out


def training_sets(p: argparse.ArgumentParser, manifests: Path,
                  named: list[str] | None) -> list[str]:
    """The sets named, each of which must exist; or the default ones the folder has (a data
    folder made without --other-engines lacks train_voices4), saying which are left out."""
    wanted = named or list(TRAIN_SETS)
    present = [s for s in wanted if (manifests / f"{s}.jsonl").is_file()]
    absent = [s for s in wanted if s not in present]
    if named and absent:
        p.error(f"--train: no {', '.join(str(manifests / s) + '.jsonl' for s in absent)}")
    if not present:
        p.error(f"none of the training sets {', '.join(TRAIN_SETS)} is in {manifests}")
    if absent:
        print(f"training sets not in {manifests}, left out: {', '.join(absent)}")
    return present


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    p.add_argument("--model", type=Path, required=True,
                   help="model folder to train for (and write query_end.json into)")
    p.add_argument("--train", nargs="+", default=None,
                   help="training manifests in DATA/manifests (never evaluation speakers); "
                        f"default: those of {', '.join(TRAIN_SETS)} the data folder has")
    p.add_argument("--per-set", type=int, default=700, help="utterances drawn from each")
    p.add_argument("--dev", nargs="+", required=True,
                   help="eoq_* development sets (models/pause_sets.py) to tune the threshold")
    p.add_argument("--max-premature", type=float, default=0.01,
                   help="premature cuts allowed on the development sets' requests ...")
    p.add_argument("--pause-limit", type=float, default=pause_sets.SHORT_PAUSE_S,
                   help="... whose longest pause is at most this many seconds (0: on all)")
    p.add_argument("--cache", type=Path, help="keep recorded examples here (npz) and reuse them")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    manifests = args.data / "manifests"
    args.train = training_sets(p, manifests, args.train)
    recognizer = Recognizer.from_model_dir(args.model)
    digests = _model_digests(args.model)
    listening = _listening()
    train = _cached(args.cache, _key("train", digests, listening, args.train, args.per_set,
                                     args.seed, PAUSE_PROB, NOISE_PROB, NOISE_KINDS,
                                     NOISE_SNR_DB),
                    lambda: training_examples(recognizer, [manifests / f"{s}.jsonl"
                                                           for s in args.train],
                                              args.per_set, args.seed))
    dev = _cached(args.cache, _key("dev", digests, listening, args.dev),
                  lambda: dev_examples(recognizer, [manifests / f"{s}.jsonl" for s in args.dev]))
    x, y = _points(train)
    print(f"training points: {len(y)} ({y.mean():.1%} in a final pause) from {len(train)} "
          "utterances")
    short = short_pauses(p, manifests, args.dev, args.pause_limit)
    model = fit(train, seed=args.seed)
    threshold, replays = tune(model, dev, args.max_premature, short)
    rules = replay_rules(dev, short=short)
    for name, r in [("rules", rules)] + [(f"threshold {r.threshold:.2f}", r) for r in replays]:
        print(f"{name}: premature {100 * r.premature:.1f}%"
              + ("" if r.premature_short is None else f" ({100 * r.premature_short:.1f}% "
                                                      f"with pauses up to {args.pause_limit:g} s)")
              + f", EP50 {r.ep50 or float('nan'):.2f} s, EP90 {r.ep90 or float('nan'):.2f} s")
    model = dataclasses.replace(model, threshold=threshold)
    model.save(args.model / QUERY_END_FILE)
    chosen = next(r for r in replays if r.threshold == threshold)
    _describe_in_card(args.model, {
        "file": QUERY_END_FILE, "features": list(FEATURES),
        "hidden_units": int(model.b1.size), "threshold": threshold,
        "training_sets": list(args.train), "training_utterances": len(train),
        "training_points": int(len(y)), "pause_share": PAUSE_PROB, "noise_share": NOISE_PROB,
        "noise_kinds": sorted(set(NOISE_KINDS)), "noise_snr_db": list(NOISE_SNR_DB),
        "vad": listening, "dev_sets": list(args.dev), "max_premature": args.max_premature,
        "pause_limit_s": args.pause_limit or None,
        **{key: {"premature": round(r.premature, 4), "final_ep50": r.ep50, "final_ep90": r.ep90,
                 "premature_short_pauses": None if r.premature_short is None
                 else round(r.premature_short, 4)}
           for key, r in (("dev_replay", chosen), ("dev_replay_rules", rules))}})
    print(f"wrote {args.model / QUERY_END_FILE} (threshold {threshold:.2f})")


def _describe_in_card(model_dir: Path, entry: dict) -> None:
    """The model card's query_end entry and the file's sha256 beside the others."""
    path = model_dir / "model_card.json"
    if not path.is_file():
        return
    card = json.loads(path.read_text(encoding="utf-8"))
    card.setdefault("sha256", {})[QUERY_END_FILE] = sha256_of(model_dir / QUERY_END_FILE)
    card["query_end"] = entry
    path.write_text(json.dumps(card, indent=2) + "\n")


def _model_digests(model_dir: Path) -> dict:
    """What the recorded features depend on: the model's files (its card's sha256s)."""
    card = model_dir / "model_card.json"
    digests = json.loads(card.read_text()).get("sha256", {}) if card.is_file() else {}
    return {k: v for k, v in digests.items() if k != QUERY_END_FILE}


def _listening() -> dict:
    """How the recording pipeline hears silence (its VAD settings): the silences recorded,
    and so the examples, depend on them."""
    return {f.name: getattr(_RECORDING_PIPELINE, f.name)
            for f in dataclasses.fields(_RECORDING_PIPELINE) if f.name.startswith("vad_")}


def _key(kind: str, *parts: object) -> str:
    """A cache file name for examples recorded with this model, these sets and settings."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def _cached(cache: Path | None, name: str, make) -> list[DecisionPoints]:
    """Recorded examples from `cache`/query_end_NAME.npz, or made and kept there."""
    if cache is None:
        return make()
    path = cache / f"query_end_{name}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}  # each read of an npz key decompresses
        offsets = np.concatenate([[0], np.cumsum(arrays["lengths"])])
        times, silences, features = arrays["times"], arrays["silences"], arrays["features"]
        return [DecisionPoints(float(end), times[a:b].tolist(), silences[a:b].tolist(),
                          list(features[a:b]))
                for end, a, b in zip(arrays["speech_end"], offsets[:-1], offsets[1:],
                                     strict=True)]
    out = make()
    cache.mkdir(parents=True, exist_ok=True)
    width = next((len(u.features[0]) for u in out if u.features), 0)
    np.savez(path, speech_end=np.array([u.speech_end for u in out]),
             lengths=np.array([len(u.times) for u in out]),
             times=np.array([t for u in out for t in u.times]),
             silences=np.array([s for u in out for s in u.silences]),
             features=np.array([f for u in out for f in u.features]).reshape(-1, width))
    return out


if __name__ == "__main__":
    main()
