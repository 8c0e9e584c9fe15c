"""Noise suppression in front of the recogniser, off unless configured.

The model was trained on noisy audio (models/augment.py: 5-30 dB SNR of fan, babble, music,
kitchen), and a suppressor's musical noise and clipped speech onsets are a sound it never
heard; so a suppressor can cost more words than the noise it removes. The default, off, was
chosen by measured WER (bench/frontend.py, RESULTS.md "Echo cancellation and noise
suppression"): WebRTC's gains a point at 10 dB SNR, within the noise of 300 utterances;
webrtc-noise-gain nothing; RNNoise loses words everywhere (20.8% -> 33.1% at 10 dB SNR).

Methods, each on 10 ms frames of 16 kHz audio:

- "webrtc": WebRTC's noise suppressor in the same APM as the echo canceller (livekit).
- "rnnoise": RNNoise, a small recurrent net that predicts band gains (`pyrnnoise`); it runs
  at 48 kHz, so audio goes up and back down through soxr around it.
- "webrtc-noise-gain": the older WebRTC suppressor of `webrtc-noise-gain` (what Home
  Assistant's voice satellites use), at a chosen level, without its gain control.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.frames import Framer, from_int16, to_int16
from edge_asr.daemon.frontend.webrtc import FrontEndError, WebRtcApm

METHODS = ("off", "webrtc", "rnnoise", "webrtc-noise-gain")


@dataclass
class DenoiseOptions:
    method: str = "off"  # one of METHODS; off: no method gained beyond the noise (module doc)
    level: int = 2  # webrtc-noise-gain only: 0 (mild) to 4 (strongest)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"noise suppression {self.method!r} is not one of "
                             + ", ".join(METHODS))
        if not 0 <= self.level <= 4:
            raise ValueError(f"noise suppression level must be 0-4, got {self.level}")


class _FrameCleaner(Protocol):
    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


def _import(module: str, package: str, method: str):
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as e:
        raise FrontEndError(f"noise suppression {method!r} needs the package {package} "
                            f"(pip install {package}): {e}") from e


class _WebRtc:
    def __init__(self) -> None:
        self._apm = WebRtcApm(noise_suppression=True)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self._apm.process(frame)


class _WebRtcNoiseGain:
    def __init__(self, level: int) -> None:
        module = _import("webrtc_noise_gain", "webrtc-noise-gain", "webrtc-noise-gain")
        self._processor = module.AudioProcessor(0, level)  # no automatic gain

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        result = self._processor.Process10ms(to_int16(frame).tobytes())
        return from_int16(np.frombuffer(result.audio, np.int16))


class _RNNoise:
    """RNNoise's C library through pyrnnoise's ctypes binding, fed 48 kHz frames of 480
    samples in int16's range (what the library expects), the resamplers streaming so that
    frame edges do not click."""

    RATE = 48000

    def __init__(self) -> None:
        binding = _import("pyrnnoise.rnnoise", "pyrnnoise", "rnnoise")
        self._lib = binding.lib
        self._state = self._lib.rnnoise_create(None)
        self._up = soxr.ResampleStream(SAMPLE_RATE, self.RATE, 1, dtype="float32")
        self._down = soxr.ResampleStream(self.RATE, SAMPLE_RATE, 1, dtype="float32")
        self._frame = self._lib.rnnoise_get_frame_size()  # 480
        self._pending = np.zeros(0, np.float32)  # 48 kHz samples short of a frame

    def __call__(self, frame: np.ndarray, last: bool = False) -> np.ndarray:
        up = np.concatenate((self._pending, self._up.resample_chunk(frame, last=last)))
        if last:  # the end of the stream: what the resampler held, to a whole frame
            up = np.pad(up, (0, -len(up) % self._frame))
        whole = len(up) // self._frame * self._frame
        self._pending = up[whole:].copy()
        cleaned = np.empty(whole, np.float32)
        for start in range(0, whole, self._frame):
            buf = np.ascontiguousarray(up[start:start + self._frame] * 32768.0, np.float32)
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self._lib.rnnoise_process_frame(self._state, ptr, ptr)  # in place
            cleaned[start:start + self._frame] = buf / 32768.0
        down = self._down.resample_chunk(cleaned, last=last)
        return np.clip(down, -1.0, 1.0).astype(np.float32)

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.rnnoise_destroy(state)


def _cleaner(options: DenoiseOptions) -> _FrameCleaner:
    if options.method == "webrtc":
        return _WebRtc()
    if options.method == "rnnoise":
        return _RNNoise()
    return _WebRtcNoiseGain(options.level)


class NoiseSuppressor:
    """One stream's suppressor: `process(block)` returns the cleaned audio ready so far
    (whole 10 ms frames; RNNoise's resamplers hold back a few ms more at the start)."""

    def __init__(self, options: DenoiseOptions) -> None:
        if options.method == "off":
            raise ValueError("NoiseSuppressor needs a method; 'off' means no suppressor")
        self.options = options
        self._clean = _cleaner(options)
        self._framer = Framer()

    def process(self, block: np.ndarray) -> np.ndarray:
        out = [self._clean(frame) for (frame,) in self._framer.frames(block)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        real, frames = self._framer.flush()
        out = self._clean(frames[0])[:real] if real else np.zeros(0, np.float32)
        if isinstance(self._clean, _RNNoise):  # its resamplers hold back a few ms more
            out = np.concatenate((out, self._clean(np.zeros(0, np.float32), last=True)))
        return out

