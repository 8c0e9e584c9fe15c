"""Lattice rescoring with the cloud LM.

A path's score is

    total = acoustic + bias + device_lm_weight * device_lm + lm_weight * lm
            + length_bonus * words + token_bonus * tokens
            + device_bonus * [the device's answer] + contact_bonus * contacts
            - oov_penalty * unknown

where acoustic and bias are the device's (the bias keeps what the user's own context list
made likely), device_lm is what the device's own LM added (`Arc.lm`), lm is the
interpolated cloud LM's ln p of the words and </s> (the better of its readings with the
user's contacts as a class: name_classes.py), the length bonus offsets the LM's preference
for short hypotheses, and the token bonus the sum's preference for words of few pieces (the
device ranked its n-best by acoustic + bias + device_lm per piece, `Arc.tokens`); the
device bonus keeps the device's own choice unless the LM finds much better, and the contact
bonus keeps the names of the user's list that the device put in (`contacts`: how many the
path says), and the penalty charges each word the cloud LM does not know (`unknown`; a
contact of the list counts as known): the LMs read it as <unk>, the mass of every rare word
together, which makes a non-word the device pieced together look likely.
Rescoring enumerates the lattice's best `max_paths` paths by device score (A* in
`daemon/uplink/lattice_paths.py`), merges paths with the same words (they score the same under the
LM, so the best device score stands for them) and ranks them by total.

The weights are tuned on development lattices by weight_tuning.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_asr.daemon.uplink.lattice import Lattice
from edge_asr.daemon.uplink.lattice_paths import paths
from edge_asr.simulator.cloud.lm import CloudLM, RescoreWeights, interpolate
from edge_asr.simulator.cloud.name_classes import CONTACT, NO_CONTACTS, Contacts, class_reading

DEFAULT_MAX_PATHS = 50
DEFAULT_NBEST = 10


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
class Candidate:
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
    unknown: int = 0  # words the LM does not know, outside the user's contacts


def lattice_candidates(lattice: Lattice, lm: CloudLM, max_paths: int,
                       contacts: Contacts = NO_CONTACTS,
                       device: tuple[str, ...] | None = None) -> list[Candidate]:
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
    unknown = [0] * len(sequences)  # counted on the class reading: a contact is known
    for i, words in enumerate(sequences):
        classed, said[i] = class_reading(words, contacts) if contacts else (words, 0)
        unknown[i] = sum(w != CONTACT and not lm.knows(w) for w in classed)
        if said[i] and lm.has_contact_class:
            readings.append((i, classed, said[i] * contacts.in_class_logprob))
    parts = lm.component_logprobs([words for _, words, _ in readings])
    by_sequence: list[list[_Reading]] = [[] for _ in sequences]
    for (i, _, in_class), (ngram, neural) in zip(readings, parts, strict=True):
        by_sequence[i].append(_Reading(ngram, neural, in_class))
    return [Candidate(words, *best[words], by_sequence[i], words in chosen, said[i],
                       unknown[i]) for i, words in enumerate(sequences)]


def rank(candidates: Iterable[Candidate], weights: RescoreWeights) -> list[ScoredPath]:
    scored = []
    for c in candidates:
        lm_score = max(r.score(weights.ngram_lambda) for r in c.readings)
        total = (c.acoustic + c.bias + weights.device_lm_weight * c.device_lm
                 + weights.lm_weight * lm_score + weights.length_bonus * len(c.words)
                 + weights.token_bonus * c.tokens + weights.device_bonus * c.device
                 + weights.contact_bonus * c.contacts - weights.oov_penalty * c.unknown)
        scored.append(ScoredPath(c.words, c.acoustic, c.bias, lm_score, total, c.device_lm))
    # Ties go to the better device score, then to the words, so the order is deterministic.
    scored.sort(key=lambda p: (-p.total, -(p.acoustic + p.bias + p.device_lm), p.words))
    return scored


def rescore(lattice: Lattice, lm: CloudLM, options: RescoreOptions = RescoreOptions(),
            weights: RescoreWeights | None = None,
            contacts: Contacts = NO_CONTACTS) -> list[ScoredPath]:
    """The lattice's n-best under the cloud LM, best first; `contacts` fill its name class."""
    ranked = rank(lattice_candidates(lattice, lm, options.max_paths, contacts),
                   weights or lm.weights)
    return ranked[:options.nbest]
