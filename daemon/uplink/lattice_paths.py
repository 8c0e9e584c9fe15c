"""The best start -> final paths of a word lattice, read back in the device's order."""

from __future__ import annotations

import heapq
import math

from edge_asr.daemon.uplink.lattice import Arc, Lattice, Path, WordArc, validate


def _best_completion(lattice: Lattice, out: list[list[Arc]]) -> list[float]:
    """Best score from each node to the final node (nodes are topologically numbered)."""
    best = [-math.inf] * lattice.num_nodes
    best[-1] = 0.0
    for node in reversed(range(lattice.num_nodes - 1)):
        best[node] = max((arc.score + best[arc.dst] for arc in out[node]), default=-math.inf)
    return best


def _to_path(lattice: Lattice, chain: tuple | None) -> Path:
    arcs: list[Arc] = []
    while chain is not None:
        arc, chain = chain
        arcs.append(arc)
    return Path([WordArc(lattice.words[a.word], a.start_ms / 1000, a.end_ms / 1000,
                         a.acoustic, a.bias, a.lm, a.tokens, a.device)
                 for a in reversed(arcs)])


def paths(lattice: Lattice, limit: int = 100) -> list[Path]:
    """Up to `limit` start -> final paths, best first by the device's score (`Path.score`).

    A* over the DAG with the exact best completion as heuristic: each pop either extends a
    prefix that can still reach the next-best path or finishes it, so the n-best comes out
    in order without enumerating the whole lattice.
    """
    validate(lattice)
    if limit <= 0:
        return []
    out: list[list[Arc]] = [[] for _ in range(lattice.num_nodes)]
    for arc in lattice.arcs:
        out[arc.src].append(arc)
    best = _best_completion(lattice, out)
    # Entries: (-priority, tie-break, node, prefix score, reversed arc chain).
    heap: list[tuple[float, int, int, float, tuple | None]] = [(-best[0], 0, 0, 0.0, None)]
    pushed, found = 1, []
    while heap and len(found) < limit:
        _, _, node, prefix, chain = heapq.heappop(heap)
        if node == lattice.final_node:
            found.append(_to_path(lattice, chain))
            continue
        for arc in out[node]:
            score = prefix + arc.score
            heapq.heappush(heap, (-(score + best[arc.dst]), pushed, arc.dst, score, (arc, chain)))
            pushed += 1
    return found
