"""The simulated room: requests laid out on one timeline, talkers in a reverberant room,
noise beds at the asked signal-to-noise ratios, never digital silence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_asr.models.augment import SAMPLE_RATE, active_rms
from edge_asr.simulator.room import NoiseBed, RoomConfig, UtteranceSource, render_session

MANIFEST = Path(__file__).parent / "data" / "manifest.jsonl"


def _rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


def test_requests_follow_each_other_with_the_pauses_asked_for():
    room = RoomConfig(gap_s=[2.0, 2.0], lead_s=1.0)
    session = render_session(UtteranceSource(manifest=str(MANIFEST), limit=3), room,
                             MANIFEST.parent)
    a, b, c = session.requests
    assert a.speech_start > 1.0
    assert a.speech_end < b.speech_start < b.speech_end < c.speech_start
    assert b.speech_start - a.speech_end > 2.0  # the pause plus the clips' own margins
    assert session.duration > c.speech_end + 2.0
    # the microphone's self-noise fills the pauses: never a run of digital zeros
    assert not np.any(session.samples[:SAMPLE_RATE] == 0.0)
    pause = session.samples[int((a.speech_end + 1.5) * SAMPLE_RATE):
                            int((a.speech_end + 2.0) * SAMPLE_RATE)]
    assert -75 < _rms_db(pause) < -60


def test_noise_bed_lands_at_the_asked_snr():
    src = UtteranceSource(manifest=str(MANIFEST), limit=2)
    clean = render_session(src, RoomConfig(), MANIFEST.parent, seed=3)
    noisy = render_session(src, RoomConfig(noise=[NoiseBed("fan", 10.0)]), MANIFEST.parent,
                           seed=3)
    noise = noisy.samples - clean.samples
    snr = 20 * np.log10(np.median([active_rms(clean.samples)]) / np.sqrt(np.mean(noise ** 2)))
    assert 7.0 < snr < 13.0


def test_sentences_are_synthesised_on_the_fly():
    src = UtteranceSource(sentences=["turn on the kitchen lights"], voice="flite-rms")
    session = render_session(src, RoomConfig(rt60=0.4), Path("."))
    (req,) = session.requests
    assert req.text == "turn on the kitchen lights" and req.source == "flite-rms"
    assert 0.5 < req.speech_end - req.speech_start < 4.0
    assert np.max(np.abs(session.samples)) <= 0.99


def test_bad_room_settings_are_refused():
    with pytest.raises(ValueError, match="room.noise"):
        NoiseBed("traffic", 5.0)
    with pytest.raises(ValueError, match="gap_s"):
        RoomConfig(gap_s=[3.0, 1.0])
    with pytest.raises(ValueError, match="no utterances"):
        render_session(UtteranceSource(), RoomConfig(), Path("."))


def test_a_development_scenario_takes_requests_past_the_first_ones():
    import json

    texts = [json.loads(line)["text"] for line in MANIFEST.read_text().splitlines()]
    session = render_session(UtteranceSource(manifest=str(MANIFEST), skip=12, limit=2),
                             RoomConfig(), MANIFEST.parent)
    assert [r.text for r in session.requests] == texts[12:14]
    with pytest.raises(ValueError, match="utterances.skip"):
        UtteranceSource(manifest=str(MANIFEST), skip=-1)


def test_every_development_scenario_loads_and_keeps_off_the_test_requests():
    from edge_asr.simulator.scenario import load_scenario

    dev = sorted((Path(__file__).parent.parent / "simulator" / "scenarios" / "dev").glob("*.toml"))
    assert len(dev) >= 6
    for path in dev:
        scenario = load_scenario(path)
        # the bundled scenarios play the manifest's first 12; development plays the rest
        assert scenario.utterances.skip >= 12, path.name
