"""Where the daemon's audio comes from, and what every source shares.

Every source delivers the model's format, 16 kHz mono float32, as an iterator of equal
pieces of 10, 20 or 30 ms (webrtcvad's frame sizes), and counts what it lost. Files play
from here; a microphone from microphone.py, a client's pushed audio from push.py.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import numpy as np

from edge_asr.daemon.capture.audio import AudioFormatError, StreamResampler, read_audio
from edge_asr.daemon.capture.ring_buffer import RingBuffer
from edge_asr.daemon.constants import SAMPLE_RATE

PIECE_MS = (10, 20, 30)


class AudioSourceError(RuntimeError):
    """A source that cannot deliver audio (no PortAudio, no such device, ...), in words."""


class AudioSource(Protocol):
    def pieces(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def samples_per_piece(piece_ms: int) -> int:
    if piece_ms not in PIECE_MS:
        raise ValueError(f"piece length must be one of {PIECE_MS} ms, got {piece_ms}")
    return SAMPLE_RATE * piece_ms // 1000


class Closing:
    """`with source:` closes it on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PieceMaker:
    """Resamples one stream to 16 kHz statefully and cuts it into equal pieces.

    soxr's streaming resampler carries its filter state across calls, so piece
    boundaries do not click and the result equals resampling the whole stream at once.
    """

    def __init__(self, rate: int, piece_ms: int) -> None:
        self._resample = StreamResampler(rate)
        self.rate = rate
        self.piece = samples_per_piece(piece_ms)
        self._pending = np.zeros(0, dtype=np.float32)
        self.padded_samples = 0  # zeros added to complete the last piece

    def feed(self, samples: np.ndarray, last: bool = False) -> list[np.ndarray]:
        """Pieces completed by `samples`; with `last`, flushes and pads the tail too."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        samples = self._resample(samples, last=last)
        buf = np.concatenate((self._pending, samples))
        whole = len(buf) // self.piece * self.piece
        out = [buf[i:i + self.piece] for i in range(0, whole, self.piece)]
        self._pending = buf[whole:].copy()
        if last and len(self._pending):
            self.padded_samples = self.piece - len(self._pending)
            out.append(np.pad(self._pending, (0, self.padded_samples)))
            self._pending = self._pending[:0]
        return out


def drain(ring: RingBuffer, piece: int, timeout: float | None) -> Iterator[np.ndarray | None]:
    """Pieces from `ring` until it is closed and empty; None each time `timeout` passes."""
    while True:
        chunk = ring.read_exact(piece, timeout)
        if chunk is None:
            yield None
        elif len(chunk) == piece:
            yield chunk
        else:
            if len(chunk):
                yield chunk
            return


class RingCounters:
    """Overrun counters of a source that buffers through `self.ring`."""

    ring: RingBuffer

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped_samples

    @property
    def lost_audio_s(self) -> float:
        """Seconds of audio the ring dropped (its samples are at the capture's rate)."""
        return self.ring.dropped_samples / self.ring.rate


# -- file --------------------------------------------------------------------------------

def read_playable(path: Path) -> np.ndarray:
    """read_audio, with plain reasons where libsndfile's would be cryptic (a missing file
    is a "System error", a directory "Format not recognised")."""
    try:
        if path.is_dir():
            raise AudioFormatError(f"{path}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioFormatError(f"{path}: the file is empty")
    except FileNotFoundError:
        raise AudioFormatError(f"{path}: no such file") from None
    except OSError as e:
        raise AudioFormatError(f"{path}: {e.strerror or e}") from e
    return read_audio(path)


class FileSource(Closing):
    """A WAV/FLAC file, as a microphone would deliver it (`realtime`) or at full speed.

    Both modes yield the very same pieces, so every decision made on them is the same;
    only the waiting differs.
    """

    def __init__(self, path: str | Path, realtime: bool = False, piece_ms: int = 20) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.piece = samples_per_piece(piece_ms)
        self.samples = read_playable(self.path)
        self.duration = len(self.samples) / SAMPLE_RATE
        self.padded_samples = -len(self.samples) % self.piece
        self.pieces_delivered = 0
        self.late_pieces = 0  # realtime pieces the consumer took later than the wall clock
        self._closed = threading.Event()

    def pieces(self) -> Iterator[np.ndarray]:
        audio = np.pad(self.samples, (0, self.padded_samples))
        piece_s = self.piece / SAMPLE_RATE
        start = time.monotonic()
        for i in range(0, len(audio), self.piece):
            if self.realtime:
                # A microphone piece exists only once its last sample was spoken.
                wait = start + (i + self.piece) / SAMPLE_RATE - time.monotonic()
                if wait < -piece_s:
                    self.late_pieces += 1
                if wait > 0 and self._closed.wait(wait):
                    return
            if self._closed.is_set():
                return
            self.pieces_delivered += 1
            yield audio[i:i + self.piece].copy()

    def close(self) -> None:
        self._closed.set()


def check_playlist(paths: Sequence[Path]) -> None:
    """Every file must decode; AudioSourceError names each one that does not, and why."""
    bad = []
    for path in paths:
        try:
            read_playable(path)
        except AudioFormatError as e:
            bad.append(str(e))
    if bad:
        raise AudioSourceError(f"{len(bad)} of the {len(paths)} files to play cannot be "
                               "played:\n  " + "\n  ".join(bad))


class PlaylistSource(Closing):
    """Several files one after another with silence between them: a simulated microphone
    in a room where someone speaks now and then (what `make run` plays).

    Every file is decoded once here, so a bad playlist is refused before anything plays; a
    file that goes bad later (deleted, rewritten) is skipped with a warning on stderr.
    """

    def __init__(self, paths: Sequence[str | Path], realtime: bool = True, gap_s: float = 1.5,
                 loop: bool = False, piece_ms: int = 20) -> None:
        if not paths:
            raise AudioSourceError("a playlist source needs at least one file")
        samples_per_piece(piece_ms)
        self.paths = [Path(p) for p in paths]
        check_playlist(self.paths)
        self.realtime, self.gap_s, self.loop, self.piece_ms = realtime, gap_s, loop, piece_ms
        self.pieces_delivered = 0
        self.current: Path | None = None
        self._closed = threading.Event()
        self._file: FileSource | None = None
        self._skipped: dict[Path, str] = {}  # why each skipped file was, to warn once a loop

    def pieces(self) -> Iterator[np.ndarray]:
        """The pieces, each (in real time) once its last sample is due on one clock for the
        whole playlist, as a microphone's: time spent opening a file, or a reader that
        fell behind, is caught up rather than shifting everything after it."""
        start, due = time.monotonic(), 0
        for piece in self._unpaced():
            due += len(piece)
            if self.realtime:
                wait = start + due / SAMPLE_RATE - time.monotonic()
                if wait > 0 and self._closed.wait(wait):
                    return
            if self._closed.is_set():
                return
            self.pieces_delivered += 1
            yield piece

    def _unpaced(self) -> Iterator[np.ndarray]:
        gap = np.zeros(int(self.gap_s * SAMPLE_RATE), np.float32)
        piece = samples_per_piece(self.piece_ms)
        while not self._closed.is_set():
            played = 0
            for path in self.paths:
                file = self._open(path)
                if file is None:
                    continue
                played += 1
                yield from file.pieces()
                for i in range(0, len(gap), piece):
                    yield gap[i:i + piece]
                if self._closed.is_set():
                    return
            if not self.loop:
                return
            if not played:  # looping on would only repeat the warnings, without end
                raise AudioSourceError("none of the playlist's files can be read any more")

    def _open(self, path: Path) -> FileSource | None:
        """Decodes the next file; one that went bad since the start is skipped, not fatal."""
        self.current = path
        try:
            self._file = FileSource(path, False, self.piece_ms)  # paced by pieces()
        except AudioFormatError as e:
            if self._skipped.get(path) != str(e):  # a looping playlist warns once, not per pass
                print(f"edge-asr: warning: skipping {e}", file=sys.stderr, flush=True)
            self._skipped[path] = str(e)
            return None
        self._skipped.pop(path, None)
        return self._file

    def close(self) -> None:
        self._closed.set()
        if self._file is not None:
            self._file.close()
