"""WebRTC's audio processing module (AEC3 echo canceller, noise suppressor) on 10 ms frames.

Through `livekit` (livekit.rtc.AudioProcessingModule), which ships WebRTC's APM built for
manylinux, macOS and Windows, is maintained, and needs only protobuf >= 5, numpy, aiofiles
and types-protobuf beside it (installed here, it left this project's pinned protobuf 7
and grpcio alone).
Used behind speexdsp's linear canceller for echo (echo.py says why not alone), and as
one of the noise suppressors (denoise.py).

livekit loads only when a cleaner that needs it is turned on, so a daemon without echo
cancellation or WebRTC noise suppression never pays for it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.frames import FRAME, from_int16, to_int16


class FrontEndError(RuntimeError):
    """A cleaner that cannot run (its package is missing), in words."""


def _rtc() -> ModuleType:
    try:
        return importlib.import_module("livekit.rtc")
    except ImportError as e:
        raise FrontEndError(f"echo cancellation and WebRTC noise suppression need the "
                            f"package livekit (pip install livekit): {e}") from e


class WebRtcApm:
    """One WebRTC APM: per 10 ms, the playback frame it should expect back (the far end),
    then the microphone frame to clean. Keeps its adaptive state across frames, so one
    instance serves exactly one audio stream."""

    def __init__(self, echo_cancellation: bool = False, noise_suppression: bool = False,
                 stream_delay_ms: int = 0) -> None:
        rtc = _rtc()
        self._frame_type = rtc.AudioFrame
        self._apm = rtc.AudioProcessingModule(echo_cancellation=echo_cancellation,
                                              noise_suppression=noise_suppression)
        self.echo_cancellation = echo_cancellation
        if echo_cancellation and stream_delay_ms:
            # Only a starting point: AEC3 estimates the delay itself and follows changes.
            self._apm.set_stream_delay_ms(int(stream_delay_ms))

    def _frame(self, samples: np.ndarray):
        return self._frame_type(data=to_int16(samples).tobytes(), sample_rate=SAMPLE_RATE,
                                num_channels=1, samples_per_channel=FRAME)

    def process(self, mic: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """One 10 ms microphone frame cleaned; `reference` is the playback frame of the same
        10 ms (echo cancellation only)."""
        if len(mic) != FRAME or (reference is not None and len(reference) != FRAME):
            raise ValueError(f"WebRTC's APM takes frames of exactly {FRAME} samples (10 ms)")
        if reference is not None and self.echo_cancellation:
            self._apm.process_reverse_stream(self._frame(reference))
        frame = self._frame(mic)
        self._apm.process_stream(frame)  # in place
        return from_int16(np.frombuffer(frame.data, np.int16))
