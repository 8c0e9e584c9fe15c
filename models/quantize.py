"""Post-training int8 quantisation of an exported model, packed for the disk, with its card.

    python -m edge_asr.models.quantize models/rnnt-v1 models/rnnt-v1-int8 [--data DIR]

Weights of every MatMul and Conv become int8 with one scale per output channel
(onnxruntime's dynamic quantisation: activations are quantised on the fly, per batch), which
onnxruntime runs faster than fp32 here and sherpa-onnx loads unchanged. The ONNX files are
then packed (models/packed.py: zero bitmask where it pays, LZMA) and the card records the
bytes on disk, the bytes once decoded and loaded, sparsity, bits per weight, the sha256 of
each decoded file, and WER per evaluation set measured with `edge-asr eval`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from edge_asr.daemon.transducer import sha256_of
from edge_asr.models.card import EVAL_SETS, evaluate_sets, loaded_model_bytes
from edge_asr.models.packed import pack_dir, sparsity

ONNX_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx")
OTHER_FILES = ("tokens.txt", "bpe.model")


def quantize_dir(src: Path, out: Path) -> None:
    """int8 ONNX files of `src` into `out` (plain, not yet packed), tokens and bpe copied."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    for name in ONNX_FILES:
        quantize_dynamic(src / name, out / name, weight_type=QuantType.QInt8, per_channel=True)
    for name in OTHER_FILES:
        shutil.copy2(src / name, out / name)


def _how(base: dict) -> str:
    trained = []
    if base.get("trained_sparsity"):
        trained.append(f"gradual magnitude pruning to {base['trained_sparsity']:.0%}")
    if base.get("trained_qat_bits"):
        trained.append(f"{base['trained_qat_bits']}-bit quantisation-aware training")
    how = ("onnxruntime dynamic quantisation, int8 weights, per-channel scales "
           "(python -m edge_asr.models.quantize)")
    if trained:
        return f"trained with {' and '.join(trained)} (recipe), then {how}"
    return f"post-training: {how}"


def write_card(src: Path, out: Path, data: Path | None, eval_sets: tuple[str, ...],
               workers: int) -> dict:
    """Card of the packed int8 model in `out`; `out` still holds the plain ONNX files."""
    base = json.loads((src / "model_card.json").read_text())
    zeros = total = 0
    for name in ONNX_FILES:
        z, t = sparsity(out / name)
        zeros, total = zeros + z, total + t
    sha = {n: sha256_of(out / n) for n in (*ONNX_FILES, *OTHER_FILES)}
    decoded = {n: (out / n).stat().st_size for n in ONNX_FILES}
    loaded = loaded_model_bytes(out)
    results = evaluate_sets(out, data, eval_sets, workers) if data else {}
    packed = pack_dir(out)  # the .onnx files are replaced by their .onnx.pack
    on_disk = {**packed, **{n: (out / n).stat().st_size for n in OTHER_FILES}}
    card = {
        **{k: base[k] for k in ("architecture", "config", "parameters", "training_data")},
        "training_log": base.get("training_log", []),
        "name": out.name,
        "derived_from": {"model": src.name, "sha256": base.get("sha256", {}),
                         "how": _how(base)},
        "weight_bits": 8,
        "sparsity": round(zeros / total, 4) if total else 0.0,
        "bytes": on_disk,
        "bytes_total": sum(on_disk.values()),
        "bytes_decoded": decoded,
        "bytes_in_memory_loaded": loaded,
        "sha256": sha,
        "evaluation": {"command": "edge-asr eval DATA/manifests/<set>.jsonl --model "
                                  f"models/{out.name}", "sets": results},
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="exported fp32 model folder (with its card)")
    p.add_argument("out", type=Path, help="folder for the int8 model")
    p.add_argument("--data", type=Path, help="the recipe's cache, to measure WER per set")
    p.add_argument("--sets", nargs="*", default=list(EVAL_SETS))
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    quantize_dir(args.src, args.out)
    card = write_card(args.src, args.out, args.data, tuple(args.sets), args.workers)
    print(f"{args.out}: {card['bytes_total']:,} bytes on disk (fp32 source "
          f"{json.loads((args.src / 'model_card.json').read_text())['bytes_total']:,}), "
          f"sparsity {card['sparsity']:.1%}")


if __name__ == "__main__":
    main()
