"""The compressed model's tokenizer: its Unicode table dropped, its spelling unchanged."""

import io

import pytest
import sentencepiece as spm
from conftest import TINY_SENTENCES

from edge_asr.models.tokenizer_slim import SlimError, check_texts, slim, write_slim


@pytest.fixture(scope="module")
def full_tokenizer() -> bytes:
    """A tokenizer trained with sentencepiece's default normalizer (nmt_nfkc), as the
    recipe's is."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TINY_SENTENCES), model_writer=model,
                                   vocab_size=40, minloglevel=2)
    return model.getvalue()


def test_the_table_goes_and_every_check_text_is_spelled_alike(full_tokenizer, tmp_path):
    (tmp_path / "full.model").write_bytes(full_tokenizer)
    write_slim(tmp_path / "full.model", tmp_path / "bpe.model")
    slimmed = (tmp_path / "bpe.model").read_bytes()
    assert len(slimmed) < len(full_tokenizer) // 10  # the NFKC table was nearly all of it
    before = spm.SentencePieceProcessor(model_proto=full_tokenizer)
    after = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    assert after.get_piece_size() == before.get_piece_size()
    for text in ["call zoe o'brien on her mobile", "  turn   off the fan ", *check_texts()]:
        assert after.encode(text) == before.encode(text), text


def test_a_text_the_table_would_change_is_refused(full_tokenizer):
    """Full-width letters are what NFKC folds: without the table they spell otherwise, so
    a caller that must spell them keeps the full tokenizer."""
    with pytest.raises(SlimError, match="spells"):
        slim(full_tokenizer, ["ｔｕｒｎ ｏｆｆ"])


def test_what_has_no_table_to_drop_is_left_as_it_is(full_tokenizer):
    assert slim(b"") == b""
    assert slim(b"\xff\xff not a model") == b"\xff\xff not a model"
    once = slim(full_tokenizer)
    assert slim(once) == once


def test_the_compressed_model_ships_the_slim_tokenizer(tiny_model_dir, tmp_path):
    from edge_asr.models.quantize import quantize_dir_block

    quantize_dir_block(tiny_model_dir, tmp_path / "q", 16, 4)
    full = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "bpe.model"))
    shipped = spm.SentencePieceProcessor(model_file=str(tmp_path / "q" / "bpe.model"))
    assert (tmp_path / "q" / "bpe.model").stat().st_size < (
        tiny_model_dir / "bpe.model").stat().st_size // 10
    assert shipped.encode("call zoe o'brien on her mobile") == full.encode(
        "call zoe o'brien on her mobile")
