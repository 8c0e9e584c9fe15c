"""Subword units: a sentencepiece unigram model with the blank at id 0.

sherpa-onnx and our decoder read `tokens.txt` ("piece id" per line); id 0 must be the blank,
so the blank takes sentencepiece's pad slot and there is no bos/eos.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm

BLANK = "<blk>"


def train_tokenizer(sentences: list[str], out_dir: Path, vocab_size: int = 256) -> Path:
    """Train on the training sentences; writes bpe.model and tokens.txt into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=0, pad_piece=BLANK, unk_id=1,
        bos_id=-1, eos_id=-1, input_sentence_size=len(sentences), shuffle_input_sentence=True,
        num_threads=2, minloglevel=2,
    )
    path = out_dir / "bpe.model"
    path.write_bytes(model.getvalue())
    write_tokens(Tokenizer(path), out_dir / "tokens.txt")
    return path


class Tokenizer:
    def __init__(self, model_path: Path | str) -> None:
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        assert self.sp.id_to_piece(0) == BLANK, "blank must be token 0"

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > 0])


def write_tokens(tok: Tokenizer, path: Path) -> None:
    lines = [f"{tok.sp.id_to_piece(i)} {i}" for i in range(tok.vocab_size)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
