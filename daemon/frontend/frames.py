"""10 ms frames out of blocks of any length, for the audio cleaners in front of the
recogniser (echo.py, denoise.py).

WebRTC's audio processing and RNNoise both work on exactly 10 ms frames; the daemon's
sources deliver 10, 20 or 30 ms pieces and a client's pushed audio may be cut anywhere, so
whatever does not fill a frame waits here for the next block. Several aligned channels
(the microphone and the playback reference) are cut at the same places, so they stay in
step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE

FRAME = SAMPLE_RATE // 100  # samples in 10 ms
INT16_SCALE = 32768.0


class Framer:
    """Aligned channels in, whole 10 ms frames out; the leftover waits for the next block."""

    def __init__(self, channels: int = 1) -> None:
        self.channels = channels
        self._pending = np.zeros((channels, 0), np.float32)

    @property
    def pending(self) -> int:
        """Samples per channel that wait for a whole frame."""
        return self._pending.shape[1]

    def frames(self, *blocks: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
        """One tuple of frames (one per channel) for each whole frame the blocks complete.
        Every block must have the same length: the channels are aligned sample by sample."""
        if len(blocks) != self.channels:
            raise ValueError(f"expected {self.channels} blocks, got {len(blocks)}")
        if len({len(b) for b in blocks}) > 1:
            raise ValueError("the blocks of one call must have the same length, got "
                             + ", ".join(str(len(b)) for b in blocks))
        joined = np.concatenate(
            (self._pending, np.stack([np.asarray(b, np.float32) for b in blocks])), axis=1)
        whole = joined.shape[1] // FRAME * FRAME
        self._pending = joined[:, whole:].copy()
        for start in range(0, whole, FRAME):
            yield tuple(joined[:, start:start + FRAME])

    def flush(self) -> tuple[int, list[np.ndarray]]:
        """The leftover padded with zeros to a whole frame, and how many samples of it are
        real (0 and no frame when nothing waits)."""
        real = self.pending
        if not real:
            return 0, []
        padded = np.pad(self._pending, ((0, 0), (0, FRAME - real)))
        self._pending = self._pending[:, :0]
        return real, list(padded)


def to_int16(frame: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16, clipped (the cleaners' native format)."""
    return np.clip(np.round(frame * INT16_SCALE), -32768, 32767).astype(np.int16)


def from_int16(frame: np.ndarray) -> np.ndarray:
    return (frame.astype(np.float32) / INT16_SCALE).astype(np.float32)
