"""Echo cancellation and the playback reference: the device's own playback comes out of its
microphone, near-end speech stays, and a bad reference is refused or survived in words."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.api.config import load_config
from edge_asr.daemon.capture.audio import AudioFormatError, read_audio
from edge_asr.daemon.capture.reference import FileReference
from edge_asr.daemon.driver import StreamDriver, microphone_pieces
from edge_asr.daemon.frontend.cleanup import FrontEndConfig, MicFrontEnd
from edge_asr.daemon.frontend.echo import EchoCanceller, EchoOptions
from edge_asr.daemon.pipeline import Pipeline
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.simulator.room import Playback, RoomConfig, UtteranceSource, render_session

DATA = Path(__file__).parent / "data"
SR = 16000


def _playback(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-free playback: pink-ish noise with a slow level swell, as music has."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    noise = np.cumsum(rng.standard_normal(n)) * 0.02
    noise = noise - np.convolve(noise, np.ones(64) / 64, "same") + rng.standard_normal(n) * 0.3
    swell = 0.6 + 0.4 * np.sin(np.arange(n) / SR * 2 * np.pi * 0.3)
    x = noise * swell
    return (x / np.sqrt(np.mean(x ** 2)) * 0.1).astype(np.float32)


def _echo(reference: np.ndarray, delay_ms: float = 25.0, seed: int = 1) -> np.ndarray:
    """The reference through a short decaying impulse response, `delay_ms` late."""
    rng = np.random.default_rng(seed)
    taps = int(0.03 * SR)
    ir = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.006 * SR))
    ir[0] = 1.0
    ir *= 0.3 / np.sqrt(np.sum(ir ** 2))
    delay = int(delay_ms / 1000 * SR)
    echo = np.convolve(reference, ir)[: len(reference)]
    return np.concatenate((np.zeros(delay), echo))[: len(reference)].astype(np.float32)


def _power_db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-20)


def _cancel(canceller, mic: np.ndarray, reference: np.ndarray | None, block: int = 320):
    out = [canceller.process(mic[i:i + block],
                             None if reference is None else reference[i:i + block])
           for i in range(0, len(mic), block)]
    return np.concatenate(out + [canceller.flush()])


@pytest.mark.parametrize("backend", ["speex+webrtc", "speex", "webrtc"])
def test_the_canceller_takes_a_known_echo_down_by_at_least_10_db(backend):
    reference = _playback(8.0)
    mic = _echo(reference)
    cleaned = _cancel(EchoCanceller(EchoOptions(enabled=True, backend=backend)), mic, reference)
    assert len(cleaned) == len(mic)
    late = slice(3 * SR, None)  # after the filter has converged
    assert _power_db(mic[late]) - _power_db(cleaned[late]) >= 10.0


def test_without_a_reference_near_end_speech_passes_untouched():
    speech = read_audio(DATA / "clip00.flac")
    canceller = EchoCanceller()
    assert np.array_equal(_cancel(canceller, speech, None), speech)
    # through the whole chain too, block by block as the driver feeds it
    chain = MicFrontEnd(FrontEndConfig(echo_cancellation=True))
    out = np.concatenate([chain.process(p) for p in microphone_pieces(speech)] + [chain.flush()])
    assert np.array_equal(out, speech)


def test_blocks_of_any_length_give_the_same_audio_as_whole_frames():
    reference = _playback(2.0)
    mic = _echo(reference) + np.float32(0.01)
    whole = _cancel(EchoCanceller(), mic, reference, block=320)
    odd = _cancel(EchoCanceller(), mic, reference, block=97)  # leftovers wait for the next
    assert len(odd) == len(whole) == len(mic)
    np.testing.assert_array_equal(odd, whole)


def _driver(tiny_model_dir, reference: FileReference | None) -> StreamDriver:
    recognizer = Recognizer.from_model_dir(tiny_model_dir)
    return StreamDriver(Pipeline(recognizer), Finisher(lambda _e: None),
                        MicFrontEnd(FrontEndConfig(echo_cancellation=True)), reference)


class _Heard:
    """What reached the pipeline, kept beside what it does with it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.samples: list[np.ndarray] = []
        accept = pipeline.accept

        def spy(samples, playback=False, residual_echo=None):
            self.samples.append(samples.copy())
            return accept(samples, playback, residual_echo)

        pipeline.accept = spy

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.samples)


