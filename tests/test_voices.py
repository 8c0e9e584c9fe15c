"""The speakers of the training data: which voices may be heard in training, tuning and testing,
and that the engines added for more diverse voices (flite at other pitches, festival) speak."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_asr.models import prepare
from edge_asr.models.synth import (
    _ESPEAK_TRAIN_ACCENTS,
    SAMPLE_RATE,
    Voice,
    dev_voices,
    heldout_voices,
    more_training_voices,
    random_timbre_voices,
    random_variant,
    synthesize,
    training_voices,
)


def median_f0(audio: np.ndarray) -> float:
    """Median pitch of the voiced 40 ms frames, by autocorrelation (60-400 Hz)."""
    frame, hop, lo, hi = 640, 160, SAMPLE_RATE // 400, SAMPLE_RATE // 60
    pitches = []
    for start in range(0, audio.size - frame, hop):
        x = audio[start : start + frame].astype(np.float64)
        if np.sqrt((x**2).mean()) < 0.02:
            continue
        c = np.correlate(x, x, "full")[frame - 1 :]
        lag = lo + int(np.argmax(c[lo:hi]))
        if c[lag] > 0.4 * c[0]:
            pitches.append(SAMPLE_RATE / lag)
    return float(np.median(pitches))


def test_no_test_or_dev_speaker_is_ever_trained_on():
    trained = {v.id for v in training_voices() + more_training_voices() + random_timbre_voices()}
    tuning = {v.id for v in dev_voices()}
    testing = {v.id for v in heldout_voices()}
    assert not trained & tuning and not trained & testing and not tuning & testing
    # nor the held-out espeak variants and accent, with any other accent or variant
    held_parts = {"m4", "f3", "en-gb-x-gbcwmd"}
    for v in training_voices() + more_training_voices() + random_timbre_voices() + dev_voices():
        if v.engine == "espeak":
            assert not set(v.name.split("+")) & held_parts, v.id


def test_more_training_voices_widen_every_engine():
    first, more = training_voices(), more_training_voices()
    for engine in ("espeak", "flite"):
        assert (len([v for v in more if v.engine == engine])
                >= 3 * len([v for v in first if v.engine == engine]))
    assert any(v.engine == "festival" for v in more)


@pytest.mark.parametrize("accent", _ESPEAK_TRAIN_ACCENTS)
def test_every_training_accent_takes_its_voice_variant(accent):
    """espeak-ng 1.51 ignores the variant of "en-gb+m3": each accent+variant must be a
    speaker of its own, not the accent's default voice again."""
    def say(name: str) -> np.ndarray:
        return synthesize("turn on the lights", Voice("espeak", name), np.random.default_rng(0))

    plain, m1, f2 = say(accent), say(f"{accent}+m1"), say(f"{accent}+f2")
    for a, b in ((plain, m1), (plain, f2), (m1, f2)):
        assert a.shape != b.shape or not np.allclose(a, b)


def test_made_up_speakers_are_reproducible_and_differ():
    assert random_variant(5) == random_variant(5) and random_variant(5) != random_variant(6)
    voices = random_timbre_voices()
    assert len({v.id for v in voices}) == len(voices) == 240
    text = "set a timer for ten minutes"
    audio = [synthesize(text, v, np.random.default_rng(0)) for v in (voices[0], voices[7])]
    plain = synthesize(text, Voice("espeak", voices[0].name.split("+")[0]),
                       np.random.default_rng(0))
    assert voices[0].name.split("+")[0] == voices[7].name.split("+")[0]  # the same accent
    for a, b in ((audio[0], audio[1]), (audio[0], plain)):
        assert a.shape != b.shape or not np.allclose(a, b)
    # A speaker's pitch lies in its variant's range (the per-utterance -p moves it within).
    low, high = (float(x) for x in random_variant(0).split("pitch ")[1].split()[:2])
    assert low * 0.8 < median_f0(audio[0]) < high * 1.25


def test_made_up_speakers_render_a_training_set(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sentences = [f"call room {w}" for w in ("one", "two", "three", "four")]
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                for t in sentences))
    sets = prepare.prepare_random_voices(tmp_path, n=3, workers=1)
    rows = [json.loads(line) for line in sets["train_voices3"].open()]
    assert len(rows) == 3 and {r["text"] for r in rows} <= set(sentences)
    assert all(r["voice"] in {v.id for v in random_timbre_voices()} for r in rows)
    assert all(r["speech_start"] == 0.0 for r in rows)  # training clips: no padding
    with pytest.raises(ValueError, match="4 training sentences"):
        prepare.prepare_random_voices(tmp_path, n=5)


