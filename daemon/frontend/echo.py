"""Acoustic echo cancellation: the device's own playback taken back out of its microphone.

A device that plays music (or speaks) hears itself through the room. It knows exactly what
it plays, so the playback (the reference) goes to an adaptive filter beside each
microphone block; the filter learns the path from loudspeaker to microphone (delay and
room echo) and subtracts the echo it predicts. Music from another device has no reference
and stays: that is the noise suppressor's job (denoise.py), or the model's.

Four cancellers, chosen by measured WER rather than by echo removed (`edge-asr sim run
SCENARIO --fast --no-compare --echo-canceller NAME`; RESULTS.md "Echo cancellation"): the
device's music 10 dB below the requests; music_playing 76% WER without a canceller.

- "kalman" (the default): the project's own partitioned-block frequency-domain Kalman
  filter (kalman_echo.py), linear only. Its gain shrinks while the person talks, so the
  words come through intact, and it says how much echo it expects to have missed in each
  frame, which the VAD takes as its floor (vad.py, ECHO_MARGIN_DB): 6.0% on music_playing,
  as in quiet_kitchen; 6.3% on a development rendering (other requests and music).
- "speex+webrtc": speexdsp's MDF, then WebRTC's AEC3 (webrtc.py) on what it left: 33%.
  The MDF filter bends the talker's words in double talk (its output keeps a third of the
  speech in some requests), and AEC3's suppressor gates bands of them.
- "speex": the MDF filter alone: 46%. What it leaves is enough for the VAD to hear
  "speech" between requests and run them together.
- "webrtc": AEC3 alone takes 30-40 dB out between requests, but facing the whole echo its
  suppressor gates every band where it expects echo, the talker's words too: 76%, no
  better than nothing. It was built for calls, where echo must never be heard, not for a
  recogniser, which copes with a little echo but not with missing speech.

The canceller runs before the pipeline (daemon/driver.py feeds it), on 16 kHz audio in
blocks of any length: whole 10 ms frames are cleaned as they complete, the rest waits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.frames import FRAME, Framer, from_int16, to_int16
from edge_asr.daemon.frontend.kalman_echo import KalmanEchoCanceller
from edge_asr.daemon.frontend.webrtc import FrontEndError, WebRtcApm

BACKENDS = ("kalman", "speex+webrtc", "speex", "webrtc")


@dataclass
class EchoOptions:
    enabled: bool = False  # off by default: without a reference there is nothing to cancel
    backend: str = "kalman"  # one of BACKENDS; the module's docstring says why
    # kalman, speex: the echo the filter models, from the reference's sample to the
    # microphone's: the output delay plus the room's echo that matters (a room's RT60 is
    # longer, but its late tail is weak). 256 ms at 16 kHz is 4096 taps.
    filter_ms: int = 256
    # webrtc alone: the playback-to-capture delay in ms, a hint only (AEC3 finds it itself)
    delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"echo canceller {self.backend!r} is not one of "
                             + ", ".join(BACKENDS))
        if not 20 <= self.filter_ms <= 1000:
            raise ValueError(f"echo filter_ms must be in [20, 1000], got {self.filter_ms}")
        if not 0 <= self.delay_ms <= 500:
            raise ValueError(f"echo delay_ms must be in [0, 500], got {self.delay_ms}")


class _Chain:
    """The linear filter's output, cleaned again by AEC3 against the same reference."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return self.second.process(self.first.process(mic, reference), reference)


class _Speex:
    """speexdsp's echo canceller on 10 ms int16 frames (its native format)."""

    def __init__(self, filter_ms: int) -> None:
        try:
            from speexdsp import EchoCanceller as SpeexCanceller
        except ImportError as e:
            raise FrontEndError(f"the speex echo canceller needs the package speexdsp "
                                f"(pip install speexdsp; it builds against Debian's "
                                f"libspeexdsp-dev with swig): {e}") from e
        self._state = SpeexCanceller.create(FRAME, filter_ms * FRAME // 10, SAMPLE_RATE)

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        out = self._state.process(to_int16(mic).tobytes(), to_int16(reference).tobytes())
        return from_int16(np.frombuffer(out, np.int16))


class EchoCanceller:
    """One stream's canceller: `process(mic, reference)` per block, `flush()` at the end.

    Without any reference so far the microphone passes through untouched (there is no echo
    it could know about). Once a reference has been seen, a block without one counts as
    silent playback, so the canceller keeps its learnt echo path for when playback resumes.
    """

    def __init__(self, options: EchoOptions | None = None) -> None:
        self.options = options or EchoOptions(enabled=True)
        if self.options.backend == "webrtc":
            self._apm = WebRtcApm(echo_cancellation=True,
                                  stream_delay_ms=self.options.delay_ms)
        elif self.options.backend == "speex+webrtc":
            self._apm = _Chain(_Speex(self.options.filter_ms), WebRtcApm(echo_cancellation=True))
        elif self.options.backend == "kalman":
            self._apm = KalmanEchoCanceller(self.options.filter_ms)
        else:
            self._apm = _Speex(self.options.filter_ms)
        self._framer = Framer(channels=2)
        self.reference_seen = False
        # The echo the canceller expects to have left in each 10 ms frame of the last
        # `process` output (mean square), where it can tell (the Kalman filter); else None.
        self.residual_echo: np.ndarray | None = None

    def process(self, mic: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        """The microphone block with the echo of `reference` (the same stretch of playback,
        16 kHz, as long as `mic`) taken out; whole 10 ms frames only, the rest comes with
        the next block."""
        mic = np.asarray(mic, np.float32)
        if reference is None and not self.reference_seen:
            self.residual_echo = None
            return mic
        if reference is None:
            reference = np.zeros_like(mic)
        elif len(reference) != len(mic):
            raise ValueError(f"the reference block must be as long as the microphone block "
                             f"({len(mic)} samples), got {len(reference)}")
        self.reference_seen = True
        out, residual = [], []
        for m, r in self._framer.frames(mic, reference):
            out.append(self._apm.process(m, r))
            residual.append(getattr(self._apm, "residual_mean_square", None))
        self.residual_echo = None if None in residual else np.array(residual, np.float32)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """What still waits for a whole frame, cleaned (padded, then cut back)."""
        real, frames = self._framer.flush()
        if not real:
            return np.zeros(0, np.float32)
        mic, reference = frames
        return self._apm.process(mic, reference)[:real]
