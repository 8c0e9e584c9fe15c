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


def test_training_items_can_be_two_utterances_back_to_back(tmp_path):
    import soundfile as sf

    from edge_asr.daemon.manifest import write_manifest
    from edge_asr.models.tokenizer import Tokenizer, train_tokenizer

    texts = ["turn on the lights", "call mom"]
    for name, seconds in (("a", 1.5), ("b", 1.0)):
        sf.write(tmp_path / f"{name}.wav", _speechlike(seconds), 16000, subtype="FLOAT")
    write_manifest(tmp_path / "m.jsonl", [
        {"audio_filepath": "a.wav", "text": texts[0], "duration": 1.5},
        {"audio_filepath": "b.wav", "text": texts[1], "duration": 1.0}])
    words = ["turn on the lights", "turn off the fan", "call mom", "set a timer"] * 50
    model = train_tokenizer(words, tmp_path / "lang", vocab_size=20)
    tok = Tokenizer(model)
    joined = SpeechDataset(tmp_path / "m.jsonl", model, augment=True, concat_prob=1.0)
    single = SpeechDataset(tmp_path / "m.jsonl", model, augment=True, concat_prob=0.0)
    feats, tokens = joined[0]
    partners = [t for t in texts if tokens.tolist() == tok.encode(f"{texts[0]} {t}")]
    assert len(partners) == 1  # the first utterance's words, then a whole second one's
    partner = partners[0]
    assert feats.shape[0] > 1.5 * 100 * 0.85 + (100 if partner == texts[1] else 150) * 0.85
    assert single[0][1].tolist() == tok.encode(texts[0])
    assert joined.durations()[0] > 1.5 + 1.0 and single.durations() == [1.5, 1.0]
