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

CTC_HEAD_SEED = 0
Graph = tuple[dict[str, str], dict[str, np.ndarray]]  # metadata, initializers in file order


def _read(path: Path) -> Graph:
    model = onnx.load(str(path))
    return ({p.key: p.value for p in model.metadata_props},
            {i.name: numpy_helper.to_array(i) for i in model.graph.initializer})


def _take(weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in weights:
        raise ValueError(f"initializer {name!r} not found")
    return weights[name]


def _folded(weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The constant-folded matrices and biases, in graph order."""
    return [a for n, a in weights.items() if n.startswith("onnx::")]


def _config(graphs: dict[str, Graph], card: Path) -> ModelConfig:
    """The architecture, from the files themselves (metadata and weight shapes)."""
    (enc_meta, enc), (dec_meta, dec), (_, join) = (graphs[n] for n in
                                                   ("encoder", "decoder", "joiner"))
    dropout = ModelConfig.dropout
    if card.exists():  # not in the graph (inference has no dropout); training uses it
        dropout = json.loads(card.read_text()).get("config", {}).get("dropout", dropout)
    return ModelConfig(
        num_bins=_take(enc, "encoder.feat_mean").shape[0],
        vocab_size=int(dec_meta["vocab_size"]),
        subsampling_channels=_take(enc, "encoder.subsampling.conv.4.weight").shape[0],
        d_model=int(enc_meta["d_model"]),
        rnn_hidden_size=int(enc_meta["rnn_hidden_size"]),
        num_encoder_layers=int(enc_meta["num_encoder_layers"]),
        decoder_dim=_take(dec, "decoder.embedding.weight").shape[1],
        context_size=int(dec_meta["context_size"]),
        joiner_dim=_take(join, "joiner.out.weight").shape[1],
        dropout=dropout,
        decode_chunk_len=int(enc_meta["decode_chunk_len"]),
    )


@torch.no_grad()
def load_from_onnx(model_dir: Path) -> Transducer:
    """The transducer whose fp32 export is `model_dir`."""
    model_dir = Path(model_dir)
    graphs = {n: _read(model_dir / f"{n}.onnx") for n in ("encoder", "decoder", "joiner")}
    cfg = _config(graphs, model_dir / "model_card.json")
    # Every continuation so far rebuilt the training-only CTC head from torch seed 0, and the
    # encoder has learnt to suit that head: it starts at a CTC loss of about 29 per utterance
    # against 310 for a head drawn from another seed, whose gradients would shake the encoder
    # through the first hundreds of steps. So the head is drawn from seed 0 whatever seed
    # the run uses, without touching the caller's random stream.
    with torch.random.fork_rng():
        torch.manual_seed(CTC_HEAD_SEED)
        model = Transducer(cfg)
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731

    enc = graphs["encoder"][1]
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

    dec = graphs["decoder"][1]
    d = model.decoder
    d.embedding.weight.copy_(t(_take(dec, "decoder.embedding.weight")))
    d.conv.weight.copy_(t(_take(dec, "decoder.conv.weight")))
    d.proj.bias.copy_(t(_take(dec, "decoder.proj.bias")))
    (proj,) = _folded(dec)
    d.proj.weight.copy_(t(proj.T))

    join = graphs["joiner"][1]
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
