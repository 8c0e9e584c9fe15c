"""4- and 8-bit weights with a scale per block of inputs (models/blockwise.py): the files
hold the weights as codes, decode close to fp32 in our runtime and in sherpa-onnx, pack
losslessly, and the card counts codes, not bytes."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import recognize_samples
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.transducer import TransducerModel
from edge_asr.models import packed
from edge_asr.models.blockwise import attributes, block_codes, gemm_to_matmul
from edge_asr.models.card import loaded_model_bytes
from edge_asr.models.quantize import ONNX_FILES, quantize_dir_block, write_card

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module", params=[4, 8], ids=["4bit", "8bit"])
def block_model(tiny_model_dir, tmp_path_factory, request):
    bits = request.param
    out = tmp_path_factory.mktemp(f"block{bits}")
    quantize_dir_block(tiny_model_dir, out, 16, bits)
    base = tmp_path_factory.mktemp("base")
    for f in tiny_model_dir.iterdir():
        (base / f.name).write_bytes(f.read_bytes())
    (base / "model_card.json").write_text(json.dumps({
        "architecture": "", "config": {}, "parameters": 0, "training_data": {}}))
    return out, write_card(base, out, None, (), workers=1, block_size=16, bits=bits)


def test_weights_are_block_codes_in_the_files_and_in_memory(tiny_model_dir, block_model):
    out, card = block_model
    bits = card["weight_bits"]
    ops = {f: {n.op_type for n in onnx.load_from_string(
        packed.unpack_bytes((out / (f + ".pack")).read_bytes())).graph.node} for f in ONNX_FILES}
    assert "MatMulNBits" in ops["encoder.onnx"] and "MatMul" not in ops["encoder.onnx"]
    assert "GatherBlockQuantized" in ops["decoder.onnx"]  # the embedding
    assert "Gemm" not in ops["joiner.onnx"] and "MatMulNBits" in ops["joiner.onnx"]
    assert bits in (4.0, 8.0) and 0.0 <= card["sparsity"] < 0.5
    assert f"{bits:.0f}-bit" in card["derived_from"]["how"]
    assert "per 16 inputs" in card["derived_from"]["how"]
    # In memory too the weights are codes (the small convolutions stay float).
    assert card["bytes_in_memory_loaded"] < loaded_model_bytes(tiny_model_dir) * bits / 16


def test_block_model_decodes_close_to_fp32_and_runs_the_pipeline(tiny_model_dir, block_model):
    out, _ = block_model
    fp32, q = TransducerModel(tiny_model_dir), TransducerModel(out)  # checks the card's sha256
    shapes = {i.name: [d if isinstance(d, int) else 1 for d in i.shape]  # batch of one
              for i in ort.InferenceSession(str(tiny_model_dir / "encoder.onnx")).get_inputs()}
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shapes["x"]) * 3 - 8).astype(np.float32)
    h, c = np.zeros(shapes["h"], np.float32), np.zeros(shapes["c"], np.float32)
    a = fp32.run_encoder(x, (h, c))[0]
    b = q.run_encoder(x, (h, c))[0]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    contexts = np.array([[1, 5], [3, 7]], dtype=np.int64)
    da, db = fp32.run_decoder(contexts), q.run_decoder(contexts)
    assert np.corrcoef(da.ravel(), db.ravel())[0, 1] > 0.95
    rec = Recognizer(RecognizerConfig(model_dir=out), model=q)
    recognize_samples(rec, read_audio(DATA / "clip00.flac"))  # the whole pipeline runs


def test_sherpa_onnx_decodes_the_unpacked_block_model_like_we_do(block_model, tmp_path):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    out, _ = block_model
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in out.iterdir():
        (plain / f.name).write_bytes(f.read_bytes())
    packed.unpack_dir(plain)
    rng = np.random.default_rng(1)
    audio = np.concatenate([(rng.standard_normal(16000 * 2) * 0.1).astype(np.float32),
                            np.zeros(int(0.66 * 16000), np.float32)])
    ours = Recognizer(RecognizerConfig(model_dir=out, decoding_method="greedy_search"))
    stream = ours.create_stream()
    stream.accept_waveform(16000, audio)
    ours.decode(stream)
    theirs = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(plain / "tokens.txt"), encoder=str(plain / "encoder.onnx"),
        decoder=str(plain / "decoder.onnx"), joiner=str(plain / "joiner.onnx"), num_threads=1)
    s = theirs.create_stream()
    s.accept_waveform(16000, audio)
    while theirs.is_ready(s):
        theirs.decode_stream(s)
    expected = theirs.get_result(s).strip()
    assert len(expected) > 10  # a random model emits many tokens: every step is compared
    assert ours.result(stream).text == " ".join(expected.split())


def test_gemm_becomes_matmul_plus_add_with_the_same_output(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 4)).astype(np.float32)  # (out, in): transB
    bias = rng.standard_normal(6).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="out")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((3, 4)).astype(np.float32)
    want = x @ w.T + bias
    assert gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    assert {t.name for t in model.graph.initializer} == {"w_kn", "b"}  # the old weight goes
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_half_precision_scales_pack_in_two_bytes_and_round_trip():
    exact = np.array([0.5, 0.0078125, -3.25, 1e-3], np.float32).astype(np.float16) \
        .astype(np.float32)
    blob = packed._encode(exact)
    assert len(blob) < 4 * exact.size + 40 and blob[0] == 2  # the half mode
    assert packed._decode(io.BytesIO(blob)) == exact.tobytes()
    inexact = np.array([0.1, 1.0 + 2 ** -20], np.float32)  # float16 cannot hold these
    blob = packed._encode(inexact)
    assert blob[0] != 2 and packed._decode(io.BytesIO(blob)) == inexact.tobytes()


@pytest.mark.parametrize("bits, zero_code", [(4, 8), (8, 128)])
def test_codes_are_counted_one_per_weight_with_the_middle_code_as_zero(bits, zero_code):
    weight = np.zeros((4, 16), np.float32)  # (K inputs, N outputs)
    # half the columns far from zero (none rounds to the zero code), half exactly zero
    weight[:, :8] = np.where(np.arange(32) % 2, 1.0, -1.0).reshape(4, 8) * np.linspace(
        0.5, 1.0, 32).reshape(4, 8)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(weight, "w")])
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    q = MatMulNBitsQuantizer(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)]), algo_config=DefaultWeightOnlyQuantConfig(
        block_size=16, is_symmetric=True, bits=bits))
    q.process()
    codes = block_codes(q.model.model)
    (values, zero, code_bits), = codes.values()
    assert code_bits == bits and zero == zero_code
    assert values.size == 64  # K=4 codes a row, the row's padding left out
    assert int((values == zero).sum()) == 32  # the eight zero columns, nothing else


def test_block_size_must_be_a_power_of_two(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from edge_asr.models import quantize

    for flags, says in ((["--block-4bit", "48"], "power of two"),
                        (["--block-4bit", "8"], "power of two"),
                        (["--block-8bit", "100"], "power of two"),
                        (["--block-4bit", "64", "--static"], "power of two"),
                        (["--block-4bit", "64", "--block-8bit", "64"], "not allowed with")):
        monkeypatch.setattr(sys, "argv", ["quantize", str(tiny_model_dir),
                                          str(tmp_path / "q"), *flags])
        with pytest.raises(SystemExit):
            quantize.main()
        assert says in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def _original_name(name: str) -> str:
    for suffix in ("_Q4", "_Q8", "_q8"):  # onnxruntime's quantizer's, then ours
        name = name.removesuffix(suffix)
    return name


def _dequantized(model) -> dict[str, np.ndarray]:
    """{original weight name: the float weights the codes and scales stand for}, read
    independently of block_codes."""
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        attrs = attributes(node)
        bits = attrs.get("bits", 4)
        if node.op_type == "MatMulNBits":
            k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
            raw = numpy_helper.to_array(inits[node.input[1]]).view(np.uint8)
            if bits == 4:
                raw = np.stack([raw & 15, raw >> 4], -1)
            codes = raw.reshape(n, -1).astype(np.float32) - 2 ** (bits - 1)
            scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, -1)
            w = codes * np.repeat(scales, block, axis=1)
            out[_original_name(node.input[1])] = w[:, :k].T  # (K, N), as MatMul had it
        elif node.op_type == "GatherBlockQuantized":
            codes = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            if bits == 8:  # uint8 codes; the 4-bit ones are signed int4
                codes -= 128
            scales = numpy_helper.to_array(inits[node.input[2]])
            out[_original_name(node.input[0])] = codes * np.repeat(
                scales, attrs["block_size"], axis=1)[:, : codes.shape[1]]
    return out


@pytest.mark.parametrize("bits", [4, 8])
def test_weights_trained_on_the_block_grid_export_without_loss(tmp_path, bits):
    """QAT's grid (compress.block_grid) is the export's: weights snapped onto it come out of
    onnxruntime's quantizer with the same values, every matrix and the embedding."""
    import torch

    from edge_asr.models import compress
    from edge_asr.models.export import export_onnx
    from edge_asr.models.model import ModelConfig, Transducer

    torch.manual_seed(4)
    model = Transducer(ModelConfig(vocab_size=40, d_model=32, rnn_hidden_size=48,
                                   decoder_dim=32, joiner_dim=32, subsampling_channels=8)).eval()
    compress.snap_to_grid(model, bits, 16)
    fp32, q = tmp_path / "fp32", tmp_path / "q"
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"t{i} {i}\n" for i in range(40)))
    export_onnx(model, tokens, fp32)
    for name in ("bpe.model",):  # quantize_dir_block copies it
        (fp32 / name).write_bytes(b"")
    quantize_dir_block(fp32, q, 16, bits)
    checked = 0
    for f in ONNX_FILES:
        src = onnx.load(str(fp32 / f))
        weights = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
        gemms = {n.input[1] for n in src.graph.node if n.op_type == "Gemm"}
        for name, w in _dequantized(onnx.load(str(q / f))).items():
            original = weights[name.removesuffix("_kn")]
            if name.endswith("_kn") and name.removesuffix("_kn") in gemms:
                original = original.T  # the joiner's Gemm kept (out, in)
            np.testing.assert_allclose(w, original, rtol=0, atol=1e-7, err_msg=f"{f}: {name}")
            checked += 1
    assert checked >= 11  # 3 layers x 3 LSTM matrices, projections, embedding, joiner


def test_recipe_refuses_a_block_grid_it_cannot_export(recipe_refusal):
    for flags in (("--qat-block", "128"), ("--qat-bits", "8", "--qat-block", "100"),
                  ("--qat-bits", "4", "--qat-block", "100")):
        assert "power of two" in recipe_refusal(*flags)
