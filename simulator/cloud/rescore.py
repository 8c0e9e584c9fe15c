"""Lattice rescoring with the cloud LM, and the tuning of its weights.

A path's score is

    total = acoustic + bias + device_lm_weight * device_lm + lm_weight * lm
            + length_bonus * words

where acoustic and bias are the device's (the bias keeps what the user's own context list
made likely), device_lm is what the device's own LM added (`Arc.lm`: the device ranked its
n-best by acoustic + bias + device_lm), lm is the interpolated cloud LM's ln p of the words
and </s>, and the length bonus offsets the LM's preference for short hypotheses.
Rescoring enumerates the lattice's best `max_paths` paths by device score (A* in
`daemon.lattice.paths`), merges paths with the same words (they score the same under the
LM, so the best device score stands for them) and ranks them by total.

Tuning grid-searches (lm_weight, length_bonus, ngram_lambda, device_lm_weight) on dev
lattices with reference texts for the lowest WER, and stores the result next to the LM
(weights.json). The dev set is JSON Lines, one utterance a line: {"lattice": base64 of the
serialized Lattice, "text": the normalised reference}.

    python -m edge_asr.simulator.cloud.rescore tune --lm models/cloud-lm --dev dev.jsonl --write
"""

from __future__ import annotations

import argparse
import base64
import binascii
import itertools
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_asr.daemon.uplink.lattice import Lattice, LatticeError, parse, paths
from edge_asr.simulator.cloud.lm import (
    WEIGHTS_FILE,
    CloudLM,
    CloudLmError,
    RescoreWeights,
    interpolate,
)

DEFAULT_MAX_PATHS = 50
DEFAULT_NBEST = 10
LM_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0)
LENGTH_BONUS_GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
LAMBDA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
DEVICE_LM_WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class RescoreOptions:
    max_paths: int = DEFAULT_MAX_PATHS  # lattice paths scored, best device score first
    nbest: int = DEFAULT_NBEST  # hypotheses returned

    def __post_init__(self) -> None:
        if self.max_paths < 1 or self.nbest < 1:
            raise ValueError(f"max_paths and nbest must be at least 1, got {self.max_paths} "
                             f"and {self.nbest}")


@dataclass(frozen=True)
class ScoredPath:
    words: tuple[str, ...]
    acoustic: float
    bias: float
    lm: float  # the cloud LM's
    total: float
    device_lm: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class _Candidate:
    """A distinct word sequence of a lattice with its best device score and LM parts."""

    words: tuple[str, ...]
    acoustic: float
    bias: float
    device_lm: float
    ngram: list[float]
    neural: list[float] | None


def _candidates(lattice: Lattice, lm: CloudLM, max_paths: int) -> list[_Candidate]:
    best: dict[tuple[str, ...], tuple[float, float, float]] = {}
    for path in paths(lattice, limit=max_paths):
        words = tuple(w.word for w in path.words)
        if words not in best or path.score > sum(best[words]):
            best[words] = (path.acoustic, path.bias, path.lm)
    sequences = list(best)
    parts = lm.component_logprobs(sequences)
    return [_Candidate(words, *best[words], ngram, neural)
            for words, (ngram, neural) in zip(sequences, parts, strict=True)]


def _rank(candidates: Iterable[_Candidate], weights: RescoreWeights) -> list[ScoredPath]:
    scored = []
    for c in candidates:
        lm_score = interpolate(c.ngram, c.neural, weights.ngram_lambda)
        total = (c.acoustic + c.bias + weights.device_lm_weight * c.device_lm
                 + weights.lm_weight * lm_score + weights.length_bonus * len(c.words))
        scored.append(ScoredPath(c.words, c.acoustic, c.bias, lm_score, total, c.device_lm))
    # Ties go to the better device score, then to the words, so the order is deterministic.
    scored.sort(key=lambda p: (-p.total, -(p.acoustic + p.bias + p.device_lm), p.words))
    return scored


def rescore(lattice: Lattice, lm: CloudLM, options: RescoreOptions = RescoreOptions(),
            weights: RescoreWeights | None = None) -> list[ScoredPath]:
    """The lattice's n-best under the cloud LM, best first."""
    ranked = _rank(_candidates(lattice, lm, options.max_paths), weights or lm.weights)
    return ranked[:options.nbest]


# -- tuning -----------------------------------------------------------------------------

def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class DevUtterance:
    lattice: Lattice
    reference: tuple[str, ...]
    # What the device itself delivered (its length-normalised best, which need not be the
    # lattice's best path by summed score); None: take the lattice's best path.
    device: tuple[str, ...] | None = None


class DevSetError(ValueError):
    """A dev-set line is not {"lattice": base64 Lattice, "text": reference}."""


def encode_dev_line(lattice_bytes: bytes, text: str, device: str | None = None) -> str:
    record = {"lattice": base64.b64encode(lattice_bytes).decode("ascii"), "text": text}
    if device is not None:
        record["device"] = device
    return json.dumps(record)


