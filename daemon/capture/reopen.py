"""A capture device that may vanish and come back: a USB microphone unplugged and plugged
in again, a sound server restarted.

The daemon's microphone is wrapped in a `ReopeningSource`. When the device stops
delivering (MicrophoneSource raises AudioSourceError), `on_lost(reason)` is called, the
device is opened again every `retry_s` (doubling up to `retry_max_s`) until it opens, and
then `on_restored(name)`; its pieces go on from the new stream. The callbacks run on the
reader's thread, between two pieces, so the daemon can close the utterance the loss cut
off before anything else reaches its pipeline. Overrun counters add up over every opening.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edge_asr.daemon.capture.sources import AudioSourceError, Closing


class ReopeningSource(Closing):
    def __init__(self, first: Any, reopen: Callable[[], Any],
                 on_lost: Callable[[str], None], on_restored: Callable[[str], None],
                 retry_s: float = 0.5, retry_max_s: float = 5.0) -> None:
        self.current: Any | None = first  # a started-or-startable source with pieces()
        self.reopen = reopen
        self.on_lost, self.on_restored = on_lost, on_restored
        self.retry_s, self.retry_max_s = retry_s, retry_max_s
        self.losses = 0
        self.failed_opens = 0
        self.lost = False  # between on_lost and on_restored
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._retired = {"overruns": 0, "dropped_samples": 0, "lost_audio_s": 0.0}

    def start(self) -> None:
        with self._lock:
            current = self.current
        if current is not None and hasattr(current, "start"):
            current.start()

    def pieces(self) -> Iterator[np.ndarray]:
        while not self._closed.is_set():
            current = self.current
            try:
                yield from current.pieces()
                if self._closed.is_set():
                    return
                reason = "the device's stream ended"
            except AudioSourceError as e:
                if self._closed.is_set():
                    return
                reason = str(e)
            self._retire(current)
            self.losses += 1
            self.lost = True
            self.on_lost(reason)
            if not self._open_again():
                return
            self.lost = False
            self.on_restored(self._describe(self.current))

    def _open_again(self) -> bool:
        """Opens the device until it works; False when closed meanwhile."""
        delay = self.retry_s
        while not self._closed.wait(delay):
            try:
                source = self.reopen()
                if hasattr(source, "start"):
                    source.start()
            except AudioSourceError:
                self.failed_opens += 1
                delay = min(self.retry_max_s, delay * 2)
                continue
            with self._lock:
                if self._closed.is_set():
                    source.close()
                    return False
                self.current = source
            return True
        return False

    def _retire(self, source: Any) -> None:
        """Closes a source that stopped, keeping its counters."""
        with self._lock:
            for name in self._retired:
                self._retired[name] += getattr(source, name, 0)
            self.current = None
        source.close()

    @staticmethod
    def _describe(source: Any) -> str:
        device = getattr(source, "device", None)
        return f"device '{device['name']}'" if isinstance(device, dict) else "the device"

    def _total(self, name: str) -> Any:
        with self._lock:
            current = self.current
            return self._retired[name] + (getattr(current, name, 0) if current else 0)

    @property
    def overruns(self) -> int:
        return self._total("overruns")

    @property
    def dropped_samples(self) -> int:
        return self._total("dropped_samples")

    @property
    def lost_audio_s(self) -> float:
        return self._total("lost_audio_s")

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            current = self.current
        if current is not None:
            current.close()
