"""The microphone's clean-up before the pipeline: echo cancellation, then noise suppression.

`FrontEndConfig` is the daemon's `[frontend]` table; `MicFrontEnd` is one stream's chain,
which daemon/driver.py runs on every piece before `Pipeline.accept`. Echo first, as WebRTC
orders them: the canceller needs the microphone as the loudspeaker's echo reached it, and a
suppressor in front would bend that echo out of the shape the canceller learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_asr.daemon.frontend.denoise import DenoiseOptions, NoiseSuppressor
from edge_asr.daemon.frontend.echo import EchoCanceller, EchoOptions
from edge_asr.daemon.frontend.frames import FRAME


@dataclass
class FrontEndConfig:
    # Cancel the device's own playback (needs a reference: [source] reference, or the
    # simulator's). Off by default: today's figures stay, and a daemon without playback
    # has nothing to cancel.
    echo_cancellation: bool = False
    echo_canceller: str = "kalman"  # or "speex+webrtc", "speex", "webrtc" (echo.py says why)
    echo_filter_ms: int = 256  # kalman, speex: how much of the echo path the filter models
    echo_delay_ms: int = 0  # webrtc: a hint; AEC3 finds the delay itself
    # "off", "webrtc", "rnnoise" or "webrtc-noise-gain" (daemon/frontend/denoise.py); off by
    # default, as measured (RESULTS.md "Echo cancellation and noise suppression")
    noise_suppression: str = "off"
    noise_level: int = 2  # webrtc-noise-gain only, 0-4

    def __post_init__(self) -> None:  # the option classes check the values, in words
        self.echo_options()
        self.denoise_options()

    def echo_options(self) -> EchoOptions:
        return EchoOptions(enabled=self.echo_cancellation, backend=self.echo_canceller,
                           filter_ms=self.echo_filter_ms, delay_ms=self.echo_delay_ms)

    def denoise_options(self) -> DenoiseOptions:
        return DenoiseOptions(method=self.noise_suppression, level=self.noise_level)

    @property
    def active(self) -> bool:
        return self.echo_cancellation or self.noise_suppression != "off"


class MicFrontEnd:
    """One stream's clean-up chain. Pieces that are whole 10 ms frames (every source's)
    come out as long as they went in; other lengths wait for the rest of their frame."""

    def __init__(self, config: FrontEndConfig) -> None:
        self.config = config
        self.echo = EchoCanceller(config.echo_options()) if config.echo_cancellation else None
        self.denoise = NoiseSuppressor(config.denoise_options()) \
            if config.noise_suppression != "off" else None
        self.residual_echo: np.ndarray | None = None

    def process(self, mic: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The piece cleaned; `residual_echo` then holds the echo the canceller expects
        to have left in each of its 10 ms frames (mean square), or None."""
        out = np.asarray(mic, np.float32)
        self.residual_echo = None
        if self.echo is not None:
            out = self.echo.process(out, reference)
            residual = self.echo.residual_echo
            if residual is not None and len(residual) * FRAME == len(out):
                self.residual_echo = residual
        if self.denoise is not None:
            cleaned = self.denoise.process(out)
            if len(cleaned) != len(out):  # the suppressor held some back: frames moved
                self.residual_echo = None
            out = cleaned
        return out

    def flush(self) -> np.ndarray:
        """The end of the stream: whatever still waited, cleaned."""
        out = self.echo.flush() if self.echo is not None else np.zeros(0, np.float32)
        if self.denoise is not None:
            out = np.concatenate((self.denoise.process(out), self.denoise.flush()))
        return out


def front_end(config: FrontEndConfig) -> MicFrontEnd | None:
    """The chain `config` asks for, or None when it asks for nothing."""
    return MicFrontEnd(config) if config.active else None
