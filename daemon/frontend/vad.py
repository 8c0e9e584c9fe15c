"""Voice activity detection: webrtcvad on 16 kHz audio, plus a debouncing smoother.

    vad = Vad(mode=2, frame_ms=30)
    smoother = SpeechSmoother()
    flags = smoother.process(vad.process(samples))   # one bool per complete 30 ms frame

`Vad.process` takes pieces of any length (the remainder waits for the next call) and
returns one raw speech flag per complete frame.

webrtcvad adapts to white or pink noise, but hears a hum, music or chatter as speech: at
10 dB SNR (dev_snr10) it reported speech through the silence after most requests, so no
end-point fired before the input ended. With `noise_gate_db` a frame also needs that much
more energy than the noise floor, tracked as a running minimum of frame energy that creeps
up `floor_rise_db_per_s` so that it follows noise that gets louder (minimum statistics,
much simplified).

The floor is a minimum, and music or chatter moves 2-3 dB (one standard deviation) around
its mean, so at 10 dB SNR half of the frames after a request still cleared floor + 3 dB.
`level_gate` adds a threshold between the floor and the speaker's level: a frame must also
rise `level_gate` of the way from the floor to the running level of the frames that
passed (the energy smoothed over 3 frames; the level sinks `level_decay_db_per_s` toward
the floor while nothing passes, so that a quieter talker gets through after a while).

While the device plays, the echo canceller's leftovers come in bursts 25-30 dB under the
talker, loud enough for both gates; with `residual_echo` (the canceller's own estimate of
what it left, per 10 ms) a frame must also clear that by ECHO_MARGIN_DB.

With a `speech_gate` (speech_gate.py, Silero's network) a frame must also be speech to it:
webrtcvad and the gates above still pass music and chatter that the network does not.

`SpeechSmoother` removes isolated noise frames: a speech region opens only when N of the
last M frames are speech. It adds no delay at the end of speech, so silence measured on
its output starts when speech stops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import webrtcvad

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.frames import FRAME
from edge_asr.daemon.frontend.speech_gate import SpeechGate

_LEVEL_SMOOTH_FRAMES = 3  # the level gate compares energy averaged over 90 ms: one loud
# noise frame is not speech
_LEVEL_ALPHA = 0.05  # the speech level's moving average: about 20 passing frames

# Below any microphone's self-noise (16-bit quantisation noise is about -101 dBFS): digital
# silence, from a paused stream, a file's padding or a muted source. It says nothing about
# the room, so it must not pull the noise floor down: from -120 dB the floor would take
# tens of seconds to climb back, and meanwhile room tone would pass the gates as speech.
DIGITAL_SILENCE_DB = -90.0

# A frame must be this much louder than the echo the canceller expects to have left in it
# (its own estimate, kalman_echo.py) to count as speech: six development renderings of
# music_playing (simulator/scenarios/dev/) gave 11.1 / 6.1 / 6.0% WER with 3 / 6 / 10 dB
# (RESULTS.md, "Echo cancellation"); 10 keeps the most room for the frames where the
# estimate runs low.
ECHO_MARGIN_DB = 10.0

FRAME_MS_CHOICES = (10, 20, 30)  # the only frame sizes webrtcvad accepts
MODES = (0, 1, 2, 3)  # 0 least aggressive about filtering non-speech, 3 most


class Vad:
    """webrtcvad over float audio in [-1, 1] (or int16), in pieces of any length."""

    def __init__(self, mode: int = 2, frame_ms: int = 30, noise_gate_db: float = 0.0,
                 floor_rise_db_per_s: float = 3.0, level_gate: float = 0.0,
                 level_decay_db_per_s: float = 1.0,
                 speech_gate: SpeechGate | None = None) -> None:
        if isinstance(mode, bool) or not isinstance(mode, int) or mode not in MODES:
            raise ValueError(f"VAD mode must be one of {MODES}, got {mode!r}")
        if isinstance(frame_ms, bool) or not isinstance(frame_ms, int) \
                or frame_ms not in FRAME_MS_CHOICES:
            raise ValueError(f"VAD frame_ms must be one of {FRAME_MS_CHOICES}, got {frame_ms!r}")
        for name, value in (("noise_gate_db", noise_gate_db),
                            ("floor_rise_db_per_s", floor_rise_db_per_s),
                            ("level_gate", level_gate),
                            ("level_decay_db_per_s", level_decay_db_per_s)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"VAD {name} must be a finite number >= 0, got {value!r}")
        if level_gate >= 1:
            raise ValueError(f"VAD level_gate must be below 1 (a share of the way from the "
                             f"noise floor to the speech level), got {level_gate!r}")
        self.mode = mode
        self.frame_ms = frame_ms
        self.noise_gate_db = float(noise_gate_db)
        self.level_gate = float(level_gate)
        self._rise_per_frame = floor_rise_db_per_s * frame_ms / 1000
        self._level_decay_per_frame = level_decay_db_per_s * frame_ms / 1000
        self._floor_db: float | None = None  # None until the first frame
        self._level_db: float | None = None  # None until a frame passes the gates
        self._recent_db: deque[float] = deque(maxlen=_LEVEL_SMOOTH_FRAMES)
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self._vad = webrtcvad.Vad(mode)
        self.speech_gate = speech_gate
        self._pending = np.zeros(0, np.int16)
        self._pending_echo = np.zeros(0)  # residual echo per pending sample
        self._frames_done = 0

    @property
    def noise_floor_db(self) -> float | None:
        """Tracked noise floor in dB relative to full scale (None before any frame)."""
        return self._floor_db

    @property
    def frame_s(self) -> float:
        return self.frame_ms / 1000

    @property
    def time_s(self) -> float:
        """Audio seconds covered by the flags returned so far (the end of the last frame)."""
        return self._frames_done * self.frame_ms / 1000

    @property
    def pending_samples(self) -> int:
        """Samples waiting for the rest of their frame."""
        return int(self._pending.size)

    def reset(self) -> None:
        """Forget buffered audio and restart the clock (a new stream)."""
        self._vad = webrtcvad.Vad(self.mode)  # webrtcvad keeps adaptive noise state
        if self.speech_gate is not None:
            self.speech_gate.reset()
        self._pending = np.zeros(0, np.int16)
        self._pending_echo = np.zeros(0)
        self._frames_done = 0
        self._floor_db = None
        self._level_db = None
        self._recent_db.clear()

    @property
    def speech_level_db(self) -> float | None:
        """Running level of the frames that passed the gates, dBFS (None before any, or
        with both gates off)."""
        return self._level_db

    @property
    def snr_db(self) -> float | None:
        """Speech level over the noise floor: a rough signal-to-noise ratio. Clean speech
        gives 30-45 dB, speech at 10 dB SNR 6-11 dB (the level takes in the noise frames
        that pass). None until known."""
        if self._level_db is None or self._floor_db is None:
            return None
        return self._level_db - self._floor_db

    def process(self, samples: np.ndarray, residual_echo: np.ndarray | None = None
                ) -> list[bool]:
        """One speech flag per frame completed by `samples` (16 kHz mono).

        `residual_echo`: the echo the canceller expects to have left in each 10 ms of
        `samples` (mean square, daemon/frontend/echo.py), or None; a frame then counts as
        speech only if it is ECHO_MARGIN_DB louder than that."""
        pcm = _to_int16(samples)
        echo = self._echo_per_sample(residual_echo, pcm.size)
        if self.speech_gate is not None:
            self.speech_gate.feed(pcm.astype(np.float32) / 32768.0)
        if self._pending.size:
            pcm = np.concatenate([self._pending, pcm])
            echo = np.concatenate([self._pending_echo, echo])
        n_frames = pcm.size // self.frame_samples
        cut = n_frames * self.frame_samples
        self._pending = pcm[cut:].copy()
        self._pending_echo = echo[cut:].copy()
        frames = pcm[:cut].reshape(n_frames, self.frame_samples)
        flags = [self._vad.is_speech(frame.tobytes(), SAMPLE_RATE) for frame in frames]
        if self.speech_gate is not None:
            ends = (self._frames_done + np.arange(1, n_frames + 1)) * self.frame_samples
            flags = [flag and self.speech_gate.speaking_at(int(end))
                     for flag, end in zip(flags, ends, strict=True)]
        self._frames_done += n_frames
        if not n_frames:
            return flags
        power = np.mean(frames.astype(np.float64) ** 2, axis=1) / 32768.0**2
        if self.noise_gate_db or self.level_gate:
            flags = self._gate(power, flags)
        if np.any(echo[:cut] > 0):
            frame_echo = echo[:cut].reshape(n_frames, self.frame_samples).mean(axis=1)
            loud = power > frame_echo * 10 ** (ECHO_MARGIN_DB / 10)
            flags = [flag and bool(ok) for flag, ok in zip(flags, loud, strict=True)]
        return flags

    @staticmethod
    def _echo_per_sample(residual_echo: np.ndarray | None, n: int) -> np.ndarray:
        if residual_echo is None or not len(residual_echo):
            return np.zeros(n)
        if len(residual_echo) * FRAME != n:
            raise ValueError(f"residual_echo must have one value per 10 ms of the samples "
                             f"({n} samples), got {len(residual_echo)}")
        return np.repeat(np.asarray(residual_echo, np.float64), FRAME)

    def _gate(self, power: np.ndarray, flags: list[bool]) -> list[bool]:
        """`power`: each frame's mean square (full scale 1)."""
        energy_db = 10 * np.log10(power + 1e-12)
        out = []
        for e, flag in zip(energy_db.tolist(), flags, strict=True):
            if e < DIGITAL_SILENCE_DB:
                out.append(False)
                continue
            floor = e if self._floor_db is None else min(e, self._floor_db + self._rise_per_frame)
            self._floor_db = floor
            out.append(self._level_check(e, floor, flag and e > floor + self.noise_gate_db))
        return out

    def _level_check(self, e: float, floor: float, speech: bool) -> bool:
        """Tracks the speech level (whenever a gate is on: it also gives `snr_db`); gates
        on it when `level_gate` is set."""
        self._recent_db.append(e)
        smooth = sum(self._recent_db) / len(self._recent_db)
        level = self._level_db
        if speech and level is not None and self.level_gate:
            speech = smooth > floor + self.level_gate * (level - floor)
        if speech:
            self._level_db = smooth if level is None else level + _LEVEL_ALPHA * (smooth - level)
        elif level is not None:
            self._level_db = max(floor, level - self._level_decay_per_frame)
        return speech


