"""Post-training int8 quantisation of an exported model, packed for the disk, with its card.

    python -m edge_asr.models.quantize models/rnnt-v1 models/rnnt-v1-int8 [--data DIR]
    python -m edge_asr.models.quantize models/rnnt-v1 OUT --block-4bit 64 [--data DIR]
    python -m edge_asr.models.quantize models/rnnt-v1 OUT --block-8bit 128 [--data DIR]

Weights of every MatMul and Conv become int8 with one scale per output channel
(onnxruntime's dynamic quantisation: activations are quantised on the fly, per batch), which
onnxruntime runs faster than fp32 here and sherpa-onnx loads unchanged. The ONNX files are
then packed (models/packed.py: zero bitmask where it pays, LZMA) and the card records the
bytes on disk, the bytes once decoded and loaded, sparsity, bits per weight, the sha256 of
each decoded file, and WER per evaluation set measured with `edge-asr eval`.
`--block-4bit N` quantises to 4 bits with a scale per N inputs instead, `--block-8bit N`
to 8 bits the same way (models/blockwise.py), which onnxruntime runs faster than dynamic
int8 here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from edge_asr.daemon.endpointing.query_end import QUERY_END_FILE
from edge_asr.daemon.recognition.recognizer import RecognizerConfig
from edge_asr.daemon.recognition.token_lm import LM_FILES
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.daemon.wakeword.verifier import VERIFIER_FILE
from edge_asr.models import tokenizer_slim
from edge_asr.models.blockwise import valid_block
from edge_asr.models.card import EVAL_SETS, evaluate_sets, loaded_model_bytes
from edge_asr.models.packed import SUFFIX, bytes_on_disk, pack_dir, sparsity, weight_bits

ONNX_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx")
OTHER_FILES = ("tokens.txt", "bpe.model")


def quantize_dir(src: Path, out: Path, calibration: dict[str, list[dict]] | None = None) -> None:
    """int8 ONNX files of `src` into `out` (plain, not yet packed), tokens and bpe copied.

    Dynamic quantisation without `calibration`; with it (inputs per file, see
    `calibration_inputs`), static QDQ: activations get fixed uint8 ranges measured on those
    inputs, which spares onnxruntime the per-call range computation of dynamic quantisation.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, items: list[dict]) -> None:
            self.items = iter(items)

        def get_next(self) -> dict | None:
            return next(self.items, None)

    _clear(out)
    for name in ONNX_FILES:
        if calibration is None:
            quantize_dynamic(src / name, out / name, weight_type=QuantType.QInt8,
                             per_channel=True)
        else:
            quantize_static(src / name, out / name, Reader(calibration[name]),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    _copy_other_files(src, out)


def quantize_dir_block(src: Path, out: Path, block_size: int, bits: int = 4) -> None:
    """4- or 8-bit weights with a scale per `block_size` inputs (models/blockwise.py) of
    `src` into `out` (plain, not yet packed), tokens and bpe copied."""
    from edge_asr.models import blockwise

    _clear(out)
    for name in ONNX_FILES:
        blockwise.quantize_file(src / name, out / name, block_size, bits)
    _copy_other_files(src, out)


def _copy_other_files(src: Path, out: Path) -> None:
    """Tokens and tokenizer (slimmed, models/tokenizer_slim.py), and the device LM when `src`
    has one: the same pieces, so the same LM serves every version of the model (the daemon
    decodes with it by default)."""
    shutil.copy2(src / "tokens.txt", out / "tokens.txt")
    # The device spells folded ASCII only: the tokenizer's Unicode table stays behind.
    tokenizer_slim.write_slim(src / "bpe.model", out / "bpe.model")
    for name in LM_FILES:
        (out / name).unlink(missing_ok=True)
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)


# Trained on an earlier encoder's outputs and scores: wrong for any other weights, and the
# new card would not name them, so the runtime would load them unchecked.
TRAINED_FOR_WEIGHTS = (QUERY_END_FILE, VERIFIER_FILE)


