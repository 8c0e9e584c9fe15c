"""The wake word's second opinion: read from the model folder for its own phrase only,
refused in words when malformed, and deciding what the spotter reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.wakeword.spotter import KeywordSpotter, WakeWordConfig
from edge_asr.daemon.wakeword.verifier import (
    VERIFIER_FILE,
    WakeVerifier,
    load_verifier,
    pooled_features,
)
from edge_asr.models.wake_verifier import fit_logistic

DATA = Path(__file__).parent / "data"
PHRASE = "hey can you"  # clip00 says it
DIM = 2 * 256 + 2  # mean and max of the encoder's frames, log score, length


def _verifier(bias: float, threshold: float = 0.5, phrase: str = PHRASE) -> WakeVerifier:
    return WakeVerifier(phrase, np.zeros(DIM), np.ones(DIM), np.zeros(DIM), bias, threshold)


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer()


def _spot(recognizer, verifier, audio):
    spotter = KeywordSpotter(recognizer, WakeWordConfig(phrase=PHRASE), verifier)
    for i in range(0, len(audio), 320):
        found = spotter.accept(audio[i:i + 320])
        if found:
            return found
    return None


def test_the_verifier_decides_what_the_spotter_reports(recognizer):
    audio = read_audio(DATA / "clip00.flac")
    heard = _spot(recognizer, _verifier(bias=8.0), audio)
    assert heard is not None and heard.confirmed == pytest.approx(1.0, abs=1e-3)
    assert _spot(recognizer, _verifier(bias=-8.0), audio) is None  # the phrase, doubted
    # without a verifier for the phrase the spotter alone decides
    alone = _spot(recognizer, None, audio)
    assert alone is not None and alone.confirmed is None


def test_pooled_features_cover_the_phrase_and_a_little_before():
    frames = np.arange(40, dtype=np.float64).reshape(20, 2)
    f = pooled_features(frames, first_frame=5, end_frame=9, score=0.5)
    span = frames[3:9]
    np.testing.assert_allclose(f, np.concatenate((span.mean(0), span.max(0),
                                                  [np.log(0.5), 6.0])))


def test_a_verifier_is_read_for_its_phrase_only(tmp_path):
    (tmp_path / VERIFIER_FILE).write_text(json.dumps(_verifier(1.0).to_json()))
    load_verifier.cache_clear()
    assert load_verifier(str(tmp_path), PHRASE).bias == 1.0
    assert load_verifier(str(tmp_path), "hey marvin") is None
    assert load_verifier(str(tmp_path / "elsewhere"), PHRASE) is None


def test_a_malformed_verifier_is_refused_naming_the_file(tmp_path):
    bad = _verifier(1.0).to_json() | {"scale": [1.0, 2.0]}
    (tmp_path / VERIFIER_FILE).write_text(json.dumps(bad))
    load_verifier.cache_clear()
    with pytest.raises(ValueError, match=r"wake_verifier\.json: mean, scale"):
        load_verifier(str(tmp_path), PHRASE)
    with pytest.raises(ValueError, match="takes 514 features, got 3"):
        _verifier(1.0).probability(np.zeros(3))


def test_the_recipe_fits_a_separable_problem():
    rng = np.random.default_rng(0)
    x = np.vstack((rng.normal(1.0, 1.0, (200, 3)), rng.normal(-1.0, 1.0, (200, 3))))
    y = np.r_[np.ones(200), np.zeros(200)]
    mean, scale, w, b = fit_logistic(x, y, l2=1e-3)
    verifier = WakeVerifier(PHRASE, mean, scale, w, b, 0.5)
    right = [verifier.probability(f) >= 0.5 for f in x] == (y == 1)
    assert np.mean(right) > 0.9
