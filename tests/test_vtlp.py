"""Vocal tract length perturbation: the runtime's features at a factor of 1, formants moved
by other factors, and the training set's use of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.frontend.features import FbankConfig, compute_fbank
from edge_asr.models import vtlp
from edge_asr.models.dataset import SpeechDataset
from edge_asr.models.vtlp import warped_fbank

RATE = 16000
BPE = Path(__file__).resolve().parents[1] / "models" / "rnnt-v2" / "bpe.model"


def _voice_like(seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    """Harmonics of 120 Hz shaped by two resonances (700 and 1800 Hz) with a little noise:
    speech-shaped enough for the filterbank's whole range, and reproducible."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for k in range(1, 60):
        f = 120.0 * k
        gain = 1 + 4 * (np.exp(-((f - 700) / 150) ** 2) + np.exp(-((f - 1800) / 200) ** 2))
        x += gain * np.sin(2 * np.pi * f * t) / k
    x = 0.05 * x / np.max(np.abs(x))
    x += 0.001 * np.random.default_rng(seed).standard_normal(len(t))
    return x.astype(np.float32)


def test_at_a_factor_of_one_the_features_are_the_runtimes():
    audio = _voice_like()
    own = vtlp._fbank(audio, 1.0, FbankConfig())
    runtime = compute_fbank(audio)
    assert own.shape == runtime.shape
    np.testing.assert_allclose(own, runtime, atol=2e-3)
    # The public function hands the runtime's own features back at 1.
    np.testing.assert_array_equal(warped_fbank(audio, 1.0), runtime)


@pytest.mark.parametrize("samples", [1, 159, 161, 400, 16001])
def test_frame_count_matches_the_runtime_at_any_length(samples):
    audio = np.random.default_rng(samples).uniform(-0.1, 0.1, samples).astype(np.float32)
    assert warped_fbank(audio, 1.05).shape == compute_fbank(audio).shape


def test_a_factor_above_one_moves_a_formant_up_and_below_one_down():
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    peak = {w: int(np.argmax(warped_fbank(tone, w)[50])) for w in (0.9, 1.0, 1.1)}
    assert peak[0.9] < peak[1.0] < peak[1.1]


@pytest.mark.parametrize("warp", [0.0, -1.0, 2.5, float("nan")])
def test_a_factor_out_of_range_is_refused(warp):
    with pytest.raises(ValueError, match="warp factor"):
        warped_fbank(_voice_like(0.2), warp)


def _dataset(tmp_path, vtlp_prob: float) -> SpeechDataset:
    audio = tmp_path / "a.wav"
    sf.write(audio, _voice_like(), RATE)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(audio), "text": "call mom",
                                    "duration": 1.3}) + "\n")
    return SpeechDataset(manifest, BPE, augment=True, seed=3,
                         vtlp_prob=vtlp_prob)


def test_the_training_set_warps_its_items_reproducibly(tmp_path):
    plain, warped, again = (_dataset(tmp_path, p) for p in (0.0, 1.0, 1.0))
    x_plain, y_plain = plain[0]
    x_warped, y_warped = warped[0]
    assert x_plain.shape == x_warped.shape and y_plain.tolist() == y_warped.tolist()
    # Same audio chain (VTLP draws from a stream of its own), other filterbank.
    assert not np.allclose(x_plain.numpy(), x_warped.numpy(), atol=1e-3)
    np.testing.assert_array_equal(x_warped.numpy(), again[0][0].numpy())


def test_a_share_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="vtlp_prob"):
        _dataset(tmp_path, 1.5)
