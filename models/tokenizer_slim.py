"""The tokenizer a compressed model ships: the training tokenizer without its Unicode table.

sentencepiece's default normalizer (nmt_nfkc) carries a compiled NFKC table of 240 KB: 98%
of the recipe's bpe.model, and it packs only 2.9x, so it was the largest part of the 4-bit
model after the encoder. The device never needs it: every text it spells (the user's
contacts and devices) is folded to lower-case ASCII first (daemon/text.py), and NFKC leaves
printable ASCII as it is. The compressed model's bpe.model therefore names the identity
normalizer and drops the table (whitespace handling stays as trained), and `slim` checks
that both spell the same ids on every check text before it returns; the fp32 source keeps
the tokenizer training used.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2

LEXICON_DIR = Path(__file__).resolve().parent / "lexicon"


class SlimError(ValueError):
    """The tokenizer without its table would spell a check text differently."""


def check_texts() -> list[str]:
    """Texts both tokenizers must spell alike: every printable ASCII character alone and
    together, and every word of the recipe's lexicon (names, devices, places)."""
    texts = list(string.printable.strip()) + [string.printable.strip(), "  two  spaces  "]
    for path in sorted(LEXICON_DIR.glob("*.txt")):
        texts += [line.strip().lower() for line in path.read_text().splitlines()
                  if line.strip()]
    return texts


def slim(proto: bytes, texts: Iterable[str] | None = None) -> bytes:
    """`proto` (a bpe.model's bytes) with the identity normalizer, or `proto` unchanged when
    it has no table to drop (or is no sentencepiece model). SlimError if any of `texts`
    (default: check_texts()) would be spelled differently."""
    model = sentencepiece_model_pb2.ModelProto()
    try:
        model.ParseFromString(proto)
    except DecodeError:
        return proto
    if not model.pieces or not model.normalizer_spec.precompiled_charsmap:
        return proto
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.precompiled_charsmap = b""
    slimmed = model.SerializeToString()
    before = spm.SentencePieceProcessor(model_proto=proto)
    after = spm.SentencePieceProcessor(model_proto=slimmed)
    for text in check_texts() if texts is None else texts:
        if before.encode(text) != after.encode(text):
            raise SlimError(f"without its normalizer the tokenizer spells {text!r} "
                            "differently: keep the full bpe.model")
    return slimmed


def write_slim(src: Path, out: Path) -> None:
    """src's bpe.model, slimmed, written to out."""
    out.write_bytes(slim(src.read_bytes()))
