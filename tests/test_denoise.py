"""Noise suppression in front of the recogniser: each method takes steady noise down, keeps
the stream's length, and a wrong setting is refused in words."""

import numpy as np
import pytest

from edge_asr.daemon.frontend.cleanup import FrontEndConfig, MicFrontEnd
from edge_asr.daemon.frontend.denoise import DenoiseOptions, NoiseSuppressor


@pytest.mark.parametrize("method", ["webrtc", "rnnoise", "webrtc-noise-gain"])
def test_each_suppressor_takes_steady_noise_down_and_keeps_the_length(method):
    noise = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.02).astype(np.float32)
    suppressor = NoiseSuppressor(DenoiseOptions(method))
    out = [suppressor.process(noise[i:i + 320]) for i in range(0, len(noise), 320)]
    out = np.concatenate(out + [suppressor.flush()])
    assert abs(len(out) - len(noise)) <= 480  # RNNoise pads its last 48 kHz frame
    late = slice(16000, len(out))
    assert np.mean(out[late] ** 2) < np.mean(noise[late] ** 2) / 10 ** 0.5  # >= 5 dB down


def test_off_means_no_suppressor_and_unknown_methods_are_refused():
    chain = MicFrontEnd(FrontEndConfig())
    assert chain.denoise is None and chain.echo is None
    with pytest.raises(ValueError, match="'loud' is not one of off, webrtc, rnnoise"):
        DenoiseOptions("loud")
