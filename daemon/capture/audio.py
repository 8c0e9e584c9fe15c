"""Reading audio files into the model's format: 16 kHz mono float32 in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge_asr.daemon.constants import SAMPLE_RATE

# The rates the daemon accepts (ARCHITECTURE.md, "The audio path"); anything else is
# refused, never guessed at.
SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class AudioFormatError(ValueError):
    """Audio the daemon will not take, with the reason in words."""


def check_sample_rate(rate: int) -> None:
    if rate not in SUPPORTED_RATES:
        raise AudioFormatError(f"unsupported sample rate {rate} Hz; supported: "
                               + ", ".join(str(r) for r in SUPPORTED_RATES))


# Float audio is full scale at +-1. A little headroom lets resampled or filtered audio
# through; int16 values sent as floats (x32768) or a scaling slip are refused, since they
# would be clipped into noise or silence without a word.
FULL_SCALE_TOLERANCE = 1e-3


def check_float_audio(samples: np.ndarray) -> None:
    """Refuse NaN, infinity and samples outside [-1, 1]."""
    if not np.all(np.isfinite(samples)):
        raise AudioFormatError("audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 1.0 + FULL_SCALE_TOLERANCE:
        raise AudioFormatError(f"float samples must lie in [-1, 1], but the peak is {peak:g}; "
                               "scale int16 samples by 1/32768 (or send pcm_s16le)")


class StreamResampler:
    """One stream's audio from `rate` to 16 kHz, piece by piece: soxr's streaming
    resampler carries its filter state across calls, so pieces join without clicks and
    the result equals resampling the whole stream at once. Refuses unsupported rates."""

    def __init__(self, rate: int) -> None:
        check_sample_rate(rate)
        self.rate = rate
        self._soxr = None if rate == SAMPLE_RATE else soxr.ResampleStream(
            rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._soxr is None:
            return samples
        return self._soxr.resample_chunk(samples, last=last)


def to_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    check_sample_rate(rate)
    samples = np.asarray(samples, dtype=np.float32)
    check_float_audio(samples)
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples


def read_audio(path: str | Path) -> np.ndarray:
    """A WAV/FLAC/OGG file as 16 kHz mono float32; several channels are averaged."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFormatError(f"{path}: cannot read audio: {e}") from e
    try:
        return to_model_rate(data.mean(axis=1), rate)
    except AudioFormatError as e:
        raise AudioFormatError(f"{path}: {e}") from e
