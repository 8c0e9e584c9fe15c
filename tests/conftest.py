"""Shared fixtures: a small random model in the exported layout, and the shipped model.

The random model exercises every mechanism that does not depend on what is said (audio
paths, VAD-driven events, the server, shutdown, model-file checks); tests that judge
recognition itself use the shipped model and skip, saying why, while none is shipped.
"""

import json
from pathlib import Path

import pytest
import torch

from edge_asr.daemon.recognizer import DEFAULT_MODEL_DIR
from edge_asr.daemon.transducer import MODEL_FILES, sha256_of
from edge_asr.models.export import export_onnx
from edge_asr.models.model import ModelConfig, Transducer
from edge_asr.models.tokenizer import train_tokenizer

TINY_SENTENCES = [
    "call zoe o'brien now", "turn on the lava lamp", "play some music please",
    "set a timer for ten minutes", "what is the weather like today",
    "dial five five five zero one nine two", "quick brown fox jumps over the lazy dog",
] * 20  # sentencepiece wants more than 100 sentences


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random transducer exported like the shipped one, with bpe.model and a model card."""
    bpe = train_tokenizer(TINY_SENTENCES, tmp_path_factory.mktemp("bpe"), vocab_size=40)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, rnn_hidden_size=48, decoder_dim=32,
                      joiner_dim=32, subsampling_channels=8)
    out = tmp_path_factory.mktemp("tiny-model")
    export_onnx(Transducer(cfg).eval(), bpe.parent / "tokens.txt", out)
    card = {"name": "tiny-random", "sha256": {n: sha256_of(out / n) for n in MODEL_FILES}}
    (out / "model_card.json").write_text(json.dumps(card))
    return out


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    if not (DEFAULT_MODEL_DIR / "model_card.json").is_file():
        pytest.skip(f"no shipped model in {DEFAULT_MODEL_DIR} yet: `make train` makes it "
                    "(issue 2 is open)")
    return DEFAULT_MODEL_DIR
