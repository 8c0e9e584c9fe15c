"""What a full biasing context costs to build: nodes, seconds, memory (printed, never asserted).

    python bench/context.py [--model DIR] [--repeats N]

The largest context DOMAIN.md allows (1,000 contacts, 200 devices, 200 other phrases), made
from the lexicon's person and device names and playlist names, built with the model's own
sentencepiece model, with and without the slot paths of `context_slot_bonus`. The daemon
builds a graph once per distinct context (then it is cached), so this is paid when a user's
context changes, on the worker thread, before the next utterance.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

from edge_asr.daemon.context_graph import ContextBuilder
from edge_asr.daemon.recognizer import DEFAULT_MODEL_DIR, RecognizerConfig

LEXICON = Path(__file__).resolve().parent.parent / "models" / "lexicon"


def _lines(name: str) -> list[str]:
    return [line.strip() for line in (LEXICON / name).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith(("#", "["))]


def full_context() -> dict[str, list[str]]:
    """1,000 distinct "first last" contacts, 200 devices, 200 playlist and timer names."""
    first, last = _lines("first_names.txt"), _lines("surnames.txt")
    contacts = [f"{first[i % len(first)]} {last[(i * 7) % len(last)]}" for i in range(1000)]
    others = list(dict.fromkeys(_lines("playlists.txt") + _lines("timer_names.txt")))
    return {"contacts": contacts, "devices": _lines("devices.txt")[:200],
            "phrases": others[:200]}


def measure(config: RecognizerConfig, context: dict, repeats: int) -> tuple[int, float, float]:
    """(nodes, median build seconds, peak traced MB) of the context's graph."""
    bpe = Path(config.model_dir) / "bpe.model"
    builder = ContextBuilder(bpe, config.context_bonus, config.slot_words,
                             config.context_slot_bonus)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph = builder.build(context)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    builder.build(context)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return graph.num_nodes, statistics.median(times), peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    context = full_context()
    print(f"context: {', '.join(f'{len(v)} {k}' for k, v in context.items())}")
    config = RecognizerConfig(model_dir=args.model)
    for label, cfg in (("without slot paths", replace(config, context_slot_bonus=0.0)),
                       (f"slot bonus {config.context_slot_bonus}", config)):
        nodes, seconds, mb = measure(cfg, context, args.repeats)
        print(f"{label}: {nodes} nodes, build {seconds:.3f} s (median of {args.repeats}), "
              f"peak {mb:.1f} MB traced")


if __name__ == "__main__":
    main()
