"""The one loop of daemon, server and eval: every utterance a stream hears is closed."""

import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import StreamDriver, microphone_pieces
from edge_asr.daemon.pipeline import EventType, Pipeline
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.uplink.finisher import Finisher

DATA = Path(__file__).parent / "data"
ROWS = [json.loads(line) for line in (DATA / "manifest.jsonl").open()]


def test_each_utterance_closes_once_and_the_audio_is_accounted(tiny_model_dir):
    recognizer = Recognizer.from_model_dir(tiny_model_dir)
    emitted = []
    driver = StreamDriver(Pipeline(recognizer), Finisher(emitted.append))  # local-only
    audio = np.concatenate([read_audio(DATA / r["audio_filepath"]) for r in ROWS[:2]])
    events = driver.feed_all(microphone_pieces(audio))
    events += driver.finish(wait_s=1.0)
    started = [e.utterance_id for e in events if e.type is EventType.SPEECH_STARTED]
    closed = [e.utterance_id for e in emitted if e.type is EventType.ON_DEVICE_FINAL]
    assert len(started) >= 2 and closed == started  # one final each, in order
    assert [e for e in emitted if e.type is not EventType.ON_DEVICE_FINAL] == events
    assert driver.audio_seconds == pytest.approx(len(audio) / 16000)
    assert driver.cpu_seconds > 0
    assert driver.finish(wait_s=1.0) == []  # a second end changes nothing
    with pytest.raises(RuntimeError, match="after finish"):
        driver.feed(np.zeros(320, np.float32))


class _Listening:
    """A pipeline stand-in that records whether each piece came with playback, and the
    echo the canceller expected to have left in it."""

    def __init__(self) -> None:
        self.playback: list[bool] = []
        self.residual_echo: list = []

    def accept(self, samples, playback: bool = False, residual_echo=None):
        self.playback.append(playback)
        self.residual_echo.append(residual_echo)
        return []


def test_the_pipeline_is_told_when_the_device_plays():
    from edge_asr.daemon.frontend.cleanup import FrontEndConfig, MicFrontEnd

    pipeline = _Listening()
    driver = StreamDriver(pipeline, Finisher(lambda e: None),
                          MicFrontEnd(FrontEndConfig(echo_cancellation=True)))
    piece = np.zeros(320, np.float32)
    music = 0.1 * np.sin(np.arange(320, dtype=np.float32) / 5)
    for reference in (music, np.zeros(320, np.float32), None, 1e-5 * music, music):
        driver.feed(piece, reference)
    assert pipeline.playback == [True, False, False, False, True]
    # one value per 10 ms of each piece, for the VAD to rise above
    assert [r.shape for r in pipeline.residual_echo] == [(2,)] * 5
    assert pipeline.residual_echo[0].max() > 0
