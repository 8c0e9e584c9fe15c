"""Grid-searches the cloud's rescoring weights (lm_weight, length_bonus, ngram_lambda,
device_lm_weight, token_bonus, device_bonus, contact_bonus, oov_penalty; rescore.py says
what each does) on dev lattices with reference texts (dev_set.py), among the points that
deliver as many of the user's contacts as the device heard, and stores the result next to
the LM (weights.json).

It minimises the mean over the development sets (one file each) of delivered / device word
errors: the cloud is judged set by set, and summed errors would let the set with the most
errors (real speakers, whose lattices the LM can do little with) choose the weights for
all. With one file that is the lowest WER.

    python -m edge_asr.simulator.cloud.weight_tuning --lm models/cloud-lm \
        --dev dev_voices.jsonl dev_names.jsonl dev_snr10.jsonl speechocean762_dev.jsonl --write
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_asr.daemon.uplink.lattice_paths import paths
from edge_asr.simulator.cloud.dev_set import (
    DevSetError,
    DevUtterance,
    load_dev_set,
    word_errors,
)
from edge_asr.simulator.cloud.lm import WEIGHTS_FILE, CloudLM, CloudLmError, RescoreWeights
from edge_asr.simulator.cloud.name_classes import NO_CONTACTS, Contacts, contacts_said
from edge_asr.simulator.cloud.rescore import (
    DEFAULT_MAX_PATHS,
    Candidate,
    lattice_candidates,
    rank,
)

LM_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0)
LENGTH_BONUS_GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
LAMBDA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
DEVICE_LM_WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
TOKEN_BONUS_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DEVICE_BONUS_GRID = (0.0, 1.0, 2.0, 4.0)
CONTACT_BONUS_GRID = (0.0, 4.0, 8.0, 16.0)
OOV_PENALTY_GRID = (0.0, 2.0, 4.0, 8.0)


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
    per_set: dict[str, SetFigures] = field(default_factory=dict)  # by dev set name


@dataclass(frozen=True)
class SetFigures:
    """One dev set's reference words and WER, the device's and rescored."""

    reference_words: int
    device_wer: float
    wer: float


@dataclass(frozen=True)
class _Features:
    """One utterance's candidates as arrays, for scoring a grid point in one step: the
    parts of `rescore.rank`'s total, and each candidate's word errors. Candidates are in
    its tie order (better device score, then words), so argmax picks what it would."""

    device: np.ndarray  # acoustic + bias
    device_lm: np.ndarray
    lm: np.ndarray  # the cloud LM at this grid's ngram_lambda
    words: np.ndarray
    tokens: np.ndarray
    chosen: np.ndarray  # 1 for the device's own choice
    contacts: np.ndarray
    unknown: np.ndarray
    errors: np.ndarray
    recalled: np.ndarray  # contacts of the reference the candidate says

    @classmethod
    def of(cls, candidates: list[Candidate], reference: tuple[str, ...], share: float,
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
                   np.array([c.unknown for c in ordered], dtype=float),
                   np.array([word_errors(reference, c.words) for c in ordered]),
                   np.array([_names_kept(reference, c.words, listed) for c in ordered]))

    def best_of(self, grid: np.ndarray) -> np.ndarray:
        """The index of the best candidate under each row of `grid`, whose columns weigh
        (device_lm, lm, words, tokens, chosen, contacts, -unknown) as `rescore.rank` does."""
        parts = np.stack([self.device_lm, self.lm, self.words, self.tokens, self.chosen,
                          self.contacts, -self.unknown])
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
         keep_recall: bool = True,
         oov_penalties: Sequence[float] = OOV_PENALTY_GRID) -> TuningResult:
    """The grid point with the lowest mean over the dev sets (`DevUtterance.dev_set`) of
    delivered / device word errors, with a single set the fewest word errors; ties keep the
    earlier point of the grid (the grids start from the weakest LM influence, so a tie never
    adds LM weight).

    keep_recall: only among the points that deliver at least as many of the user's contacts
    as the device did (the name a user calls is the word that matters most; a point that
    trades one for two function words is no better), or if none does, among those that
    lose the fewest."""
    if not dev:
        raise DevSetError("no dev utterances to tune on")
    names = sorted({u.dev_set for u in dev})
    prepared = [_Prepared(lattice_candidates(u.lattice, lm, max_paths, u.contacts, u.device),
                          u.reference, u.contacts, names.index(u.dev_set), _device_words(u))
                for u in dev]
    device_errors = np.zeros(len(names))
    fixed_errors = np.zeros(len(names))  # of lattices without a path: nothing to choose
    reference_words = np.zeros(len(names))
    device_recalled = spoken = 0
    for p in prepared:
        device_errors[p.set] += word_errors(p.reference, p.device)
        reference_words[p.set] += len(p.reference)
        if not p.candidates:
            fixed_errors[p.set] += len(p.reference)
        spoken += len(contacts_said(p.reference, p.contacts))
        device_recalled += _names_kept(p.reference, p.device, p.contacts)
    if lm.neural is None:
        lambdas = (1.0,)
    best: tuple[tuple[int, float], RescoreWeights] | None = None
    points = 0
    for share in lambdas:
        # Every grid point at once: one (points, candidates) product per utterance.
        points_here = list(itertools.product(device_lm_weights, lm_weights, length_bonuses,
                                             token_bonuses, device_bonuses, contact_bonuses,
                                             oov_penalties))
        grid = np.array(points_here, dtype=float).reshape(-1, 7)
        errors = np.repeat(fixed_errors[:, None], len(grid), axis=1)  # (sets, points)
        recalled = np.zeros(len(grid), dtype=np.int64)
        for p in prepared:
            if p.candidates:
                f = _Features.of(p.candidates, p.reference, share, p.contacts)
                chosen = f.best_of(grid)
                errors[p.set] += f.errors[chosen]
                recalled += f.recalled[chosen]
        points += len(grid)
        if len(grid):
            lost = (np.maximum(device_recalled - recalled, 0) if keep_recall
                    else np.zeros_like(recalled))
            ratio = np.mean(errors / np.maximum(device_errors, 1.0)[:, None], axis=0)
            # The first of equals: the earlier grid point.
            i = int(np.lexsort((np.arange(len(grid)), ratio, lost))[0])
            key = (int(lost[i]), float(ratio[i]))
            if best is None or key < best[0]:
                device, weight, bonus, token, choice, named, unknown = points_here[i]
                best = (key, RescoreWeights(weight, bonus, share, device, token, choice, named,
                                            unknown))
    assert best is not None
    # What serving ranks, to the word: the figures printed are rank's, not the grid's
    errors = fixed_errors.copy()
    recalled_total = 0
    for p in prepared:
        if p.candidates:
            words = rank(p.candidates, best[1])[0].words
            errors[p.set] += word_errors(p.reference, words)
            recalled_total += _names_kept(p.reference, words, p.contacts)
    words_all = max(reference_words.sum(), 1.0)
    per_set = {name: SetFigures(int(reference_words[k]),
                                device_errors[k] / max(reference_words[k], 1.0),
                                errors[k] / max(reference_words[k], 1.0))
               for k, name in enumerate(names)}
    return TuningResult(best[1], errors.sum() / words_all, device_errors.sum() / words_all,
                        int(reference_words.sum()), points,
                        recalled_total / spoken if spoken else None,
                        device_recalled / spoken if spoken else None, per_set)


@dataclass(frozen=True)
class _Prepared:
    """One dev utterance, ready for the grid: its candidates and what the device said."""

    candidates: list[Candidate]
    reference: tuple[str, ...]
    contacts: Contacts
    set: int  # index of its dev set
    device: tuple[str, ...]


def _device_words(u: DevUtterance) -> tuple[str, ...]:
    """What the device delivered: as recorded, else the lattice's best path."""
    if u.device is not None:
        return u.device
    best = paths(u.lattice, limit=1)
    return tuple(w.word for w in best[0].words) if best else ()