def _to_int16(samples: np.ndarray) -> np.ndarray:
    """Little-endian int16 PCM, which is what webrtcvad reads from its bytes."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"VAD expects mono audio as a 1-D array, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype("<i2", copy=False)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"VAD expects float32 samples in [-1, 1] or int16, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("VAD input contains NaN or infinite samples")
    # Clip first: out-of-range floats would otherwise wrap around in the int16 cast.
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


class SpeechSmoother:
    """N-of-M onset with hangover, over per-frame speech flags.

    Outside a speech region every frame is reported as non-speech until `onset_frames` of
    the last `onset_window` raw frames are speech; the frame that completes the count opens
    the region and is the first reported as speech. Inside a region the raw flags pass
    through unchanged, so the end of speech is reported without delay; the region closes
    after `hangover_frames` consecutive non-speech frames, and then a lone noise frame in
    the silence cannot reset an end-pointer's silence timer.
    """

    def __init__(self, onset_frames: int = 3, onset_window: int = 5,
                 hangover_frames: int = 10) -> None:
        if onset_window < 1:
            raise ValueError(f"onset_window must be >= 1, got {onset_window}")
        if not 1 <= onset_frames <= onset_window:
            raise ValueError(
                f"onset_frames must be in 1..onset_window ({onset_window}), got {onset_frames}")
        if hangover_frames < 1:
            raise ValueError(f"hangover_frames must be >= 1, got {hangover_frames}")
        self.onset_frames = onset_frames
        self.onset_window = onset_window
        self.hangover_frames = hangover_frames
        self._window: deque[bool] = deque(maxlen=onset_window)
        self._in_speech = False
        self._silent_run = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        self._window.clear()
        self._in_speech = False
        self._silent_run = 0

    def process(self, flags: Iterable[bool]) -> list[bool]:
        return [self._step(bool(flag)) for flag in flags]

    def _step(self, speech: bool) -> bool:
        self._window.append(speech)
        if self._in_speech:
            self._silent_run = 0 if speech else self._silent_run + 1
            if self._silent_run >= self.hangover_frames:
                self._in_speech = False
                self._window.clear()  # the next region needs a fresh N of M
            return speech
        if speech and sum(self._window) >= self.onset_frames:
            self._in_speech = True
            self._silent_run = 0
            return True
        return False
