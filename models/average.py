"""Average the final weights of training runs that continued one from another.

Each continuation (`recipe --init-from`) restarts the learning rate, climbs out of where
the last run ended and settles somewhere near it, so the final weights of consecutive runs
lie around the same valley. Their average can sit lower in it than any of them: stochastic
weight averaging over a cyclical schedule (Izmailov et al. 2018), or icefall's averaging
of epoch checkpoints.

    python -m edge_asr.models.average --data D --exp D/exp-c13 --earlier D/exp-c12 D/exp-c11 \\
        --out-exp D/exp-c13avg

Scores on dev (greedy, as training does) the last run's weights alone, then averaged with
the runs before it, newest first, one more at a time; keeps whichever scores best (the
last run alone, unless an average is better) and writes it as OUT-EXP/final.pt beside the
last run's config, log and lineage, as any run's. With `--out MODEL_DIR` it also exports
them there and writes their model card (which evaluates every set, as the recipe's
evaluate stage does). Full-precision dense runs only: an average of pruned or
quantisation-aware weights keeps neither the zeros nor the grid.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from edge_asr.models.dataset import SpeechDataset
from edge_asr.models.tokenizer import Tokenizer
from edge_asr.models.train import dev_wer, load_model, model_from_saved

RUN_FILES = ("config.json", "log.jsonl", "lineage.json")


def load_final(exp: Path) -> dict:
    saved = torch.load(exp / "final.pt", map_location="cpu", weights_only=False)
    cfg = saved["config"]
    if cfg.get("sparsity") or cfg.get("qat_bits"):
        raise ValueError(f"{exp}: a pruned or quantisation-aware run ({cfg.get('sparsity')} "
                         f"sparsity, {cfg.get('qat_bits')} bits); averaging would undo it")
    return saved


def mean_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes."""
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError("the runs are of different models (keys or shapes differ)")
    out = {}
    for k in keys:
        if states[0][k].is_floating_point():
            out[k] = torch.stack([s[k] for s in states]).mean(0)
        else:  # counters and the like: the last run's
            out[k] = states[0][k].clone()
    return out


def choose_average(saved: Sequence[dict], score: Callable[[dict], float]
                   ) -> tuple[int, float, list[float], dict[str, torch.Tensor]]:
    """How many runs (newest first, at least the newest) to average, by the lowest score;
    ties keep fewer. Returns (count, its score, the score of every count tried, its
    weights)."""
    scores: list[float] = []
    best: tuple[int, float, dict[str, torch.Tensor]] | None = None
    for n in range(1, len(saved) + 1):
        weights = saved[0]["model"] if n == 1 else mean_weights([s["model"] for s in saved[:n]])
        scores.append(score(weights))
        if best is None or scores[-1] < best[1]:
            best = (n, scores[-1], weights)
    assert best is not None  # at least the newest run is scored
    return best[0], best[1], scores, best[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--exp", type=Path, required=True, help="the last run")
    p.add_argument("--earlier", type=Path, nargs="+", required=True,
                   help="the runs it continued from, newest first")
    p.add_argument("--out-exp", type=Path, required=True)
    p.add_argument("--out", type=Path, help="export the kept weights here, with a card")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runs = [args.exp, *args.earlier]
    saved = [load_final(e) for e in runs]
    lang = args.data / "lang"
    tok = Tokenizer(lang / "bpe.model")
    dev = SpeechDataset(args.data / "manifests" / "dev.jsonl", lang / "bpe.model", False)

    def score(weights: dict) -> float:
        model = model_from_saved({"config": saved[0]["config"], "model": weights})
        return dev_wer(model, dev, tok)

    count, wer, scores, weights = choose_average(saved, score)
    for n, s in enumerate(scores, 1):
        print(f"dev WER, the last {n} run(s) averaged: {s:.4f}")
    print(f"keeping {count} run(s): {', '.join(str(r) for r in runs[:count])}")
    args.out_exp.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (args.exp / name).exists():
            shutil.copy(args.exp / name, args.out_exp / name)
    torch.save({**saved[0], "model": weights, "dev_wer": wer,
                "averaged_runs": [str(r) for r in runs[:count]]}, args.out_exp / "final.pt")
    if args.out:
        from edge_asr.models.card import write_model_card
        from edge_asr.models.export import export_onnx

        export_onnx(load_model(args.out_exp / "final.pt"), lang / "tokens.txt", args.out)
        (args.out / "model_card.json").unlink(missing_ok=True)  # it described other files
        write_model_card(args.out, args.data, args.out_exp)


if __name__ == "__main__":
    main()
