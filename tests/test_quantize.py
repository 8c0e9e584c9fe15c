"""int8 quantisation of an exported model: static QDQ, calibrated on what the fp32 model
sees while it decodes, runs in our runtime and stays close to fp32."""

import json
from pathlib import Path

import numpy as np
import onnx

from edge_asr.daemon.audio import read_audio
from edge_asr.daemon.evaluate import recognize_samples
from edge_asr.daemon.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.transducer import TransducerModel
from edge_asr.models.quantize import ONNX_FILES, calibration_inputs, quantize_dir

DATA = Path(__file__).parent / "data"


def test_static_qdq_model_decodes_close_to_fp32(tiny_model_dir, tmp_path):
    calibration = calibration_inputs(tiny_model_dir, DATA / "manifest.jsonl", utterances=1,
                                     per_file=30)
    assert all(calibration[f] for f in ONNX_FILES)
    assert set(calibration["encoder.onnx"][0]) == {"x", "h", "c"}
    out = tmp_path / "qdq"
    quantize_dir(tiny_model_dir, out, calibration)
    ops = {n.op_type for n in onnx.load(str(out / "encoder.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    (out / "model_card.json").write_text(json.dumps({"name": "qdq"}))  # no sha256 to check
    fp32, qdq = TransducerModel(tiny_model_dir), TransducerModel(out, verify=False)
    item = calibration["encoder.onnx"][-1]
    a = fp32.run_encoder(item["x"], (item["h"], item["c"]))[0]
    b = qdq.run_encoder(item["x"], (item["h"], item["c"]))[0]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    rec = Recognizer(RecognizerConfig(model_dir=out), model=qdq)
    recognize_samples(rec, read_audio(DATA / "clip00.flac"))  # the whole pipeline runs


def test_static_quantisation_needs_the_recipes_data(tiny_model_dir, tmp_path, monkeypatch,
                                                   capsys):
    import sys

    import pytest

    from edge_asr.models import quantize

    monkeypatch.setattr(sys, "argv", ["quantize", str(tiny_model_dir), str(tmp_path / "q"),
                                      "--static"])
    with pytest.raises(SystemExit):
        quantize.main()
    assert "give --data" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
