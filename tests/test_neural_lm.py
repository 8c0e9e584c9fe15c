"""The LSTM LM: trained with torch, served from ONNX with onnxruntime alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_asr.models.neural_lm_train import (  # noqa: E402
    NeuralOptions,
    export_onnx,
    quantize_onnx,
    train_lstm_lm,
)
from edge_asr.models.ngram_train import build_vocab  # noqa: E402
from edge_asr.simulator.cloud.neural_lm import NeuralLM, NeuralLmError, write_vocab  # noqa: E402

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


@pytest.fixture(scope="module")
def quantized(trained):
    _, _, _, folder = trained
    quantize_onnx(folder / "neural.onnx", folder / "neural.int8.onnx")
    return NeuralLM(folder / "neural.int8.onnx", folder / "vocab.txt")


# Measured: this tiny model's int8 graph is off its fp32 graph by 0.023 nats a word on
# average and 0.43 at most (the cloud LM: 0.014 and 0.11, dev perplexity +0.01%). Its
# activations are quantised per run, so a sentence's scores also move a little with what
# shares its batch (0.006 here, 0.037 at most on the cloud LM's dev set).
INT8_MEAN_NATS, INT8_MAX_NATS, INT8_BATCH_NATS = 0.06, 0.6, 0.05


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


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("int8", INT8_BATCH_NATS)])
def test_step_function_carries_state_like_a_whole_sequence(trained, quantized, precision,
                                                            tolerance):
    served = trained[2] if precision == "fp32" else quantized
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
            expected, abs=tolerance)


def test_int8_graph_is_smaller_and_runs_the_lstm_in_int8(trained, quantized):
    onnx = pytest.importorskip("onnx")
    _, _, _, folder = trained
    int8 = folder / "neural.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops and "LSTM" not in ops
    assert int8.stat().st_size < 0.5 * (folder / "neural.onnx").stat().st_size


def test_int8_graph_stays_close_to_the_fp32_graph(trained, quantized):
    _, _, served, _ = trained
    sentences = [*map(list, dict.fromkeys(map(tuple, SENTENCES))),
                 "zanzibar turn the lights".split(), "lock the kitchen mobile".split()]
    fp32 = np.concatenate(served.word_logprobs(sentences))
    int8 = np.concatenate(quantized.word_logprobs(sentences))
    errors = np.abs(int8 - fp32)
    assert errors.mean() < INT8_MEAN_NATS and errors.max() < INT8_MAX_NATS
    good = "turn on the kitchen lights".split()
    assert quantized.sentence_logprob(good) > quantized.sentence_logprob(good[::-1]) + 5.0


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


def test_serving_path_never_imports_torch(trained, quantized):
    _, _, _, folder = trained
    code = ("import sys\n"
            "from edge_asr.simulator.cloud.lm import CloudLM\n"
            "from edge_asr.simulator.cloud.server import serve_cloud\n"
            "from edge_asr.simulator.cloud.neural_lm import NeuralLM\n"
            f"NeuralLM({str(folder / 'neural.int8.onnx')!r}, {str(folder / 'vocab.txt')!r})\n"
            "assert 'onnx' not in sys.modules, 'onnx was imported'\n"
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
