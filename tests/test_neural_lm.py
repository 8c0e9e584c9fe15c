"""The LSTM LM: trained with torch, served from ONNX with onnxruntime alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_asr.simulator.neural_lm import NeuralLM, NeuralLmError, write_vocab  # noqa: E402
from edge_asr.simulator.neural_lm_train import (  # noqa: E402
    NeuralOptions,
    export_onnx,
    train_lstm_lm,
)
from edge_asr.simulator.ngram_lm import build_vocab  # noqa: E402

SENTENCES = [s.split() for s in [
    "turn on the kitchen lights", "turn off the kitchen lights", "call mom on her mobile",
    "set a timer for ten minutes", "play some jazz in the kitchen", "what time is it",
    "add milk to my shopping list", "lock the front door",
]] * 12
TINY = NeuralOptions(embedding=16, hidden=24, epochs=25, batch_sentences=16,
                     learning_rate=1e-2, dropout=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("neural")
    vocab = build_vocab(SENTENCES)
    model = train_lstm_lm(SENTENCES, vocab, SENTENCES[:8], TINY, log=lambda _: None)
    export_onnx(model, folder / "neural.onnx")
    write_vocab(vocab, folder / "vocab.txt")
    return model, vocab, NeuralLM(folder / "neural.onnx", folder / "vocab.txt"), folder


def test_onnx_matches_torch(trained):
    model, vocab, served, _ = trained
    sentence = "call mom on her mobile".split()
    ids = [vocab.index(w) for w in ["<s>", *sentence]]
    with torch.no_grad():
        zeros = torch.zeros(1, 1, TINY.hidden)
        log_probs, _, _ = model(torch.tensor([ids]), zeros, zeros)
    targets = [vocab.index(w) for w in [*sentence, "</s>"]]
    expected = [log_probs[0, t, w].item() for t, w in enumerate(targets)]
    assert served.word_logprobs([sentence])[0] == pytest.approx(expected, abs=1e-4)


def test_step_function_carries_state_like_a_whole_sequence(trained):
    _, _, served, _ = trained
    sentences = ["turn on the kitchen lights".split(), "lock the front door".split()]
    batched = served.word_logprobs(sentences)
    for sentence, expected in zip(sentences, batched, strict=True):
        state = served.initial_state(1)
        got = []
        for word in ["<s>", *sentence]:
            log_probs, state = served.step([served.word_id(word)], state)
            assert np.exp(log_probs[0]).sum() == pytest.approx(1.0, abs=1e-4)
            got.append(log_probs[0])
        targets = [served.word_id(w) for w in [*sentence, "</s>"]]
        assert [g[t] for g, t in zip(got, targets, strict=True)] == pytest.approx(
            expected, abs=1e-4)


def test_select_keeps_rows_of_a_batch_state(trained):
    _, _, served, _ = trained
    _, state = served.step([served.bos, served.bos, served.bos], served.initial_state(3))
    picked = state.select([2, 0])
    assert picked.h.shape == (1, 2, served.hidden)
    assert np.array_equal(picked.h[:, 0], state.h[:, 2])


def test_learned_the_domain(trained):
    _, _, served, _ = trained
    good = "turn on the kitchen lights".split()
    assert served.sentence_logprob(good) > served.sentence_logprob(good[::-1]) + 5.0
    # an unknown word is scored as <unk>, not refused
    assert served.word_logprobs([["zanzibar"]])[0][0] == served.word_logprobs([["<unk>"]])[0][0]


def test_serving_path_never_imports_torch(trained):
    _, _, _, folder = trained
    code = ("import sys\n"
            "from edge_asr.simulator.cloud_lm import CloudLM\n"
            "from edge_asr.simulator.cloud import serve_cloud\n"
            "from edge_asr.simulator.neural_lm import NeuralLM\n"
            f"NeuralLM({str(folder / 'neural.onnx')!r}, {str(folder / 'vocab.txt')!r})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_model_files_are_refused(trained, tmp_path):
    _, vocab, _, folder = trained
    write_vocab(vocab[:-1], tmp_path / "short.txt")
    with pytest.raises(NeuralLmError, match="predicts"):
        NeuralLM(folder / "neural.onnx", tmp_path / "short.txt")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(NeuralLmError, match="cannot load"):
        NeuralLM(tmp_path / "broken.onnx", folder / "vocab.txt")
    write_vocab(["a", "b"], tmp_path / "nospecial.txt")
    with pytest.raises(NeuralLmError, match="has no"):
        NeuralLM(folder / "neural.onnx", tmp_path / "nospecial.txt")