def test_a_reference_at_another_rate_is_resampled_and_still_cancels(tmp_path, tiny_model_dir):
    reference = _playback(6.0)
    mic = _echo(reference)
    path = tmp_path / "playback-48k.wav"
    import soxr

    sf.write(path, soxr.resample(reference, SR, 48000), 48000, subtype="FLOAT")
    driver = _driver(tiny_model_dir, FileReference(path))
    heard = _Heard(driver.pipeline)
    driver.feed_all(microphone_pieces(mic))
    driver.finish(wait_s=0.0)
    late = slice(3 * SR, len(mic))
    assert _power_db(mic[late]) - _power_db(heard.audio[late]) >= 10.0


def test_a_reference_at_an_unsupported_rate_is_refused_by_name(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(11025, np.float32), 11025)
    with pytest.raises(AudioFormatError, match=r"odd\.wav.*unsupported sample rate 11025"):
        FileReference(path)


def test_a_reference_that_stops_before_the_mic_goes_on_with_silence_said_once(
        tmp_path, tiny_model_dir):
    path = tmp_path / "short.wav"
    sf.write(path, _playback(1.0), SR)
    warnings = []
    driver = _driver(tiny_model_dir, FileReference(path, warn=warnings.append))
    heard = _Heard(driver.pipeline)
    mic = read_audio(DATA / "clip00.flac")
    driver.feed_all(microphone_pieces(mic))
    driver.finish(wait_s=0.0)
    assert len(warnings) == 1 and "short.wav ended at 1.00 s" in warnings[0]
    assert driver.audio_seconds == pytest.approx(len(mic) / SR, abs=0.02)
    assert len(heard.audio) >= len(mic)  # every piece reached the pipeline


def test_the_daemon_refuses_a_missing_reference_at_start_naming_it(tmp_path, tiny_model_dir):
    socket = tmp_path / "d.sock"
    missing = tmp_path / "no-such-playback.wav"
    cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--model", str(tiny_model_dir),
           "--files", str(DATA / "clip00.flac"), "--reference", str(missing),
           "--no-realtime", "--local-only", "--socket", str(socket)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"edge-asr: error: {missing}: no such file")
    assert "serving on" not in proc.stdout and not socket.exists()
    assert "Traceback" not in proc.stderr


def test_frontend_settings_are_checked_in_words(tmp_path):
    toml = tmp_path / "d.toml"
    toml.write_text('[frontend]\nnoise_suppression = "loud"\n')
    with pytest.raises(ValueError, match=r"d\.toml.*'loud' is not one of off, webrtc"):
        load_config(toml)
    toml.write_text('[frontend]\necho_cancellation = true\necho_canceller = "speex"\n'
                    '[source]\nreference = "music.wav"\n')
    config = load_config(toml)
    assert config.frontend.echo_cancellation and config.source.reference == "music.wav"


def test_the_simulated_playback_reaches_the_mic_late_and_the_reference_stays_dry(tmp_path):
    room = RoomConfig(gap_s=[0.5, 0.5], playback=Playback(kind="music", delay_ms=30))
    source = UtteranceSource(manifest=str(DATA / "manifest.jsonl"), limit=1)
    session = render_session(source, room, tmp_path, seed=3)
    assert session.reference is not None and len(session.reference) == len(session.samples)
    quiet = render_session(source, RoomConfig(gap_s=[0.5, 0.5]), tmp_path, seed=3)
    echo = (session.samples - quiet.samples)[: SR]  # the first second: before any speech
    ref = session.reference[: SR]
    lags = [float(np.dot(echo[lag:], ref[: len(ref) - lag])) for lag in range(0, 800)]
    assert int(np.argmax(lags)) == pytest.approx(0.030 * SR, abs=16)  # the direct path
