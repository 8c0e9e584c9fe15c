"""The held-out evaluation sets: FSDD digit strings on tiny recordings made here, and the
hibari and festival kal sets where those engines are installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.text import normalize_text
from edge_asr.models import heldout_sets
from edge_asr.models.heldout_sets import build_fsdd, build_hibari, build_kal, kal_available
from edge_asr.models.synth import SAMPLE_RATE

FSDD_RATE = 8000
SPEAKERS = ("alice", "bob")
DIGITS = (1, 3, 7)


def _tone_burst(freq: float, seconds: float = 0.25) -> np.ndarray:
    """A stand-in for a spoken digit: a tone with 50 ms of near-silence on each side, as
    FSDD's own recordings keep a little."""
    t = np.arange(int(seconds * FSDD_RATE)) / FSDD_RATE
    pad = np.zeros(int(0.05 * FSDD_RATE))
    return np.concatenate([pad, 0.5 * np.sin(2 * np.pi * freq * t), pad])


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """Two recordings of each of three digits per speaker, at 8 kHz in FSDD's naming."""
    folder = tmp_path_factory.mktemp("fsdd")
    for s, speaker in enumerate(SPEAKERS):
        for digit in DIGITS:
            for index in range(2):
                audio = _tone_burst(200 + 100 * s + 20 * digit + 5 * index)
                sf.write(folder / f"{digit}_{speaker}_{index}.wav", audio, FSDD_RATE,
                         subtype="PCM_16")
    (folder / "README.md").write_text("not a recording")
    return folder


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.open(encoding="utf-8")]


def _check_timing(manifest: Path, row: dict) -> np.ndarray:
    """The clip is 16 kHz, and speech (and only speech) lies inside speech_start/end."""
    audio, rate = sf.read(manifest.parent / row["audio_filepath"], dtype="float32")
    assert rate == SAMPLE_RATE and audio.ndim == 1
    assert row["duration"] == pytest.approx(audio.size / SAMPLE_RATE, abs=1e-3)
    assert 0.3 <= row["speech_start"] < row["speech_end"] < row["duration"] - 1.0
    start, end = (int(row[k] * SAMPLE_RATE) for k in ("speech_start", "speech_end"))
    ms = SAMPLE_RATE // 1000  # the manifest's times are rounded to the millisecond
    assert np.abs(audio[: start - ms]).max() < 0.01 and np.abs(audio[end + ms :]).max() < 0.01
    return audio[start:end]


def test_fsdd_strings(recordings: Path, tmp_path: Path) -> None:
    manifest = build_fsdd(recordings, tmp_path, per_speaker=4, seed=5)
    rows = _rows(manifest)
    assert len(rows) == 4 * len(SPEAKERS)
    for row in rows:
        speaker = row["speaker"]
        assert f"speaker:{speaker}" in row["tags"]
        files = [name.split("_") for name in row["sources"]]
        assert {f[1] for f in files} == {speaker}  # only that speaker's recordings
        assert row["text"] == normalize_text(" ".join(f[0] for f in files))
        assert 3 <= len(files) <= 7
        speech = _check_timing(manifest, row)
        # trimmed to the 10 ms frame: a digit starts and ends within 20 ms of the bounds
        assert np.abs(speech[:320]).max() > 0.1 and np.abs(speech[-320:]).max() > 0.1
        # the shortest string: each digit 0.25 s, the gaps at least 80 ms
        assert speech.size / SAMPLE_RATE >= len(files) * 0.24 + (len(files) - 1) * 0.08


def test_fsdd_reproducible(recordings: Path, tmp_path: Path) -> None:
    first = _rows(build_fsdd(recordings, tmp_path / "a", per_speaker=3, seed=1))
    again = _rows(build_fsdd(recordings, tmp_path / "b", per_speaker=3, seed=1))
    other = _rows(build_fsdd(recordings, tmp_path / "c", per_speaker=3, seed=2))
    assert first == again
    assert [r["sources"] for r in first] != [r["sources"] for r in other]
    for a, b in zip(first, again, strict=True):
        wav_a = (tmp_path / "a" / "manifests" / a["audio_filepath"]).read_bytes()
        assert wav_a == (tmp_path / "b" / "manifests" / b["audio_filepath"]).read_bytes()


def test_fsdd_skips_a_built_set(recordings: Path, tmp_path: Path) -> None:
    manifest = build_fsdd(recordings, tmp_path, per_speaker=1)
    manifest.write_text("")
    assert build_fsdd(recordings, tmp_path, per_speaker=1) == manifest
    assert manifest.read_text() == ""


SENTENCES = [
    {"text": "turn on the lamp", "intent": "device", "pause_after": [], "tags": ["device"]},
    {"text": "call five five one two", "intent": "call", "pause_after": [0],
     "tags": ["digits"]},
]


def _data_with_sentences(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir(parents=True)
    with (corpus / "test_sentences.jsonl").open("w") as f:
        for row in SENTENCES:
            f.write(json.dumps(row) + "\n")
    return tmp_path


def _check_sentence_set(manifest: Path, voice_tag: str, engine: str) -> list[dict]:
    rows = _rows(manifest)
    assert [r["text"] for r in rows] == [s["text"] for s in SENTENCES]
    for row, sentence in zip(rows, SENTENCES, strict=True):
        assert voice_tag in row["tags"] and engine in row["tags"]
        assert set(sentence["tags"]) <= set(row["tags"])
        assert row["intent"] == sentence["intent"]
        _check_timing(manifest, row)
    return rows


def test_hibari_set(tmp_path: Path) -> None:
    pytest.importorskip("hibari", reason="hibari-tts not installed (pip install hibari-tts)")
    data = _data_with_sentences(tmp_path)
    manifest = build_hibari(data, n=2, voices=["heart"], pause_prob=1.0)
    rows = _check_sentence_set(manifest, "voice:hibari-heart", "hibari")
    assert "pause" in rows[1]["tags"] and "pause" not in rows[0]["tags"]
    assert "heart" in heldout_sets.hibari_voices()


@pytest.mark.skipif(not kal_available(),
                    reason="festival's kal_diphone not installed (apt-get install "
                           "festvox-kallpc16k)")
def test_kal_set(tmp_path: Path) -> None:
    data = _data_with_sentences(tmp_path)
    manifest = build_kal(data, n=2)
    rows = _check_sentence_set(manifest, "voice:festival-kal_diphone", "festival")
    assert {r["voice"] for r in rows} == {"festival-kal_diphone"}
