"""Shared fixtures: a small random model in the exported layout, the shipped model, and a
tiny cloud (an n-gram LM over a few sentences) with links to it.

The random model exercises every mechanism that does not depend on what is said (audio
paths, VAD-driven events, the server, shutdown, model-file checks); tests that judge
recognition itself use the shipped model and skip, saying why, while none is shipped.
"""

import json
from pathlib import Path

import pytest
import torch

from edge_asr.daemon.recognition.recognizer import SOURCE_MODEL_DIR
from edge_asr.daemon.recognition.transducer import MODEL_FILES, sha256_of
from edge_asr.models.device_lm import build_device_lm
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
    build_device_lm(out, tiny_corpus(tmp_path_factory.mktemp("corpus")))  # as the recipe does
    return out


def tiny_corpus(data: Path) -> Path:
    """A corpus folder (corpus/train.jsonl, dev.jsonl, names_train.txt) of TINY_SENTENCES."""
    (data / "corpus").mkdir(parents=True, exist_ok=True)
    rows = [{"text": t, "entities": ["Zoe O'Brien"] if "zoe" in t else []}
            for t in TINY_SENTENCES]
    for split in ("train", "dev"):
        (data / "corpus" / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    (data / "corpus" / "names_train.txt").write_text("Zoe O'Brien\nAnn Lee\n")
    return data


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    """The shipped model's fp32 source: plain ONNX files, as sherpa-onnx and the recipe read
    them (the runtime's default is its 4-bit version)."""
    if not (SOURCE_MODEL_DIR / "model_card.json").is_file():
        pytest.skip(f"no shipped model in {SOURCE_MODEL_DIR} yet: `make train-v4` makes it")
    return SOURCE_MODEL_DIR


# The cloud's tiny LM knows "turn off", so it can fix a device that heard "turn of".
CLOUD_SENTENCES = [s.split() for s in [
    "turn on the kitchen lights", "turn off the kitchen lights", "turn off the fan",
    "call mom on her mobile", "set a timer for ten minutes", "what time is it",
]] * 3


@pytest.fixture(scope="session")
def tiny_cloud_lm():
    from edge_asr.models.ngram_train import NgramOptions, train_ngram
    from edge_asr.simulator.cloud.lm import CloudLM, RescoreWeights

    return CloudLM(train_ngram(CLOUD_SENTENCES, NgramOptions(order=3)), None,
                   RescoreWeights(lm_weight=1.0, length_bonus=0.0, ngram_lambda=1.0), "tiny")


@pytest.fixture
def cloud(tiny_cloud_lm):
    """Starts `edge-asr cloud` servers on loopback: cloud(port=0, security=None, **options);
    every one is stopped after the test."""
    from edge_asr.simulator.cloud.server import CloudOptions, serve_cloud

    started = []

    def start(port: int = 0, security=None, **options):
        served = serve_cloud(tiny_cloud_lm, CloudOptions(**options), port=port,
                             security=security)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop(None).wait()


@pytest.fixture
def cloud_link():
    """Starts device links with test-sized backoff: cloud_link(address, **config); every one
    is closed after the test."""
    from edge_asr.daemon.uplink.cloud_link import CloudLink, CloudLinkConfig

    made = []

    def make(address: str, **config):
        link = CloudLink(CloudLinkConfig(address=address, backoff_initial_s=0.05,
                                         backoff_max_s=0.2, connect_timeout_s=0.5, **config),
                         seed=0).start()
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()


@pytest.fixture
def recipe_refusal(tmp_path, monkeypatch, capsys):
    """recipe_refusal(*flags) runs the recipe with these flags, expects it to refuse them
    before any stage (the cache folder is never created) and returns what it printed."""
    import sys

    from edge_asr.models import recipe

    def run(*flags: str) -> str:
        monkeypatch.setattr(sys, "argv", ["recipe", "--data", str(tmp_path / "data"),
                                          "--out", str(tmp_path / "out"), *flags])
        with pytest.raises(SystemExit):
            recipe.main()
        assert not (tmp_path / "data").exists()  # no stage ran
        return capsys.readouterr().err

    return run
