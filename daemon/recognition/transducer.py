"""The exported RNN-T on ONNX Runtime: three sessions and the model's metadata.

Reads the same files sherpa-onnx reads (encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt),
or their compressed form (NAME.onnx.pack, models/packed.py) decoded in memory, and checks
each against the model card's sha256 when a card is present.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_asr.models.packed import SUFFIX as PACKED_SUFFIX
from edge_asr.models.packed import unpack_bytes

MODEL_FILES = ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt")


class ModelError(RuntimeError):
    """A model folder that cannot be used: missing, corrupt or not the expected layout."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _card_digests(model_dir: Path) -> dict[str, str]:
    card = model_dir / "model_card.json"
    if not card.is_file():
        return {}
    try:
        digests = json.loads(card.read_text(encoding="utf-8")).get("sha256", {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise ModelError(f"{card}: not a readable model card (JSON object): {e}") from e
    if not isinstance(digests, dict):
        raise ModelError(f"{card}: 'sha256' must map file names to digests")
    return digests


def verify_model_dir(model_dir: Path) -> None:
    """Every file present (an ONNX file plain or packed), and equal to the model card's
    sha256 if the folder has a card (a packed file is checked when it is decoded, by
    read_model_file)."""
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()
               and not (model_dir / (name + PACKED_SUFFIX)).is_file()]
    if missing:
        raise ModelError(f"{model_dir}: missing {', '.join(missing)}")
    for name, digest in _card_digests(model_dir).items():
        path = model_dir / name
        if path.is_file() and sha256_of(path) != digest:
            raise ModelError(f"{path}: sha256 does not match the model card (corrupt or replaced)")


def read_model_file(model_dir: Path, name: str) -> bytes:
    """An ONNX file's bytes, from NAME or, decoded, from NAME.pack; checked against the card."""
    path, packed = model_dir / name, model_dir / (name + PACKED_SUFFIX)
    if path.is_file():
        return path.read_bytes()
    try:
        data = unpack_bytes(packed.read_bytes())
    except (OSError, ValueError) as e:
        raise ModelError(f"{packed}: cannot be decoded: {e}") from e
    digest = _card_digests(model_dir).get(name)
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise ModelError(f"{packed}: decodes to bytes whose sha256 does not match the model "
                         f"card's for {name} (corrupt or replaced)")
    return data


def read_tokens(path: Path) -> list[str]:
    """The token table, "PIECE ID" a line with ids 0..N-1, or a ModelError naming the line."""
    table: dict[int, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot be read: {e}") from e
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                piece, idx = line.rsplit(" ", 1)
                table[int(idx)] = piece
            except ValueError:
                raise ModelError(f"{path}:{number}: expected 'PIECE ID', got {line[:40]!r}") \
                    from None
    if sorted(table) != list(range(len(table))):
        raise ModelError(f"{path}: token ids must run from 0 to {len(table) - 1} without gaps")
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


def _session(model_dir: Path, name: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        path = model_dir / name
        model = str(path) if path.is_file() else read_model_file(model_dir, name)
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except ModelError:
        raise
    except Exception as e:  # onnxruntime raises several types for unreadable files
        raise ModelError(f"{model_dir / name}: cannot be loaded by onnxruntime: {e}") from e


class TransducerModel:
    """Stateless wrapper over the three ONNX sessions; streams keep their own state."""

    def __init__(self, model_dir: str | Path, threads: int = 1, verify: bool = True) -> None:
        self.dir = Path(model_dir)
        if verify:
            verify_model_dir(self.dir)
        self.encoder = _session(self.dir, "encoder.onnx", threads)
        self.decoder = _session(self.dir, "decoder.onnx", threads)
        self.joiner = _session(self.dir, "joiner.onnx", threads)
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