@pytest.mark.parametrize("name", ["slt", "awb"])
def test_flite_voice_speaks_at_its_own_mean_pitch(name):
    text = "turn the kitchen lights off please"
    low = synthesize(text, Voice("flite", name, (("f0", 85),)), np.random.default_rng(0))
    high = synthesize(text, Voice("flite", name, (("f0", 190),)), np.random.default_rng(0))
    assert median_f0(low) == pytest.approx(85, rel=0.15)
    assert median_f0(high) == pytest.approx(190, rel=0.15)


@pytest.mark.parametrize("name", ["cmu_us_slt_arctic_hts", "ked_diphone"])
def test_festival_voices_speak_at_16k(name):
    audio = synthesize("set a timer for ten minutes", Voice("festival", name),
                       np.random.default_rng(0))
    assert audio.dtype == np.float32
    assert 1.0 < audio.size / SAMPLE_RATE < 4.0  # resampled from 32 kHz HTS, trimmed
    assert np.abs(audio[:160]).max() > 1e-3  # the engine's leading silence is cut


def test_an_unknown_festival_voice_is_a_clear_error():
    # text2wave exits 0 on it and writes nothing; the renderer must say which voice failed
    with pytest.raises(RuntimeError, match="no_such_voice"):
        synthesize("hello", Voice("festival", "no_such_voice"), np.random.default_rng(0))


def test_more_voices_render_a_training_set_and_a_held_out_voice_dev_set(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sentences = [f"call room {w}" for w in ("one", "two", "three", "four", "five", "six")]
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                for t in sentences))
    (corpus / "dev.jsonl").write_text(json.dumps({"text": "play some jazz"}) + "\n")
    sets = prepare.prepare_more_voices(tmp_path, n=3, n_train=2, workers=1)
    train = [json.loads(line) for line in sets["train_voices2"].open()]
    assert [r["text"] for r in train] == sentences[2:5]  # after the first n_train
    allowed = {v.id for v in more_training_voices()}
    assert all(r["voice"] in allowed for r in train)
    dev = [json.loads(line) for line in sets["dev_voices"].open()]
    assert [r["text"] for r in dev] == ["play some jazz"]
    assert dev[0]["voice"] in {v.id for v in dev_voices()}
    assert "clean" in dev[0]["tags"] and dev[0]["speech_start"] > 0  # padded like dev
    with pytest.raises(ValueError, match="larger --n-corpus"):
        prepare.prepare_more_voices(tmp_path, n=3, n_train=5)


def _espeak_folders() -> set[str]:
    import tempfile
    from pathlib import Path

    return {p.name for p in Path(tempfile.gettempdir()).glob("edge-asr-espeak-*")}


def test_made_up_speakers_leave_no_espeak_folders_behind(tmp_path):
    # A process that spoke with a made-up speaker removes its espeak data folder at exit.
    import subprocess
    import sys

    before = _espeak_folders()
    code = ("import numpy as np; from edge_asr.models.synth import Voice, synthesize; "
            "synthesize('next song', Voice('espeak', 'en-us+rv3'), np.random.default_rng(0))")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert _espeak_folders() <= before
    # A rendering's pool workers are terminated, not exited: their folders go with the set.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": f"call room {w}"}) + "\n"
                                                for w in ("one", "two")))
    prepare.prepare_random_voices(tmp_path, n=2, workers=2)
    assert _espeak_folders() <= before


def test_voices_reserved_for_evaluation_are_never_trained_on():
    """festival's kal_diphone and flite's kal / kal16 (the same recordings) and every hibari
    voice are evaluation-only: no training rendering may speak with them."""
    from edge_asr.models.synth import other_engine_voices

    trained = (training_voices() + more_training_voices() + random_timbre_voices()
               + other_engine_voices() + dev_voices())
    for v in trained:
        assert "kal" not in v.name and v.engine != "hibari", v.id
    assert not {v.id for v in other_engine_voices()} & {v.id for v in heldout_voices()}


@pytest.mark.parametrize("voice", [Voice("espeak", "mb-us1"), Voice("rhvoice", "bdl"),
                                   Voice("rhvoice", "evgeniy-eng"), Voice("pico", "en-GB")])
def test_other_engines_speak_at_16k(voice):
    audio = synthesize("set a timer for ten minutes", voice, np.random.default_rng(0))
    assert audio.dtype == np.float32
    assert 1.0 < audio.size / SAMPLE_RATE < 4.0
    assert np.abs(audio[:160]).max() > 1e-3  # trimmed to the speech


def test_other_engines_render_a_training_set(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sentences = [f"dim the {w} lamp" for w in ("hall", "desk", "floor", "porch", "den", "attic")]
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                for t in sentences))
    rows = [json.loads(line) for line in
            prepare.prepare_other_engines(tmp_path, n=6, workers=1)["train_voices4"].open()]
    assert len(rows) == 6 and {r["text"] for r in rows} == set(sentences)
    engines = {r["voice"].split("-")[0] for r in rows}
    assert engines <= {"espeak", "rhvoice", "pico"} and len(engines) >= 2
