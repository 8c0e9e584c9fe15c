"""The shipped model on the bundled clips (held-out voices and sentences).

WER_BOUND is the WER measured on these clips when the model was shipped (see the model
card and README), plus a margin; a change to features, search or model that makes
recognition worse fails here.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.audio import read_audio
from edge_asr.daemon.evaluate import evaluate, recognize_samples
from edge_asr.daemon.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.transducer import MODEL_FILES, sha256_of

DATA = Path(__file__).parent / "data"
# rnnt-v1 measured 49.74% (greedy) and 43.08% (beam 4) on these 24 clips (`edge-asr eval
# tests/data/manifest.jsonl --no-context --decoding ...`); bound = measurement + 5 points.
WER_BOUND = {"greedy_search": 0.55, "modified_beam_search": 0.48}


def test_bundled_clips_are_small_and_from_heldout_voices():
    from edge_asr.models.synth import heldout_voices

    size = sum(p.stat().st_size for p in DATA.iterdir())
    assert size < 2 * 1024 * 1024
    held = {v.id for v in heldout_voices()}
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").open()]
    assert len(rows) >= 20 and all(r["voice"] in held for r in rows)


def test_model_card_matches_files(shipped_model_dir):
    card = json.loads((shipped_model_dir / "model_card.json").read_text())
    for name in MODEL_FILES:
        assert card["sha256"][name] == sha256_of(shipped_model_dir / name)
        assert card["bytes"][name] == (shipped_model_dir / name).stat().st_size
    assert card["parameters"] <= 5_000_000
    assert {"test_voices", "test_sentences", "test_names", "test_snr10",
            "test_band8k"} <= card["evaluation"]["sets"].keys()


@pytest.mark.parametrize("method", ["greedy_search", "modified_beam_search"])
def test_wer_on_bundled_clips_stays_under_bound(method, tmp_path, shipped_model_dir):
    rec = Recognizer(RecognizerConfig(model_dir=shipped_model_dir, decoding_method=method))
    summary = evaluate(rec, DATA / "manifest.jsonl", tmp_path / "r.jsonl", use_context=False)
    assert summary.utterances >= 20 and summary.errors == 0
    assert WER_BOUND[method] is not None, "set WER_BOUND from the shipped model's measured WER"
    assert summary.wer <= WER_BOUND[method], summary.format()


def test_sherpa_onnx_gives_the_same_greedy_transcripts(shipped_model_dir):
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    d = shipped_model_dir
    theirs = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(d / "tokens.txt"), encoder=str(d / "encoder.onnx"),
        decoder=str(d / "decoder.onnx"), joiner=str(d / "joiner.onnx"), num_threads=1,
        decoding_method="greedy_search")
    ours = Recognizer(RecognizerConfig(model_dir=d, decoding_method="greedy_search"))
    tail = np.zeros(int(0.66 * 16000), np.float32)
    compared = 0
    for clip in sorted(DATA.glob("*.flac")):
        samples = np.concatenate([read_audio(clip), tail])
        s = theirs.create_stream()
        s.accept_waveform(16000, samples)
        s.input_finished()
        while theirs.is_ready(s):
            theirs.decode_stream(s)
        expected = " ".join(theirs.get_result(s).split())
        assert recognize_samples(ours, samples).text == expected, clip.name
        compared += bool(expected)
    assert compared >= 20
