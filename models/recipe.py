"""The whole recipe, from nothing to a shipped model: `make train` runs this.

    python -m edge_asr.models.recipe --data ~/.cache/edge-asr --out models/rnnt-v1

Stages (each skipped when its output exists, so an interrupted run picks up where it was):
  1 corpus      sentences and name lists            DATA/corpus
  2 tokenizer   sentencepiece units                  DATA/lang
  3 audio       TTS + evaluation conditions          DATA/audio, DATA/manifests;
                recorded speech (--real PATH ...)    split by whole speakers (real_speech.py)
  4 cmvn        global feature statistics           DATA/lang/cmvn.pt
  5 train       resumable training                  DATA/exp
  6 export      ONNX in sherpa-onnx lstm layout,     OUT/
                the device LM (models/device_lm.py)
  7 evaluate    edge-asr eval on every test set      OUT/model_card.json
  8 bundle      a few held-out clips for the tests   tests/data (skipped if present)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from edge_asr.daemon.frontend.features import compute_fbank
from edge_asr.models import blockwise, prepare, real_speech
from edge_asr.models.augment import Augmenter
from edge_asr.models.dataset import load_audio
from edge_asr.models.distill import MODEL_SIZES
from edge_asr.models.model import load_model
from edge_asr.models.tokenizer import train_tokenizer
from edge_asr.models.train import train
from edge_asr.models.train_config import TrainConfig

# A restart of the cosine schedule from a trained model: lower than from scratch, so the
# first steps do not undo what the model knows.
CONTINUE_PEAK_LR = 6e-4
# ... and its fresh CTC head learns alone for its first steps (train_config.py says why).
CONTINUE_CTC_HEAD_STEPS = 300
TESTS_DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def stage_corpus(data: Path, n_train: int) -> None:
    out = data / "corpus"
    if (out / "train.jsonl").exists():
        return
    from edge_asr.models import corpus

    splits = corpus.build_corpus(seed=0, n_train=n_train)
    corpus.write_corpus(splits, out)
    print(f"corpus: {len(splits.train)} train, {len(splits.dev)} dev, "
          f"{len(splits.test_sentences)} held-out sentences, {len(splits.test_names)} "
          f"held-out-name sentences")


def stage_tokenizer(data: Path, vocab_size: int, init_from: Path | None = None) -> None:
    """The sentencepiece units: a model to continue brings its own (its ids are what it
    learnt; training checks they match), a model from nothing trains them on the corpus."""
    lang = data / "lang"
    if (lang / "bpe.model").exists():
        return
    if init_from is not None and (init_from / "bpe.model").is_file():
        lang.mkdir(parents=True, exist_ok=True)
        for name in ("bpe.model", "tokens.txt"):
            shutil.copyfile(init_from / name, lang / name)
        return
    sentences = [u["text"] for u in prepare.load_split(data / "corpus", "train")]
    train_tokenizer(sentences, lang, vocab_size)


def stage_cmvn(data: Path, n: int = 400) -> None:
    """Mean and inverse std of the features over augmented training clips."""
    path = data / "lang" / "cmvn.pt"
    if path.exists():
        return
    rows = [json.loads(line) for line in (data / "manifests" / "train.jsonl").open()]
    rng = np.random.default_rng(0)
    aug = Augmenter(seed=0)
    feats = []
    for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False):
        audio = load_audio(str(data / "manifests" / rows[i]["audio_filepath"]))
        feats.append(compute_fbank(aug(audio, rng)))
    allf = np.concatenate(feats)
    mean, std = allf.mean(0), allf.std(0)
    torch.save({"mean": torch.from_numpy(mean), "istd": torch.from_numpy(1.0 / (std + 1e-5))},
               path)


def real_training_sets(data: Path, names: list[str], repeat: int) -> list[str]:
    """The recorded training sets, each named `repeat` times (heard that often an epoch) if
    it has many speakers; one of a few speakers is named once, lest the model learn them."""
    out = []
    for name in names:
        rows = (data / "manifests" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        speakers = {json.loads(row).get("speaker") for row in rows if row.strip()}
        out += [name] * (repeat if len(speakers) >= real_speech.MIN_SPEAKERS_TO_SPLIT else 1)
    return out


def write_mixed_dev(data: Path, real_devs: list[str], n_synthetic: int = 150) -> Path:
    """dev_mixed: the recorded corpora's dev speakers and `n_synthetic` utterances of
    dev_voices (dev without --more-voices), so that choosing weights for people does not
    quietly give up the synthetic domain (names, requests)."""
    manifests = data / "manifests"
    synthetic = "dev_voices" if (manifests / "dev_voices.jsonl").exists() else "dev"
    rows = []
    for name, limit in [*((n, None) for n in real_devs), (synthetic, n_synthetic)]:
        lines = [line for line in (manifests / f"{name}.jsonl").read_text(
            encoding="utf-8").splitlines() if line.strip()]
        rows += lines[:limit]
    out = manifests / "dev_mixed.jsonl"
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="cache folder (outside git)")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--n-train", type=int, default=24000, help="training utterances to render")
    p.add_argument("--n-corpus", type=int, default=40000, help="training sentences to generate")
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=TrainConfig.threads,
                   help="training threads; 1 leaves a core free (torch's two threads slow "
                        "down tenfold when anything else needs a core)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue training this exported model folder (e.g. models/rnnt-v1) "
                        "instead of starting from random weights")
    p.add_argument("--ctc-head-steps", type=int, default=CONTINUE_CTC_HEAD_STEPS, metavar="N",
                   help="with --init-from: steps in which only the fresh CTC head learns")
    p.add_argument("--keep-device-lm", action="store_true",
                   help="with --init-from: the export keeps that model's device LM instead of "
                        "training one (so that a comparison is of the acoustic models)")
    p.add_argument("--grow-layers", type=int, default=0, metavar="N",
                   help="with --init-from: N more encoder layers on top, starting silent "
                        "(models/grow.py)")
    p.add_argument("--peak-lr", type=float, default=None,
                   help=f"peak learning rate (default {TrainConfig.peak_lr}; "
                        f"{CONTINUE_PEAK_LR} with --init-from)")
    p.add_argument("--exp", type=Path, default=None,
                   help="training folder (checkpoints, log); default DATA/exp")
    p.add_argument("--seed", type=int, default=TrainConfig.seed,
                   help="seeds batch order, augmentation and SpecAugment: sibling runs from "
                        "one start with different seeds can be averaged (models/average.py)")
    p.add_argument("--sparsity", type=float, default=0.0,
                   help="prune this share of the weights on a cubic schedule (e.g. 0.5, 0.7)")
    p.add_argument("--qat-bits", type=int, default=0, choices=[0, 4, 8],
                   help="quantisation-aware training at this many bits per weight")
    p.add_argument("--qat-block", type=int, default=0, metavar="INPUTS",
                   help="with --qat-bits 4 or 8: train on the grid of a scale per this many "
                        "inputs (models/blockwise.py; export with quantize --block-4bit "
                        "INPUTS or --block-8bit INPUTS)")
    p.add_argument("--model-size", choices=["student", "teacher"], default="student",
                   help="teacher: the 5x larger model that labels speech for distillation "
                        "(models/distill.py)")
    p.add_argument("--extra-train", nargs="*", default=[],
                   help="more training manifests in DATA/manifests by name, e.g. pseudo "
                        "(speech the teacher transcribed)")
    p.add_argument("--more-voices", type=int, default=0, metavar="N",
                   help="also render N more training utterances by more and other voices "
                        "(train_voices2, for --extra-train) and the held-out-voice tuning set "
                        "dev_voices (needs festival)")
    p.add_argument("--random-voices", type=int, default=0, metavar="N",
                   help="also render N training utterances by made-up espeak-ng speakers "
                        "(train_voices3, for --extra-train)")
    p.add_argument("--other-engines", type=int, default=0, metavar="N",
                   help="also render N training utterances by MBROLA, RHVoice and Pico voices "
                        "(train_voices4, for --extra-train; Debian contrib and non-free "
                        "packages, which `make` installs)")
    p.add_argument("--dev-set", default="dev",
                   help="the set in DATA/manifests that is scored each epoch and picks the "
                        "final weights (dev_voices: speakers training never hears; "
                        "dev_mixed: with --real, each corpus's dev speakers and dev_voices)")
    p.add_argument("--real", type=Path, nargs="*", default=[], metavar="PATH",
                   help="recorded speech corpora in their published layouts (Kaldi data "
                        "directories, speechocean762, LibriSpeech, Common Voice, NeMo or "
                        "Lhotse manifests): each is split by whole speakers into NAME_train, "
                        "NAME_dev, test_NAME and test_NAME_babble10, and NAME_train joins "
                        "the training sets")
    p.add_argument("--vtlp-prob", type=float, default=0.0,
                   help="share of training items heard as a speaker with a vocal tract up to "
                        "10%% longer or shorter (models/vtlp.py: the filterbank warped)")
    p.add_argument("--concat-prob", type=float, default=0.0,
                   help="share of training items that are two utterances back to back, so "
                        "that speech after a sentence's end is still heard")
    p.add_argument("--real-repeat", type=int, default=3,
                   help="times each recorded corpus of many speakers is heard per epoch (a "
                        "few hours of people against many hours of synthesis); a corpus of "
                        "one or a few speakers is heard once")
    p.add_argument("--eval-sets", nargs="*", default=None,
                   help="evaluation sets for the model card (default: the five test sets; "
                        "the flag alone: none, e.g. for a model that only feeds "
                        "models/quantize.py)")
    p.add_argument("--until", choices=["corpus", "tokenizer", "audio", "cmvn", "train", "export",
                                        "evaluate", "bundle"], default="bundle")
    args = p.parse_args()
    # Refused before any stage runs (rendering the audio alone takes a quarter of an hour).
    unknown = sorted(set(args.eval_sets or ()) - set(prepare.RENDERED_SETS))
    if unknown:  # found out only after training otherwise
        p.error(f"--eval-sets: unknown set(s) {', '.join(unknown)}; the recipe renders "
                f"{', '.join(prepare.RENDERED_SETS)} (give --eval-sets alone for none)")
    # Sets the audio stage renders itself are not missing; the rest must be there already.
    rendered_later = set(prepare.RENDERED_SETS) | (
        set(prepare.MORE_VOICES_SETS) if args.more_voices else set()) | (
        set(prepare.RANDOM_VOICES_SETS) if args.random_voices else set()) | (
        set(prepare.OTHER_ENGINES_SETS) if args.other_engines else set())
    real_sets = [f"{real_speech.corpus_name(path)}_train" for path in args.real]
    rendered_later |= set(real_sets) | ({"dev_mixed"} if args.real else set())
    for flag, names in (("--extra-train", args.extra_train), ("--dev-set", [args.dev_set])):
        for name in names:  # refused before the long stages
            if name not in rendered_later and not (args.data / "manifests" /
                                                   f"{name}.jsonl").is_file():
                p.error(f"{flag} {name}: no {args.data / 'manifests' / name}.jsonl (the "
                        "recipe renders train_voices2 and dev_voices with --more-voices N, "
                        "train_voices3 with --random-voices N; "
                        "python -m edge_asr.models.distill writes pseudo.jsonl)")
    if args.qat_block and (args.qat_bits not in blockwise.BITS
                           or not blockwise.valid_block(args.qat_block)):
        p.error("--qat-block takes a power of two of at least 16, with --qat-bits 4 or 8")
    if args.keep_device_lm and not args.init_from:
        p.error("--keep-device-lm keeps the LM of the --init-from model: give it --init-from")
    if args.grow_layers and not args.init_from:
        p.error("--grow-layers grows a trained model: give it --init-from")
    if args.init_from and not (args.init_from / "encoder.onnx").exists():
        p.error(f"--init-from {args.init_from}: no encoder.onnx there (the fp32 export is "
                f"needed, not a packed int8 folder)")
    started = time.monotonic()
    order = ["corpus", "tokenizer", "audio", "cmvn", "train", "export", "evaluate", "bundle"]
    last = order.index(args.until)
    exp = args.exp or args.data / "exp"

    def step(name: str) -> bool:
        print(f"== stage {name} ({(time.monotonic() - started) / 60:.1f} min)", flush=True)
        return order.index(name) <= last

    if step("corpus"):
        stage_corpus(args.data, args.n_corpus)
    if step("tokenizer"):
        stage_tokenizer(args.data, args.vocab_size, args.init_from)
    if step("audio"):
        prepare.prepare_all(args.data, args.n_train, workers=args.workers)
        if args.more_voices:
            prepare.prepare_more_voices(args.data, args.more_voices, args.n_train, args.workers)
        if args.random_voices:
            prepare.prepare_random_voices(args.data, args.random_voices, args.workers)
        if args.other_engines:
            prepare.prepare_other_engines(args.data, args.other_engines, args.workers)
        for path in args.real:
            real_speech.prepare_corpus(path, args.data)
        if args.real:
            write_mixed_dev(args.data, [f"{real_speech.corpus_name(p)}_dev" for p in args.real
                                        if (args.data / "manifests" /
                                            f"{real_speech.corpus_name(p)}_dev.jsonl").exists()])
    if step("cmvn"):
        stage_cmvn(args.data)
    if step("train"):
        stats = torch.load(args.data / "lang" / "cmvn.pt")
        cfg = TrainConfig(epochs=args.epochs, threads=args.threads, seed=args.seed,
                          extra_train=list(args.extra_train)
                          + real_training_sets(args.data, real_sets, args.real_repeat),
                          dev_set=args.dev_set, concat_prob=args.concat_prob,
                          vtlp_prob=args.vtlp_prob,
                          model=dataclasses.replace(MODEL_SIZES[args.model_size]))
        if args.init_from:
            cfg.init_from = str(args.init_from)
            cfg.ctc_only_steps = 0
            cfg.warmup_augment_epochs = 0
            cfg.peak_lr = CONTINUE_PEAK_LR
            cfg.grow_layers = args.grow_layers
            cfg.ctc_head_steps = args.ctc_head_steps
        if args.peak_lr:
            cfg.peak_lr = args.peak_lr
        cfg.sparsity, cfg.qat_bits, cfg.qat_block = args.sparsity, args.qat_bits, args.qat_block
        final = train(args.data, exp, cfg, stats["mean"], stats["istd"])
    if step("export"):
        from edge_asr.models.export import export_onnx

        final = exp / "final.pt"
        export_onnx(load_model(final), args.data / "lang" / "tokens.txt", args.out)
        # A card left from an earlier model describes other files (the runtime would refuse
        # them); the evaluate stage writes the new one.
        (args.out / "model_card.json").unlink(missing_ok=True)
        from edge_asr.models.device_lm import build_device_lm, copy_device_lm

        # The evaluation decodes with the LM (the recognizer's default), so it comes first.
        if args.keep_device_lm:
            lm = copy_device_lm(args.init_from, args.out)
        else:
            lm = build_device_lm(args.out, args.data, transcripts=[
                args.data / "manifests" / f"{name}.jsonl" for name in real_sets])
        (exp / "device_lm.json").write_text(json.dumps(lm, indent=2) + "\n")
    if step("evaluate"):
        from edge_asr.models.card import EVAL_SETS, write_model_card

        sets = EVAL_SETS if args.eval_sets is None else tuple(args.eval_sets)
        write_model_card(args.out, args.data, exp, sets)
    if step("bundle") and not (TESTS_DATA / "manifest.jsonl").exists():
        prepare.bundle_test_clips(args.data, TESTS_DATA)
    print(f"recipe done in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
