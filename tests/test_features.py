"""The recipe and the run-time pipeline must see identical features for identical audio."""

import numpy as np
import pytest

from edge_asr.daemon.frontend.features import StreamingFbank, compute_fbank
from edge_asr.models.dataset import SpeechDataset


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = 0.2 * np.sin(2 * np.pi * (150 + 50 * np.sin(2 * np.pi * 3 * t)) * t)
    return (tone * (1 + np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32)


@pytest.mark.parametrize("piece_ms", [10, 20, 30, 7])
def test_streaming_pieces_equal_whole_utterance(piece_ms):
    audio = _speechlike()
    whole = compute_fbank(audio)
    stream = StreamingFbank()
    piece = 16 * piece_ms
    out = []
    for start in range(0, audio.size, piece):
        stream.accept(audio[start : start + piece])
        out.append(stream.pop_frames())
    stream.finish()
    out.append(stream.pop_frames())
    streamed = np.concatenate(out)
    assert streamed.shape == whole.shape == (200, 80)
    np.testing.assert_array_equal(streamed, whole)


def test_training_dataset_uses_runtime_features(tmp_path):
    import soundfile as sf

    from edge_asr.daemon.capture.audio import read_audio
    from edge_asr.daemon.manifest import write_manifest
    from edge_asr.models.tokenizer import train_tokenizer

    audio = _speechlike(1.5)
    sf.write(tmp_path / "a.wav", audio, 16000, subtype="FLOAT")
    write_manifest(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": "turn on the lights",
                                           "duration": 1.5}])
    words = ["turn on the lights", "turn off the fan", "call mom", "set a timer"] * 50
    model = train_tokenizer(words, tmp_path / "lang", vocab_size=20)
    feats, tokens = SpeechDataset(tmp_path / "m.jsonl", model, augment=False)[0]
    runtime = compute_fbank(read_audio(tmp_path / "a.wav"))
    np.testing.assert_array_equal(feats.numpy(), runtime)
    assert tokens.numel() > 0


def test_features_are_deterministic_and_finite_on_silence():
    silence = np.zeros(16000, np.float32)
    a, b = compute_fbank(silence), compute_fbank(silence)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()
