"""Readers for speech corpora published as folders of audio and transcripts: LibriSpeech,
Common Voice, Google Speech Commands, VCTK and wav+txt pairs (Rhasspy voices).

Each returns `Utterance`s as corpus_formats.py describes: transcripts normalised, empty ones
skipped, malformed names and lines raising ValueError that names the file.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

from edge_asr.daemon.text import normalize_text
from edge_asr.models.corpus_utterance import AUDIO_SUFFIXES, Utterance, find_audio

# --------------------------------------------------------------------------- LibriSpeech


def read_librispeech(root: Path | str, corpus: str = "librispeech") -> list[Utterance]:
    """LibriSpeech as published: `<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`.

    Each transcript line is "<speaker>-<chapter>-<n> TEXT IN CAPS", its audio `<id>.flac`
    beside the transcript. `root` is one subset (`LibriSpeech/train-clean-100`) or a folder of
    subsets (`LibriSpeech`): transcripts are found at any depth. Speaker: the speaker folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such LibriSpeech folder")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise ValueError(f"{root}: no <speaker>-<chapter>.trans.txt files below it; "
                         "is this a LibriSpeech subset folder?")
    out = []
    for trans in transcripts:
        out += _librispeech_chapter(trans, corpus)
    return out


def _librispeech_chapter(trans: Path, corpus: str) -> list[Utterance]:
    speaker, chapter = trans.parent.parent.name, trans.parent.name
    prefix = f"{speaker}-{chapter}-"  # every id in the chapter's transcript starts so
    out = []
    for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        utt, *rest = line.split(maxsplit=1)
        if not rest:
            raise ValueError(f"{trans}:{lineno}: an utterance id with no transcript")
        if not utt.startswith(prefix):
            raise ValueError(f"{trans}:{lineno}: utterance {utt} is not of speaker {speaker}, "
                             f"chapter {chapter} (expected an id starting {prefix})")
        text = normalize_text(rest[0])
        if text:
            out.append(Utterance(id=utt, audio=find_audio(trans.parent / f"{utt}.flac"),
                                 text=text, speaker=speaker, corpus=corpus))
    return out


# --------------------------------------------------------------------------- Common Voice

COMMON_VOICE_COLUMNS = ("client_id", "path", "sentence")


def read_common_voice(root: Path | str, tsv: str = "train.tsv",
                      corpus: str = "commonvoice") -> list[Utterance]:
    """A Common Voice release folder: `<root>/<tsv>` and the clips in `<root>/clips/`.

    The TSV is read by its header names (`client_id`, `path`, `sentence`; releases differ in
    their other columns and their order), unquoted: sentences keep any quote characters.
    Speaker: `client_id`. Id: the clip's file stem. Early releases list paths without `.mp3`;
    the clip is then found under its stem with an audio suffix.
    """
    root = Path(root)
    table = root / tsv
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no such Common Voice TSV")
    out = []
    with table.open(encoding="utf-8", newline="") as f:
        # QUOTE_NONE: Common Voice does not quote fields, and sentences contain `"`.
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{table}: empty (no header line)")
        missing = [c for c in COMMON_VOICE_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{table}:1: header lacks column(s) {', '.join(missing)}; "
                             f"it has {', '.join(header)}")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{table}:{reader.line_num}: {len(row)} fields, the header "
                                 f"has {len(header)}")
            fields = dict(zip(header, row, strict=True))
            text = normalize_text(fields["sentence"])
            if not text:
                continue
            clip = Path(fields["path"])
            out.append(Utterance(id=clip.stem, audio=find_audio(root / "clips" / clip),
                                 text=text, speaker=fields["client_id"], corpus=corpus))
    return out


# --------------------------------------------------------------------------- Speech Commands

# Google Speech Commands: <word>/<speakerhash>_nohash_<n>.wav. The v0.02 test set's
# `_unknown_` folder names its files <word>_<speakerhash>_nohash_<n>.wav (.wav.wav, as shipped).
_NOHASH_RE = re.compile(r"(?P<speaker>[^_]+)_nohash_(?P<n>\d+)")
_UNKNOWN_NOHASH_RE = re.compile(r"(?P<word>.+)_(?P<speaker>[^_]+)_nohash_(?P<n>\d+)")
SPEECH_COMMANDS_UNKNOWN = "_unknown_"


