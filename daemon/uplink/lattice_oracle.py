"""The lattice oracle: the fewest word errors of any path of a lattice against a reference.

What a rescorer could at best deliver from a lattice, so it bounds what the cloud can
gain: beside the 1-best's WER it says whether a better LM would help or whether the
right words were never sent. Edit distance over the DAG, one row per node (nodes are
topologically numbered), the same recursion as Levenshtein's with the best predecessor
taken over all arcs into a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from edge_asr.daemon.uplink.lattice import Lattice

UNREACHED = 1 << 30


def oracle_errors(lattice: Lattice, reference: Sequence[str]) -> int:
    """Minimum substitutions + insertions + deletions of any start -> final path."""
    n = len(reference)
    rows: list[list[int] | None] = [None] * lattice.num_nodes
    rows[0] = list(range(n + 1))
    incoming: list[list] = [[] for _ in range(lattice.num_nodes)]
    for arc in lattice.arcs:
        incoming[arc.dst].append(arc)
    for node in range(1, lattice.num_nodes):
        row = [UNREACHED] * (n + 1)
        for arc in incoming[node]:
            previous = rows[arc.src]
            if previous is None:
                continue
            word = lattice.words[arc.word]
            row[0] = min(row[0], previous[0] + 1)  # the arc's word inserted
            for j in range(1, n + 1):
                row[j] = min(row[j], previous[j] + 1,
                             previous[j - 1] + (word != reference[j - 1]))
        for j in range(1, n + 1):  # reference words deleted at this node
            row[j] = min(row[j], row[j - 1] + 1)
        rows[node] = row
    final = rows[lattice.final_node]
    assert final is not None
    return final[n]


def concatenate(lattices: Sequence[Lattice]) -> Lattice:
    """The lattices one after another (each final node becomes the next one's start):
    the lattice of a clip heard as several utterances."""
    if not lattices:
        raise ValueError("no lattices to concatenate")
    words: dict[str, int] = {}
    arcs = []
    offset = 0
    for lattice in lattices:
        for arc in lattice.arcs:
            word = words.setdefault(lattice.words[arc.word], len(words))
            arcs.append(replace(arc, src=arc.src + offset, dst=arc.dst + offset, word=word))
        offset += lattice.num_nodes - 1
    first = lattices[0]
    return Lattice(first.utterance_id, first.revision, first.speculative, list(words), arcs,
                   offset + 1, first.model_version)
