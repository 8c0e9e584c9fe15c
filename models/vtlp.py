"""Vocal tract length perturbation (VTLP; Jaitly and Hinton, 2013): training features as
a speaker with a longer or shorter vocal tract would give them.

A vocal tract of another length scales the formants by about the same factor, so VTLP
computes the filterbank with the mel filters' frequencies scaled by a random warp factor,
Kaldi's piecewise-linear VTLN warp (kaldi-native-fbank's `MelBanks` takes the factor). Speed
perturbation moves the formants too, but with the tempo and the pitch; this moves them
alone, so a few real speakers stand in for many.

The framing, window and power spectrum here are the runtime's (daemon/frontend/features.py:
kaldi-native-fbank with no snipped edges, no dither); at a warp factor of 1 the features are
the runtime's to float precision (tests/test_vtlp.py), so the model trains on what it hears.
"""

from __future__ import annotations

from functools import lru_cache

import kaldi_native_fbank as knf
import numpy as np

from edge_asr.daemon.frontend.features import FbankConfig, compute_fbank

_EPS = np.finfo(np.float32).eps  # Kaldi's log floor
# Factors are rounded to this step, so a training run builds a few dozen filter matrices.
_WARP_STEP = 0.005


@lru_cache(maxsize=128)
def _mel_matrix(warp: float, config: FbankConfig) -> np.ndarray:
    """(fft bins, mel bins) weights of the filterbank warped by `warp`."""
    opts = config.options()
    banks = knf.MelBanks(opts.mel_opts, opts.frame_opts, warp)
    eye = np.eye(_frame_sizes(opts.frame_opts)[2] // 2 + 1, dtype=np.float32)
    return np.stack([banks.compute(row) for row in eye])


def _frame_sizes(opts: knf.FrameExtractionOptions) -> tuple[int, int, int]:
    """Samples per frame, per shift, and the FFT size (the frame rounded up to a power of
    two, as the runtime's options ask)."""
    rate = opts.samp_freq
    length = int(rate * opts.frame_length_ms / 1000)
    shift = int(rate * opts.frame_shift_ms / 1000)
    return length, shift, 1 << (length - 1).bit_length()


def _frames(samples: np.ndarray, length: int, shift: int) -> np.ndarray:
    """Kaldi's frames without snipped edges: frame i is centred on i * shift + shift / 2,
    samples before the start or past the end reflected back in."""
    n = len(samples)
    count = (n + shift // 2) // shift
    starts = np.arange(count) * shift + shift // 2 - length // 2
    index = starts[:, None] + np.arange(length)[None, :]
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= n, 2 * n - 1 - index, index)
    return samples[np.clip(index, 0, n - 1)].astype(np.float64)


def warped_fbank(samples: np.ndarray, warp: float,
                 config: FbankConfig | None = None) -> np.ndarray:
    """Log-mel features (frames, bins) of `samples` with the filters warped by `warp`:
    above 1 the formants move up, as a shorter vocal tract's would (0.9 to 1.1: about 10%
    longer to 10% shorter)."""
    config = config or FbankConfig()
    if not 0.5 < warp < 2.0:
        raise ValueError(f"VTLP warp factor {warp} is outside (0.5, 2)")
    warp = round(round(warp / _WARP_STEP) * _WARP_STEP, 6)
    if warp == 1.0:
        return compute_fbank(samples, config)
    return _fbank(samples, warp, config)


def _fbank(samples: np.ndarray, warp: float, config: FbankConfig) -> np.ndarray:
    opts = config.options().frame_opts
    if opts.dither or opts.snip_edges:
        raise ValueError("warped_fbank follows the runtime's options: no dither, no snipped "
                         "edges")
    length, shift, n_fft = _frame_sizes(opts)
    samples = np.asarray(samples, np.float32).reshape(-1)
    if len(samples) < 1:
        return np.zeros((0, config.num_bins), np.float32)
    frames = _frames(samples, length, shift)
    frames -= frames.mean(axis=1, keepdims=True)  # remove_dc_offset
    frames[:, 1:] -= opts.preemph_coeff * frames[:, :-1]
    frames[:, 0] -= opts.preemph_coeff * frames[:, 0]
    n = np.arange(length)
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames * povey, n=n_fft)) ** 2
    mel = power.astype(np.float32) @ _mel_matrix(warp, config)
    return np.log(np.maximum(mel, _EPS)).astype(np.float32)