# -- command line -----------------------------------------------------------------------

def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text!r}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    t = argparse.ArgumentParser(prog="python -m edge_asr.simulator.cloud.weight_tuning",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--lm", type=Path, required=True, help="cloud LM folder")
    t.add_argument("--dev", type=Path, nargs="+", required=True,
                   help="JSONL of {lattice, text}, one file per development set")
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
    t.add_argument("--oov-penalties", type=_floats, default=OOV_PENALTY_GRID,
                   help="penalties per word the cloud LM does not know")
    t.add_argument("--any-recall", action="store_true",
                   help="take the fewest word errors even where fewer of the user's contacts "
                        "come through than the device heard")
    t.add_argument("--write", action="store_true",
                   help=f"store the best weights in the LM folder ({WEIGHTS_FILE})")
    args = t.parse_args(argv)
    try:
        lm = CloudLM.load(args.lm)
        stems = [path.stem for path in args.dev]
        if len(set(stems)) < len(stems):
            raise DevSetError(f"two --dev files of one name: {', '.join(stems)}")
        dev = [u for path in args.dev for u in load_dev_set(path)]
        start = time.perf_counter()
        result = tune(dev, lm, args.max_paths, args.lm_weights, args.length_bonuses,
                      args.lambdas, args.device_lm_weights, args.token_bonuses,
                      args.device_bonuses, args.contact_bonuses, not args.any_recall,
                      args.oov_penalties)
    except (CloudLmError, DevSetError, OSError, ValueError) as exc:
        print(f"rescore: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(dev)} utterances, {result.reference_words} reference words, "
          f"{result.grid_points} grid points in {time.perf_counter() - start:.1f} s")
    print(f"device WER {100 * result.device_wer:.2f}%, rescored WER {100 * result.wer:.2f}% "
          f"with {result.weights}")
    for name, figures in result.per_set.items():
        print(f"  {name:<28} {figures.reference_words:>6} words  device "
              f"{100 * figures.device_wer:6.2f}% -> {100 * figures.wer:6.2f}% "
              f"({figures.wer / max(figures.device_wer, 1e-9):.3f}x)")
    if result.name_recall is not None:
        print(f"contacts said: recall device {100 * result.device_name_recall:.1f}% -> "
              f"rescored {100 * result.name_recall:.1f}%")
    if args.write:
        result.weights.save(args.lm / WEIGHTS_FILE)
        print(f"wrote {args.lm / WEIGHTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
