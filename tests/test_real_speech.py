"""Recorded speech into the recipe: whole speakers held out, evaluation clips padded and
mixed with other held-out speakers' babble, the recipe's mixed dev set and the device LM
learning the transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_asr.models.corpus_utterance import read_kaldi_dir
from edge_asr.models.real_speech import SAMPLE_RATE, prepare_corpus
from edge_asr.models.recipe import write_mixed_dev


def _voice(path: Path, f0: float, seconds: float = 0.6) -> None:
    """A buzz at `f0` with a few harmonics: speech-like enough for the babble's level."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.1
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), SAMPLE_RATE)


def _kaldi_split(root: Path, speakers: dict[str, list[str]]) -> None:
    """speechocean762's layout: WAVE/SPEAKERnnnn/UTT.WAV and train/ test/ Kaldi lists."""
    for split, names in speakers.items():
        text, scp, u2s = [], [], []
        for k, spk in enumerate(names):
            for n in range(3):
                utt = f"{spk}{n:04d}"
                _voice(root / "WAVE" / f"SPEAKER{spk}" / f"{utt}.wav", 100 + 20 * k + n)
                text.append(f"{utt}\tCALL ROOM {n + 1}")
                scp.append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.WAV")
                u2s.append(f"{utt} {spk}")
        (root / split).mkdir(parents=True)
        for name, lines in (("text", text), ("wav.scp", scp), ("utt2spk", u2s)):
            (root / split / name).write_text("\n".join(lines) + "\n")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_published_split_keeps_its_test_speakers_out_of_training(tmp_path):
    corpus = tmp_path / "speechocean762"
    _kaldi_split(corpus, {"train": [f"{i:04d}" for i in range(1, 21)],
                          "test": [f"{i:04d}" for i in range(50, 56)]})
    data = tmp_path / "data"
    sets = prepare_corpus(corpus, data, n_dev_speakers=2, test_per_speaker=2)
    assert set(sets) == {"speechocean762_train", "speechocean762_dev", "test_speechocean762",
                         "test_speechocean762_babble10"}
    speakers = {name: {r["speaker"] for r in _rows(path)} for name, path in sets.items()}
    assert speakers["test_speechocean762"] == {f"{i:04d}" for i in range(50, 56)}
    assert len(speakers["speechocean762_dev"]) == 2
    assert not speakers["speechocean762_train"] & speakers["speechocean762_dev"]
    assert not speakers["speechocean762_train"] & speakers["test_speechocean762"]
    train = _rows(sets["speechocean762_train"])
    assert len(train) == 18 * 3 and train[0]["text"].startswith("call room ")
    assert train[0]["corpus"] == "speechocean762"  # how the card tells recorded from synthetic

    clean, babble = _rows(sets["test_speechocean762"]), _rows(sets["test_speechocean762_babble10"])
    assert len(clean) == 6 * 2 and [r["text"] for r in clean] == [r["text"] for r in babble]
    row = clean[0]
    audio, rate = sf.read(str(data / "manifests" / row["audio_filepath"]))
    assert rate == SAMPLE_RATE
    lead = int(row["speech_start"] * SAMPLE_RATE)
    assert np.abs(audio[: lead - 10]).max() < 3e-3 < np.abs(audio[lead + 10 : lead + 800]).max()
    assert row["duration"] > 0.6 + 1.2  # the speech, its lead and a 1.2 s trail
    noisy, _ = sf.read(str(data / "manifests" / babble[0]["audio_filepath"]))
    # The babble is mixed over the speech before the padding: 10 dB below it there.
    b_lead = int(babble[0]["speech_start"] * SAMPLE_RATE)
    speech_region = noisy[b_lead : b_lead + int(0.6 * SAMPLE_RATE)]
    clean_region = audio[lead : lead + int(0.6 * SAMPLE_RATE)]
    snr = 10 * np.log10(np.mean(clean_region**2) / np.mean((speech_region - clean_region) ** 2))
    assert 5 < snr < 15


