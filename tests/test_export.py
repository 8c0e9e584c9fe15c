"""Export contract on a small random model: the ONNX files stream exactly like the torch
model, carry sherpa-onnx's lstm metadata, and sherpa-onnx decodes them as we do."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.models.export import export_onnx
from edge_asr.models.model import ModelConfig, Transducer


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> tuple[Transducer, Path]:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=64, rnn_hidden_size=96, decoder_dim=64,
                      joiner_dim=64, subsampling_channels=8)
    model = Transducer(cfg).eval()
    out = tmp_path_factory.mktemp("model")
    tokens = out / "tokens_src.txt"
    pieces = ["<blk>", "<unk>"] + [f"\u2581{chr(97 + i % 26)}{i}" for i in range(38)]
    tokens.write_text("".join(f"{p} {i}\n" for i, p in enumerate(pieces)))
    export_onnx(model, tokens, out)
    return model, out


def test_metadata_matches_sherpa_lstm_layout(random_model):
    _, out = random_model
    enc = ort.InferenceSession(str(out / "encoder.onnx")).get_modelmeta().custom_metadata_map
    dec = ort.InferenceSession(str(out / "decoder.onnx")).get_modelmeta().custom_metadata_map
    assert enc["model_type"] == "lstm"
    assert {k: int(enc[k]) for k in ("num_encoder_layers", "T", "decode_chunk_len",
                                     "rnn_hidden_size", "d_model")} == {
        "num_encoder_layers": 3, "T": 23, "decode_chunk_len": 16, "rnn_hidden_size": 96,
        "d_model": 64}
    assert (int(dec["vocab_size"]), int(dec["context_size"])) == (40, 2)


def test_chunked_onnx_encoder_equals_offline_torch(random_model):
    model, out = random_model
    chunks = 6
    x = torch.randn(1, 16 * chunks + 7, 80)
    with torch.no_grad():
        offline, _ = model.encoder(x, torch.tensor([x.shape[1]]))
    sess = ort.InferenceSession(str(out / "encoder.onnx"))
    h = np.zeros((3, 1, 64), np.float32)
    c = np.zeros((3, 1, 96), np.float32)
    outs = []
    for k in range(chunks):
        y, h, c = sess.run(None, {"x": x[:, 16 * k : 16 * k + 23].numpy(), "h": h, "c": c})
        outs.append(y)
    np.testing.assert_allclose(np.concatenate(outs, 1), offline.numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["greedy_search", "modified_beam_search"])
def test_sherpa_onnx_decodes_our_files_like_we_do(random_model, method):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    _, out = random_model
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(16000 * 2) * 0.1).astype(np.float32)
    tail = np.zeros(int(0.66 * 16000), np.float32)

    # The contract is the ONNX files: sherpa-onnx knows nothing of our device LM, and
    # searches 4 paths (its max_active_paths).
    ours = Recognizer(RecognizerConfig(model_dir=out, decoding_method=method, lm_scale=0.0,
                                       beam=4))
    stream = ours.create_stream()
    stream.accept_waveform(16000, np.concatenate([audio, tail]))
    ours.decode(stream)

    theirs = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(out / "tokens.txt"), encoder=str(out / "encoder.onnx"),
        decoder=str(out / "decoder.onnx"), joiner=str(out / "joiner.onnx"), num_threads=1,
        decoding_method=method)
    s = theirs.create_stream()
    s.accept_waveform(16000, np.concatenate([audio, tail]))
    while theirs.is_ready(s):
        theirs.decode_stream(s)
    # A random model emits many tokens, so equality here checks every step of the search.
    expected = theirs.get_result(s).strip()
    assert len(expected) > 10
    assert ours.result(stream).text == " ".join(expected.split())
