"""Corpus readers on tiny corpora written here in each published layout (models/corpus_formats.py
and the folder and manifest readers it picks from), and the Kaldi reader and audio loading of
models/real_speech.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.models.corpus_folder_readers import (
    read_common_voice,
    read_librispeech,
    read_paired_text,
    read_speech_commands,
    read_vctk,
)
from edge_asr.models.corpus_formats import read_corpus
from edge_asr.models.corpus_manifest_readers import (
    read_lhotse,
    read_lhotse_cuts,
    read_nemo_manifest,
)
from edge_asr.models.corpus_utterance import Utterance, read_kaldi_dir
from edge_asr.models.real_speech import SAMPLE_RATE, detect_layout, load_utterance, write_set


def _tone(path: Path, seconds: float = 0.2, rate: int = SAMPLE_RATE, hz: float = 440.0) -> Path:
    """A short sine; the format follows the suffix (.flac, .wav, .mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    """A JSON-lines file, gzipped when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _summary(utts: list[Utterance]) -> list[tuple]:
    return [(u.id, u.text, u.speaker, u.corpus, u.offset, u.duration) for u in utts]


# --------------------------------------------------------------------------- LibriSpeech


def _librispeech(tmp_path: Path) -> Path:
    subset = tmp_path / "LibriSpeech" / "train-clean-100"
    chapter = subset / "103" / "1240"
    _write(chapter / "103-1240.trans.txt",
           "103-1240-0000 CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED\n"
           "103-1240-0001 I'M SURE 2 OF THEM\n"
           "103-1240-0002 ...\n")
    for n in range(3):
        _tone(chapter / f"103-1240-000{n}.flac")
    _write(subset / "19" / "198" / "19-198.trans.txt", "19-198-0001 NORTHANGER ABBEY\n")
    _tone(subset / "19" / "198" / "19-198-0001.flac")
    return subset


def test_librispeech_reads_transcripts_speakers_and_flac(tmp_path):
    subset = _librispeech(tmp_path)
    utts = read_librispeech(subset)
    assert _summary(utts) == [
        ("103-1240-0000", "chapter one missus rachel lynde is surprised", "103", "librispeech",
         0.0, None),
        ("103-1240-0001", "i'm sure two of them", "103", "librispeech", 0.0, None),
        ("19-198-0001", "northanger abbey", "19", "librispeech", 0.0, None),
    ]  # 103-1240-0002 normalises to nothing and is skipped
    assert utts[0].audio == subset / "103" / "1240" / "103-1240-0000.flac"
    assert sf.info(str(utts[0].audio)).format == "FLAC"
    # The folder above the subsets finds the same transcripts.
    assert read_librispeech(subset.parent) == utts


def test_librispeech_errors_name_file_and_line(tmp_path):
    subset = _librispeech(tmp_path)
    trans = subset / "19" / "198" / "19-198.trans.txt"
    _write(trans, "19-198-0001 NORTHANGER ABBEY\n19-198-0002\n")
    with pytest.raises(ValueError, match=r"19-198\.trans\.txt:2: .*no transcript"):
        read_librispeech(subset)
    _write(trans, "19-198-0001 NORTHANGER ABBEY\n20-198-0002 WRONG SPEAKER\n")
    with pytest.raises(ValueError, match=r"19-198\.trans\.txt:2: utterance 20-198-0002"):
        read_librispeech(subset)
    _write(trans, "19-198-0009 NO AUDIO FOR ME\n")
    with pytest.raises(FileNotFoundError, match=r"19-198-0009\.flac"):
        read_librispeech(subset)
    with pytest.raises(ValueError, match="no <speaker>-<chapter>.trans.txt"):
        read_librispeech(_write(tmp_path / "empty" / "README", "x").parent)


# --------------------------------------------------------------------------- Common Voice

CV17_HEADER = ("client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\t"
               "age\tgender\taccents\tvariant\tlocale\tsegment\n")


def _cv_row(client: str, path: str, sentence: str) -> str:
    return f"{client}\t{path}\tsid\t{sentence}\t\t2\t0\t\t\t\t\ten\t\n"


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_common_voice_reads_by_header_with_quotes_kept_and_mp3_clips(tmp_path):
    root = tmp_path / "cv-corpus-17.0" / "en"
    _tone(root / "clips" / "common_voice_en_1.mp3")
    _tone(root / "clips" / "common_voice_en_2.mp3")
    _write(root / "train.tsv", CV17_HEADER
           + _cv_row("c0ffee", "common_voice_en_1.mp3", 'He said "hi" 2 times.')
           + _cv_row("c0ffee", "common_voice_en_9.mp3", "?!")  # empty text: skipped, no clip
           + _cv_row("beef", "common_voice_en_2.mp3", '"Quoted start, then a tab-free end'))
    utts = read_common_voice(root)
    assert _summary(utts) == [
        ("common_voice_en_1", "he said hi two times", "c0ffee", "commonvoice", 0.0, None),
        ("common_voice_en_2", "quoted start then a tab free end", "beef", "commonvoice", 0.0,
         None),
    ]
    assert utts[1].audio == root / "clips" / "common_voice_en_2.mp3"
    audio = load_utterance(utts[0])  # the mp3 decodes (the encoder pads it a little)
    assert audio.dtype == np.float32 and 0.15 * SAMPLE_RATE < audio.size < 0.3 * SAMPLE_RATE


def test_common_voice_old_release_other_tsv_and_paths_without_suffix(tmp_path):
    root = tmp_path / "en"
    _tone(root / "clips" / "0a1b2c.wav")
    _write(root / "dev.tsv", "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\t"
           "accent\nspk9\t0a1b2c\tOK, go!\t3\t0\tthirties\tfemale\tus\n")
    utts = read_common_voice(root, tsv="dev.tsv", corpus="cv")
    assert _summary(utts) == [("0a1b2c", "okay go", "spk9", "cv", 0.0, None)]
    assert utts[0].audio == root / "clips" / "0a1b2c.wav"


def test_common_voice_errors(tmp_path):
    root = tmp_path / "en"
    _tone(root / "clips" / "a.wav")
    _write(root / "train.tsv", CV17_HEADER + _cv_row("c", "a.wav", "Fine.")
           + "c\ta.wav\tsid\tToo few fields\n")
    with pytest.raises(ValueError, match=r"train\.tsv:3: 4 fields, the header has 13"):
        read_common_voice(root)
    _write(root / "train.tsv", "client_id\tpath\ttext\nc\ta.wav\tFine.\n")
    with pytest.raises(ValueError, match=r"train\.tsv:1: header lacks column\(s\) sentence"):
        read_common_voice(root)
    _write(root / "train.tsv", CV17_HEADER + _cv_row("c", "missing.mp3", "Fine."))
    with pytest.raises(FileNotFoundError, match=r"clips/missing\.mp3"):
        read_common_voice(root)
    with pytest.raises(FileNotFoundError, match=r"test\.tsv"):
        read_common_voice(root, tsv="test.tsv")


# --------------------------------------------------------------------------- NeMo


def test_nemo_manifest_paths_speakers_offsets_and_ids(tmp_path):
    folder = tmp_path / "nemo"
    _tone(folder / "audio" / "spkA" / "a.wav")
    elsewhere = _tone(tmp_path / "elsewhere" / "b.wav")
    _tone(folder / "audio" / "long" / "c.wav", seconds=1.0)
    manifest = _jsonl(folder / "manifest.json", [
        {"audio_filepath": "audio/spkA/a.wav", "text": "Dim the lamp to 30%", "duration": 0.2},
        {"audio_filepath": str(elsewhere), "text": "Hello Bob", "duration": 0.2,
         "speaker": "bob"},
        {"audio_filepath": "audio/long/c.wav", "text": "first part", "offset": 0.0,
         "duration": 0.4, "spk_id": 7},
        {"audio_filepath": "audio/long/c.wav", "text": "second part", "offset": 0.4,
         "duration": 0.6, "spk_id": 7},
        {"audio_filepath": "audio/none.wav", "text": "", "duration": 1.0},  # skipped
    ])
    utts = read_nemo_manifest(manifest)
    assert _summary(utts) == [
        ("a", "dim the lamp to thirty percent", "spkA", "nemo", 0.0, 0.2),
        ("b", "hello bob", "bob", "nemo", 0.0, 0.2),
        ("c-3", "first part", "7", "nemo", 0.0, 0.4),
        ("c-4", "second part", "7", "nemo", 0.4, 0.6),
    ]
    assert utts[0].audio == folder / "audio" / "spkA" / "a.wav"
    assert utts[1].audio == elsewhere
    assert load_utterance(utts[3]).size == int(0.6 * SAMPLE_RATE)


def test_nemo_manifest_errors(tmp_path):
    _tone(tmp_path / "a.wav")
    good = '{"audio_filepath": "a.wav", "text": "hi", "duration": 0.2}\n'
    for line, error, match in [
        ("{not json\n", ValueError, r"m\.json:2: not JSON"),
        ('["a list"]\n', ValueError, r"m\.json:2: a JSON list"),
        ('{"audio_filepath": "a.wav", "duration": 0.2}\n', ValueError, r"m\.json:2: no 'text'"),
        ('{"audio_filepath": "a.wav", "text": "hi", "offset": "soon"}\n', ValueError,
         r"m\.json:2: 'offset' is 'soon'"),
        ('{"audio_filepath": "a.wav", "text": "hi", "duration": -1}\n', ValueError,
         r"m\.json:2: 'duration' is negative"),
        ('{"audio_filepath": "gone.wav", "text": "hi", "duration": 1}\n', FileNotFoundError,
         r"gone\.wav"),
    ]:
        with pytest.raises(error, match=match):
            read_nemo_manifest(_write(tmp_path / "m.json", good + line))


# --------------------------------------------------------------------------- Lhotse


def _recording(rec_id: str, sources: list[dict], seconds: float = 1.0, **extra) -> dict:
    return {"id": rec_id, "sources": sources, "sampling_rate": SAMPLE_RATE,
            "num_samples": int(seconds * SAMPLE_RATE), "duration": seconds, **extra}


def _file_source(path: Path | str, channels: list[int] | None = None) -> dict:
    return {"type": "file", "channels": channels or [0], "source": str(path)}


def _supervision(sup_id: str, rec_id: str, start: float, duration: float, text: str,
                 speaker: str | None = "spk1", channel: int = 0) -> dict:
    return {"id": sup_id, "recording_id": rec_id, "start": start, "duration": duration,
            "channel": channel, "text": text, "language": "English", "speaker": speaker}


def _lhotse_corpus(tmp_path: Path, recordings: str, supervisions: str) -> tuple[Path, Path]:
    _tone(tmp_path / "audio" / "r1.flac", seconds=1.0)
    ch0 = _tone(tmp_path / "audio" / "r2_ch0.wav")
    ch1 = _tone(tmp_path / "audio" / "r2_ch1.wav")
    recs = _jsonl(tmp_path / "manifests" / recordings, [
        _recording("rec1", [_file_source("audio/r1.flac")]),  # relative: needs root=
        _recording("rec2", [_file_source(ch0, [0]), _file_source(ch1, [1])], seconds=0.2),
    ])
    sups = _jsonl(tmp_path / "manifests" / supervisions, [
        _supervision("rec1-0", "rec1", 0.05, 0.5, "Hello there."),
        _supervision("rec1-1", "rec1", 0.6, 0.3, "[noise]?!"),  # normalises to "noise"
        _supervision("rec1-2", "rec1", 0.9, 0.1, "..."),  # empty: skipped
        _supervision("rec2-0", "rec2", 0.0, 0.2, "Call Zoe", speaker=None, channel=1),
    ])
    return recs, sups


def test_lhotse_recordings_and_supervisions(tmp_path):
    recs, sups = _lhotse_corpus(tmp_path, "recordings.jsonl.gz", "supervisions.jsonl")
    utts = read_lhotse(recs, sups, root=tmp_path)
    assert _summary(utts) == [
        ("rec1-0", "hello there", "spk1", "lhotse", 0.05, 0.5),
        ("rec1-1", "noise", "spk1", "lhotse", 0.6, 0.3),
        ("rec2-0", "call zoe", "rec2", "lhotse", 0.0, 0.2),  # no speaker: the recording id
    ]
    assert utts[0].audio == tmp_path / "audio" / "r1.flac"
    assert utts[2].audio == tmp_path / "audio" / "r2_ch1.wav"  # the file holding channel 1
    # Without root, a relative source is relative to the current folder, as in Lhotse.
    with pytest.raises(FileNotFoundError, match=r"audio/r1\.flac"):
        read_lhotse(recs, sups)


@pytest.mark.parametrize("source, match", [
    ({"type": "url", "channels": [0], "source": "https://example.org/a.flac"}, "'url'"),
    ({"type": "command", "channels": [0], "source": "sox a.sph -t wav -"}, "'command'"),
    ({"type": "memory", "channels": [0], "source": "UklGRg=="}, "'memory'"),
])
def test_lhotse_refuses_sources_other_than_files(tmp_path, source, match):
    recs = _jsonl(tmp_path / "recordings.jsonl", [_recording("r", [source])])
    sups = _jsonl(tmp_path / "supervisions.jsonl", [_supervision("s", "r", 0.0, 1.0, "hi")])
    with pytest.raises(ValueError, match=rf"recordings\.jsonl:1: recording r has a {match}"):
        read_lhotse(recs, sups)


def test_lhotse_errors(tmp_path):
    audio = _tone(tmp_path / "a.wav")
    recs = _jsonl(tmp_path / "recordings.jsonl.gz", [
        _recording("r", [_file_source(audio)]),
        _recording("fast", [_file_source(audio)],
                   transforms=[{"name": "Speed", "kwargs": {"factor": 1.1}}]),
    ])
    cases = [
        (_supervision("s", "nowhere", 0.0, 0.2, "hi"),
         r"supervisions\.jsonl:1: recording nowhere is not in"),
        (_supervision("s", "fast", 0.0, 0.2, "hi"), r"recordings\.jsonl\.gz:2: .*'Speed'"),
        ({"id": "s", "recording_id": "r", "duration": 0.2, "text": "hi"},
         r"supervisions\.jsonl:1: no 'start'"),
        (_supervision("s", "r", 0.0, 0.2, "hi", channel=3), "no source for channel 3"),
    ]
    for sup, match in cases:
        with pytest.raises(ValueError, match=match):
            read_lhotse(recs, _jsonl(tmp_path / "supervisions.jsonl", [sup]))
    audio.unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.wav"):
        read_lhotse(recs, _jsonl(tmp_path / "supervisions.jsonl",
                                 [_supervision("s", "r", 0.0, 0.2, "hi")]))


def _cut(cut_id: str, start: float, duration: float, recording: dict,
         supervisions: list[dict], kind: str = "MonoCut") -> dict:
    return {"id": cut_id, "start": start, "duration": duration, "channel": 0,
            "supervisions": supervisions, "recording": recording, "type": kind}


def test_lhotse_cuts_offsets_are_cut_start_plus_supervision_start(tmp_path):
    audio = _tone(tmp_path / "r1.flac", seconds=2.0)
    rec = _recording("r1", [_file_source(audio)], seconds=2.0)
    cuts = _jsonl(tmp_path / "cuts.jsonl.gz", [
        _cut("c1", 0.5, 1.0, rec, [
            _supervision("s1", "r1", 0.1, 0.3, "Turn on the lamp", speaker="s1"),
            _supervision("s0", "r1", -0.2, 0.4, "Hi", speaker="s1"),  # began before the cut
        ]),
        # A window over the same recording repeats s1 (start relative to this cut): one utt.
        _cut("c2", 0.0, 1.0, rec, [_supervision("s1", "r1", 0.6, 0.3, "Turn on the lamp",
                                                 speaker="s1")]),
        _cut("c3", 1.0, 1.0, rec, []),
    ])
    utts = read_lhotse_cuts(cuts)
    assert [(u.id, u.text, u.speaker, u.corpus, u.audio) for u in utts] == [
        ("s1", "turn on the lamp", "s1", "lhotse", audio),
        ("s0", "hi", "s1", "lhotse", audio),
    ]
    assert [u.offset for u in utts] == pytest.approx([0.6, 0.3])
    assert [u.duration for u in utts] == pytest.approx([0.3, 0.4])


def test_lhotse_cuts_errors(tmp_path):
    audio = _tone(tmp_path / "r1.wav")
    rec = _recording("r1", [_file_source(audio)], seconds=0.2)
    sup = _supervision("s1", "r1", 0.0, 0.2, "hi")
    mixed = {"id": "m", "tracks": [], "type": "MixedCut"}
    for rows, match in [
        ([_cut("c1", 0.0, 0.2, rec, [sup]), mixed], r"cuts\.jsonl\.gz:2: a MixedCut"),
        ([{**_cut("c1", 0.0, 0.2, rec, [sup]), "recording": None}], "cut c1 has no recording"),
        ([_cut("c1", 0.0, 0.2, rec, [{**sup, "start": -0.1}])], "before its recording"),
        ([_cut("c1", 0.0, 0.2, rec, [sup]), _cut("c2", 0.0, 0.2, rec, [{**sup, "text": "no"}])],
         r"cuts\.jsonl\.gz:2: supervision s1 given twice, differently"),
    ]:
        with pytest.raises(ValueError, match=match):
            read_lhotse_cuts(_jsonl(tmp_path / "cuts.jsonl.gz", rows))


# --------------------------------------------------------------------------- Kaldi


def _kaldi_dir(folder: Path, text: str, wav_scp: str, utt2spk: str,
               segments: str | None = None) -> Path:
    _write(folder / "text", text)
    _write(folder / "wav.scp", wav_scp)
    _write(folder / "utt2spk", utt2spk)
    if segments is not None:
        _write(folder / "segments", segments)
    return folder


def test_kaldi_dir_reads_tables_and_finds_re_encoded_audio(tmp_path):
    corpus = tmp_path / "speechocean762"
    _tone(corpus / "WAVE" / "SPEAKER0001" / "000010011.wav")
    _tone(corpus / "WAVE" / "SPEAKER0001" / "000010012.flac")  # listed as .WAV
    folder = _kaldi_dir(
        corpus / "train",
        "000010011 WE CALL IT BEAR\n000010012 Dial 42, please\n000010013 ...\n",
        "000010011 WAVE/SPEAKER0001/000010011.wav\n000010012 WAVE/SPEAKER0001/000010012.WAV\n"
        "000010013 WAVE/SPEAKER0001/000010013.WAV\n",
        "000010011 0001\n000010012 0001\n000010013 0001\n")
    utts = read_kaldi_dir(folder, "speechocean762")
    assert _summary(utts) == [
        ("000010011", "we call it bear", "0001", "speechocean762", 0.0, None),
        ("000010012", "dial forty two please", "0001", "speechocean762", 0.0, None),
    ]
    assert utts[1].audio == corpus / "WAVE" / "SPEAKER0001" / "000010012.flac"
    assert read_corpus("kaldi", folder, corpus="speechocean762") == utts


def test_kaldi_dir_with_segments(tmp_path):
    _tone(tmp_path / "rec1.wav", seconds=1.0)
    folder = _kaldi_dir(tmp_path / "data", "u1 first words\nu2 SECOND WORDS\n",
                        "rec1 rec1.wav\n", "u1 alice\nu2 bob\n",
                        "u1 rec1 0.10 0.35\nu2 rec1 0.50 1.00\n")
    utts = read_kaldi_dir(folder, "meeting", root=tmp_path)
    assert [(u.id, u.text, u.speaker, u.audio) for u in utts] == [
        ("u1", "first words", "alice", tmp_path / "rec1.wav"),
        ("u2", "second words", "bob", tmp_path / "rec1.wav"),
    ]
    assert [(u.offset, u.duration) for u in utts] == [pytest.approx((0.1, 0.25)),
                                                      pytest.approx((0.5, 0.5))]
    assert load_utterance(utts[0]).size == int(0.25 * SAMPLE_RATE)


def test_kaldi_dir_refuses_piped_wav_scp_and_names_missing_parts(tmp_path):
    _tone(tmp_path / "a.wav")
    folder = _kaldi_dir(tmp_path / "data", "u1 hello\n", "u1 sox a.wav -t wav - |\n",
                        "u1 s1\n")
    with pytest.raises(ValueError, match="u1 is a command, not a file"):
        read_kaldi_dir(folder, "c")
    _write(folder / "wav.scp", "u1 a.wav\n")
    _write(folder / "utt2spk", "u2 s1\n")
    with pytest.raises(ValueError, match="no speaker for utterance u1"):
        read_kaldi_dir(folder, "c")
    (folder / "utt2spk").unlink()
    with pytest.raises(FileNotFoundError, match="utt2spk"):
        read_kaldi_dir(folder, "c")


def test_kaldi_dir_skips_empty_transcripts_and_reads_open_ended_segments(tmp_path):
    _tone(tmp_path / "rec1.wav", seconds=1.0)
    folder = _kaldi_dir(tmp_path / "data", "u1 words here\nu2\n", "rec1 rec1.wav\n",
                        "u1 alice\nu2 alice\n", "u1 rec1 0.40 -1\nu2 rec1 0.0 0.2\n")
    utts = read_kaldi_dir(folder, "c", root=tmp_path)
    assert [(u.id, u.offset, u.duration) for u in utts] == [("u1", 0.4, None)]
    assert load_utterance(utts[0]).size == int(0.6 * SAMPLE_RATE)
    _write(folder / "segments", "u1 rec1 0.40\n")
    with pytest.raises(ValueError, match="segments: u1: expected 'recording start end'"):
        read_kaldi_dir(folder, "c", root=tmp_path)


# --------------------------------------------------------------------------- loading


def test_load_utterance_honours_offset_duration_and_resamples_8k(tmp_path):
    rate, hz = 8000, 50.0
    path = tmp_path / "phone.wav"
    t = np.arange(rate) / rate  # one second at 8 kHz
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    whole = load_utterance(Utterance("x", path, "x", "s", "c"))
    assert whole.dtype == np.float32 and whole.size == SAMPLE_RATE
    part = load_utterance(Utterance("x", path, "x", "s", "c", offset=0.25, duration=0.5))
    assert part.size == SAMPLE_RATE // 2
    expected = 0.5 * np.sin(2 * np.pi * hz * (0.25 + np.arange(part.size) / SAMPLE_RATE))
    inner = slice(200, -200)  # the resampler's filter edges aside
    assert np.max(np.abs(part[inner] - expected[inner])) < 0.01


def test_read_librispeech_utterances_write_a_set(tmp_path):
    utts = read_librispeech(_librispeech(tmp_path))
    manifest = write_set("real_train", utts, tmp_path / "data", evaluation=False)
    rows = [json.loads(line) for line in manifest.open()]
    assert [(r["text"], r["speaker"], r["corpus"]) for r in rows] == [
        (u.text, u.speaker, "librispeech") for u in utts]
    assert all(r["duration"] == 0.2 for r in rows)


# --------------------------------------------------------------------------- read_corpus


def test_read_corpus_dispatches_on_kind(tmp_path):
    subset = _librispeech(tmp_path / "ls")
    assert read_corpus("librispeech", subset) == read_librispeech(subset)
    recs, sups = _lhotse_corpus(tmp_path / "lh", "mini_recordings_dev.jsonl.gz",
                                "mini_supervisions_dev.jsonl.gz")
    expected = read_lhotse(recs, sups, root=tmp_path / "lh")
    assert read_corpus("lhotse", recs, root=tmp_path / "lh") == expected
    assert read_corpus("lhotse", recs.parent, root=tmp_path / "lh") == expected
    assert read_corpus("lhotse", recs, supervisions=sups, root=tmp_path / "lh") == expected
    _tone(tmp_path / "cv" / "clips" / "a.wav")
    _write(tmp_path / "cv" / "dev.tsv", CV17_HEADER + _cv_row("c", "a.wav", "Fine."))
    assert [u.text for u in read_corpus("commonvoice", tmp_path / "cv", tsv="dev.tsv")] == [
        "fine"]
    _tone(tmp_path / "n" / "a.wav")
    nemo = _jsonl(tmp_path / "n" / "m.json", [{"audio_filepath": "a.wav", "text": "Yes"}])
    assert read_corpus("nemo", nemo, corpus="mine") == [
        Utterance("a", tmp_path / "n" / "a.wav", "yes", "n", "mine")]
    cuts = _jsonl(tmp_path / "cuts.jsonl", [_cut("c", 0.0, 0.2, _recording(
        "r", [_file_source(tmp_path / "n" / "a.wav")]), [_supervision("s", "r", 0, 0.2, "ok")])])
    assert [u.text for u in read_corpus("lhotse-cuts", cuts)] == ["okay"]
    with pytest.raises(ValueError, match="unknown corpus layout 'timit'"):
        read_corpus("timit", tmp_path)


# --------------------------------------------------------------------------- Speech Commands


def _speech_commands(tmp_path: Path) -> Path:
    root = tmp_path / "speech_commands_test_v002"
    _tone(root / "yes" / "0a7c2a8d_nohash_0.wav")
    _tone(root / "yes" / "ffb86d3c_nohash_1.wav")
    _tone(root / "no" / "0a7c2a8d_nohash_0.wav")  # same hash and number, another word
    _tone(root / "_background_noise_" / "white_noise.wav")
    _tone(root / "_silence_" / "1024.wav")
    _tone(root / "_unknown_" / "marvin_0c540988_nohash_2.wav.wav")  # as the v0.02 test set
    _tone(root / "_unknown_" / "sheila_ffb86d3c_nohash_0.wav")
    _write(root / "README.md", "# Speech Commands\n")
    _write(root / "testing_list.txt", "yes/0a7c2a8d_nohash_0.wav\n")
    return root


def test_speech_commands_words_from_folders_and_unknown_file_names(tmp_path):
    root = _speech_commands(tmp_path)
    utts = read_speech_commands(root)
    assert _summary(utts) == [
        ("marvin_0c540988_nohash_2", "marvin", "0c540988", "speech_commands", 0.0, None),
        ("sheila_ffb86d3c_nohash_0", "sheila", "ffb86d3c", "speech_commands", 0.0, None),
        ("no_0a7c2a8d_nohash_0", "no", "0a7c2a8d", "speech_commands", 0.0, None),
        ("yes_0a7c2a8d_nohash_0", "yes", "0a7c2a8d", "speech_commands", 0.0, None),
        ("yes_ffb86d3c_nohash_1", "yes", "ffb86d3c", "speech_commands", 0.0, None),
    ]  # _background_noise_ and _silence_ are skipped
    assert utts[0].audio == root / "_unknown_" / "marvin_0c540988_nohash_2.wav.wav"
    assert load_utterance(utts[0]).size == int(0.2 * SAMPLE_RATE)
    assert read_corpus("speech-commands", root, corpus="kws") == [
        Utterance(u.id, u.audio, u.text, u.speaker, "kws") for u in utts]


def test_speech_commands_errors(tmp_path):
    root = _speech_commands(tmp_path)
    bad = _tone(root / "yes" / "take2.wav")
    with pytest.raises(ValueError, match=r"yes/take2\.wav: not a Speech Commands clip name"):
        read_speech_commands(root)
    bad.unlink()
    _tone(root / "_unknown_" / "0c540988_nohash_3.wav")  # no word before the hash
    with pytest.raises(ValueError, match=r"<word>_<speakerhash>_nohash_<n>\.wav"):
        read_speech_commands(root)
    with pytest.raises(ValueError, match="no <word>/<speakerhash>_nohash_<n>.wav files"):
        read_speech_commands(_write(tmp_path / "empty" / "_silence_" / "README", "x").parent
                             .parent)
    with pytest.raises(FileNotFoundError, match="no such Speech Commands folder"):
        read_speech_commands(tmp_path / "absent")


# --------------------------------------------------------------------------- VCTK


def _vctk_transcripts(root: Path) -> Path:
    _write(root / "txt" / "p225" / "p225_001.txt", "Please call Stella.\n")
    _write(root / "txt" / "p225" / "p225_002.txt", "Ask her to bring 6 spoons.")
    _write(root / "txt" / "p225" / "p225_003.txt", "...\n")  # empty: skipped
    _write(root / "txt" / "p362" / "p362_001.txt", "Not recorded.\n")  # no audio: skipped
    _write(root / "txt" / "p239" / "p239_004.txt", "Wednesday.\n")
    _write(root / "speaker-info.txt", "ID  AGE  GENDER  ACCENTS  REGION\n")
    return root


def test_vctk_080_wav48(tmp_path):
    root = _vctk_transcripts(tmp_path / "VCTK-Corpus")
    for name in ("p225_001", "p225_002", "p225_003"):
        _tone(root / "wav48" / "p225" / f"{name}.wav", rate=48000)
    _tone(root / "wav48" / "p239" / "p239_004.wav", rate=48000)
    (root / "wav48" / "p362").mkdir()
    _tone(root / "wav48" / "p315" / "p315_001.wav", rate=48000)  # its transcripts were lost
    utts = read_vctk(root)
    assert _summary(utts) == [
        ("p225_001", "please call stella", "p225", "vctk", 0.0, None),
        ("p225_002", "ask her to bring six spoons", "p225", "vctk", 0.0, None),
        ("p239_004", "wednesday", "p239", "vctk", 0.0, None),
    ]
    assert utts[0].audio == root / "wav48" / "p225" / "p225_001.wav"
    assert load_utterance(utts[0]).size == int(0.2 * SAMPLE_RATE)  # 48 kHz read at 16 kHz


def test_vctk_092_silence_trimmed_flac_per_microphone(tmp_path):
    root = _vctk_transcripts(tmp_path / "VCTK-Corpus-0.92")
    for spk, name in [("p225", "p225_001"), ("p225", "p225_002"), ("p239", "p239_004")]:
        for mic in ("mic1", "mic2"):
            _tone(root / "wav48_silence_trimmed" / spk / f"{name}_{mic}.flac", rate=48000)
    _tone(root / "wav48_silence_trimmed" / "p362" / "p362_002_mic1.flac", rate=48000)
    (root / "wav48_silence_trimmed" / "p239" / "p239_004_mic2.flac").unlink()
    utts = read_vctk(root)
    assert [(u.id, u.text, u.speaker, u.audio.name) for u in utts] == [
        ("p225_001", "please call stella", "p225", "p225_001_mic1.flac"),
        ("p225_002", "ask her to bring six spoons", "p225", "p225_002_mic1.flac"),
        ("p239_004", "wednesday", "p239", "p239_004_mic1.flac"),
    ]
    assert [u.audio.name for u in read_corpus("vctk", root, mic="mic2")] == [
        "p225_001_mic2.flac", "p225_002_mic2.flac"]  # p239_004 has no mic2 recording


def test_vctk_errors(tmp_path):
    root = _vctk_transcripts(tmp_path / "VCTK-Corpus")
    with pytest.raises(FileNotFoundError, match="no txt/ and wav48"):
        read_vctk(root)
    _tone(root / "wav48" / "p225" / "p225_001.wav")
    (root / "wav48" / "p362").mkdir()
    with pytest.raises(FileNotFoundError, match=r"wav48/p239: no audio folder for speaker p239"):
        read_vctk(root)
    _tone(root / "wav48" / "p239" / "p239_004.wav")
    _write(root / "txt" / "p239" / "p225_009.txt", "Misfiled.\n")
    with pytest.raises(ValueError, match=r"p225_009\.txt: not a transcript of speaker p239"):
        read_vctk(root)


# --------------------------------------------------------------------------- paired text


def _paired(tmp_path: Path) -> Path:
    root = tmp_path / "rhasspy_cathy"
    data = root / "data"
    for name, text in [("arctic_a0001_1592748574", "Author of the danger trail, etc.\n"),
                       ("arctic_a0002_1592748530", "Not at this particular case, Tom.")]:
        _tone(data / f"{name}.wav", rate=48000)
        _write(data / f"{name}.txt", text)
    _tone(data / "take1" / "arctic_a0001_1592748574.wav")  # a stem seen elsewhere
    _write(data / "take1" / "arctic_a0001_1592748574.txt", "Author again.")
    _tone(data / "arctic_a0003_1592748600.wav")  # no transcript: skipped
    _tone(data / "arctic_a0004_1592748601.wav")
    _write(data / "arctic_a0004_1592748601.txt", "?!\n")  # empty: skipped
    _write(root / "README.txt", "A voice dataset.\n")  # no .wav twin: not a transcript
    _write(root / "transcripts.tsv", "path\ttext\n")
    return root


def test_paired_text_one_speaker_named_after_the_root(tmp_path):
    root = _paired(tmp_path)
    utts = read_paired_text(root)
    assert _summary(utts) == [  # a stem in two folders: ids from the paths below the root
        ("data-arctic_a0001_1592748574", "author of the danger trail etc", "rhasspy_cathy",
         "rhasspy_cathy", 0.0, None),
        ("arctic_a0002_1592748530", "not at this particular case tom", "rhasspy_cathy",
         "rhasspy_cathy", 0.0, None),
        ("data-take1-arctic_a0001_1592748574", "author again", "rhasspy_cathy",
         "rhasspy_cathy", 0.0, None),
    ]
    assert utts[0].audio == root / "data" / "arctic_a0001_1592748574.wav"
    # Its data/ folder is read as the same speaker and corpus; corpus= overrides the corpus.
    in_data = read_paired_text(root / "data", corpus="cathy")
    assert [(u.text, u.speaker, u.corpus) for u in in_data] == [
        (u.text, "rhasspy_cathy", "cathy") for u in utts]
    assert read_corpus("paired-text", root) == utts


def test_paired_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_paired_text(tmp_path / "absent")
    _tone(tmp_path / "voice" / "a.wav")
    _write(tmp_path / "voice" / "README.txt", "x")
    with pytest.raises(ValueError, match=r"no <name>\.wav with a <name>\.txt beside it"):
        read_paired_text(tmp_path / "voice")


# --------------------------------------------------------------------------- detect_layout


def test_detect_layout_finds_the_new_layouts_and_paired_text_comes_last(tmp_path):
    commands = _speech_commands(tmp_path / "sc")
    assert detect_layout(commands) == "speech-commands"
    vctk = _vctk_transcripts(tmp_path / "vctk")
    _tone(vctk / "wav48_silence_trimmed" / "p225" / "p225_001_mic1.flac")
    assert detect_layout(vctk) == "vctk"
    paired = _paired(tmp_path / "rh")
    assert detect_layout(paired) == "paired-text"  # through its data/ folder
    assert detect_layout(paired / "data") == "paired-text"
    # A Kaldi data directory whose folder also holds .wav/.txt pairs is read as Kaldi.
    kaldi = _kaldi_dir(tmp_path / "k", "u1 hi\n", "u1 u1.wav\n", "u1 s\n")
    _tone(kaldi / "u1.wav")
    _write(kaldi / "u1.txt", "hi")
    assert detect_layout(kaldi) == "kaldi"
    # Most .wav files without a transcript: no layout.
    loose = tmp_path / "loose"
    for name in ("a", "b", "c"):
        _tone(loose / f"{name}.wav")
    _write(loose / "a.txt", "hi")
    with pytest.raises(ValueError, match="not a corpus layout"):
        detect_layout(loose)
    assert read_corpus(detect_layout(commands), commands) == read_speech_commands(commands)
    assert read_corpus(detect_layout(paired), paired) == read_paired_text(paired)