def test_babble_is_made_of_other_speakers_only(tmp_path, monkeypatch):
    from edge_asr.models import real_speech

    corpus = tmp_path / "c"
    _kaldi_split(corpus, {"train": [f"{i:04d}" for i in range(1, 13)],
                          "test": ["0050", "0051", "0052"]})
    utts = read_kaldi_dir(corpus / "test", "c", root=corpus)
    pool_sizes = []
    real_babble = real_speech.make_babble

    def spy(pool, n, rng):
        pool_sizes.append(len(pool))
        return real_babble(pool, n, rng)

    monkeypatch.setattr(real_speech, "make_babble", spy)
    real_speech.write_set("t", utts, tmp_path / "data", evaluation=True, babble_snr_db=10.0)
    # 3 speakers, 2 pool clips each: every clip's babble draws on the other two's 4 only.
    assert pool_sizes == [4] * len(utts) == [4] * 9


def test_a_corpus_without_a_published_split_is_split_by_speakers(tmp_path):
    folder = tmp_path / "people"
    rows = []
    for s in range(20):
        for n in range(2):
            _voice(folder / f"spk{s}" / f"{n}.wav", 100 + 5 * s)
            rows.append({"audio_filepath": f"spk{s}/{n}.wav", "text": f"Set volume to {n}",
                         "duration": 0.6, "speaker": f"spk{s}"})
    manifest = folder / "people.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = prepare_corpus(manifest, tmp_path / "data", n_dev_speakers=10)
    speakers = {name: {r["speaker"] for r in _rows(path)} for name, path in sets.items()}
    assert len(speakers["test_people"]) == 2  # a tenth of the speakers
    assert len(speakers["people_dev"]) == 1  # a tenth of the rest, at most 10
    assert len(speakers["people_train"]) == 17
    assert not speakers["people_train"] & (speakers["test_people"] | speakers["people_dev"])
    assert {r["text"] for r in _rows(sets["people_train"])} == {"set volume to zero",
                                                                "set volume to one"}


def test_a_corpus_of_few_speakers_trains_whole(tmp_path):
    folder = tmp_path / "one_voice"
    folder.mkdir()
    _voice(folder / "a.wav", 120)
    (folder / "one_voice.jsonl").write_text(json.dumps(
        {"audio_filepath": "a.wav", "text": "stop", "duration": 0.6, "speaker": "x"}) + "\n")
    sets = prepare_corpus(folder / "one_voice.jsonl", tmp_path / "data")
    assert list(sets) == ["one_voice_train"] and len(_rows(sets["one_voice_train"])) == 1


def test_mixed_dev_holds_every_real_dev_set_and_some_synthetic(tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "a_dev.jsonl").write_text('{"audio_filepath": "x.wav", "text": "a"}\n' * 3)
    (manifests / "dev.jsonl").write_text('{"audio_filepath": "y.wav", "text": "d"}\n' * 5)
    rows = _rows(write_mixed_dev(tmp_path, ["a_dev"], n_synthetic=2))
    assert [r["text"] for r in rows] == ["a"] * 3 + ["d"] * 2
    (manifests / "dev_voices.jsonl").write_text('{"audio_filepath": "z.wav", "text": "v"}\n')
    assert [r["text"] for r in _rows(write_mixed_dev(tmp_path, ["a_dev"]))][-1] == "v"


def test_many_speakers_are_heard_repeatedly_a_single_voice_once(tmp_path):
    from edge_asr.models.recipe import real_training_sets

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "crowd_train.jsonl").write_text("".join(
        json.dumps({"audio_filepath": "x.wav", "speaker": f"s{k}"}) + "\n" for k in range(6)))
    (manifests / "solo_train.jsonl").write_text(
        json.dumps({"audio_filepath": "y.wav", "speaker": "only"}) + "\n")
    assert real_training_sets(tmp_path, ["crowd_train", "solo_train"], 3) == \
        ["crowd_train"] * 3 + ["solo_train"]