def _clear(out: Path) -> None:
    """What an earlier model left in `out` describes other weights: the runtime would refuse
    the new files against the old card, a stale .pack would shadow them, and classifiers
    trained on the old encoder would be loaded for the new one."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / "model_card.json",
                  *(out / (n + SUFFIX) for n in (*ONNX_FILES, *OTHER_FILES))]:
        stale.unlink(missing_ok=True)
    for name in TRAINED_FOR_WEIGHTS:
        if (out / name).is_file():
            (out / name).unlink()
            print(f"removed {out / name}: trained for the weights this folder held before; "
                  "train it again for these (make query-end / make wake-verifier MODEL=...)")


def calibration_inputs(src: Path, manifest: Path, utterances: int = 40,
                       per_file: int = 400) -> dict[str, list[dict]]:
    """What the encoder, decoder and joiner see while the fp32 model decodes the first
    `utterances` of `manifest` (the dev set: never a test set), `per_file` drawn of each."""
    import numpy as np

    from edge_asr.daemon.driver import recognize_samples
    from edge_asr.daemon.manifest import read_manifest
    from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
    from edge_asr.models.dataset import load_audio

    rec = Recognizer(RecognizerConfig(model_dir=src))
    model, seen = rec.model, {f: [] for f in ONNX_FILES}
    encoder, decoder, joiner = model.run_encoder, model.run_decoder, model.run_joiner

    def run_encoder(feats, state):
        seen["encoder.onnx"].append({"x": feats, "h": state[0], "c": state[1]})
        return encoder(feats, state)

    def run_decoder(contexts):
        seen["decoder.onnx"].append({"y": contexts})
        return decoder(contexts)

    def run_joiner(enc, dec):
        seen["joiner.onnx"].append({"encoder_out": enc, "decoder_out": dec})
        return joiner(enc, dec)

    model.run_encoder, model.run_decoder, model.run_joiner = run_encoder, run_decoder, run_joiner
    for entry in read_manifest(manifest)[:utterances]:
        recognize_samples(rec, load_audio(entry.audio_filepath))
    rng = np.random.default_rng(0)
    return {f: [items[i] for i in sorted(rng.choice(len(items), min(per_file, len(items)),
                                                    replace=False))]
            for f, items in seen.items()}


def _how(base: dict, static: bool, block_size: int | None = None, bits: int = 4) -> str:
    trained = []
    if base.get("trained_sparsity"):
        trained.append(f"gradual magnitude pruning to {base['trained_sparsity']:.0%}")
    if base.get("trained_qat_bits"):
        on = (f" on blocks of {base['trained_qat_block']} inputs"
              if base.get("trained_qat_block") else "")
        trained.append(f"{base['trained_qat_bits']}-bit quantisation-aware training{on}")
    if block_size:
        how = (f"{bits}-bit symmetric weights with a half-precision scale per {block_size} "
               "inputs, onnxruntime MatMulNBits / GatherBlockQuantized, int8 arithmetic "
               f"(python -m edge_asr.models.quantize --block-{bits}bit {block_size})")
    elif static:
        how = ("onnxruntime static QDQ quantisation, int8 weights with per-channel scales, "
               "uint8 activations calibrated on dev utterances (python -m "
               "edge_asr.models.quantize --static)")
    else:
        how = ("onnxruntime dynamic quantisation, int8 weights, per-channel scales "
               "(python -m edge_asr.models.quantize)")
    if trained:
        return f"trained with {' and '.join(trained)} (recipe), then {how}"
    return f"post-training: {how}"


def write_card(src: Path, out: Path, data: Path | None, eval_sets: tuple[str, ...],
               workers: int, static: bool = False, block_size: int | None = None,
               bits: int = 4) -> dict:
    """Card of the packed int8 model in `out`; `out` still holds the plain ONNX files."""
    base = json.loads((src / "model_card.json").read_text())
    zeros = total = 0
    for name in ONNX_FILES:
        z, t = sparsity(out / name)
        zeros, total = zeros + z, total + t
    measured_bits = weight_bits([out / name for name in ONNX_FILES])
    sha = {n: sha256_of(out / n) for n in (*ONNX_FILES, *OTHER_FILES, *LM_FILES)
           if (out / n).is_file()}
    decoded = {n: (out / n).stat().st_size for n in ONNX_FILES}
    loaded = loaded_model_bytes(out)
    results = evaluate_sets(out, data, eval_sets, workers) if data else {}
    packed = pack_dir(out)  # the .onnx files and bpe.model are replaced by their .pack
    on_disk = bytes_on_disk(out, (*ONNX_FILES, *OTHER_FILES))
    weights_on_disk = sum(packed[n + SUFFIX] for n in ONNX_FILES)
    card = {
        **{k: base[k] for k in ("architecture", "config", "parameters", "training_data")},
        "training_log": base.get("training_log", []),
        "name": out.name,
        "derived_from": {"model": src.name, "sha256": base.get("sha256", {}),
                         "how": _how(base, static, block_size, bits)},
        "weight_bits": measured_bits,
        "sparsity": round(zeros / total, 4) if total else 0.0,
        # What the weight matrices really cost on disk, packed: the low bits and the zeros.
        "bits_per_weight_on_disk": round(8 * weights_on_disk / total, 3) if total else 0.0,
        "bytes": on_disk,
        "bytes_total": sum(on_disk.values()),
        "bytes_decoded": decoded,
        "bytes_in_memory_loaded": loaded,
        "sha256": sha,
        "device_lm": base.get("device_lm"),  # copied with the model, its bytes apart
        "evaluation": {"command": "edge-asr eval DATA/manifests/<set>.jsonl --model "
                                  f"models/{out.name}", "sets": results,
                       "lm_scale": RecognizerConfig.lm_scale,
                       "token_bonus": RecognizerConfig.token_bonus},
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
    p.add_argument("--static", action="store_true",
                   help="static QDQ, calibrated on DATA/manifests/dev.jsonl (needs --data)")
    block = p.add_mutually_exclusive_group()
    block.add_argument("--block-4bit", type=int, metavar="INPUTS", default=None,
                       help="4-bit weights with a scale per this many inputs (e.g. 64), which "
                            "onnxruntime holds and multiplies as 4-bit (models/blockwise.py)")
    block.add_argument("--block-8bit", type=int, metavar="INPUTS", default=None,
                       help="8-bit weights with a scale per this many inputs (e.g. 128), "
                            "onnxruntime's fused MatMulNBits")
    args = p.parse_args()
    bits, block_size = (4, args.block_4bit) if args.block_4bit is not None else (8, args.block_8bit)
    if block_size is not None and (args.static or not valid_block(block_size)):
        p.error(f"--block-{bits}bit takes a power of two of at least 16 (onnxruntime's "
                "MatMulNBits), and not with --static")
    calibration = None
    if args.static:
        if not args.data:
            p.error("--static calibrates on the recipe's dev set: give --data")
        calibration = calibration_inputs(args.src, args.data / "manifests" / "dev.jsonl")
    if block_size:
        quantize_dir_block(args.src, args.out, block_size, bits)
    else:
        quantize_dir(args.src, args.out, calibration)
    card = write_card(args.src, args.out, args.data, tuple(args.sets), args.workers,
                      args.static, block_size, bits)
    print(f"{args.out}: {card['bytes_total']:,} bytes on disk (fp32 source "
          f"{json.loads((args.src / 'model_card.json').read_text())['bytes_total']:,}), "
          f"sparsity {card['sparsity']:.1%}")


if __name__ == "__main__":
    main()
