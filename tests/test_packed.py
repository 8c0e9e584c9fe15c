"""The packed on-disk model format: exact round trip, smaller with zeros, checked against the
model card when the runtime decodes it, and a clear error for a damaged file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.transducer import ModelError, TransducerModel, sha256_of
from edge_asr.models.packed import pack_bytes, pack_dir, sparsity, unpack_bytes, weight_bits


def _matmul_model(weight: np.ndarray) -> bytes:
    w = numpy_helper.from_array(weight, "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w])
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize("zero_share", [0.0, 0.5, 0.9])
def test_round_trip_is_byte_exact(zero_share):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    w[rng.random(w.shape) < zero_share] = 0.0
    original = _matmul_model(w)
    assert unpack_bytes(pack_bytes(original)) == original


def test_negative_zeros_keep_their_sign_through_the_zero_bitmask():
    # A pruned negative weight multiplied by a 0 mask is -0.0: the bitmask must not turn it
    # into +0.0, or the decoded file would not hash as the card says.
    w = np.zeros((64, 32), np.float32)
    w[::3] = -0.0
    w[::7] = 0.5
    original = _matmul_model(w)
    assert unpack_bytes(pack_bytes(original)) == original


def test_zeros_make_the_file_smaller_than_compression_alone():
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (256, 256)).astype(np.int8).astype(np.float32)
    dense = len(pack_bytes(_matmul_model(w)))
    w[rng.random(w.shape) < 0.7] = 0.0
    sparse = len(pack_bytes(_matmul_model(w)))
    assert sparse < 0.6 * dense


def test_weight_bits_counts_the_levels_the_codes_use(tmp_path):
    """The card's bits per weight: 4-bit QAT weights are stored as int8 codes on 15 levels."""
    rng = np.random.default_rng(2)
    cases = {4: rng.integers(-7, 8, (64, 32)) * 18, 8: rng.integers(-127, 128, (64, 32))}
    for bits, codes in cases.items():
        path = tmp_path / f"w{bits}.onnx"
        path.write_bytes(_matmul_model(codes.astype(np.int8)))
        assert weight_bits([path]) == bits
    # Averaged by size: three 4-bit matrices and one 8-bit one of the same size.
    assert weight_bits([tmp_path / "w4.onnx"] * 3 + [tmp_path / "w8.onnx"]) == 5.0
    path = tmp_path / "float.onnx"
    path.write_bytes(_matmul_model(rng.standard_normal((64, 32)).astype(np.float32)))
    assert weight_bits([path]) == 32


def test_damaged_files_are_refused_with_a_clear_error():
    packed = pack_bytes(_matmul_model(np.ones((64, 32), np.float32)))
    with pytest.raises(ValueError, match="magic"):
        unpack_bytes(b"not a model")
    with pytest.raises(ValueError, match="corrupt"):
        unpack_bytes(packed[:-40])


def test_runtime_loads_a_packed_model_and_checks_its_card(tiny_model_dir, tmp_path):
    plain = Recognizer(RecognizerConfig(model_dir=tiny_model_dir))
    packed_dir = tmp_path / "packed"
    shutil.copytree(tiny_model_dir, packed_dir)
    card = json.loads((packed_dir / "model_card.json").read_text())
    card["sha256"]["bpe.model"] = sha256_of(packed_dir / "bpe.model")
    (packed_dir / "model_card.json").write_text(json.dumps(card))
    sizes = pack_dir(packed_dir)
    assert set(sizes) == {"encoder.onnx.pack", "decoder.onnx.pack", "joiner.onnx.pack",
                          "bpe.model.pack"}
    assert not (packed_dir / "encoder.onnx").exists()
    assert not (packed_dir / "bpe.model").exists()
    assert sizes["bpe.model.pack"] < 0.5 * (tiny_model_dir / "bpe.model").stat().st_size
    packed = Recognizer(RecognizerConfig(model_dir=packed_dir))
    audio = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    context = {"contacts": ["Anna Schmidt", "Oluwaseun"]}
    results, graphs = [], []
    for rec in (plain, packed):
        stream = rec.create_stream(context)
        stream.accept_waveform(16000, audio)
        stream.input_finished()
        rec.decode(stream)
        results.append(rec.result(stream).tokens)
        graphs.append([(p.text, p.tokens) for p in rec.context_graph(context).phrases])
    assert results[0] == results[1]  # the same model, decoded from the packed file
    assert graphs[0] == graphs[1]  # the context spelled by the packed bpe.model

    # a packed tokenizer that decodes to other bytes than the card's is refused
    card["sha256"]["bpe.model"] = "0" * 64
    (packed_dir / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="bpe.model.pack.*sha256"):
        Recognizer(RecognizerConfig(model_dir=packed_dir)).context_graph(context)

    # a packed file that decodes to other bytes than the card's sha256 is refused
    card = json.loads((packed_dir / "model_card.json").read_text())
    card["sha256"]["joiner.onnx"] = "0" * 64
    (packed_dir / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="joiner.onnx.pack.*sha256"):
        TransducerModel(packed_dir)
    (packed_dir / "encoder.onnx.pack").write_bytes(b"EAPK1\ngarbage")
    with pytest.raises(ModelError, match="encoder.onnx.pack: cannot be decoded"):
        TransducerModel(packed_dir)


def test_sparsity_counts_zero_weights(tmp_path):
    w = np.ones((64, 32), np.float32)
    w[:16] = 0.0
    path = Path(tmp_path) / "m.onnx"
    path.write_bytes(_matmul_model(w))
    assert sparsity(path) == (16 * 32, 64 * 32)
    assert onnx.load(str(path)).graph.initializer[0].name == "w"


def test_pack_command_keeps_the_cards_bytes_true(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    subprocess.run([sys.executable, "-m", "edge_asr.models.packed", "pack", str(folder)],
                   check=True, capture_output=True)
    card = json.loads((folder / "model_card.json").read_text())
    assert "encoder.onnx.pack" in card["bytes"] and "encoder.onnx" not in card["bytes"]
    assert card["bytes_total"] == sum((folder / n).stat().st_size for n in card["bytes"])
    subprocess.run([sys.executable, "-m", "edge_asr.models.packed", "unpack", str(folder)],
                   check=True, capture_output=True)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["bytes"]["encoder.onnx"] == (folder / "encoder.onnx").stat().st_size


def test_a_corrupt_model_card_or_token_table_is_refused_naming_the_file(tiny_model_dir,
                                                                       tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "model_card.json").write_text("garbage {")
    with pytest.raises(ModelError, match=r"model_card\.json: not a readable model card"):
        TransducerModel(model)
    (model / "model_card.json").unlink()  # no card: the table itself is parsed
    lines = (model / "tokens.txt").read_text().splitlines()
    (model / "tokens.txt").write_text("\n".join(lines[:3] + ["brokenline"] + lines[4:]) + "\n")
    with pytest.raises(ModelError, match=r"tokens\.txt:4: expected 'PIECE ID'"):
        TransducerModel(model)
    (model / "tokens.txt").write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # an id gap
    with pytest.raises(ModelError, match=r"tokens\.txt: token ids must run from 0"):
        TransducerModel(model)
