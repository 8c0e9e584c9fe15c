"""Where the daemon's audio comes from: a microphone, a file, or a client pushing it.

Every source delivers the model's format, 16 kHz mono float32, as an iterator of equal
pieces of 10, 20 or 30 ms (webrtcvad's frame sizes), and counts what it lost.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol, Self

import numpy as np

from edge_asr.daemon.capture.audio import (
    SUPPORTED_RATES,
    AudioFormatError,
    StreamResampler,
    check_finite,
    check_sample_rate,
    read_audio,
)
from edge_asr.daemon.capture.ring_buffer import RingBuffer
from edge_asr.daemon.constants import SAMPLE_RATE

PIECE_MS = (10, 20, 30)
ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
# Preferred native capture rates after the device's own default: 48 and 44.1 kHz are what
# most hardware runs at, so the driver does not resample with its own (often poor) filter.
_RATE_PREFERENCE = (48000, 44100, 16000, 32000, 24000, 22050, 8000)


class AudioSourceError(RuntimeError):
    """A source that cannot deliver audio (no PortAudio, no such device, ...), in words."""


class AudioSource(Protocol):
    def pieces(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


def samples_per_piece(piece_ms: int) -> int:
    if piece_ms not in PIECE_MS:
        raise ValueError(f"piece length must be one of {PIECE_MS} ms, got {piece_ms}")
    return SAMPLE_RATE * piece_ms // 1000


class _Closing:
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


def _drain(ring: RingBuffer, piece: int, timeout: float | None) -> Iterator[np.ndarray | None]:
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


# -- microphone --------------------------------------------------------------------------

def _sounddevice() -> ModuleType:
    """sounddevice, imported on first use: without PortAudio, files and pushed audio work."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as e:  # sounddevice raises OSError when libportaudio is not installed
        raise AudioSourceError(
            f"PortAudio is not available ({e}); install the Debian package libportaudio2 "
            "(make system-deps) to capture from a microphone") from e
    except ImportError as e:
        raise AudioSourceError(f"the Python package sounddevice is not installed ({e})") from e


def _all_devices(sd: ModuleType) -> list[dict[str, Any]]:
    hostapis = sd.query_hostapis()
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_rate": d["default_samplerate"], "host_api": hostapis[d["hostapi"]]["name"]}
            for i, d in enumerate(sd.query_devices())]


def list_input_devices() -> list[dict[str, Any]]:
    """Devices that can capture: index, name, channels, default_rate, host_api."""
    return [d for d in _all_devices(_sounddevice()) if d["channels"] > 0]


def refresh_devices() -> None:
    """Re-scans the devices, which PortAudio only enumerates when it starts.

    Needed after a device appears (a headset plugged in, a sound server started).
    No stream may be open while this runs.
    """
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()


def _describe(devices: Sequence[dict[str, Any]]) -> str:
    inputs = [d for d in devices if d["channels"] > 0]
    if not inputs:
        return "no input devices are available"
    return "available input devices: " + "; ".join(
        f"{d['index']} '{d['name']}' ({d['host_api']}, {d['channels']} ch, "
        f"{d['default_rate']:.0f} Hz)" for d in inputs)


def resolve_input_device(spec: str | int | None, devices: Sequence[dict[str, Any]],
                         default_index: int) -> dict[str, Any]:
    """The device `spec` names: None for the default, an index, or part of a name."""
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if spec is None:
        found = [d for d in devices if d["index"] == default_index]
        if not found:
            raise AudioSourceError(f"there is no default input device; {_describe(devices)}")
    elif isinstance(spec, int):
        found = [d for d in devices if d["index"] == spec]
        if not found:
            raise AudioSourceError(f"no audio device has index {spec}; {_describe(devices)}")
    else:
        exact = [d for d in devices if d["name"].lower() == spec.lower()]
        found = exact or [d for d in devices if spec.lower() in d["name"].lower()]
        if not found:
            raise AudioSourceError(f"no audio device matches {spec!r}; {_describe(devices)}")
        with_inputs = [d for d in found if d["channels"] > 0]
        if len(with_inputs) > 1:
            names = ", ".join(f"{d['index']} '{d['name']}'" for d in with_inputs)
            raise AudioSourceError(f"{spec!r} matches several input devices ({names}); "
                                   "give more of the name or the index")
        found = with_inputs or found
    device = found[0]
    if device["channels"] <= 0:
        raise AudioSourceError(f"device {device['index']} '{device['name']}' has no input "
                               f"channels; {_describe(devices)}")
    return device


def _choose_rate(sd: ModuleType, device: dict[str, Any], rate: int | None) -> int:
    """`rate` if the device takes it, else the first supported rate it takes natively."""
    if rate is not None:
        check_sample_rate(rate)
        candidates: list[int] = [rate]
    else:
        default = int(device["default_rate"])
        candidates = ([default] if default in SUPPORTED_RATES else []) + [
            r for r in _RATE_PREFERENCE if r != default]
    for r in candidates:
        try:
            sd.check_input_settings(device=device["index"], channels=1, dtype="float32",
                                    samplerate=r)
            return r
        except sd.PortAudioError:
            continue
    raise AudioSourceError(f"device {device['index']} '{device['name']}' accepts none of "
                           f"the sample rates {candidates}")


class _RingCounters:
    """Overrun counters of a source that buffers through `self.ring`."""

    ring: RingBuffer

    @property
    def overruns(self) -> int:
        return self.ring.overruns

    @property
    def dropped_samples(self) -> int:
        return self.ring.dropped_samples


