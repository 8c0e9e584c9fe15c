"""The default echo canceller: it learns the echo path, leaves a talker's words intact while
the device plays, knows how much echo it left, and the VAD hears only what rises above that."""

from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import microphone_pieces
from edge_asr.daemon.frontend.cleanup import FrontEndConfig, MicFrontEnd
from edge_asr.daemon.frontend.echo import EchoCanceller, EchoOptions
from edge_asr.daemon.frontend.frames import FRAME
from edge_asr.daemon.frontend.kalman_echo import KalmanEchoCanceller
from edge_asr.daemon.frontend.vad import Vad
from edge_asr.simulator.room import Playback, render_playback

DATA = Path(__file__).parent / "data"
SR = 16000


def _power_db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-20)


def _music_echo(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The simulator's device playback: tonal music, its echo 30 ms late through a room."""
    n = int(seconds * SR)
    reference, echo = render_playback(Playback(kind="music", delay_ms=30), n,
                                      np.random.default_rng(seed))
    return reference, echo * np.float32(0.03)  # about -30 dBFS at the microphone


def _run(canceller: KalmanEchoCanceller, mic: np.ndarray, reference: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """The cleaned frames and the canceller's expected residual (mean square) per frame."""
    out, expected = [], []
    for i in range(0, len(mic) // FRAME * FRAME, FRAME):
        out.append(canceller.process(mic[i:i + FRAME], reference[i:i + FRAME]))
        expected.append(canceller.residual_mean_square)
    return np.concatenate(out), np.array(expected)


def test_it_learns_the_echo_of_music_from_the_device():
    reference, echo = _music_echo(12.0)
    cleaned, _ = _run(KalmanEchoCanceller(), echo, reference)
    late = slice(6 * SR, len(cleaned))
    assert _power_db(echo[late]) - _power_db(cleaned[late]) >= 10.0


def test_a_talker_over_the_music_comes_through_intact():
    reference, echo = _music_echo(10.0, seed=1)
    speech = read_audio(DATA / "clip00.flac")
    speech = speech / np.sqrt(np.mean(speech ** 2)) * 0.1  # 10 dB above the echo
    near = np.zeros_like(echo)
    start = 4 * SR  # the filter has heard the music alone for 4 s
    near[start:start + len(speech)] = speech[: len(near) - start]
    cleaned, _ = _run(KalmanEchoCanceller(), near + echo, reference)
    talk = slice(start, start + len(speech))
    left = cleaned[talk] - near[talk]  # echo left plus whatever the filter did to the words
    assert _power_db(near[talk]) - _power_db(left) >= 20.0
    # the words are not scaled down either: the output follows the talker one to one
    gain = float(np.dot(cleaned[talk], near[talk]) / np.dot(near[talk], near[talk]))
    assert gain == pytest.approx(1.0, abs=0.05)


def test_what_the_canceller_leaves_of_music_is_not_heard_as_speech():
    reference, echo = _music_echo(16.0, seed=2)
    mic = echo + np.random.default_rng(3).standard_normal(len(echo)).astype(np.float32) * 3e-4
    front = MicFrontEnd(FrontEndConfig(echo_cancellation=True))
    gated, plain = Vad(noise_gate_db=3.0, level_gate=0.4), Vad(noise_gate_db=3.0, level_gate=0.4)
    heard_gated, heard_plain = [], []
    for m, r in zip(microphone_pieces(mic), microphone_pieces(reference), strict=True):
        out = front.process(m, r)
        heard_gated += gated.process(out, front.residual_echo)
        heard_plain += plain.process(out)
    late = slice(100, None)  # after 3 s: the filter has heard the song for a while
    assert np.mean(heard_plain[late]) > 0.5  # the leftovers fool the VAD on their own
    assert np.mean(heard_gated[late]) <= 0.03


def test_frames_of_another_length_are_refused_in_words():
    with pytest.raises(ValueError, match="160-sample frames, got 100 and 160"):
        KalmanEchoCanceller().process(np.zeros(100), np.zeros(160))


def test_the_front_end_hands_on_the_residual_of_each_frame_it_returns():
    reference, echo = _music_echo(1.0)
    front = MicFrontEnd(FrontEndConfig(echo_cancellation=True))
    piece = 480  # 30 ms: whole 10 ms frames, one value each
    out = front.process(echo[:piece], reference[:piece])
    assert len(out) == piece and front.residual_echo is not None
    assert front.residual_echo.shape == (3,) and np.all(front.residual_echo > 0)
    odd = front.process(echo[piece:piece + 250], reference[piece:piece + 250])
    assert len(front.residual_echo) * FRAME == len(odd)  # 1 frame out, 90 samples wait
    # a canceller that cannot tell what it left gives none
    speex = EchoCanceller(EchoOptions(enabled=True, backend="speex"))
    speex.process(echo[:piece], reference[:piece])
    assert speex.residual_echo is None


def test_the_vad_hears_no_speech_that_is_no_louder_than_the_echo_left():
    speech = read_audio(DATA / "clip00.flac")
    frames = len(speech) // FRAME
    speech = speech[: frames * FRAME]
    heard = sum(Vad().process(speech))
    assert heard > 20
    power = np.square(speech.astype(np.float64)).reshape(frames, FRAME).mean(axis=1)
    # the canceller expects as much echo as there is sound: nothing rises 6 dB above it
    assert sum(Vad().process(speech, power)) == 0
    # ... and a residual 30 dB down changes nothing
    assert Vad().process(speech, power * 1e-3) == Vad().process(speech)
    # in microphone pieces the values stay aligned with their samples
    vad, flags = Vad(), []
    for i, piece in enumerate(microphone_pieces(speech)):
        flags += vad.process(piece, power[2 * i: 2 * i + 2] * 1e-3)
    assert flags == Vad().process(speech)


def test_the_vad_refuses_a_residual_of_the_wrong_length():
    with pytest.raises(ValueError, match="one value per 10 ms of the samples"):
        Vad().process(np.zeros(320, np.float32), np.ones(3))
