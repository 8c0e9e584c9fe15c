"""A word lattice from the beam: hypotheses recombined where they end a word at the same
time, then pruned to what is worth sending (ARCHITECTURE.md, "Lattices on the wire").

`lattice.build_lattice` merges only arcs that are equal in every field, so its paths are
exactly the n-best's: a handful of paths for the cloud to choose from. Here, as in a
decoder's lattice whose states are frames, a node is the end of a word in time: every
hypothesis that ends a word at 1.32 s passes through the same node, so a path may take
its first words from one hypothesis and the rest from another. A word's score covers the
frames up to its end and nothing after (recognition/hypotheses.py), so a joined path's
score counts every frame once. Arcs with the same word and times become one arc holding
the best scores (Viterbi recombination: the decoder's context is two tokens, so the
score of a word at a given time depends little on the words before the last).

Pruning keeps an arc when the best path through it scores within `beam` of the best
path, and then, strongest paths first, as many arcs as fit `bytes_per_second` of the
speech the lattice spans: a lattice must stay far cheaper than the audio it stands for.
The best path always stays.

Scores are the device's (acoustic + bias + device LM); a recombined path's device-LM
score is its words' scores in the contexts they were heard in, an approximation the
cloud's own LM replaces.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edge_asr.daemon.uplink.lattice import (
    MAX_UINT32,
    Arc,
    Lattice,
    LatticeError,
    Path,
    build_lattice,
    to_proto,
    validate,
    wire_float32,
    wire_milliseconds,
)

# A node: (end of the words into it in ms, tie-break); the tie-break is 0 but after a
# word that takes no time, whose end gets a node of its own lest its arc loop.
_Node = tuple[int, int]
START: _Node = (-1, 0)
FINAL: _Node = (MAX_UINT32 + 1, 0)


@dataclass(frozen=True)
class LatticeOptions:
    beam: float = 10.0  # nats below the best path beyond which arcs are pruned
    bytes_per_second: float = 400.0  # wire budget per second of speech the lattice spans
    min_bytes: int = 256  # the budget of a very short utterance
    # False: the n-best as it is (lattice.build_lattice), no recombination, no pruning
    recombine: bool = True

    def __post_init__(self) -> None:
        if not self.beam >= 0 or self.bytes_per_second <= 0 or self.min_bytes < 0:
            raise ValueError(f"beam must be >= 0 and bytes_per_second > 0, got {self.beam} "
                             f"and {self.bytes_per_second}")


# An arc's identity: (src node, dst node, word, start_ms, end_ms).
_Key = tuple[_Node, _Node, str, int, int]


def _recombined_arcs(paths: Sequence[Path]
                     ) -> tuple[dict[_Key, tuple[float, float, float, int]], list[_Key]]:
    """Every word of every path as an arc between boundary nodes; equal arcs keep the best
    (acoustic, bias, lm) by their sum, with its tokens. Also the first path's arcs."""
    arcs: dict[_Key, tuple[float, float, float, int]] = {}
    first: list[_Key] = []
    own_nodes = itertools.count(1)
    for index, path in enumerate(paths):
        src, previous_end = START, 0
        times = [(wire_milliseconds(w.start, f"path {index} word {i} ({w.word!r}) start"),
                  wire_milliseconds(w.end, f"path {index} word {i} ({w.word!r}) end"))
                 for i, w in enumerate(path.words)]
        for position, (word, (start, end)) in enumerate(zip(path.words, times, strict=True)):
            where = f"path {index} word {position} ({word.word!r})"
            if end < start or start < previous_end:
                raise LatticeError(f"{where}: times go backwards ({start} ms .. {end} ms "
                                   f"after a word ending at {previous_end} ms)")
            if position == len(times) - 1:
                dst = FINAL
            else:
                dst = (end, next(own_nodes) if end == start else 0)
            scores = (wire_float32(word.acoustic, f"{where} acoustic"),
                      wire_float32(word.bias, f"{where} bias"),
                      wire_float32(word.lm, f"{where} lm"))
            key = (src, dst, word.word, start, end)
            if index == 0:
                first.append(key)
            if key not in arcs or sum(scores) > sum(arcs[key][:3]):
                arcs[key] = (*scores, word.tokens)
            src, previous_end = dst, end
    return arcs, first


def _as_lattice(arcs: dict[_Key, tuple[float, float, float, int]], answer: set[_Key],
                utterance_id: str, revision: int, speculative: bool, model_version: str
                ) -> Lattice:
    """The lattice, its `answer` arcs marked as the device's."""
    # Nodes in (end, tie-break) order are topological: an arc out of (e1, t1) starts at
    # or after e1 and ends at e2 >= e1, and where e2 == e1 the word took no time and its
    # node's tie-break is fresh, above any before it.
    nodes = sorted({node for key in arcs for node in key[:2]})
    numbers = {node: number for number, node in enumerate(nodes)}
    words: dict[str, int] = {}
    out = []
    for key, (acoustic, bias, lm, tokens) in sorted(
            arcs.items(), key=lambda item: (numbers[item[0][0]], item[0][3], item[0][2],
                                            numbers[item[0][1]], item[0][4])):
        src, dst, word, start, end = key
        out.append(Arc(numbers[src], numbers[dst], words.setdefault(word, len(words)),
                       acoustic, bias, start, end, lm, tokens, key in answer))
    return Lattice(utterance_id, revision, speculative, list(words), out, len(numbers),
                   model_version)


