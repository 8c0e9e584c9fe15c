"""Trains the device LM (daemon/recognition/token_lm.py) for a model folder and records it
in the card.

    python -m edge_asr.models.device_lm --data ~/.cache/edge-asr --model models/rnnt-v1

The training sentences of the corpus (data/corpus/train.jsonl; the held-out sentences and
names are never in it) are spelled with the model's own bpe.model and counted into an
interpolated modified Kneser-Ney n-gram over those pieces (models/ngram_train.py). Beside
them: the transcripts of the recorded training speech (`--transcripts`) and general English
(`--text`, e.g. Common Voice's CC0 sentences, less every sentence of `--exclude`'s
evaluation sets), for the people who say other things than the requests; the domain's
sentences are then counted `--domain-repeat` times so that the requests keep their weight.

People's names are a class: each contact in a sentence is one word, `<contact>`, that no
model token spells. Trained on the names themselves, the LM learnt the 2,000 training names
and pulled held-out ones towards them ("tell ixchel tecpa" -> "tell deepika dubey"); as a
class it learns where a name goes, and the pieces of any name, seen in training or not,
cost the same back-off after "call". (The beam search lets a name of the user's context
pay for its first piece only: search.py.) Higher
orders drop the n-grams seen once (count cutoffs), which halves the file for a small loss
in perplexity. The file goes beside tokens.txt as lm.arpa.gz; the model card gets its
bytes, its sha256 (checked when the daemon loads the folder) and its perplexity per piece
on the corpus's dev sentences.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from edge_asr.daemon.recognition.backoff_tables import BackoffTables
from edge_asr.daemon.recognition.ngram_arpa import save_arpa
from edge_asr.daemon.recognition.ngram_lm import perplexity
from edge_asr.daemon.recognition.token_lm import (
    CONTACT,
    LM_FILE,
    LM_FILES,
    NAMES_FILE,
    TABLES_FILE,
)
from edge_asr.daemon.recognition.transducer import read_model_file, sha256_of
from edge_asr.daemon.text import normalize_text
from edge_asr.models.ngram_train import NgramOptions, train_ngram

DEFAULT_ORDER = 5
DEFAULT_CUTOFFS = (2,)  # orders 3 and up: n-grams seen once are not stored
NAME_ORDER = 2  # the name model: a bigram over the pieces of the training names


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: no corpus there (the recipe's corpus stage writes it)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def spell_with_classes(sp: spm.SentencePieceProcessor, text: str, names: set[str]
                       ) -> list[str]:
    """The pieces of `text` with every name of `names` (normalised) as one CONTACT word."""
    words, pieces, i = text.split(), [], 0
    longest = max((len(n.split()) for n in names), default=0)
    start = 0
    while i < len(words):
        # The longest name that starts here ("ana maria lopez" before "ana").
        n = next((n for n in range(min(longest, len(words) - i), 0, -1)
                  if " ".join(words[i:i + n]) in names), 0)
        if n:
            pieces += sp.encode(" ".join(words[start:i]), out_type=str) + [CONTACT]
            i += n
            start = i
        else:
            i += 1
    return pieces + sp.encode(" ".join(words[start:]), out_type=str)


def manifest_sentences(paths: Sequence[Path]) -> list[dict]:
    """The transcripts of training manifests (recorded speech) as corpus rows: what people
    were recorded saying is text the LM should know too. No entities: their names are
    words of the sentence."""
    rows = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                text = normalize_text(json.loads(line).get("text", ""))
                if text:
                    rows.append({"text": text, "entities": []})
    return rows


def text_sentences(paths: Sequence[Path], exclude: set[str]) -> list[dict]:
    """General English from plain text files, one sentence a line, normalised as the
    device spells: each distinct sentence once, none of `exclude` (evaluation sentences)."""
    rows: dict[str, dict] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            text = normalize_text(line)
            if text and text not in exclude:
                rows.setdefault(text, {"text": text, "entities": []})
    return list(rows.values())


def build_device_lm(model_dir: Path, data: Path, order: int = DEFAULT_ORDER,
                    cutoffs: tuple[int, ...] = DEFAULT_CUTOFFS,
                    transcripts: Sequence[Path] = (), texts: Sequence[Path] = (),
                    exclude: Sequence[Path] = (), domain_repeat: int = 1,
                    text_source: str = "") -> dict:
    """Writes the LM files (LM_FILES) into model_dir and their entries into its
    model_card.json; returns the summary. `transcripts`: training manifests whose texts
    join the corpus's training sentences (each distinct sentence once). `texts`: plain
    text of general English (`text_sentences`), less every sentence of the `exclude`
    manifests; the domain's sentences are then counted `domain_repeat` times, so that the
    requests keep their weight and their rarer n-grams outlive the count cutoffs."""
    if domain_repeat < 1:
        raise ValueError(f"domain_repeat must be >= 1, got {domain_repeat}")
    sp = spm.SentencePieceProcessor(model_proto=read_model_file(model_dir, "bpe.model"))
    names = {normalize_text(n) for n in (data / "corpus" / "names_train.txt").read_text(
        encoding="utf-8").splitlines() if n.strip()}

    def spell(rows: list[dict]) -> list[list[str]]:
        # The contacts each sentence says (family words such as "mom" are words, not names).
        return [spell_with_classes(sp, r["text"], {normalize_text(e) for e in r["entities"]}
                                   & names) for r in rows]

    recorded = list({r["text"]: r for r in manifest_sentences(transcripts)}.values())
    general = text_sentences(texts, {r["text"] for r in manifest_sentences(exclude)})
    train = spell(_rows(data / "corpus" / "train.jsonl") + recorded) * domain_repeat \
        + spell(general)
    dev = spell(_rows(data / "corpus" / "dev.jsonl"))
    start = time.perf_counter()
    lm = train_ngram(train, NgramOptions(order=order, cutoffs=cutoffs))
    save_arpa(lm, model_dir / LM_FILE)
    BackoffTables.of(lm).save(model_dir / TABLES_FILE, sha256_of(model_dir / LM_FILE))
    spelled_names = [sp.encode(n, out_type=str) for n in sorted(names)]
    name_lm = train_ngram(spelled_names, NgramOptions(order=NAME_ORDER))
    save_arpa(name_lm, model_dir / NAMES_FILE)
    summary = {
        "files": list(LM_FILES), "order": order, "cutoffs": list(cutoffs),
        "name_class": CONTACT, "ngrams": lm.num_ngrams(), "train_sentences": len(train),
        "transcript_sentences": len(recorded),
        "transcripts": [p.name for p in transcripts],
        "general_text": {"files": [p.name for p in texts], "sentences": len(general),
                         "excluded_manifests": [p.name for p in exclude],
                         "source": text_source},
        "domain_repeat": domain_repeat,
        "train_pieces": sum(map(len, train)),
        "dev_perplexity_per_piece": round(perplexity(lm, dev), 3),
        "name_model": {"order": NAME_ORDER, "names": len(spelled_names),
                       "ngrams": name_lm.num_ngrams()},
        "seconds": round(time.perf_counter() - start, 1),
        # Apart from the card's "bytes" (the acoustic model's files, which compression
        # shrinks); the LM is the same file beside every version of the model.
        "bytes": {n: (model_dir / n).stat().st_size for n in LM_FILES},
    }
    card_path = model_dir / "model_card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        for name in LM_FILES:  # checked when the daemon loads the folder
            card.setdefault("sha256", {})[name] = sha256_of(model_dir / name)
        card["device_lm"] = summary
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return summary


def copy_device_lm(src: Path, model_dir: Path) -> dict:
    """The LM files of an earlier export, unchanged, into model_dir; returns their summary
    from src's card. A continuation that keeps its parent's LM changes only the acoustic
    model, so its WER against the parent's is the acoustic model's doing."""
    for name in LM_FILES:
        (model_dir / name).unlink(missing_ok=True)
        if (src / name).is_file():  # an LM saved before its tables were has none
            shutil.copyfile(src / name, model_dir / name)
    summary = json.loads((src / "model_card.json").read_text()).get("device_lm") or {}
    return {**summary, "copied_from": str(src)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "edge-asr",
                   help="the recipe's data folder (its corpus/train.jsonl and dev.jsonl)")
    p.add_argument("--model", type=Path, required=True, help="model folder (its bpe.model)")
    p.add_argument("--order", type=int, default=DEFAULT_ORDER)
    p.add_argument("--cutoffs", type=int, nargs="*", default=list(DEFAULT_CUTOFFS),
                   help="fewest counts to store an n-gram of order 3, 4, ... (the last "
                        "value holds for the orders above)")
    p.add_argument("--transcripts", type=Path, nargs="*", default=[],
                   help="training manifests whose transcripts join the LM's text (the real "
                        "speech the model trained on)")
    p.add_argument("--text", type=Path, nargs="*", default=[],
                   help="plain text of general English, one sentence a line (e.g. Common "
                        "Voice's CC0 sentences: server/data/en/*.txt of "
                        "github.com/common-voice/common-voice)")
    p.add_argument("--exclude", type=Path, nargs="*", default=[], metavar="MANIFEST",
                   help="evaluation manifests whose sentences --text must not hold")
    p.add_argument("--text-source", default="",
                   help="where --text comes from and its licence, for the model card")
    p.add_argument("--domain-repeat", type=int, default=1,
                   help="count the corpus and the transcripts this many times beside --text")
    args = p.parse_args(argv)
    if args.domain_repeat < 1:
        p.error("--domain-repeat must be at least 1")
    missing = [str(f) for f in [*args.text, *args.exclude] if not f.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    summary = build_device_lm(args.model, args.data, args.order, tuple(args.cutoffs),
                              args.transcripts, args.text, args.exclude, args.domain_repeat,
                              args.text_source)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
