"""The playback reference: what the device's own loudspeaker plays, in step with its
microphone, for the echo canceller (daemon/frontend/echo.py).

From a file (`edge-asr daemon --reference FILE`, `[source] reference`), read and resampled
to 16 kHz like every other audio file, and handed out piece by piece beside the
microphone's pieces, sample for sample from the start of the stream. When the playback
is over before the microphone is, the rest is silence (the loudspeaker went quiet): the
daemon says so once and carries on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.sources import read_playable
from edge_asr.daemon.constants import SAMPLE_RATE


class FileReference:
    """A playback file as the echo canceller's reference. Opening it reads and checks it
    (a missing, empty or unreadable file, or an unsupported rate, is an AudioFormatError
    naming it), so a bad reference stops the daemon's start, not its recognition."""

    def __init__(self, path: str | Path, warn=None) -> None:
        self.path = Path(path)
        self.samples = read_playable(self.path)  # any supported rate, resampled to 16 kHz
        self.position = 0
        self.ended = False  # the microphone went on past the playback (said once)
        self._warn = warn or _stderr

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def take(self, n: int) -> np.ndarray:
        """The next `n` samples of playback; silence once the file is over."""
        piece = self.samples[self.position:self.position + n]
        # Said once the microphone goes on past the playback's end; a last piece that only
        # runs over it (a source pads its last piece) is not worth a word.
        if not len(piece) and not self.ended:
            self.ended = True
            self._warn(f"the playback reference {self.path} ended at {self.duration:.2f} s, "
                       "before the microphone; echo cancellation goes on with silence")
        self.position += n
        if len(piece) < n:
            piece = np.pad(piece, (0, n - len(piece)))
        return piece.astype(np.float32, copy=False)


def _stderr(message: str) -> None:
    print(f"edge-asr: warning: {message}", file=sys.stderr, flush=True)


def open_reference(path: str, echo_cancellation: bool, warn=None) -> FileReference | None:
    """The configured reference, read and checked; None without one. A reference without
    echo cancellation would only be read for nothing: said once, and left out."""
    warn = warn or _stderr
    if not path:
        if echo_cancellation:
            warn("echo cancellation is on but no playback reference is given ([source] "
                 "reference, --reference); the microphone passes through unchanged")
        return None
    if not echo_cancellation:
        warn(f"the playback reference {path} is not used: echo cancellation is off")
        return None
    return FileReference(path, warn)
