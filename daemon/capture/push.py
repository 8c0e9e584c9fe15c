"""Audio a client pushes over gRPC, piece by piece, as the daemon's audio source."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from edge_asr.daemon.capture.audio import AudioFormatError, check_float_audio, check_sample_rate
from edge_asr.daemon.capture.ring_buffer import RingBuffer
from edge_asr.daemon.capture.sources import (
    AudioSourceError,
    Closing,
    PieceMaker,
    RingCounters,
    drain,
    samples_per_piece,
)
from edge_asr.daemon.constants import SAMPLE_RATE

ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def decode_pushed(data: bytes | bytearray | memoryview | np.ndarray, rate: int, encoding: str,
                  max_seconds: float) -> np.ndarray:
    """One pushed piece as float32 at its own rate, or AudioFormatError saying why not."""
    if encoding not in ENCODINGS:
        raise AudioFormatError(f"unknown encoding {encoding!r}; known: "
                               + ", ".join(ENCODINGS))
    check_sample_rate(rate)
    dtype = ENCODINGS[encoding]
    if isinstance(data, bytes | bytearray | memoryview):
        nbytes = memoryview(data).nbytes
        if nbytes % dtype.itemsize:
            raise AudioFormatError(f"{nbytes} bytes is not a whole number of {encoding} "
                                   f"samples of {dtype.itemsize} bytes")
        samples = np.frombuffer(data, dtype=dtype)
    elif isinstance(data, np.ndarray):
        samples = _check_array(data, encoding)
    else:
        raise AudioFormatError(f"audio must be bytes or a numpy array, not {type(data).__name__}")
    if len(samples) > max_seconds * rate:
        raise AudioFormatError(f"a piece of {len(samples)} samples ({len(samples) / rate:.2f} s)"
                               f" is longer than the maximum of {max_seconds:g} s")
    if samples.dtype.kind == "i":
        return samples.astype(np.float32) / 32768.0
    samples = samples.astype(np.float32)
    check_float_audio(samples)
    return samples


def _check_array(data: np.ndarray, encoding: str) -> np.ndarray:
    if data.ndim != 1:
        raise AudioFormatError(f"pushed audio must be mono (1-D), got shape {data.shape}")
    wanted = "i" if encoding == "pcm_s16le" else "f"
    if data.dtype.kind != wanted or (wanted == "i" and data.dtype.itemsize != 2):
        raise AudioFormatError(f"a {data.dtype} array does not hold {encoding} samples")
    return data


class PushSource(RingCounters, Closing):
    """Audio a client pushes piece by piece (gRPC), for one stream.

    `push()` runs on the caller's thread: it validates, resamples statefully and queues
    16 kHz pieces; `pieces()` hands them to the worker. A stream keeps one sample rate.
    """

    def __init__(self, piece_ms: int = 20, max_piece_s: float = 1.0,
                 ring: RingBuffer | None = None, capacity_s: float = 10.0) -> None:
        self.piece_ms = piece_ms
        self.piece = samples_per_piece(piece_ms)
        self.max_piece_s = max_piece_s
        self.ring = ring if ring is not None else RingBuffer(capacity_s, SAMPLE_RATE)
        if self.ring.rate != SAMPLE_RATE:
            raise ValueError(f"a push source queues {SAMPLE_RATE} Hz audio, "
                             f"not {self.ring.rate} Hz")
        self.rate: int | None = None  # fixed by the first push
        self.pushed_pieces = 0
        self.rejected_pieces = 0
        self.pieces_delivered = 0
        self._maker: PieceMaker | None = None
        self._lock = threading.Lock()
        self._ended = False

    def push(self, samples: bytes | bytearray | memoryview | np.ndarray, sample_rate: int,
             encoding: str = "pcm_s16le") -> int:
        """Queues one piece; returns how many 16 kHz samples became ready.

        A refused piece raises AudioFormatError and leaves the stream as it was.
        """
        try:
            audio = decode_pushed(samples, sample_rate, encoding, self.max_piece_s)
            with self._lock:
                maker = self._maker_for(sample_rate)
                ready = maker.feed(audio)
                self.pushed_pieces += 1
                return self._queue(ready)
        except AudioFormatError:
            self.rejected_pieces += 1
            raise

    def _maker_for(self, rate: int) -> PieceMaker:
        if self._ended:
            raise AudioSourceError("audio pushed after the stream ended")
        if self._maker is None:
            self._maker = PieceMaker(rate, self.piece_ms)
            self.rate = rate
        elif rate != self.rate:
            raise AudioFormatError(f"sample rate changed within a stream from {self.rate} "
                                   f"to {rate} Hz; start a new stream instead")
        return self._maker

    def _queue(self, pieces: list[np.ndarray]) -> int:
        for piece in pieces:
            self.ring.write(piece)
        return sum(len(p) for p in pieces)

    def end(self) -> None:
        """The client finished: flush the resampler, pad the last piece, end pieces()."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._maker is not None:
                self._queue(self._maker.feed(np.zeros(0, dtype=np.float32), last=True))
            self.ring.close()

    close = end

    def pieces(self, timeout: float | None = None) -> Iterator[np.ndarray]:
        """Pieces as they are pushed, until end(); stops early if none come for `timeout`."""
        for piece in drain(self.ring, self.piece, timeout):
            if piece is None:
                return
            self.pieces_delivered += 1
            yield piece

    @property
    def padded_samples(self) -> int:
        return 0 if self._maker is None else self._maker.padded_samples
