"""A single-producer single-consumer ring buffer of float32 samples.

The producer is an audio capture callback: it must never block or allocate, so `write`
only copies into a preallocated array under a lock held for that copy. When the consumer
falls behind, the OLDEST audio is dropped (recent audio matters most to an end-pointer)
and every drop is counted.
"""

from __future__ import annotations

import threading

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE


class RingBuffer:
    """Holds up to `capacity_s` seconds of mono float32 audio at `rate` Hz."""

    def __init__(self, capacity_s: float, rate: int = SAMPLE_RATE) -> None:
        capacity = int(round(capacity_s * rate))
        if capacity <= 0:
            raise ValueError(f"ring buffer capacity must be positive, got {capacity_s} s")
        self.rate = rate
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        # Absolute sample counts; positions in _buf are these modulo capacity.
        self._head = 0  # samples ever written (incl. dropped ones)
        self._tail = 0  # samples consumed or dropped
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._closed = False
        self.overruns = 0  # writes that had to drop old audio
        self.dropped_samples = 0  # samples lost to overruns or written after close()

    # -- producer -------------------------------------------------------------------

    def write(self, samples: np.ndarray) -> int:
        """Copies `samples` (1-D) in; returns how many samples this write dropped."""
        if samples.ndim != 1:
            raise ValueError(f"ring buffer takes 1-D samples, got shape {samples.shape}")
        n = len(samples)
        with self._lock:
            if self._closed:
                self.dropped_samples += n
                return n
            kept = min(n, self.capacity)  # of a write larger than the ring, the newest part
            self._copy_in(samples[n - kept:], self._head + n - kept)
            self._head += n
            dropped = max(0, self._head - self._tail - self.capacity)
            if dropped:
                self._tail += dropped
                self.overruns += 1
                self.dropped_samples += dropped
            self._readable.notify()
        return dropped

    def _copy_in(self, samples: np.ndarray, position: int) -> None:
        start = position % self.capacity
        first = min(len(samples), self.capacity - start)
        self._buf[start:start + first] = samples[:first]
        self._buf[:len(samples) - first] = samples[first:]

    # -- consumer -------------------------------------------------------------------

    def read(self, max_samples: int) -> np.ndarray:
        """Up to `max_samples` buffered samples, oldest first; never waits."""
        with self._lock:
            return self._take(min(max_samples, self._head - self._tail))

    def read_exact(self, n: int, timeout: float | None = None) -> np.ndarray | None:
        """Exactly `n` samples, waiting up to `timeout` seconds for them.

        Returns None on timeout (nothing consumed). After close() it returns what is
        left, which may be shorter than `n` or empty: that marks the end of the stream.
        """
        with self._readable:
            ready = self._readable.wait_for(
                lambda: self._closed or self._head - self._tail >= n, timeout)
            if not ready:
                return None
            return self._take(min(n, self._head - self._tail))

    def _take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        start = self._tail % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start:start + first]
        out[first:] = self._buf[:n - first]
        self._tail += n
        return out

    # -- both -----------------------------------------------------------------------

    def close(self) -> None:
        """Ends the stream: waiting readers wake up, later writes are dropped and counted."""
        with self._readable:
            self._closed = True
            self._readable.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def written(self) -> int:
        """Samples ever handed to write() before close(), dropped ones included."""
        return self._head

    def level(self) -> int:
        """Samples buffered now, waiting for the reader."""
        with self._lock:
            return self._head - self._tail

    def __len__(self) -> int:
        return self.level()