def load_dev_set(path: Path) -> list[DevUtterance]:
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                data = base64.b64decode(record["lattice"], validate=True)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
                raise DevSetError(f"{where}: expected {{\"lattice\": base64, \"text\": str}}: "
                                  f"{exc}") from exc
            device = record.get("device")
            if not isinstance(text, str) or not isinstance(device, str | None):
                raise DevSetError(f"{where}: \"text\" or \"device\" is not a string")
            try:
                out.append(DevUtterance(parse(data), tuple(text.split()),
                                        None if device is None else tuple(device.split())))
            except LatticeError as exc:
                raise DevSetError(f"{where}: {exc}") from exc
    if not out:
        raise DevSetError(f"{path} has no utterances")
    return out


@dataclass(frozen=True)
class TuningResult:
    weights: RescoreWeights
    wer: float  # rescored with the best weights
    device_wer: float  # the device's own best path
    reference_words: int
    grid_points: int


def _errors_of_best(prepared: list[tuple[list[_Candidate], tuple[str, ...]]],
                    weights: RescoreWeights) -> int:
    return sum(word_errors(reference, _rank(candidates, weights)[0].words)
               for candidates, reference in prepared if candidates)


def tune(dev: Sequence[DevUtterance], lm: CloudLM, max_paths: int = DEFAULT_MAX_PATHS,
         lm_weights: Sequence[float] = LM_WEIGHT_GRID,
         length_bonuses: Sequence[float] = LENGTH_BONUS_GRID,
         lambdas: Sequence[float] = LAMBDA_GRID,
         device_lm_weights: Sequence[float] = DEVICE_LM_WEIGHT_GRID) -> TuningResult:
    """The grid point with the fewest word errors; ties keep the earlier point of the grid
    (the grids start from the weakest LM influence, so a tie never adds LM weight)."""
    if not dev:
        raise DevSetError("no dev utterances to tune on")
    prepared = [(_candidates(u.lattice, lm, max_paths), u.reference) for u in dev]
    reference_words = max(sum(len(r) for _, r in prepared), 1)
    device_errors = 0
    for u in dev:
        device = u.device
        if device is None:
            best = paths(u.lattice, limit=1)
            device = tuple(w.word for w in best[0].words) if best else ()
        device_errors += word_errors(u.reference, device)
    if lm.neural is None:
        lambdas = (1.0,)
    best: tuple[int, RescoreWeights] | None = None
    points = 0
    for share, device, weight, bonus in itertools.product(lambdas, device_lm_weights,
                                                          lm_weights, length_bonuses):
        weights = RescoreWeights(weight, bonus, share, device)
        errors = _errors_of_best(prepared, weights)
        points += 1
        if best is None or errors < best[0]:
            best = (errors, weights)
    assert best is not None
    return TuningResult(best[1], best[0] / reference_words, device_errors / reference_words,
                        reference_words, points)


# -- command line -----------------------------------------------------------------------

def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text!r}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_asr.simulator.cloud.rescore",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tune", help="grid-search the rescoring weights on dev lattices")
    t.add_argument("--lm", type=Path, required=True, help="cloud LM folder")
    t.add_argument("--dev", type=Path, required=True, help="JSONL of {lattice, text}")
    t.add_argument("--max-paths", type=int, default=DEFAULT_MAX_PATHS)
    t.add_argument("--lm-weights", type=_floats, default=LM_WEIGHT_GRID)
    t.add_argument("--length-bonuses", type=_floats, default=LENGTH_BONUS_GRID)
    t.add_argument("--lambdas", type=_floats, default=LAMBDA_GRID)
    t.add_argument("--device-lm-weights", type=_floats, default=DEVICE_LM_WEIGHT_GRID,
                   help="weights of the device LM's score the lattice carries (Arc.lm)")
    t.add_argument("--write", action="store_true",
                   help=f"store the best weights in the LM folder ({WEIGHTS_FILE})")
    args = parser.parse_args(argv)
    try:
        lm = CloudLM.load(args.lm)
        dev = load_dev_set(args.dev)
        start = time.perf_counter()
        result = tune(dev, lm, args.max_paths, args.lm_weights, args.length_bonuses,
                      args.lambdas, args.device_lm_weights)
    except (CloudLmError, DevSetError, OSError, ValueError) as exc:
        print(f"rescore: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(dev)} utterances, {result.reference_words} reference words, "
          f"{result.grid_points} grid points in {time.perf_counter() - start:.1f} s")
    print(f"device WER {100 * result.device_wer:.2f}%, rescored WER {100 * result.wer:.2f}% "
          f"with {result.weights}")
    if args.write:
        result.weights.save(args.lm / WEIGHTS_FILE)
        print(f"wrote {args.lm / WEIGHTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