def read_speech_commands(root: Path | str, corpus: str = "speech_commands") -> list[Utterance]:
    """Google Speech Commands as published: `<root>/<word>/<speakerhash>_nohash_<n>.wav`.

    Text: the folder's word. Folders starting with `_` (`_background_noise_`, the test set's
    `_silence_`) hold no words and are skipped, except the test set's `_unknown_`, whose
    files are named `<word>_<speakerhash>_nohash_<n>.wav` (ending `.wav.wav` in the v0.02
    test set): the word is then the name's first part. Speaker: the hash. Id:
    `<word>_<speakerhash>_nohash_<n>` (one speaker says each word several times, and the
    same hash and number recur under other words). Files at the root (README, the
    testing/validation lists) are not read; a .wav in a word folder named otherwise raises
    ValueError.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Speech Commands folder")
    out: list[Utterance] = []
    seen: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        unknown = folder.name == SPEECH_COMMANDS_UNKNOWN
        if folder.name.startswith("_") and not unknown:
            continue
        pattern = _UNKNOWN_NOHASH_RE if unknown else _NOHASH_RE
        for wav in sorted(folder.glob("*.wav")):
            stem = wav.name
            while stem.lower().endswith(".wav"):  # `.wav.wav` in the v0.02 test set
                stem = stem[:-4]
            match = pattern.fullmatch(stem)
            if match is None:
                expected = ("<word>_<speakerhash>_nohash_<n>.wav" if unknown
                            else "<speakerhash>_nohash_<n>.wav")
                raise ValueError(f"{wav}: not a Speech Commands clip name ({expected})")
            word = match["word"] if unknown else folder.name
            text = normalize_text(word)
            if not text:
                continue
            utt_id = f"{word}_{match['speaker']}_nohash_{match['n']}"
            if utt_id in seen:
                raise ValueError(f"{wav}: clip {utt_id} already read from {seen[utt_id]}")
            seen[utt_id] = wav
            out.append(Utterance(id=utt_id, audio=wav, text=text, speaker=match["speaker"],
                                 corpus=corpus))
    if not out:
        raise ValueError(f"{root}: no <word>/<speakerhash>_nohash_<n>.wav files below it; "
                         "is this a Speech Commands folder?")
    return out


# --------------------------------------------------------------------------- VCTK


def read_vctk(root: Path | str, corpus: str = "vctk", mic: str = "mic1") -> list[Utterance]:
    """VCTK as published: transcripts `<root>/txt/<spk>/<spk>_<n>.txt`, audio in
    `<root>/wav48/<spk>/<spk>_<n>.wav` (VCTK 0.80) or
    `<root>/wav48_silence_trimmed/<spk>/<spk>_<n>_<mic>.flac` (VCTK 0.92, two microphones:
    `mic` picks one).

    Speaker: the speaker folder. Id: the transcript's stem. Where several `wav48*` folders
    are present, `wav48` is read. The corpus as published does not pair up fully (p315's
    transcripts were lost; 0.92 lacks some recordings, p280's mic2 and a few of p362), so
    an utterance is read where both its transcript and its audio are, and others are
    skipped; a speaker with transcripts but no audio folder at all raises FileNotFoundError
    (a half-copied corpus). Files at the root (speaker-info.txt, README) are not read.
    """
    root = Path(root)
    txt_root = root / "txt"
    audio_roots = sorted((p for p in root.glob("wav48*") if p.is_dir()),
                         key=lambda p: (p.name != "wav48", p.name))
    if not txt_root.is_dir() or not audio_roots:
        raise FileNotFoundError(f"{root}: no txt/ and wav48*/ folders; is this a VCTK folder?")
    audio_root = audio_roots[0]
    out = []
    for speaker_dir in sorted(p for p in txt_root.iterdir() if p.is_dir()):
        speaker = speaker_dir.name
        transcripts = sorted(speaker_dir.glob("*.txt"))
        if not transcripts:
            continue
        audio_dir = audio_root / speaker
        if not audio_dir.is_dir():
            raise FileNotFoundError(f"{audio_dir}: no audio folder for speaker {speaker}, "
                                    f"who has {len(transcripts)} transcripts")
        for trans in transcripts:
            if not trans.stem.startswith(f"{speaker}_"):
                raise ValueError(f"{trans}: not a transcript of speaker {speaker} (expected "
                                 f"a name starting {speaker}_)")
            text = normalize_text(trans.read_text(encoding="utf-8"))
            audio = (_audio_with_stem(audio_dir / trans.stem)
                     or _audio_with_stem(audio_dir / f"{trans.stem}_{mic}"))
            if text and audio is not None:
                out.append(Utterance(id=trans.stem, audio=audio, text=text, speaker=speaker,
                                     corpus=corpus))
    if not out:
        raise ValueError(f"{root}: no transcript in txt/<spk>/ has its audio in "
                         f"{audio_root.name}/<spk>/")
    return out


# --------------------------------------------------------------------------- paired text


def read_paired_text(root: Path | str, corpus: str | None = None) -> list[Utterance]:
    """A folder of `<name>.wav` recordings, each with its transcript `<name>.txt` beside it,
    at any depth below `root`: the layout of Rhasspy's voice datasets
    (`dataset-voice-cathy/data/arctic_a0001_1592748574.{wav,txt}`).

    These are single-speaker datasets, so ONE speaker is assumed: every utterance's speaker
    is the root folder's name (its parent's when the root is a `data/` folder, so
    `rhasspy_cathy` and `rhasspy_cathy/data` both give `rhasspy_cathy`), which is also the
    corpus unless `corpus` is given. Use another reader for multi-speaker folders. A .wav
    without a .txt beside it is skipped (no transcript), as are .txt files without a .wav
    (READMEs, licences). Id: the file's stem, or where stems repeat in several folders its
    path below the root joined with `-`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    named = root.resolve()
    if named.name == "data" and named.parent != named:
        named = named.parent
    name = named.name or "corpus"
    corpus = name if corpus is None else corpus
    pairs = []
    for wav in sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file()):
        trans = wav.with_suffix(".txt")
        if not trans.is_file():
            continue
        text = normalize_text(trans.read_text(encoding="utf-8"))
        if text:
            pairs.append((wav, text))
    if not pairs:
        raise ValueError(f"{root}: no <name>.wav with a <name>.txt beside it below it")
    stems = Counter(wav.stem for wav, _ in pairs)
    return [Utterance(id=wav.stem if stems[wav.stem] == 1
                      else "-".join(wav.relative_to(root).with_suffix("").parts),
                      audio=wav, text=text, speaker=name, corpus=corpus)
            for wav, text in pairs]


# --------------------------------------------------------------------------- shared


def _audio_with_stem(stem: Path) -> Path | None:
    """The audio file `<stem><suffix>` for a suffix in AUDIO_SUFFIXES; None when there is none.
    `stem` is a path without a suffix (names may hold dots, so no with_suffix)."""
    for suffix in AUDIO_SUFFIXES:
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return path
    return None
