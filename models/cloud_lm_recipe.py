"""Builds the cloud LM: a larger text corpus, the n-gram and the neural LM, a model card.

    python -m edge_asr.models.cloud_lm_recipe --data ~/.cache/edge-asr/cloud_lm \
        --out models/cloud-lm

1. Corpus: the device's corpus generator (`edge_asr.models.corpus`) with the device's own
   name split, drawing several times as many training sentences from another random
   stream. The device's dev and test sentences are excluded, and held-out names cannot
   occur (only the training contact pool is used), so the device's evaluation stays fair
   for the cloud too. A share of the person names is replaced by <unk>, so that both LMs
   learn where an unknown name goes ("call <unk> <unk> on her mobile"): most names in real
   use were never in any corpus (ARCHITECTURE.md, "The speech domain").
   Transcripts of recorded training speech (`--text`, the acoustic recipe's NAME_train
   manifests: sentences of training speakers only) are added `--text-repeat` times, less
   every sentence of the sets given with `--exclude` (the dev and held-out sets, whose
   speakers may read the same sentences), so the LM knows how people's read speech goes.
   Public-domain prose (`--public-text`: the World English Bible that Debian's
   sword-text-web ships, which `make cloud-lm` extracts, and Common Voice's CC0 sentences
   of everyday English) adds general English, less `--exclude`'s sentences too: its
   `--public-vocabulary` most frequent words join the vocabulary, the rest become <unk>.
2. The n-gram LM (interpolated modified Kneser-Ney; 3- and 4-grams seen once are cut,
   which halves the file for +0.1% dev perplexity) -> ngram.arpa.gz.
3. The LSTM LM (PyTorch, one thread, a CPU-time budget) -> fp32 ONNX in the data folder,
   quantised to int8 weights (a quarter of the size, twice as fast, dev perplexity +0.05%)
   -> neural.onnx + vocab.txt. Together the folder stays small enough to commit.
4. Perplexities on the device's dev sentences (and on its held-out-name sentences) of each
   LM and of their interpolation, and of the fp32 graph for comparison; the best
   interpolation weight goes into weights.json (LM weight and length bonus stay at their
   defaults until `rescore tune` sets them from lattices).
5. model_card.json: files with bytes and sha256, parameters, corpus, perplexities, timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_asr.daemon.recognition.ngram_arpa import load_arpa, save_arpa
from edge_asr.daemon.recognition.ngram_lm import UNK, NgramLM
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.models.corpus import SentenceGenerator, Utterance, build_corpus
from edge_asr.models.corpus_lexicon import Phrase, load_lexicon
from edge_asr.models.corpus_person_names import split_names
from edge_asr.models.lm_text import public_text, read_manifest_sentences, recorded_text
from edge_asr.models.ngram_train import NgramOptions, train_ngram
from edge_asr.simulator.cloud.lm import (
    CARD_FILE,
    NEURAL_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    RescoreWeights,
    interpolate,
)
from edge_asr.simulator.cloud.name_classes import CONTACT
from edge_asr.simulator.cloud.neural_lm import NeuralLM, write_vocab
from edge_asr.simulator.cloud.perplexity import per_word

NGRAM_FILE = "ngram.arpa.gz"
FP32_FILE = "neural.fp32.onnx"  # in the data folder: the exported graph before quantising
LAMBDA_CHOICES = tuple(i / 20 for i in range(21))
# Measured on the dev set (4-gram): no cut 3.66 MB / ppl 8.195, (2,) 1.71 MB / 8.204,
# (1, 2) 2.30 MB / 8.180, (3,) 1.25 MB / 8.258; interpolated with one LSTM all 7.315-7.324.
DEFAULT_CUTOFFS = (2,)


@dataclass(frozen=True)
class CorpusOptions:
    sentences: int = 160_000  # 4x the device's 40,000
    device_train: int = 40_000  # the device recipe's --n-corpus, to rebuild its splits
    seed: int = 0  # the device corpus's seed: its name split must be the same
    cloud_stream: str = "cloud"  # the random stream the cloud sentences come from
    unk_name_rate: float = 0.1  # share of person names replaced by <unk>
    # share of the other person names replaced by the <contact> class token, which the
    # user's contact list fills at rescoring time (simulator/cloud/name_classes.py)
    contact_class_rate: float = 0.5


@dataclass
class CloudCorpus:
    train: list[list[str]]
    dev: list[list[str]]  # the device's dev sentences
    test_names: list[list[str]]  # the device's held-out-name sentences


def _replace_names(utterance: Utterance, names: set[str], rate: float,
                   rng: random.Random, class_rate: float = 0.0) -> list[str]:
    """The words, with some person names (display form in `names`) replaced by <unk>s
    (`rate`) and some of the rest by one <contact> token (`class_rate`)."""
    words = utterance.text.split()
    for entity in utterance.entities:
        if entity not in names:
            continue
        draw = rng.random()
        if draw < rate:
            token = UNK
        elif draw < rate + (1 - rate) * class_rate:
            token = CONTACT
        else:
            continue
        name_words = Phrase.of(entity).words
        for start in range(len(words) - len(name_words) + 1):
            if tuple(words[start:start + len(name_words)]) == name_words:
                replacement = [UNK] * len(name_words) if token == UNK else [CONTACT]
                words[start:start + len(name_words)] = replacement
                break
    return words


def build_cloud_corpus(options: CorpusOptions = CorpusOptions()) -> CloudCorpus:
    device = build_corpus(seed=options.seed, n_train=options.device_train)
    lexicon = load_lexicon()
    names = split_names(lexicon, random.Random(f"{options.seed}:names"))
    if names.train.person_names != device.train_names:
        raise RuntimeError("the cloud corpus's name split differs from the device's")
    generator = SentenceGenerator(lexicon, names.train)
    evaluation = device.dev + device.test_sentences + device.test_names
    exclude = {u.text for u in evaluation}
    rng = random.Random(f"{options.seed}:{options.cloud_stream}:train")
    utterances = generator.sample(options.sentences, rng, set(exclude))
    leaked = [u.text for u in utterances if u.text in exclude
              or names.heldout_words.intersection(u.text.split())]
    if leaked:
        raise RuntimeError(f"{len(leaked)} cloud sentences leak evaluation text, e.g. {leaked[0]}")
    person_names = set(device.train_names)
    unk_rng = random.Random(f"{options.seed}:{options.cloud_stream}:unk")
    train = [_replace_names(u, person_names, options.unk_name_rate, unk_rng,
                            options.contact_class_rate) for u in utterances]
    return CloudCorpus(train, [u.text.split() for u in device.dev],
                       [u.text.split() for u in device.test_names])


def _write_sentences(sentences: list[list[str]], path: Path) -> None:
    path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")


def _read_sentences(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def load_or_build_corpus(data: Path, options: CorpusOptions) -> CloudCorpus:
    """The corpus text under data/corpus, built once per set of options."""
    folder = data / "corpus"
    stamp = folder / "options.json"
    files = {name: folder / f"{name}.txt" for name in ("train", "dev", "test_names")}
    if stamp.exists() and json.loads(stamp.read_text()) == asdict(options) and all(
            p.exists() for p in files.values()):
        return CloudCorpus(*(_read_sentences(files[n]) for n in ("train", "dev", "test_names")))
    built = build_cloud_corpus(options)
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        _write_sentences(getattr(built, name), path)
    stamp.write_text(json.dumps(asdict(options)))
    return built


def _neural_logprobs(neural: NeuralLM, sentences: list[list[str]]) -> list[list[float]]:
    parts: list[list[float]] = []
    for start in range(0, len(sentences), 256):
        parts += neural.word_logprobs(sentences[start:start + 256])
    return parts


def _perplexities(ngram: NgramLM, neural: NeuralLM, sentences: list[list[str]]
                  ) -> tuple[float, float, dict[float, float]]:
    """n-gram, neural and interpolated (per lambda) per-word perplexity, </s> included."""
    ngram_parts = [ngram.word_logprobs(s) for s in sentences]
    neural_parts = _neural_logprobs(neural, sentences)
    mixed = {share: per_word(sum(interpolate(a, b, share) for a, b in
                                      zip(ngram_parts, neural_parts, strict=True)), sentences)
             for share in LAMBDA_CHOICES}
    return (per_word(sum(map(sum, ngram_parts)), sentences),
            per_word(sum(map(sum, neural_parts)), sentences), mixed)


def _cutoffs(text: str) -> tuple[int, ...]:
    try:
        return NgramOptions(cutoffs=tuple(int(x) for x in text.split(",") if x.strip())).cutoffs
    except ValueError as exc:  # LmFormatError is one
        raise argparse.ArgumentTypeError(f"bad cutoffs {text!r}: {exc}") from exc


def _file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_asr.models.cloud_lm_recipe",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache/edge-asr/cloud_lm",
                        help="working folder for the corpus text")
    parser.add_argument("--out", type=Path, default=Path("models/cloud-lm"))
    parser.add_argument("--sentences", type=int, default=CorpusOptions.sentences)
    parser.add_argument("--text", type=Path, nargs="*", default=[], metavar="MANIFEST",
                        help="transcripts of recorded training speech (NAME_train.jsonl)")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[], metavar="MANIFEST",
                        help="sets whose sentences must not be trained on (dev, held-out)")
    parser.add_argument("--text-repeat", type=int, default=10,
                        help="times each --text sentence is heard")
    parser.add_argument("--public-text", type=Path, nargs="*", default=[], metavar="FILE",
                        help="plain-text prose (models/lm_text.py)")
    parser.add_argument("--public-vocabulary", type=int, default=5000,
                        help="words of --public-text added to the vocabulary (most frequent)")
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--cutoffs", type=_cutoffs, default=DEFAULT_CUTOFFS,
                        help="least counts of the 3-grams, 4-grams, ... kept, e.g. 2 or 1,2 "
                             "(the last applies to higher orders; empty: keep all)")
    parser.add_argument("--embedding", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--neural-seconds", type=float, default=330.0,
                        help="CPU-time budget for training the neural LM")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                        help="ship the neural LM with int8 weights (default) or fp32")
    args = parser.parse_args(argv)

    import torch  # training only; serving never imports it

    from edge_asr.models.neural_lm_train import (
        NeuralOptions,
        export_onnx,
        quantize_onnx,
        train_lstm_lm,
    )

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        print(f"[{name}] {timings[name]:.1f} s", flush=True)
        return time.perf_counter()

    mark = time.perf_counter()
    corpus_options = CorpusOptions(sentences=args.sentences)
    text = load_or_build_corpus(args.data, corpus_options)
    recorded = recorded_text(args.text, args.exclude, args.text_repeat)
    known = {w for sentence in text.train + recorded for w in sentence}
    # Public text may hold an evaluation sentence too (Common Voice's sentences hold three
    # of speechocean762's test set): none of the device's dev or held-out-name sentences,
    # none of --exclude's.
    held = text.dev + text.test_names + read_manifest_sentences(args.exclude)
    prose = (public_text(args.public_text, known, args.public_vocabulary, held)
             if args.public_text else [])
    text.train = text.train + recorded + prose
    tokens = sum(len(s) for s in text.train)
    print(f"corpus: {len(text.train)} sentences, {tokens} words; dev {len(text.dev)}, "
          f"held-out names {len(text.test_names)}")
    mark = lap("corpus", mark)

    args.out.mkdir(parents=True, exist_ok=True)
    ngram_options = NgramOptions(order=args.order, cutoffs=args.cutoffs)
    ngram = train_ngram(text.train, ngram_options)
    save_arpa(ngram, args.out / NGRAM_FILE)
    ngram = load_arpa(args.out / NGRAM_FILE)  # measure what ships
    print(f"n-gram: order {args.order}, cutoffs {list(args.cutoffs)}, vocabulary "
          f"{len(ngram.vocab)}, n-grams {ngram.num_ngrams()}")
    mark = lap("ngram", mark)

    neural_options = NeuralOptions(embedding=args.embedding, hidden=args.hidden,
                                   epochs=args.epochs, max_seconds=args.neural_seconds)
    model = train_lstm_lm(text.train, ngram.vocab, text.dev, neural_options)
    fp32_path = args.data / FP32_FILE
    export_onnx(model, fp32_path)
    if args.int8:
        quantize_onnx(fp32_path, args.out / NEURAL_FILE)
    else:
        (args.out / NEURAL_FILE).write_bytes(fp32_path.read_bytes())
    write_vocab(ngram.vocab, args.out / VOCAB_FILE)
    parameters = sum(p.numel() for p in model.parameters())
    neural = NeuralLM(args.out / NEURAL_FILE, args.out / VOCAB_FILE)
    mark = lap("neural", mark)

    fp32_neural = NeuralLM(fp32_path, args.out / VOCAB_FILE)
    fp32_ppl = per_word(sum(map(sum, _neural_logprobs(fp32_neural, text.dev))), text.dev)
    ngram_ppl, neural_ppl, mixed = _perplexities(ngram, neural, text.dev)
    best_lambda = min(mixed, key=mixed.__getitem__)
    names_ngram, names_neural, names_mixed = _perplexities(ngram, neural, text.test_names)
    RescoreWeights(ngram_lambda=best_lambda).save(args.out / WEIGHTS_FILE)
    mark = lap("perplexity", mark)

    timings["total"] = round(time.perf_counter() - started, 1)
    files = {name: _file_entry(args.out / name)
             for name in (NGRAM_FILE, NEURAL_FILE, VOCAB_FILE)}
    card = {
        "name": "edge-asr cloud LM",
        "version": f"cloud-lm-{args.order}gram-lstm{args.hidden}{'-int8' * args.int8}",
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "vocabulary": len(ngram.vocab),
        "ngram": {"order": args.order, "smoothing": "interpolated modified Kneser-Ney",
                  "cutoffs": {f"{n}-grams": ngram_options.cutoff(n)
                              for n in range(3, args.order + 1)},
                  "cutoffs_note": "n-grams seen fewer times are not stored; their mass backs "
                                  "off (SRILM -gtNmin)",
                  "ngrams": ngram.num_ngrams()},
        "neural": {"architecture": "word LSTM", "embedding": args.embedding,
                   "hidden": args.hidden, "layers": 1, "parameters": parameters,
                   "weights": ("int8 (onnxruntime quantize_dynamic, per tensor; activations "
                               "float, quantised per run)" if args.int8 else "fp32"),
                   "options": asdict(neural_options)},
        "corpus": {**asdict(corpus_options), "train_words": tokens,
                   "recorded_text": {"manifests": [p.name for p in args.text],
                                     "excluded": [p.name for p in args.exclude],
                                     "sentences": len(recorded) // max(args.text_repeat, 1),
                                     "repeat": args.text_repeat},
                   "public_text": {"files": [p.name for p in args.public_text],
                                   "sentences": len(prose),
                                   "words": sum(len(s) for s in prose),
                                   "vocabulary": args.public_vocabulary},
                   "dev": "the device corpus's dev split (excluded from training)"},
        "perplexity": {
            "dev": {"ngram": round(ngram_ppl, 3), "neural": round(neural_ppl, 3),
                    "neural_fp32": round(fp32_ppl, 3),
                    "interpolated": round(mixed[best_lambda], 3), "ngram_lambda": best_lambda},
            "test_names": {"ngram": round(names_ngram, 3), "neural": round(names_neural, 3),
                           "interpolated": round(names_mixed[best_lambda], 3)},
            "note": "per word with </s>, unknown words scored as <unk>",
        },
        "initial_weights": asdict(RescoreWeights(ngram_lambda=best_lambda)),
        "weights_note": f"{WEIGHTS_FILE} holds the weights in use; `python -m "
                        "edge_asr.simulator.cloud.weight_tuning` replaces them from dev lattices",
        "timings_s": timings,
    }
    (args.out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(card["perplexity"], indent=2))
    print(f"wrote {args.out} in {timings['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
