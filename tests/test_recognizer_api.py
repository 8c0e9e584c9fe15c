"""The recognizer's Python API as a program uses it: a factory, streams fed at the caller's
sample rate, the decoder-only end-point rule and reset between utterances."""

import json
from pathlib import Path

import numpy as np
import pytest
import soxr

from edge_asr.daemon.capture.audio import AudioFormatError, read_audio
from edge_asr.daemon.recognition.recognizer import (
    EndpointRule,
    Recognizer,
    RecognizerConfig,
)

DATA = Path(__file__).parent / "data"
GREEDY = {"decoding_method": "greedy_search"}


def clip(i: int) -> tuple[np.ndarray, str]:
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").open()]
    return read_audio(DATA / rows[i]["audio_filepath"]), rows[i]["text"]


def transcribe(recognizer: Recognizer, samples: np.ndarray, rate: int, piece: int) -> str:
    stream = recognizer.create_stream()
    for start in range(0, len(samples), piece):
        stream.accept_waveform(rate, samples[start:start + piece])
        recognizer.decode(stream)
    stream.input_finished()
    recognizer.decode(stream)
    return recognizer.result(stream).text


def test_from_model_dir_passes_options_to_the_config(tiny_model_dir):
    r = Recognizer.from_model_dir(tiny_model_dir, beam=6, lm_scale=0.0)
    assert r.config == RecognizerConfig(model_dir=tiny_model_dir, beam=6, lm_scale=0.0)
    with pytest.raises(TypeError):
        Recognizer.from_model_dir(tiny_model_dir, no_such_option=1)


def test_audio_at_48k_reads_as_the_same_audio_at_16k(shipped_model_dir):
    recognizer = Recognizer.from_model_dir(shipped_model_dir, **GREEDY)
    samples, _ = clip(2)
    at_48k = soxr.resample(samples, 16000, 48000).astype(np.float32)
    # Odd piece sizes: the resampler's state must carry across calls without clicks.
    assert transcribe(recognizer, at_48k, 48000, 1234) == \
        transcribe(recognizer, samples, 16000, 320)


def test_bad_audio_is_refused_and_the_stream_goes_on(tiny_model_dir):
    recognizer = Recognizer.from_model_dir(tiny_model_dir, **GREEDY)
    stream = recognizer.create_stream()
    with pytest.raises(AudioFormatError, match="sample rate"):
        stream.accept_waveform(11025, np.zeros(1000, np.float32))
    stream.accept_waveform(16000, np.zeros(1600, np.float32))
    with pytest.raises(AudioFormatError, match="NaN"):
        stream.accept_waveform(16000, np.full(160, np.nan, np.float32))
    with pytest.raises(AudioFormatError, match=r"must lie in \[-1, 1\]"):
        stream.accept_waveform(16000, np.full(160, 1000.0, np.float32))
    with pytest.raises(ValueError, match="16000 Hz, not 48000 Hz"):
        stream.accept_waveform(48000, np.zeros(480, np.float32))
    stream.accept_waveform(16000, np.zeros(16000, np.float32))
    recognizer.decode(stream)
    assert stream.utterance_frames > 0  # the good pieces went in, the bad ones did not


def test_endpoint_rules():
    after_speech = EndpointRule(must_contain_nonsilence=True, min_trailing_silence=1.2)
    assert not after_speech.fires(False, 5.0, 5.0)
    assert not after_speech.fires(True, 1.1, 5.0)
    assert after_speech.fires(True, 1.2, 5.0)
    too_long = EndpointRule(False, 0.0, min_utterance_length=20.0)
    assert not too_long.fires(True, 30.0, 19.9)
    assert too_long.fires(False, 0.0, 20.0)


def test_is_endpoint_after_a_pause_and_reset_starts_the_next_utterance(shipped_model_dir):
    recognizer = Recognizer.from_model_dir(shipped_model_dir, **GREEDY)
    first, first_text = clip(2)
    second, second_text = clip(5)  # "would you punch in nine one one zero"
    stream = recognizer.create_stream()
    half = len(first) // 2
    stream.accept_waveform(16000, first[:half])
    recognizer.decode(stream)
    assert not recognizer.is_endpoint(stream)  # mid-sentence

    stream.accept_waveform(16000, first[half:])
    stream.accept_waveform(16000, np.zeros(32000, np.float32))  # 2 s pause
    recognizer.decode(stream)
    assert recognizer.is_endpoint(stream)
    said = recognizer.result(stream)
    assert said.text.split()[:2] == first_text.split()[:2]

    recognizer.reset(stream)
    assert recognizer.result(stream).text == ""
    assert not recognizer.is_endpoint(stream)
    stream.accept_waveform(16000, second)
    stream.input_finished()
    recognizer.decode(stream)
    again = recognizer.result(stream)
    assert again.text == second_text
    # One clock per stream: the second utterance's words come after the first's audio.
    assert min(again.timestamps) > len(first) / 16000

