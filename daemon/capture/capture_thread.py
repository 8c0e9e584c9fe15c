"""A source paced in real time, captured on a thread of its own into a ring buffer.

Files played in real time stand in for a microphone (the demo, the simulator, tests). A
microphone does not wait for recognition: its capture callback keeps writing while the
worker is starved of CPU, and what the ring cannot hold is lost and counted. Read straight
from the worker, the files would instead play slower and lose nothing, so a starved
daemon would look healthier than it is. This plays them the way a microphone delivers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from edge_asr.daemon.capture.ring_buffer import RingBuffer
from edge_asr.daemon.capture.sources import (
    AudioSource,
    Closing,
    RingCounters,
    drain,
    samples_per_piece,
)
from edge_asr.daemon.constants import SAMPLE_RATE


class CaptureThread(RingCounters, Closing):
    """Plays `source` (16 kHz pieces, paced by itself) into a ring of `ring_seconds`;
    `pieces()` reads the ring. An error of the source reaches the reader after the audio
    captured before it."""

    def __init__(self, source: AudioSource, ring_seconds: float = 2.0,
                 piece_ms: int = 20) -> None:
        self.source = source
        self.ring = RingBuffer(ring_seconds, SAMPLE_RATE)
        self.piece = samples_per_piece(piece_ms)
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
            self._thread.start()

    def _capture(self) -> None:
        try:
            for piece in self.source.pieces():
                self.ring.write(piece)
        except BaseException as e:  # handed to the reader, on its thread
            self.error = e
        finally:
            self.ring.close()

    def pieces(self) -> Iterator[np.ndarray]:
        self.start()
        for piece in drain(self.ring, self.piece, None):
            if piece is not None:
                yield piece
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stops the source; the reader gets what is buffered, then the end."""
        self.source.close()
        self.ring.close()
