"""int8 quantisation of an exported model: static QDQ, calibrated on what the fp32 model
sees while it decodes, runs in our runtime and stays close to fp32."""

import json
from pathlib import Path

import numpy as np
import onnx

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import recognize_samples
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.token_lm import LM_FILE, NAMES_FILE
from edge_asr.daemon.recognition.transducer import TransducerModel, sha256_of
from edge_asr.models.quantize import (
    ONNX_FILES,
    TRAINED_FOR_WEIGHTS,
    calibration_inputs,
    quantize_dir,
)

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


def test_quantizing_again_into_a_shipped_folder_replaces_its_card_and_packs(tiny_model_dir,
                                                                             tmp_path):
    """Re-quantising a retrained model into the folder of the one it replaces: the old card
    and packed files go, so the runtime loads the new weights (it refused them against the
    old card's sha256 before)."""
    from edge_asr.models.packed import pack_dir
    from edge_asr.models.quantize import write_card

    out = tmp_path / "int8"
    quantize_dir(tiny_model_dir, out)
    (out / "model_card.json").write_text(json.dumps({"name": "old", "sha256": {
        n: "0" * 64 for n in ONNX_FILES}}))
    pack_dir(out)  # what a shipped folder holds: packed files and their card
    for name in TRAINED_FOR_WEIGHTS:  # and classifiers trained on the old encoder
        (out / name).write_text("{}")
    quantize_dir(tiny_model_dir, out)
    assert not (out / "model_card.json").exists()
    assert not list(out.glob("*.pack"))
    assert not [name for name in TRAINED_FOR_WEIGHTS if (out / name).exists()]
    base = tmp_path / "base"
    base.mkdir()
    for f in tiny_model_dir.iterdir():
        (base / f.name).write_bytes(f.read_bytes())
    (base / "model_card.json").write_text(json.dumps({
        "architecture": "", "config": {}, "parameters": 0, "training_data": {}}))
    card = write_card(base, out, None, (), workers=1)
    assert card["weight_bits"] == 8 and card["bytes_in_memory_loaded"] > 0
    TransducerModel(out)  # loads the packed files against the new card
    for name in (LM_FILE, NAMES_FILE):  # the device LM comes along, checked like the rest
        assert card["sha256"][name] == sha256_of(out / name)
    Recognizer(RecognizerConfig(model_dir=out))  # decodes with it, as by default


def test_comparison_table_gives_size_ratio_and_relative_wer():
    from edge_asr.models.card import comparison_table

    def card(name, size, wer):
        return {"name": name, "bytes_total": size, "bytes_in_memory_loaded": 4_000_000,
                "evaluation": {"sets": {"test_voices": {"modified_beam_search": {"wer": wer}}}}}

    table = comparison_table([card("fp32", 16_000_000, 0.20), card("int4", 2_000_000, 0.21)])
    row = table.splitlines()[-1]
    assert "2,000,000 (8.00x smaller)" in row and "21.00%" in row and "+5.0%" in row


def test_card_table_names_the_beam_the_context_was_searched_with():
    from edge_asr.models.card import markdown_table

    sets = {"test_names": {"modified_beam_search": {"wer": 0.4},
                           "modified_beam_search+context": {"wer": 0.34}}}
    new = markdown_table({"evaluation": {"sets": sets, "context_beam": 8}})
    old = markdown_table({"evaluation": {"sets": sets}})  # a card from before context_beam
    assert "beam-8 + context WER" in new.splitlines()[0] and "34.00%" in new
    assert "beam-4 + context WER" in old.splitlines()[0]
