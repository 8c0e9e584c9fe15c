"""Sound without words (RecognizerConfig.no_words_share): music after a request, which the
VAD takes for speech, must not become a request of its own ("yes", "no"), and real speech
must keep every word."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import run_pipeline
from edge_asr.daemon.pipeline import EventType, Pipeline
from edge_asr.daemon.recognition.hypotheses import no_words_share
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.uplink.lattice_paths import paths
from edge_asr.models import pause_sets

DATA = Path(__file__).parent / "data"
ROWS = [json.loads(line) for line in (DATA / "manifest.jsonl").open()]
FINALS = (EventType.CONFIRMED, EventType.FINAL_ENDPOINT)


@pytest.fixture(scope="module")
def recognizers() -> dict[float, Recognizer]:
    """The shipped model with the default share, and with every word kept (1.0)."""
    return {share: Recognizer(RecognizerConfig(no_words_share=share))
            for share in (RecognizerConfig.no_words_share, 1.0)}


def _finals(recognizer: Recognizer, samples: np.ndarray) -> list:
    """Each utterance's closing decision, in order."""
    return [e for e in run_pipeline(Pipeline(recognizer), samples) if e.type in FINALS]


def test_the_share_is_the_posterior_of_the_hypotheses_without_words() -> None:
    assert no_words_share([True, False], [-3.0, -3.0]) == pytest.approx(0.5)
    assert no_words_share([True, False, True], [-1.0, -1.0 + np.log(2), -1.0]) \
        == pytest.approx(0.5)
    assert no_words_share([True, True], [-1.0, -2.0]) == 0.0
    assert no_words_share([], []) == 0.0


def test_music_after_a_request_makes_no_request_of_its_own(recognizers) -> None:
    row = ROWS[1]  # "ok punch in nine two four five four eight six five nine"
    speech = read_audio(DATA / row["audio_filepath"])
    music = pause_sets.mix(np.concatenate([speech, np.zeros(2 * 16000, np.float32)]),
                           "music", 10.0, np.random.default_rng(0))
    kept = _finals(recognizers[1.0], music)
    events = run_pipeline(Pipeline(recognizers[RecognizerConfig.no_words_share]), music)
    dropped = [e for e in events if e.type in FINALS]
    # Without the check, the music after the request is heard as a word ...
    assert len(kept) == 2 and kept[1].text in ("yes", "no")
    # ... with it, the request is as it was and the music's utterance has no words, nor
    # any in the lattice that would go to the cloud.
    assert [e.text for e in dropped][:1] == [kept[0].text]
    assert len(dropped) == 2 and dropped[1].text == ""
    assert all(not text for text, _ in dropped[1].nbest)
    sent = [e.lattice for e in events
            if e.utterance_id == dropped[1].utterance_id and e.lattice is not None]
    assert sent and all(not p.words for lattice in sent for p in paths(lattice, 8))


def test_real_speech_keeps_every_word(recognizers) -> None:
    for row in ROWS[:6]:
        audio = read_audio(DATA / row["audio_filepath"])
        with_check = _finals(recognizers[RecognizerConfig.no_words_share], audio)
        without = _finals(recognizers[1.0], audio)
        assert [(e.text, e.nbest) for e in with_check] == [(e.text, e.nbest) for e in without]
        assert with_check[0].text, row["text"]


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5, float("nan")])
def test_a_share_outside_0_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="no_words_share"):
        Recognizer(RecognizerConfig(no_words_share=share))


def test_the_bench_tells_speech_from_the_sound_after_it(recognizers) -> None:
    """bench/no_words.py, which the default was chosen with: the request's share is about 0,
    the music's utterance after it at or above the default."""
    from bench_modules import load_bench

    bench = load_bench("no_words")
    row = ROWS[1]
    speech = read_audio(DATA / row["audio_filepath"])
    music = pause_sets.mix(np.concatenate([speech, np.zeros(2 * 16000, np.float32)]),
                           "music", 10.0, np.random.default_rng(0))
    spoken, after = bench.utterance_shares(recognizers[1.0], music, row["speech_end"])
    assert len(spoken) == 1 and spoken[0] < 0.01
    assert len(after) == 1 and after[0] >= RecognizerConfig.no_words_share