def best_through_arcs(lattice: Lattice) -> list[float]:
    """For each arc, the score of the best start -> final path through it."""
    forward = [-math.inf] * lattice.num_nodes
    backward = [-math.inf] * lattice.num_nodes
    forward[0], backward[-1] = 0.0, 0.0
    by_src = sorted(lattice.arcs, key=lambda a: a.src)
    for arc in by_src:
        forward[arc.dst] = max(forward[arc.dst], forward[arc.src] + arc.score)
    for arc in reversed(sorted(lattice.arcs, key=lambda a: a.dst)):
        backward[arc.src] = max(backward[arc.src], backward[arc.dst] + arc.score)
    return [forward[a.src] + a.score + backward[a.dst] for a in lattice.arcs]


def _keep(lattice: Lattice, keep: Sequence[bool]) -> Lattice:
    """The lattice with only the kept arcs, nodes renumbered in the same order."""
    arcs = [a for a, k in zip(lattice.arcs, keep, strict=True) if k]
    used = sorted({0, lattice.final_node} | {n for a in arcs for n in (a.src, a.dst)})
    renumber = {old: new for new, old in enumerate(used)}
    word_ids: dict[int, int] = {}
    for a in arcs:
        word_ids.setdefault(a.word, len(word_ids))
    words = [lattice.words[old] for old in word_ids]
    return Lattice(lattice.utterance_id, lattice.revision, lattice.speculative, words,
                   [replace(a, src=renumber[a.src], dst=renumber[a.dst], word=word_ids[a.word])
                    for a in arcs],
                   len(used), lattice.model_version)


def byte_budget(lattice: Lattice, options: LatticeOptions) -> int:
    """The wire bytes the lattice may take: per second of the speech it spans."""
    if not lattice.arcs:
        return options.min_bytes
    span_s = (max(a.end_ms for a in lattice.arcs) - min(a.start_ms for a in lattice.arcs)) / 1000
    return max(options.min_bytes, round(options.bytes_per_second * span_s))


def prune(lattice: Lattice, options: LatticeOptions = LatticeOptions()) -> Lattice:
    """Arcs within `beam` of the best path, then the strongest that fit the byte budget;
    the arcs of the device's own answer (`Arc.device`) stay whatever they cost.

    Keeping every arc whose best path scores at least some threshold keeps whole paths
    (every arc of such a path scores the same), so the result stays connected; so does
    adding a whole start -> final path.
    """
    if not lattice.arcs:
        return lattice
    through = best_through_arcs(lattice)
    best = max(through)

    def above(threshold: float) -> list[bool]:
        return [t >= threshold or a.device for t, a in zip(through, lattice.arcs, strict=True)]

    kept = _keep(lattice, above(best - options.beam))
    budget = byte_budget(lattice, options)
    if to_proto(kept).ByteSize() <= budget:
        return kept
    # The threshold as low as the budget allows: binary search over the arcs' scores.
    thresholds = sorted({t for t in through if t >= best - options.beam}, reverse=True)
    low, high = 0, len(thresholds) - 1  # thresholds[0] (the best path alone) always stays
    while low < high:
        middle = (low + high + 1) // 2
        trial = _keep(lattice, above(thresholds[middle]))
        if to_proto(trial).ByteSize() <= budget:
            low = middle
        else:
            high = middle - 1
    return _keep(lattice, above(thresholds[low]))


def build_word_lattice(paths: Sequence[Path], utterance_id: str, revision: int,
                       speculative: bool, model_version: str = "",
                       options: LatticeOptions = LatticeOptions()) -> Lattice:
    """The beam's hypotheses (best first) recombined at shared word boundaries and pruned.

    As in `build_lattice`, an empty best hypothesis makes the empty one-node lattice and
    an empty hypothesis lower down is dropped.
    """
    if not options.recombine or not paths or not paths[0].words:
        return build_lattice(paths, utterance_id, revision, speculative, model_version)
    arcs, first = _recombined_arcs([p for p in paths if p.words])
    # The device ranks by score per token, the pruning by the sum: the device's answer
    # (paths[0]) is marked, so that it survives the pruning and the cloud knows it.
    lattice = _as_lattice(arcs, set(first), utterance_id, revision, speculative,
                          model_version)
    lattice = prune(lattice, options)
    validate(lattice)
    return lattice
