"""The exported RNN-T on ONNX Runtime: three sessions and the model's metadata.

Reads the same files sherpa-onnx reads (encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt)
and checks them against the model card's sha256 when a card is present.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODEL_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")


class ModelError(RuntimeError):
    """A model folder that cannot be used: missing, corrupt or not the expected layout."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_model_dir(model_dir: Path) -> None:
    """Every file present, and equal to the model card's sha256 if the folder has a card."""
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(f"{model_dir}: missing {', '.join(missing)}")
    card = model_dir / "model_card.json"
    if not card.is_file():
        return
    expected = json.loads(card.read_text()).get("sha256", {})
    for name, digest in expected.items():
        path = model_dir / name
        if path.is_file() and sha256_of(path) != digest:
            raise ModelError(f"{path}: sha256 does not match the model card (corrupt or replaced)")


def read_tokens(path: Path) -> list[str]:
    table: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            piece, idx = line.rsplit(" ", 1)
            table[int(idx)] = piece
    return [table[i] for i in range(len(table))]


@dataclass(frozen=True)
class ModelInfo:
    num_encoder_layers: int
    chunk_frames: int  # feature frames per encoder call ("T")
    chunk_shift: int  # frames the window advances per call ("decode_chunk_len")
    rnn_hidden_size: int
    d_model: int
    vocab_size: int
    context_size: int
    blank_id: int = 0

    @property
    def frames_per_output(self) -> int:
        return 4  # subsampling factor


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several types for unreadable files
        raise ModelError(f"{path}: cannot be loaded by onnxruntime: {e}") from e


class TransducerModel:
    """Stateless wrapper over the three ONNX sessions; streams keep their own state."""

    def __init__(self, model_dir: str | Path, threads: int = 1, verify: bool = True) -> None:
        self.dir = Path(model_dir)
        if verify:
            verify_model_dir(self.dir)
        self.encoder = _session(self.dir / "encoder.onnx", threads)
        self.decoder = _session(self.dir / "decoder.onnx", threads)
        self.joiner = _session(self.dir / "joiner.onnx", threads)
        meta = self.encoder.get_modelmeta().custom_metadata_map
        dmeta = self.decoder.get_modelmeta().custom_metadata_map
        if meta.get("model_type") != "lstm":
            raise ModelError(f"{self.dir}: encoder model_type is {meta.get('model_type')!r}, "
                             "expected 'lstm'")
        self.tokens = read_tokens(self.dir / "tokens.txt")
        self.info = ModelInfo(
            num_encoder_layers=int(meta["num_encoder_layers"]), chunk_frames=int(meta["T"]),
            chunk_shift=int(meta["decode_chunk_len"]),
            rnn_hidden_size=int(meta["rnn_hidden_size"]), d_model=int(meta["d_model"]),
            vocab_size=int(dmeta["vocab_size"]), context_size=int(dmeta["context_size"]),
        )
        if len(self.tokens) != self.info.vocab_size:
            raise ModelError(f"{self.dir}: tokens.txt has {len(self.tokens)} entries, the "
                             f"decoder {self.info.vocab_size}")

    def initial_state(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
        i = self.info
        return (np.zeros((i.num_encoder_layers, batch, i.d_model), np.float32),
                np.zeros((i.num_encoder_layers, batch, i.rnn_hidden_size), np.float32))

    def run_encoder(self, feats: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
        """feats (N, T, 80) -> encoder_out (N, T/4 - ..., J), new state."""
        out, h, c = self.encoder.run(None, {"x": feats, "h": state[0], "c": state[1]})
        return out, (h, c)

    def run_decoder(self, contexts: np.ndarray) -> np.ndarray:
        """contexts (N, context_size) int64 -> (N, J)."""
        return self.decoder.run(None, {"y": contexts})[0]

    def run_joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """enc (N, J), dec (N, J) -> logits (N, V)."""
        return self.joiner.run(None, {"encoder_out": enc, "decoder_out": dec})[0]

    def detokenize(self, ids: list[int]) -> str:
        text = "".join(self.tokens[i] for i in ids if i != self.info.blank_id)
        return " ".join(text.replace("\u2581", " ").split())
