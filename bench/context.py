"""What a full biasing context costs to build: nodes, seconds, memory (printed, never asserted).

    python bench/context.py [--model DIR] [--repeats N]

The largest context a user may have (1,000 contacts, 200 devices; the other phrases are
the lexicon's playlist and timer names, fewer than 200), made from the recipe's lexicon
and built with the model's own sentencepiece model, with and without the slot paths of
`context_slot_bonus`. The daemon builds a graph once per distinct context (then it is
cached), so this is paid when a user's context changes, on the worker thread, before the
next utterance.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

from edge_asr.daemon.recognition.context_graph import ContextBuilder
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, RecognizerConfig
from edge_asr.models.corpus_lexicon import load_lexicon


def full_context() -> dict[str, list[str]]:
    """1,000 distinct "first last" contacts, 200 devices, the playlist and timer names."""
    lex = load_lexicon()
    first = [p.display for group in lex.first_names.values() for p in group]
    last = [p.display for group in lex.surnames.values() for p in group]
    contacts = [f"{first[i % len(first)]} {last[(i * 7) % len(last)]}" for i in range(1000)]
    others = dict.fromkeys(p.display for name in ("playlists", "timer_names")
                           for p in lex.lists[name])
    return {"contacts": contacts, "devices": [p.display for p in lex.device_names][:200],
            "phrases": list(others)[:200]}


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
