"""Lattice rescoring with the cloud LM, and the tuning of its weights.

A path's score is

    total = acoustic + bias + device_lm_weight * device_lm + lm_weight * lm
            + length_bonus * words + token_bonus * tokens
            + device_bonus * [the device's answer] + contact_bonus * contacts

where acoustic and bias are the device's (the bias keeps what the user's own context list
made likely), device_lm is what the device's own LM added (`Arc.lm`), lm is the
interpolated cloud LM's ln p of the words and </s> (the better of its readings with the
user's contacts as a class: name_classes.py), the length bonus offsets the LM's preference
for short hypotheses, and the token bonus the sum's preference for words of few pieces (the
device ranked its n-best by acoustic + bias + device_lm per piece, `Arc.tokens`); the
device bonus keeps the device's own choice unless the LM finds much better, and the contact
bonus keeps the names of the user's list that the device put in (`contacts`: how many the
path says).
Rescoring enumerates the lattice's best `max_paths` paths by device score (A* in
`daemon/uplink/lattice_paths.py`), merges paths with the same words (they score the same under the
LM, so the best device score stands for them) and ranks them by total.

Tuning grid-searches (lm_weight, length_bonus, ngram_lambda, device_lm_weight,
token_bonus, device_bonus, contact_bonus) on dev lattices with reference texts
(dev_set.py) for the lowest WER among the points that deliver as many of the user's
contacts as the device heard, and stores the result next to the LM (weights.json).

    python -m edge_asr.simulator.cloud.rescore tune --lm models/cloud-lm --dev dev.jsonl --write
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.daemon.uplink.lattice import Lattice
from edge_asr.daemon.uplink.lattice_paths import paths
from edge_asr.simulator.cloud.dev_set import (
    DevSetError,
    DevUtterance,
    load_dev_set,
    word_errors,
)
from edge_asr.simulator.cloud.lm import (
    WEIGHTS_FILE,
    CloudLM,
    CloudLmError,
    RescoreWeights,
    interpolate,
)
from edge_asr.simulator.cloud.name_classes import (
    NO_CONTACTS,
    Contacts,
    class_reading,
    contacts_said,
)

DEFAULT_MAX_PATHS = 50
DEFAULT_NBEST = 10
LM_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0)
LENGTH_BONUS_GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
LAMBDA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
DEVICE_LM_WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
TOKEN_BONUS_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DEVICE_BONUS_GRID = (0.0, 1.0, 2.0, 4.0)
CONTACT_BONUS_GRID = (0.0, 4.0, 8.0, 16.0)


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
class _Reading:
    """One way to read a word sequence for the LM: its tokens' ln p from the n-gram and
    the neural LM, plus ln p of the names within their class (name_classes.py)."""

    ngram: list[float]
    neural: list[float] | None
    in_class: float = 0.0

    def score(self, share: float) -> float:
        return interpolate(self.ngram, self.neural, share) + self.in_class


@dataclass(frozen=True)
class _Candidate:
    """A distinct word sequence of a lattice with its best device score and LM readings
    (as words, and with the user's contacts as the <contact> class when it says any)."""

    words: tuple[str, ...]
    acoustic: float
    bias: float
    device_lm: float
    tokens: int  # word pieces of the device's best path with these words (0: not known)
    readings: list[_Reading]
    device: bool = False  # the words the device itself chose
    contacts: int = 0  # contacts of the user's list the words say


def _candidates(lattice: Lattice, lm: CloudLM, max_paths: int,
                contacts: Contacts = NO_CONTACTS,
                device: tuple[str, ...] | None = None) -> list[_Candidate]:
    """`device`: the words the device chose, where the lattice does not mark them."""
    best: dict[tuple[str, ...], tuple[float, float, float, int]] = {}
    chosen: set[tuple[str, ...]] = set() if device is None else {device}
    for path in paths(lattice, limit=max_paths):
        words = tuple(w.word for w in path.words)
        if words not in best or path.score > sum(best[words][:3]):
            best[words] = (path.acoustic, path.bias, path.lm, path.tokens)
        if device is None and path.device:
            chosen.add(words)
    sequences = list(best)
    # Each sequence as words, and with its contacts as the class where it says some.
    readings: list[tuple[int, tuple[str, ...], float]] = [(i, s, 0.0)
                                                           for i, s in enumerate(sequences)]
    said = [0] * len(sequences)
    if contacts:
        for i, words in enumerate(sequences):
            classed, said[i] = class_reading(words, contacts)
            if said[i] and lm.has_contact_class:
                readings.append((i, classed, said[i] * contacts.in_class_logprob))
    parts = lm.component_logprobs([words for _, words, _ in readings])
    by_sequence: list[list[_Reading]] = [[] for _ in sequences]
    for (i, _, in_class), (ngram, neural) in zip(readings, parts, strict=True):
        by_sequence[i].append(_Reading(ngram, neural, in_class))
    return [_Candidate(words, *best[words], by_sequence[i], words in chosen, said[i])
            for i, words in enumerate(sequences)]


def _rank(candidates: Iterable[_Candidate], weights: RescoreWeights) -> list[ScoredPath]:
    scored = []
    for c in candidates:
        lm_score = max(r.score(weights.ngram_lambda) for r in c.readings)
        total = (c.acoustic + c.bias + weights.device_lm_weight * c.device_lm
                 + weights.lm_weight * lm_score + weights.length_bonus * len(c.words)
                 + weights.token_bonus * c.tokens + weights.device_bonus * c.device
                 + weights.contact_bonus * c.contacts)
        scored.append(ScoredPath(c.words, c.acoustic, c.bias, lm_score, total, c.device_lm))
    # Ties go to the better device score, then to the words, so the order is deterministic.
    scored.sort(key=lambda p: (-p.total, -(p.acoustic + p.bias + p.device_lm), p.words))
    return scored


def rescore(lattice: Lattice, lm: CloudLM, options: RescoreOptions = RescoreOptions(),
            weights: RescoreWeights | None = None,
            contacts: Contacts = NO_CONTACTS) -> list[ScoredPath]:
    """The lattice's n-best under the cloud LM, best first; `contacts` fill its name class."""
    ranked = _rank(_candidates(lattice, lm, options.max_paths, contacts),
                   weights or lm.weights)
    return ranked[:options.nbest]


# -- tuning -----------------------------------------------------------------------------

def _names_kept(reference: Sequence[str], words: Sequence[str], listed: Contacts) -> int:
    """How many of the contacts the reference says the words say too."""
    return len(contacts_said(reference, listed) & contacts_said(words, listed))


@dataclass(frozen=True)
class TuningResult:
    weights: RescoreWeights
    wer: float  # rescored with the best weights
    device_wer: float  # the device's own best path
    reference_words: int
    grid_points: int
    # Of the user's contacts the references say, the share each delivers (None: none said).
    name_recall: float | None = None
    device_name_recall: float | None = None


@dataclass(frozen=True)
class _Features:
    """One utterance's candidates as arrays, for scoring a grid point in one step: the
    parts of `_rank`'s total, and each candidate's word errors. Candidates are in `_rank`'s
    tie order (better device score, then words), so argmax picks what `_rank` would."""

    device: np.ndarray  # acoustic + bias
    device_lm: np.ndarray
    lm: np.ndarray  # the cloud LM at this grid's ngram_lambda
    words: np.ndarray
    tokens: np.ndarray
    chosen: np.ndarray  # 1 for the device's own choice
    contacts: np.ndarray
    errors: np.ndarray
    recalled: np.ndarray  # contacts of the reference the candidate says

    @classmethod
    def of(cls, candidates: list[_Candidate], reference: tuple[str, ...], share: float,
           listed: Contacts = NO_CONTACTS) -> _Features:
        ordered = sorted(candidates, key=lambda c: (-(c.acoustic + c.bias + c.device_lm),
                                                    c.words))
        return cls(np.array([c.acoustic + c.bias for c in ordered]),
                   np.array([c.device_lm for c in ordered]),
                   np.array([max(r.score(share) for r in c.readings) for c in ordered]),
                   np.array([len(c.words) for c in ordered], dtype=float),
                   np.array([c.tokens for c in ordered], dtype=float),
                   np.array([c.device for c in ordered], dtype=float),
                   np.array([c.contacts for c in ordered], dtype=float),
                   np.array([word_errors(reference, c.words) for c in ordered]),
                   np.array([_names_kept(reference, c.words, listed) for c in ordered]))

    def best_of(self, grid: np.ndarray) -> np.ndarray:
        """The index of the best candidate under each row of `grid`, whose columns weigh
        (device_lm, lm, words, tokens, chosen, contacts) as `_rank` does."""
        parts = np.stack([self.device_lm, self.lm, self.words, self.tokens, self.chosen,
                          self.contacts])
        totals = self.device[None, :] + grid @ parts
        return np.argmax(totals, axis=1)


def tune(dev: Sequence[DevUtterance], lm: CloudLM, max_paths: int = DEFAULT_MAX_PATHS,
         lm_weights: Sequence[float] = LM_WEIGHT_GRID,
         length_bonuses: Sequence[float] = LENGTH_BONUS_GRID,
         lambdas: Sequence[float] = LAMBDA_GRID,
         device_lm_weights: Sequence[float] = DEVICE_LM_WEIGHT_GRID,
         token_bonuses: Sequence[float] = TOKEN_BONUS_GRID,
         device_bonuses: Sequence[float] = DEVICE_BONUS_GRID,
         contact_bonuses: Sequence[float] = CONTACT_BONUS_GRID,
         keep_recall: bool = True) -> TuningResult:
    """The grid point with the fewest word errors; ties keep the earlier point of the grid
    (the grids start from the weakest LM influence, so a tie never adds LM weight).

    keep_recall: only among the points that deliver at least as many of the user's contacts
    as the device did (the name a user calls is the word that matters most; a point that
    trades one for two function words is no better), or if none does, among those that
    lose the fewest."""
    if not dev:
        raise DevSetError("no dev utterances to tune on")
    prepared = [(_candidates(u.lattice, lm, max_paths, u.contacts, u.device), u.reference,
                 u.contacts) for u in dev]
    reference_words = max(sum(len(r) for _, r, _ in prepared), 1)
    device_errors = device_recalled = spoken = 0
    for u in dev:
        device = u.device
        if device is None:
            best = paths(u.lattice, limit=1)
            device = tuple(w.word for w in best[0].words) if best else ()
        device_errors += word_errors(u.reference, device)
        spoken += len(contacts_said(u.reference, u.contacts))
        device_recalled += _names_kept(u.reference, device, u.contacts)
    if lm.neural is None:
        lambdas = (1.0,)
    best: tuple[tuple[int, int], RescoreWeights] | None = None
    points = 0
    for share in lambdas:
        features = [_Features.of(candidates, reference, share, listed)
                    for candidates, reference, listed in prepared if candidates]
        # Every grid point at once: one (points, candidates) product per utterance.
        points_here = list(itertools.product(device_lm_weights, lm_weights, length_bonuses,
                                             token_bonuses, device_bonuses, contact_bonuses))
        grid = np.array(points_here, dtype=float).reshape(-1, 6)
        errors = np.zeros(len(grid), dtype=np.int64)
        recalled = np.zeros(len(grid), dtype=np.int64)
        for f in features:
            chosen = f.best_of(grid)
            errors += f.errors[chosen]
            recalled += f.recalled[chosen]
        points += len(grid)
        if len(grid):
            lost = (np.maximum(device_recalled - recalled, 0) if keep_recall
                    else np.zeros_like(recalled))
            # The first of equals: the earlier grid point.
            i = int(np.lexsort((np.arange(len(grid)), errors, lost))[0])
            key = (int(lost[i]), int(errors[i]))
            if best is None or key < best[0]:
                device, weight, bonus, token, choice, named = points_here[i]
                best = (key, RescoreWeights(weight, bonus, share, device, token, choice, named))
    assert best is not None
    # What serving ranks, to the word: the figures printed are _rank's, not the grid's
    errors = recalled_total = 0
    for candidates, reference, listed in prepared:
        if candidates:
            words = _rank(candidates, best[1])[0].words
            errors += word_errors(reference, words)
            recalled_total += _names_kept(reference, words, listed)
    return TuningResult(best[1], errors / reference_words, device_errors / reference_words,
                        reference_words, points,
                        recalled_total / spoken if spoken else None,
                        device_recalled / spoken if spoken else None)


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
    t.add_argument("--token-bonuses", type=_floats, default=TOKEN_BONUS_GRID,
                   help="bonuses per word piece of a path (Arc.tokens)")
    t.add_argument("--device-bonuses", type=_floats, default=DEVICE_BONUS_GRID,
                   help="bonuses for the device's own choice (Arc.device)")
    t.add_argument("--contact-bonuses", type=_floats, default=CONTACT_BONUS_GRID,
                   help="bonuses per contact of the user's list a path says")
    t.add_argument("--any-recall", action="store_true",
                   help="take the fewest word errors even where fewer of the user's contacts "
                        "come through than the device heard")
    t.add_argument("--write", action="store_true",
                   help=f"store the best weights in the LM folder ({WEIGHTS_FILE})")
    args = parser.parse_args(argv)
    try:
        lm = CloudLM.load(args.lm)
        dev = load_dev_set(args.dev)
        start = time.perf_counter()
        result = tune(dev, lm, args.max_paths, args.lm_weights, args.length_bonuses,
                      args.lambdas, args.device_lm_weights, args.token_bonuses,
                      args.device_bonuses, args.contact_bonuses, not args.any_recall)
    except (CloudLmError, DevSetError, OSError, ValueError) as exc:
        print(f"rescore: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(dev)} utterances, {result.reference_words} reference words, "
          f"{result.grid_points} grid points in {time.perf_counter() - start:.1f} s")
    print(f"device WER {100 * result.device_wer:.2f}%, rescored WER {100 * result.wer:.2f}% "
          f"with {result.weights}")
    if result.name_recall is not None:
        print(f"contacts said: recall device {100 * result.device_name_recall:.1f}% -> "
              f"rescored {100 * result.name_recall:.1f}%")
    if args.write:
        result.weights.save(args.lm / WEIGHTS_FILE)
        print(f"wrote {args.lm / WEIGHTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
