"""Per-word perplexity of a cloud LM folder on the sentences of manifests.

    python -m edge_asr.simulator.cloud.perplexity --lm models/cloud-lm SET.jsonl [...]

Each word and </s> counts, as in the model card. Words outside the LM's vocabulary are
scored as <unk>, so the share of them is printed beside: a smaller vocabulary lowers
perplexity by calling more words <unk>, and only LMs with near shares compare.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_asr.models.lm_text import read_manifest_sentences
from edge_asr.simulator.cloud.lm import CloudLM, CloudLmError, interpolate


@dataclass
class Perplexity:
    sentences: int
    words: int  # words and </s>
    unknown: float  # share of words outside the vocabulary
    ngram: float
    neural: float | None
    interpolated: float  # at the LM's own ngram_lambda


def per_word(total_logprob: float, sentences: Sequence[Sequence[str]]) -> float:
    """Perplexity per word of sentences whose ln p sums to `total_logprob` (</s> counts)."""
    return math.exp(-total_logprob / sum(len(s) + 1 for s in sentences))


def perplexity(lm: CloudLM, sentences: Sequence[Sequence[str]]) -> Perplexity:
    if not sentences:
        raise ValueError("no sentences to score")
    count = sum(len(s) + 1 for s in sentences)
    unknown = sum(w not in lm.ngram.index for s in sentences for w in s)
    parts = lm.component_logprobs(sentences)
    ngram = per_word(sum(sum(ng) for ng, _ in parts), sentences)
    neural = (None if lm.neural is None
              else per_word(sum(sum(nn) for _, nn in parts), sentences))
    mixed = sum(interpolate(ng, nn, lm.weights.ngram_lambda) for ng, nn in parts)
    return Perplexity(len(sentences), count, unknown / count, ngram, neural,
                      per_word(mixed, sentences))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_asr.simulator.cloud.perplexity",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", type=Path, default=Path("models/cloud-lm"))
    parser.add_argument("manifests", type=Path, nargs="+", metavar="SET.jsonl")
    args = parser.parse_args(argv)
    try:
        lm = CloudLM.load(args.lm)
        print(f"{lm.version}, vocabulary {len(lm.ngram.vocab)}, "
              f"n-gram share {lm.weights.ngram_lambda}")
        for path in args.manifests:
            result = perplexity(lm, read_manifest_sentences([path]))
            neural = "-" if result.neural is None else f"{result.neural:.1f}"
            print(f"{path.name}: {result.sentences} sentences, {result.words} words, "
                  f"unknown {result.unknown:.1%}; perplexity n-gram {result.ngram:.1f}, "
                  f"neural {neural}, interpolated {result.interpolated:.1f}")
    except (CloudLmError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