class MicrophoneSource(_RingCounters, _Closing):
    """Captures from a PortAudio input device.

    The capture callback only copies the native-rate audio into `ring`: it runs under the
    GIL on PortAudio's thread, and anything slower there makes the device overflow. The
    reader (`pieces()`, on the worker thread) resamples to 16 kHz and cuts pieces.
    """

    def __init__(self, device: str | int | None = None, rate: int | None = None,
                 block_ms: int = 20, ring: RingBuffer | None = None,
                 ring_seconds: float = 2.0) -> None:
        samples_per_piece(block_ms)  # refuse a bad piece length before touching devices
        self._closed = False
        sd = _sounddevice()
        devices = _all_devices(sd)
        self.device = resolve_input_device(device, devices, sd.default.device[0])
        self.rate = _choose_rate(sd, self.device, rate)
        self.ring = ring if ring is not None else RingBuffer(ring_seconds, self.rate)
        if self.ring.rate != self.rate:
            raise ValueError(f"the ring buffer is for {self.ring.rate} Hz but the device "
                             f"is opened at {self.rate} Hz")
        self.block_ms = block_ms
        self.block = self.rate * block_ms // 1000  # native samples per callback
        self._maker = PieceMaker(self.rate, block_ms)
        self.input_overflows = 0  # PortAudio said the device buffer overflowed
        self.pieces_delivered = 0
        try:
            self._stream = sd.InputStream(device=self.device["index"], samplerate=self.rate,
                                          channels=1, dtype="float32", blocksize=self.block,
                                          callback=self._on_audio)
        except sd.PortAudioError as e:
            raise AudioSourceError(f"cannot open device {self.device['index']} "
                                   f"'{self.device['name']}' at {self.rate} Hz: {e}") from e

    def _on_audio(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.input_overflows += 1
        self.ring.write(indata[:, 0])

    def start(self) -> None:
        if not self._stream.active and not self._closed:
            self._stream.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def pieces(self, stall_s: float = 5.0) -> Iterator[np.ndarray]:
        """16 kHz pieces of `block_ms` until close(); a device silent for `stall_s` is an
        error, since a working microphone delivers even when the room is quiet."""
        self.start()
        for raw in _drain(self.ring, self.block, stall_s):
            if raw is None:
                raise AudioSourceError(f"device '{self.device['name']}' delivered no audio "
                                       f"for {stall_s} s")
            yield from self._count(self._maker.feed(raw))
        yield from self._count(self._maker.feed(np.zeros(0, dtype=np.float32), last=True))

    def _count(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        self.pieces_delivered += len(pieces)
        return pieces

    def close(self) -> None:
        """Stops capture; a reader gets the rest of the buffered audio, then the end."""
        if self._closed:
            return
        self._closed = True
        self._stream.stop()
        self._stream.close()
        self.ring.close()

    @property
    def captured_samples(self) -> int:
        return self.ring.written


# -- file --------------------------------------------------------------------------------

class FileSource(_Closing):
    """A WAV/FLAC file, as a microphone would deliver it (`realtime`) or at full speed.

    Both modes yield the very same pieces, so every decision made on them is the same;
    only the waiting differs.
    """

    def __init__(self, path: str | Path, realtime: bool = False, piece_ms: int = 20) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.piece = samples_per_piece(piece_ms)
        self.samples = read_audio(self.path)
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


class PlaylistSource(_Closing):
    """Several files one after another with silence between them: a simulated microphone
    in a room where someone speaks now and then (what `make run` plays)."""

    def __init__(self, paths: Sequence[str | Path], realtime: bool = True, gap_s: float = 1.5,
                 loop: bool = False, piece_ms: int = 20) -> None:
        if not paths:
            raise AudioSourceError("a playlist source needs at least one file")
        self.paths = [Path(p) for p in paths]
        self.realtime, self.gap_s, self.loop, self.piece_ms = realtime, gap_s, loop, piece_ms
        self.pieces_delivered = 0
        self.current: Path | None = None
        self._closed = threading.Event()
        self._file: FileSource | None = None

    def pieces(self) -> Iterator[np.ndarray]:
        gap = np.zeros(int(self.gap_s * SAMPLE_RATE), np.float32)
        while not self._closed.is_set():
            for path in self.paths:
                self.current = path
                self._file = FileSource(path, self.realtime, self.piece_ms)
                for piece in self._file.pieces():
                    self.pieces_delivered += 1
                    yield piece
                for piece in self._silence(gap):
                    yield piece
                if self._closed.is_set():
                    return
            if not self.loop:
                return

    def _silence(self, gap: np.ndarray) -> Iterator[np.ndarray]:
        piece = samples_per_piece(self.piece_ms)
        start = time.monotonic()
        for i in range(0, len(gap), piece):
            if self.realtime and self._closed.wait(max(0.0, start + (i + piece) / SAMPLE_RATE
                                                         - time.monotonic())):
                return
            if self._closed.is_set():
                return
            self.pieces_delivered += 1
            yield gap[i:i + piece]

    def close(self) -> None:
        self._closed.set()
        if self._file is not None:
            self._file.close()


# -- pushed by a client --------------------------------------------------------------------

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
    check_finite(samples)
    return samples


def _check_array(data: np.ndarray, encoding: str) -> np.ndarray:
    if data.ndim != 1:
        raise AudioFormatError(f"pushed audio must be mono (1-D), got shape {data.shape}")
    wanted = "i" if encoding == "pcm_s16le" else "f"
    if data.dtype.kind != wanted or (wanted == "i" and data.dtype.itemsize != 2):
        raise AudioFormatError(f"a {data.dtype} array does not hold {encoding} samples")
    return data


class PushSource(_RingCounters, _Closing):
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
        for piece in _drain(self.ring, self.piece, timeout):
            if piece is None:
                return
            self.pieces_delivered += 1
            yield piece

    @property
    def padded_samples(self) -> int:
        return 0 if self._maker is None else self._maker.padded_samples
