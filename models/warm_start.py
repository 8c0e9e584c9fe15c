"""Rebuild the PyTorch transducer from an exported model folder, to continue training it.

Training checkpoints live in a cache outside git and do not outlive the machine; the shipped
ONNX files do. Their weights are the model's weights (export.py only transposes the LSTM and
linear matrices and folds each LSTM's two biases into one), so they can be read back:

    encoder.onnx   subsampling convs + output, per layer (bias_ih + bias_hh, W_ih^T, W_hh^T,
                   W_hr^T), projection
    decoder.onnx   embedding, grouped conv, projection
    joiner.onnx    output layer

The LSTM and linear matrices carry constant-folded names (onnx::MatMul_N), so they are taken
in graph order, and the result is checked by running both the rebuilt encoder and the ONNX
encoder on the same features: a mismatch raises instead of training from wrong weights.
The training-only CTC head is not exported; it starts fresh.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from edge_asr.models.model import ModelConfig, Transducer


def _initializers(path: Path) -> list[tuple[str, np.ndarray]]:
    graph = onnx.load(str(path)).graph
    return [(i.name, numpy_helper.to_array(i)) for i in graph.initializer]


def _take(named: list[tuple[str, np.ndarray]], name: str) -> np.ndarray:
    for n, a in named:
        if n == name:
            return a
    raise ValueError(f"initializer {name!r} not found")


def _folded(named: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
    """The constant-folded matrices and biases, in graph order."""
    return [a for n, a in named if n.startswith("onnx::")]


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _config(model_dir: Path) -> ModelConfig:
    """The architecture, from the files themselves (metadata and weight shapes)."""
    enc_meta = _metadata(model_dir / "encoder.onnx")
    dec_meta = _metadata(model_dir / "decoder.onnx")
    enc = dict(_initializers(model_dir / "encoder.onnx"))
    dec = dict(_initializers(model_dir / "decoder.onnx"))
    join = dict(_initializers(model_dir / "joiner.onnx"))
    embedding = dec["decoder.embedding.weight"]
    card = model_dir / "model_card.json"
    dropout = ModelConfig.dropout
    if card.exists():  # not in the graph (inference has no dropout); training uses it
        dropout = json.loads(card.read_text()).get("config", {}).get("dropout", dropout)
    return ModelConfig(
        num_bins=enc["encoder.feat_mean"].shape[0],
        vocab_size=int(dec_meta["vocab_size"]),
        subsampling_channels=enc["encoder.subsampling.conv.4.weight"].shape[0],
        d_model=int(enc_meta["d_model"]),
        rnn_hidden_size=int(enc_meta["rnn_hidden_size"]),
        num_encoder_layers=int(enc_meta["num_encoder_layers"]),
        decoder_dim=embedding.shape[1],
        context_size=int(dec_meta["context_size"]),
        joiner_dim=join["joiner.out.weight"].shape[1],
        dropout=dropout,
        decode_chunk_len=int(enc_meta["decode_chunk_len"]),
    )


@torch.no_grad()
def load_from_onnx(model_dir: Path) -> Transducer:
    """The transducer whose fp32 export is `model_dir`."""
    model_dir = Path(model_dir)
    cfg = _config(model_dir)
    model = Transducer(cfg)
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731

    enc = _initializers(model_dir / "encoder.onnx")
    e = model.encoder
    e.feat_mean.copy_(t(_take(enc, "encoder.feat_mean")))
    e.feat_istd.copy_(t(_take(enc, "encoder.feat_istd")))
    for i in (0, 2, 4):
        conv = e.subsampling.conv[i]
        conv.weight.copy_(t(_take(enc, f"encoder.subsampling.conv.{i}.weight")))
        conv.bias.copy_(t(_take(enc, f"encoder.subsampling.conv.{i}.bias")))
    e.subsampling.out.bias.copy_(t(_take(enc, "encoder.subsampling.out.bias")))
    e.proj.bias.copy_(t(_take(enc, "encoder.proj.bias")))
    folded = _folded(enc)
    expected = 1 + 4 * cfg.num_encoder_layers + 1
    if len(folded) != expected:
        raise ValueError(f"{model_dir}/encoder.onnx: {len(folded)} folded weights, "
                         f"expected {expected}; was it exported by models/export.py?")
    e.subsampling.out.weight.copy_(t(folded[0].T))
    for layer, lstm in enumerate(e.lstms):
        bias, w_ih, w_hh, w_hr = folded[1 + 4 * layer: 5 + 4 * layer]
        lstm.bias_ih_l0.copy_(t(bias))
        lstm.bias_hh_l0.zero_()
        lstm.weight_ih_l0.copy_(t(w_ih.T))
        lstm.weight_hh_l0.copy_(t(w_hh.T))
        lstm.weight_hr_l0.copy_(t(w_hr.T))
    e.proj.weight.copy_(t(folded[-1].T))

    dec = _initializers(model_dir / "decoder.onnx")
    d = model.decoder
    d.embedding.weight.copy_(t(_take(dec, "decoder.embedding.weight")))
    d.conv.weight.copy_(t(_take(dec, "decoder.conv.weight")))
    d.proj.bias.copy_(t(_take(dec, "decoder.proj.bias")))
    (proj,) = _folded(dec)
    d.proj.weight.copy_(t(proj.T))

    join = _initializers(model_dir / "joiner.onnx")
    model.joiner.out.weight.copy_(t(_take(join, "joiner.out.weight")))
    model.joiner.out.bias.copy_(t(_take(join, "joiner.out.bias")))
    model.eval()
    _check_against_onnx(model, model_dir)
    return model


def _check_against_onnx(model: Transducer, model_dir: Path, chunks: int = 4) -> None:
    """Both encoders and joiners on the same random features must agree."""
    from edge_asr.models.export import DecoderStep, JoinerStep, StreamingEncoder, chunk_frames

    cfg = model.cfg
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = {n: ort.InferenceSession(str(model_dir / f"{n}.onnx"), opts,
                                    providers=["CPUExecutionProvider"])
            for n in ("encoder", "decoder", "joiner")}
    rng = np.random.default_rng(0)
    h = np.zeros((cfg.num_encoder_layers, 1, cfg.d_model), np.float32)
    c = np.zeros((cfg.num_encoder_layers, 1, cfg.rnn_hidden_size), np.float32)
    th, tc = torch.from_numpy(h), torch.from_numpy(c)
    streaming = StreamingEncoder(model).eval()
    worst = 0.0
    for _ in range(chunks):
        x = (rng.standard_normal((1, chunk_frames(model), cfg.num_bins)) * 3 - 8).astype(np.float32)
        out, h, c = sess["encoder"].run(None, {"x": x, "h": h, "c": c})
        ref, th, tc = streaming(torch.from_numpy(x), th, tc)
        worst = max(worst, float(np.abs(out - ref.numpy()).max()))
    y = np.array([[0, 5]], dtype=np.int64)
    dec = sess["decoder"].run(None, {"y": y})[0]
    ref_dec = DecoderStep(model)(torch.from_numpy(y)).numpy()
    worst = max(worst, float(np.abs(dec - ref_dec).max()))
    logit = sess["joiner"].run(None, {"encoder_out": out[:, 0], "decoder_out": dec})[0]
    ref_logit = JoinerStep(model)(torch.from_numpy(out[:, 0]), torch.from_numpy(dec)).numpy()
    worst = max(worst, float(np.abs(logit - ref_logit).max()))
    if worst > 1e-3:
        raise ValueError(f"weights read back from {model_dir} do not reproduce its ONNX "
                         f"outputs (max difference {worst:.3g})")
