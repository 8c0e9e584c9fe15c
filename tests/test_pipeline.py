"""The per-stream pipeline on the bundled speech clips: the documented event order, lattices
that carry the best path, and resumed speech after a speculative end-point ends in RESET.

The end-pointers are driven by the VAD and by the decoder's blanks, so the order of events
holds for any model; the shipped model is used when there is one, else a random one."""

import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import run_pipeline
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.pipeline import EventType, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig
from edge_asr.daemon.uplink.lattice_paths import paths

DATA = Path(__file__).parent / "data"
ROWS = [json.loads(line) for line in (DATA / "manifest.jsonl").open()]


@pytest.fixture(scope="module")
def recognizer(tiny_model_dir) -> Recognizer:
    shipped = DEFAULT_MODEL_DIR / "model_card.json"
    return Recognizer(RecognizerConfig(
        model_dir=DEFAULT_MODEL_DIR if shipped.is_file() else tiny_model_dir))


def _speech(row: dict) -> np.ndarray:
    audio = read_audio(DATA / row["audio_filepath"])
    return audio[int(row["speech_start"] * 16000) : int(row["speech_end"] * 16000)]


def _grammar_ok(types: list[EventType]) -> bool:
    """SPEECH_STARTED PARTIAL* SPECULATIVE (PARTIAL*) (CONFIRMED | RESET PARTIAL* FINAL)."""
    t = [x for x in types if x is not EventType.PARTIAL]
    return t in ([EventType.SPEECH_STARTED, EventType.SPECULATIVE_ENDPOINT, EventType.CONFIRMED],
                 [EventType.SPEECH_STARTED, EventType.SPECULATIVE_ENDPOINT, EventType.RESET,
                  EventType.FINAL_ENDPOINT])


def test_every_bundled_clip_follows_the_event_order(recognizer):
    for row in ROWS[:8]:
        events = run_pipeline(Pipeline(recognizer), read_audio(DATA / row["audio_filepath"]))
        by_utt: dict[str, list[EventType]] = {}
        for e in events:
            by_utt.setdefault(e.utterance_id, []).append(e.type)
        assert by_utt, row["text"]
        for types in by_utt.values():
            assert _grammar_ok(types), (row["text"], types)
        spec = next(e for e in events if e.type is EventType.SPECULATIVE_ENDPOINT)
        assert spec.revision == 1 and spec.lattice is not None
        # The lattice carries the n-best, so the speculative best text is one of its paths
        # (not always its top path: the device picks by log-prob per token, see search.py).
        texts = [" ".join(w.word for w in p.words) for p in paths(spec.lattice, 8)]
        assert spec.text in texts


def test_speech_resuming_after_a_speculative_endpoint_gives_reset(recognizer):
    first, second = _speech(ROWS[0]), _speech(ROWS[1])
    # A pause long enough for the speculative end-pointer but shorter than the final one's
    # wait: the person goes on speaking. The thresholds are set wide apart here so that the
    # outcome does not depend on how finished the (possibly random) model's words look, nor
    # on its blanks.
    config = PipelineConfig(endpoint=EndpointConfig(
        spec_silence=0.2, spec_lead=1.0, spec_lead_unfinished=1.0, spec_blank=0.0,
        final_blank=0.0, final_silence_min=0.9, final_silence=0.9, final_silence_max=1.0,
        blank_timeout=0.0, no_words_timeout=0.0))
    pause = np.zeros(int(0.5 * 16000), np.float32)
    lead = np.zeros(8000, np.float32)
    tail = np.zeros(int(1.5 * 16000), np.float32)
    audio = np.concatenate([lead, first, pause, second, tail])
    events = run_pipeline(Pipeline(recognizer, config), audio)
    types = [e.type for e in events if e.type is not EventType.PARTIAL]
    assert types == [EventType.SPEECH_STARTED, EventType.SPECULATIVE_ENDPOINT, EventType.RESET,
                     EventType.FINAL_ENDPOINT], types
    final = events[-1]
    assert final.revision == 2 and final.lattice is not None and final.lattice.revision == 2
    assert len({e.utterance_id for e in events}) == 1  # one utterance, continued


def test_silence_and_noise_produce_no_utterance(recognizer):
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(16000 * 3) * 1e-4).astype(np.float32)
    assert run_pipeline(Pipeline(recognizer), quiet) == []


def test_the_vad_settings_reach_the_pipelines_vad(recognizer):
    config = PipelineConfig(vad_mode=3, vad_noise_gate_db=4.0, vad_level_gate=0.25)
    vad = Pipeline(recognizer, config).vad
    assert (vad.mode, vad.noise_gate_db, vad.level_gate) == (3, 4.0, 0.25)
    assert Pipeline(recognizer).vad.level_gate == PipelineConfig().vad_level_gate > 0


def _ev(kind: str, at: float, reason: str = "silence"):
    from edge_asr.daemon.pipeline import Event
    return Event(EventType[kind], "u", at, reason=reason)


def test_a_false_start_before_the_request_is_not_its_end_point():
    """Noise at 0.2-0.6 s made an utterance of its own; the request (speech from 1.0 s) ended
    at 2.9 s. Its end-points are the request's, and the noise is counted as a false start."""
    from edge_asr.models.evaluate import request_endpoints
    events = [_ev("SPEECH_STARTED", 0.3), _ev("SPECULATIVE_ENDPOINT", 0.55),
              _ev("CONFIRMED", 0.7), _ev("SPEECH_STARTED", 1.1),
              _ev("SPECULATIVE_ENDPOINT", 2.7), _ev("RESET", 2.8),
              _ev("FINAL_ENDPOINT", 2.9)]
    row = request_endpoints(events, speech_start=1.0)
    assert row == {"speculative_endpoint": 2.7, "final_endpoint": 2.9, "reset": True,
                   "false_starts": 1}
    # Without a known start of speech every final counts: the first is scored.
    assert request_endpoints(events, None)["final_endpoint"] == 0.7
    # A request cut in two: the first final after the start of speech is the one scored.
    cut = [_ev("SPEECH_STARTED", 1.1), _ev("SPECULATIVE_ENDPOINT", 1.6), _ev("CONFIRMED", 1.8),
           _ev("SPEECH_STARTED", 2.0), _ev("SPECULATIVE_ENDPOINT", 2.7),
           _ev("CONFIRMED", 2.9, "end_of_input")]
    assert request_endpoints(cut, 1.0) == {"speculative_endpoint": 1.6, "final_endpoint": 1.8,
                                          "reset": False, "false_starts": 0}
