"""The daemon's audio input without a sound card: ring buffer, file and pushed audio."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from edge_asr.daemon.capture import microphone
from edge_asr.daemon.capture.audio import AudioFormatError
from edge_asr.daemon.capture.microphone import resolve_input_device
from edge_asr.daemon.capture.push import PushSource
from edge_asr.daemon.capture.ring_buffer import RingBuffer
from edge_asr.daemon.capture.sources import AudioSourceError, FileSource, PieceMaker

RATE = 16000


def ring_of(samples: int) -> RingBuffer:
    return RingBuffer(samples / RATE, RATE)


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


# -- ring buffer ---------------------------------------------------------------------------

def test_overruns_counted_exactly_when_over_capacity() -> None:
    ring = ring_of(100)
    assert ring.write(ramp(0, 60)) == 0
    assert ring.write(ramp(60, 40)) == 0  # exactly full is not an overrun
    assert (ring.overruns, ring.dropped_samples, ring.level()) == (0, 0, 100)
    assert ring.write(ramp(100, 1)) == 1
    assert (ring.overruns, ring.dropped_samples, ring.level()) == (1, 1, 100)
    # The oldest sample went; the rest is intact and in order.
    np.testing.assert_array_equal(ring.read(1000), ramp(1, 100))
    assert ring.written == 101


def test_write_larger_than_capacity_keeps_the_newest() -> None:
    ring = ring_of(100)
    ring.write(ramp(0, 30))
    assert ring.write(ramp(30, 250)) == 180
    assert (ring.overruns, ring.dropped_samples) == (1, 180)
    np.testing.assert_array_equal(ring.read(100), ramp(180, 100))


def test_order_preserved_across_wraparound() -> None:
    ring = ring_of(97)
    rng = np.random.default_rng(1)
    written = read = 0
    out = []
    for _ in range(300):
        n = int(rng.integers(1, 60))
        if ring.level() + n <= ring.capacity:
            ring.write(ramp(written, n))
            written += n
        chunk = ring.read(int(rng.integers(1, 60)))
        read += len(chunk)
        out.append(chunk)
    out.append(ring.read(1000))
    np.testing.assert_array_equal(np.concatenate(out), ramp(0, written))
    assert ring.overruns == 0


def test_writer_never_waits_for_space_or_for_a_reader() -> None:
    ring = ring_of(320)
    waiting = threading.Thread(target=ring.read_exact, args=(10**6, 5.0))
    waiting.start()  # a reader parked on the condition must not hold the writer up
    piece = np.ones(320, dtype=np.float32)
    start = time.perf_counter()
    for _ in range(1000):
        ring.write(piece)
    elapsed = time.perf_counter() - start
    ring.close()
    waiting.join(2.0)
    assert not waiting.is_alive()
    assert elapsed < 1.0
    assert ring.overruns == 999 and ring.dropped_samples == 999 * 320


def test_concurrent_writer_and_reader_lose_nothing_under_capacity() -> None:
    ring = ring_of(1000)
    total, piece = 60_000, 317

    def produce() -> None:
        for start in range(0, total, piece):
            n = min(piece, total - start)
            while ring.level() + n > ring.capacity:  # stay under capacity, as a paced mic does
                time.sleep(0.0002)
            ring.write(ramp(start, n))
        ring.close()

    writer = threading.Thread(target=produce)
    writer.start()
    got = []
    sizes = [1, 160, 320, 683, 7]  # at most capacity - piece, or both would wait
    for i in range(10**6):
        size = sizes[i % len(sizes)]
        chunk = ring.read_exact(size, timeout=5.0)
        assert chunk is not None, "reader starved"
        got.append(chunk)
        if len(chunk) < size:  # shorter only once the writer closed the ring
            break
    writer.join(5.0)
    np.testing.assert_array_equal(np.concatenate(got), ramp(0, total))
    assert (ring.overruns, ring.dropped_samples, ring.written) == (0, 0, total)


def test_read_exact_times_out_without_consuming_and_close_wakes_readers() -> None:
    ring = ring_of(100)
    ring.write(ramp(0, 5))
    assert ring.read_exact(10, timeout=0.01) is None
    assert ring.level() == 5
    result: list[np.ndarray | None] = []
    reader = threading.Thread(target=lambda: result.append(ring.read_exact(10, timeout=10.0)))
    reader.start()
    time.sleep(0.05)
    ring.close()
    reader.join(2.0)
    assert not reader.is_alive()
    np.testing.assert_array_equal(result[0], ramp(0, 5))  # the rest, shorter: end of stream
    assert ring.write(ramp(0, 3)) == 3 and ring.dropped_samples == 3  # counted, not silent


def test_ring_rejects_two_dimensional_input() -> None:
    with pytest.raises(ValueError, match="1-D"):
        ring_of(10).write(np.zeros((2, 2), dtype=np.float32))


# -- file source -----------------------------------------------------------------------------

def write_tone(path: Path, seconds: float, rate: int = 48000, freq: float = 440.0) -> None:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def test_file_source_realtime_and_fast_give_identical_pieces(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    write_tone(wav, 0.3)
    with FileSource(wav, realtime=False) as fast:
        fast_pieces = list(fast.pieces())
    start = time.monotonic()
    with FileSource(wav, realtime=True) as paced:
        paced_pieces = list(paced.pieces())
    elapsed = time.monotonic() - start
    assert len(fast_pieces) == len(paced_pieces) == 15
    for a, b in zip(fast_pieces, paced_pieces, strict=True):
        assert a.dtype == np.float32 and a.shape == (320,)
        np.testing.assert_array_equal(a, b)
    assert elapsed >= 0.29  # paced by the wall clock, like a microphone
    assert fast.pieces_delivered == paced.pieces_delivered == 15


def test_file_source_pads_the_last_piece_and_close_stops_pacing(tmp_path: Path) -> None:
    wav = tmp_path / "tone.flac"
    write_tone(wav, 0.31, rate=16000)
    source = FileSource(wav, realtime=False, piece_ms=30)
    pieces = list(source.pieces())
    assert [len(p) for p in pieces] == [480] * 11
    assert source.padded_samples == 11 * 480 - 4960
    np.testing.assert_array_equal(pieces[-1][-source.padded_samples:], 0)

    paced = FileSource(wav, realtime=True)
    it = paced.pieces()
    next(it)
    paced.close()
    assert list(it) == []


def test_file_source_refuses_unsupported_rate_and_piece_length(tmp_path: Path) -> None:
    wav = tmp_path / "odd.wav"
    write_tone(wav, 0.1, rate=11025)
    with pytest.raises(AudioFormatError, match="11025"):
        FileSource(wav)
    write_tone(wav, 0.1, rate=16000)
    with pytest.raises(ValueError, match="10, 20, 30"):
        FileSource(wav, piece_ms=25)


# -- push source -------------------------------------------------------------------------------

def s16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize(("data", "rate", "encoding", "message"), [
    (b"\0\0" * 160, 11025, "pcm_s16le", "unsupported sample rate 11025"),
    (np.array([0.1, np.nan, 0.2], dtype=np.float32).tobytes(), 16000, "f32le", "NaN"),
    (np.array([0.1, np.inf], dtype=np.float32), 16000, "f32le", "NaN or infinite"),
    (b"\0\0\0", 16000, "pcm_s16le", "3 bytes is not a whole number"),
    (b"\0" * 6, 16000, "f32le", "6 bytes is not a whole number"),
    (b"\0\0" * 160, 16000, "mulaw", "unknown encoding 'mulaw'"),
    (b"\0\0" * 48001, 48000, "pcm_s16le", "longer than the maximum of 1 s"),
    (np.zeros(320, dtype=np.float32), 16000, "pcm_s16le", "does not hold pcm_s16le"),
    (np.zeros((2, 160), dtype=np.int16), 16000, "pcm_s16le", "mono"),
    ("not audio", 16000, "pcm_s16le", "bytes or a numpy array"),
])
def test_push_refuses_bad_input_with_a_reason(data: object, rate: int, encoding: str,
                                               message: str) -> None:
    source = PushSource()
    source.push(b"\0\0" * 320, 16000)
    with pytest.raises(AudioFormatError, match=message):
        source.push(data, rate, encoding)  # type: ignore[arg-type]
    assert source.rejected_pieces == 1
    # The stream goes on serving after a refused piece.
    assert source.push(b"\0\0" * 320, 16000) == 320
    source.end()
    assert len(list(source.pieces())) == 2


def test_push_refuses_a_rate_change_and_audio_after_the_end() -> None:
    source = PushSource()
    source.push(b"\0\0" * 480, 48000)
    with pytest.raises(AudioFormatError, match="changed within a stream"):
        source.push(b"\0\0" * 160, 16000)
    source.end()
    with pytest.raises(AudioSourceError, match="after the stream ended"):
        source.push(b"\0\0" * 480, 48000)


def test_push_resamples_statefully_like_one_shot() -> None:
    rng = np.random.default_rng(7)
    rate = 48000
    t = np.arange(int(1.3 * rate)) / rate
    audio = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t)))
    audio = audio.astype(np.float32)
    whole = soxr.resample(audio, rate, RATE, quality="HQ")

    source = PushSource(piece_ms=20)
    collected: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: collected.extend(source.pieces(timeout=10.0)))
    reader.start()
    sizes = [1, 479, 961, 7, 3333, 2049]
    pos = i = 0
    while pos < len(audio):  # odd sizes, alternately as bytes and as float arrays
        n = sizes[i % len(sizes)]
        piece = audio[pos:pos + n]
        if i % 2:
            source.push(piece, rate, "f32le")
        else:
            source.push(piece.tobytes(), rate, "f32le")
        pos += n
        i += 1
    source.end()
    reader.join(10.0)

    assert all(p.shape == (320,) and p.dtype == np.float32 for p in collected)
    streamed = np.concatenate(collected)
    assert len(streamed) == -(-len(whole) // 320) * 320
    np.testing.assert_allclose(streamed[:len(whole)], whole, atol=1e-5)
    np.testing.assert_array_equal(streamed[len(whole):], 0)  # padding completes the last piece
    assert source.overruns == 0 and source.pushed_pieces == i


def test_push_int16_at_model_rate_is_exact() -> None:
    samples = (np.arange(-800, 800) * 20).astype(np.int16)
    source = PushSource(piece_ms=10)
    source.push(samples.tobytes(), 16000, "pcm_s16le")
    source.end()
    got = np.concatenate(list(source.pieces()))
    np.testing.assert_array_equal(got, samples.astype(np.float32) / 32768)


def test_piece_maker_splits_boundaries_without_clicks() -> None:
    # A steady tone fed in tiny pieces has no jumps bigger than the tone's own slope.
    rate = 44100
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    maker = PieceMaker(rate, 20)
    out = []
    for start in range(0, len(tone), 441):
        out += maker.feed(tone[start:start + 441])
    out += maker.feed(tone[:0], last=True)
    y = np.concatenate(out)[2000:15000]
    assert np.max(np.abs(np.diff(y))) < 2 * np.pi * 300 / RATE * 1.05


# -- device selection (no PortAudio needed) -----------------------------------------------------

DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: HDMI 0", "channels": 0, "default_rate": 48000.0,
     "host_api": "ALSA"},
    {"index": 1, "name": "USB Headset Mic", "channels": 1, "default_rate": 44100.0,
     "host_api": "ALSA"},
    {"index": 2, "name": "pulse", "channels": 32, "default_rate": 44100.0, "host_api": "ALSA"},
    {"index": 3, "name": "USB Webcam Mic", "channels": 2, "default_rate": 16000.0,
     "host_api": "ALSA"},
]


def test_device_resolution_by_name_index_and_default() -> None:
    assert resolve_input_device("headset", DEVICES, 2)["index"] == 1
    assert resolve_input_device("PULSE", DEVICES, 2)["index"] == 2
    assert resolve_input_device(3, DEVICES, 2)["index"] == 3
    assert resolve_input_device("3", DEVICES, 2)["index"] == 3
    assert resolve_input_device(None, DEVICES, 2)["index"] == 2


@pytest.mark.parametrize(("spec", "default", "message"), [
    ("bluetooth", 2, "no audio device matches 'bluetooth'"),
    (9, 2, "no audio device has index 9"),
    ("HDMI", 2, "'HDA Intel PCH: HDMI 0' has no input channels"),
    (0, 2, "has no input channels"),
    ("usb", 2, "matches several input devices"),
    (None, -1, "no default input device"),
])
def test_device_resolution_errors_name_the_inputs(spec: str | int | None, default: int,
                                                  message: str) -> None:
    with pytest.raises(AudioSourceError, match=message) as err:
        resolve_input_device(spec, DEVICES, default)
    if "several" not in message:
        assert "1 'USB Headset Mic' (ALSA, 1 ch, 44100 Hz)" in str(err.value)
        assert "HDMI" not in str(err.value).split("available input devices:")[1]


def test_missing_portaudio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio(name: str) -> None:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(microphone.importlib, "import_module", no_portaudio)
    with pytest.raises(AudioSourceError, match="install the Debian package libportaudio2"):
        microphone.list_input_devices()
    with pytest.raises(AudioSourceError, match="PortAudio is not available"):
        microphone.MicrophoneSource("pulse")
