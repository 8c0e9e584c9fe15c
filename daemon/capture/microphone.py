"""A PortAudio input device (sounddevice) as the daemon's audio source."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, Self

import numpy as np

from edge_asr.daemon.capture.audio import SUPPORTED_RATES, check_sample_rate
from edge_asr.daemon.capture.ring_buffer import RingBuffer
from edge_asr.daemon.capture.sources import (
    AudioSourceError,
    Closing,
    PieceMaker,
    RingCounters,
    drain,
    samples_per_piece,
)

# Preferred native capture rates after the device's own default: 48 and 44.1 kHz are what
# most hardware runs at, so the driver does not resample with its own (often poor) filter.
_RATE_PREFERENCE = (48000, 44100, 16000, 32000, 24000, 22050, 8000)
_POLL_S = 0.25  # how often a reader waiting for audio checks that the stream still runs


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


class MicrophoneSource(RingCounters, Closing):
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
        error, since a working microphone delivers even when the room is quiet, and so is
        a stream that PortAudio stopped (the device was unplugged, its server went away)."""
        self.start()
        silent = 0.0
        poll = min(stall_s, _POLL_S)
        for raw in drain(self.ring, self.block, poll):
            if raw is not None:
                silent = 0.0
                yield from self._count(self._maker.feed(raw))
                continue
            silent += poll
            if not self._stream.active and not self._closed:
                raise AudioSourceError(f"device '{self.device['name']}' stopped delivering "
                                       "audio (unplugged, or its sound server went away)")
            if silent >= stall_s:
                raise AudioSourceError(f"device '{self.device['name']}' delivered no audio "
                                       f"for {stall_s} s")
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
