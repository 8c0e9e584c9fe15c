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
evaluate stage does).

Pruned or quantisation-aware runs average too, when all share their sparsity and bits:
the mean of sparse weights on a grid is neither, so the average takes the newest run's
zeros (the masks only grow from run to run) and is snapped back onto its grid, as
`final_weights.choose_final` does with the average of a run's last steps. On the 4-bit,
30% sparse runs dev went from 13.43% for the newest alone to 13.03% averaged with the run
before, yet the test sets did not follow (beam 4, int8 export: test_voices 16.22 ->
16.61%, test_sentences 11.85 -> 12.50%, test_band8k 20.37 -> 21.02%, test_snr10 19.81%
both), so the 4-bit model that ships is still the newest run alone. rnnt-v3 averaged with its
one-epoch continuation (rnnt-v4) scored as rnnt-v3 on held-out people (RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from edge_asr.models import compress
from edge_asr.models.dataset import SpeechDataset
from edge_asr.models.greedy_decode import dev_wer
from edge_asr.models.model import load_model, model_from_saved
from edge_asr.models.tokenizer import Tokenizer
from edge_asr.models.warm_start import load_from_onnx

RUN_FILES = ("config.json", "log.jsonl", "lineage.json", "device_lm.json")


def load_run(run: Path) -> dict:
    """A training folder's final.pt, or an exported fp32 model folder (models/rnnt-v1) read
    back from its ONNX files: the committed model outlives the cache its run was in."""
    if (run / "encoder.onnx").is_file() and not (run / "final.pt").is_file():
        model = load_from_onnx(run)
        return {"config": {"model": asdict(model.cfg), **exported_compression(run)},
                "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if not (run / "final.pt").is_file():
        raise FileNotFoundError(f"{run}: neither a training folder (final.pt) nor an exported "
                                "fp32 model folder (encoder.onnx)")
    return torch.load(run / "final.pt", map_location="cpu", weights_only=False)


def exported_compression(model_dir: Path) -> dict:
    """How an exported model's run was compressed, from its card (dense fp32 without one):
    a 4-bit QAT run's export holds weights on its grid and averages with its continuations."""
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return {"sparsity": card.get("trained_sparsity") or 0.0,
            "qat_bits": card.get("trained_qat_bits") or 0,
            "qat_block": card.get("trained_qat_block") or 0}


def load_finals(runs: Sequence[Path]) -> list[dict]:
    """The runs' final weights, refused unless all were compressed alike."""
    saved = [load_run(e) for e in runs]
    kinds = {(s["config"].get("sparsity") or 0.0, s["config"].get("qat_bits") or 0,
              s["config"].get("qat_block") or 0)
             for s in saved}
    if len(kinds) > 1:
        raise ValueError("the runs were compressed differently (sparsity, bits, block): "
                         + ", ".join(map(str, sorted(kinds))))
    return saved


def recompress(weights: dict[str, torch.Tensor], newest: dict, config: dict
               ) -> dict[str, torch.Tensor]:
    """Averaged weights put back the way a pruned / QAT run ships them: the newest run's
    zeros, and on its grid. Dense full-precision runs pass through unchanged."""
    bits = config.get("qat_bits") or 0
    if not config.get("sparsity") and not bits:
        return weights
    model = model_from_saved({"config": config, "model": weights})
    with torch.no_grad():
        for name, p in compress.compressible_weights(model).items():
            if config.get("sparsity"):
                p.masked_fill_(newest[name] == 0, 0.0)  # +0.0: a product would leave -0.0
        if bits:
            compress.snap_to_grid(model, bits, config.get("qat_block") or 0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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


def choose_average(saved: Sequence[dict], score: Callable[[dict], float],
                   finish: Callable[[dict], dict] = lambda w: w
                   ) -> tuple[int, float, list[float], dict[str, torch.Tensor]]:
    """How many runs (newest first, at least the newest) to average, by the lowest score;
    ties keep fewer. `finish` turns a mean into weights the run could ship (`recompress`).
    Returns (count, its score, the score of every count tried, its weights)."""
    scores: list[float] = []
    best: tuple[int, float, dict[str, torch.Tensor]] | None = None
    for n in range(1, len(saved) + 1):
        weights = (saved[0]["model"] if n == 1
                   else finish(mean_weights([s["model"] for s in saved[:n]])))
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
                   help="the runs it continued from, newest first, or sibling runs from the "
                        "same start (recipe --seed); an exported fp32 model folder stands "
                        "for its run")
    p.add_argument("--out-exp", type=Path, required=True)
    p.add_argument("--out", type=Path, help="export the kept weights here, with a card")
    p.add_argument("--lm-from", type=Path,
                   help="with --out: the model folder whose device LM the export keeps "
                        "unchanged (the runs' own, as the recipe's --keep-device-lm does)")
    p.add_argument("--eval-sets", nargs="*", default=None,
                   help="sets the card evaluates (default: the five test sets; the flag "
                        "alone: none, for weights that only feed models/quantize.py)")
    p.add_argument("--dev-set", default="dev",
                   help="the set in DATA/manifests the averages are scored on (dev_voices: "
                        "speakers training never hears)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.lm_from and not args.out:
        p.error("--lm-from names the device LM of the export: give --out too")
    torch.set_num_threads(args.threads)
    runs = [args.exp, *args.earlier]
    saved = load_finals(runs)
    lang = args.data / "lang"
    tok = Tokenizer(lang / "bpe.model")
    dev = SpeechDataset(args.data / "manifests" / f"{args.dev_set}.jsonl", lang / "bpe.model",
                        False)

    def score(weights: dict) -> float:
        model = model_from_saved({"config": saved[0]["config"], "model": weights})
        return dev_wer(model, dev, tok)

    config = saved[0]["config"]
    count, wer, scores, weights = choose_average(
        saved, score, lambda w: recompress(w, saved[0]["model"], config))
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
        from edge_asr.models.card import EVAL_SETS, write_model_card
        from edge_asr.models.export import export_onnx

        export_onnx(load_model(args.out_exp / "final.pt"), lang / "tokens.txt", args.out)
        (args.out / "model_card.json").unlink(missing_ok=True)  # it described other files
        if args.lm_from:  # before the card: its evaluation decodes with the LM
            from edge_asr.models.device_lm import copy_device_lm

            lm = copy_device_lm(args.lm_from, args.out)
            (args.out_exp / "device_lm.json").write_text(json.dumps(lm, indent=2) + "\n")
        sets = EVAL_SETS if args.eval_sets is None else tuple(args.eval_sets)
        write_model_card(args.out, args.data, args.out_exp, sets)


if __name__ == "__main__":
    main()
