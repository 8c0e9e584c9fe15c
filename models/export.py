"""Export a trained transducer to ONNX in sherpa-onnx's `lstm` online-transducer layout.

    encoder.onnx  x (N, T, 80), h (L, N, d_model), c (L, N, rnn_hidden_size)
                  -> encoder_out (N, T', joiner_dim), next_h, next_c
                  metadata model_type=lstm, num_encoder_layers, T, decode_chunk_len,
                  rnn_hidden_size, d_model
    decoder.onnx  y (N, context_size) int64 -> decoder_out (N, joiner_dim)
                  metadata vocab_size, context_size
    joiner.onnx   encoder_out (N, joiner_dim), decoder_out (N, joiner_dim) -> logit (N, vocab)

The encoder graph is one streaming step: T = decode_chunk_len + 7 feature frames (the
subsampling's right context) in, decode_chunk_len / 4 frames out, LSTM state carried.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import onnx
import torch
from torch import nn

from edge_asr.models.model import SUBSAMPLING_PAD, Transducer, subsampled_length

OPSET = 17


class StreamingEncoder(nn.Module):
    """The trained encoder as one chunk step, the LSTMs unrolled over the chunk's frames.

    Unrolling (a handful of steps) keeps the graph to MatMul/Sigmoid/Tanh, which every ONNX
    runtime handles, instead of relying on exporters' support for LSTMs with projection.
    """

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.cfg = model.cfg

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        enc = self.encoder
        x = (x - enc.feat_mean) * enc.feat_istd
        x = enc.subsampling(x)  # (N, T', d_model)
        steps = x.shape[1]
        next_h, next_c = [], []
        for layer, lstm in enumerate(enc.lstms):
            w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
            w_hr = lstm.weight_hr_l0
            bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
            gates_x = torch.matmul(x, w_ih.t()) + bias  # input part of all steps at once
            hl, cl = h[layer], c[layer]
            outs = []
            for t in range(steps):
                gates = gates_x[:, t] + torch.matmul(hl, w_hh.t())
                i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order
                cl = torch.sigmoid(f) * cl + torch.sigmoid(i) * torch.tanh(g)
                hl = torch.matmul(torch.sigmoid(o) * torch.tanh(cl), w_hr.t())
                outs.append(hl)
            y = torch.stack(outs, dim=1)
            x = y if layer == 0 else x + y
            next_h.append(hl)
            next_c.append(cl)
        return enc.proj(x), torch.stack(next_h), torch.stack(next_c)


class DecoderStep(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(y)[:, -1]


class JoinerStep(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.joiner(encoder_out, decoder_out)


def chunk_frames(model: Transducer) -> int:
    """Feature frames the encoder takes per step (sherpa's metadata "T")."""
    t = model.cfg.decode_chunk_len + SUBSAMPLING_PAD
    assert subsampled_length(t) == model.cfg.decode_chunk_len // 4
    return t


def _add_metadata(path: Path, meta: dict[str, object]) -> None:
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=str(v))
    onnx.save(m, str(path))


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            batch_axes: dict[str, int]) -> None:
    module.eval()  # a fresh wrapper is in training mode, which would switch dropout on
    torch.onnx.export(
        module, args, str(path), input_names=inputs, output_names=outputs,
        dynamic_axes={name: {axis: "N"} for name, axis in batch_axes.items()},
        opset_version=OPSET, dynamo=False, do_constant_folding=True,
    )


@torch.no_grad()
def export_onnx(model: Transducer, tokens: Path, out_dir: Path) -> dict[str, Path]:
    model.eval()
    cfg = model.cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    n, layers = 1, cfg.num_encoder_layers
    t = chunk_frames(model)
    x = torch.zeros(n, t, cfg.num_bins)
    h = torch.zeros(layers, n, cfg.d_model)
    c = torch.zeros(layers, n, cfg.rnn_hidden_size)
    paths = {name: out_dir / f"{name}.onnx" for name in ("encoder", "decoder", "joiner")}
    _export(StreamingEncoder(model), (x, h, c), paths["encoder"], ["x", "h", "c"],
            ["encoder_out", "next_h", "next_c"],
            {"x": 0, "h": 1, "c": 1, "encoder_out": 0, "next_h": 1, "next_c": 1})
    _add_metadata(paths["encoder"], {
        "model_type": "lstm", "num_encoder_layers": layers, "T": t,
        "decode_chunk_len": cfg.decode_chunk_len, "rnn_hidden_size": cfg.rnn_hidden_size,
        "d_model": cfg.d_model, "model_author": "edge-asr",
    })
    y = torch.zeros(n, cfg.context_size, dtype=torch.int64)
    _export(DecoderStep(model), (y,), paths["decoder"], ["y"], ["decoder_out"],
            {"y": 0, "decoder_out": 0})
    _add_metadata(paths["decoder"], {"vocab_size": cfg.vocab_size,
                                     "context_size": cfg.context_size})
    e = torch.zeros(n, cfg.joiner_dim)
    _export(JoinerStep(model), (e, e), paths["joiner"], ["encoder_out", "decoder_out"],
            ["logit"], {"encoder_out": 0, "decoder_out": 0, "logit": 0})
    _add_metadata(paths["joiner"], {"joiner_dim": cfg.joiner_dim})
    model.eval()
    shutil.copy(tokens, out_dir / "tokens.txt")
    paths["tokens"] = out_dir / "tokens.txt"
    # The sentencepiece model travels with the tokens: contextual biasing encodes names with it.
    bpe = tokens.parent / "bpe.model"
    if bpe.exists():
        shutil.copy(bpe, out_dir / "bpe.model")
        paths["bpe"] = out_dir / "bpe.model"
    return paths


def main() -> None:
    from edge_asr.models.model import load_model

    p = argparse.ArgumentParser(description="export a checkpoint to sherpa-onnx lstm layout")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("tokens", type=Path)
    p.add_argument("out_dir", type=Path)
    args = p.parse_args()
    for name, path in export_onnx(load_model(args.checkpoint), args.tokens, args.out_dir).items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
