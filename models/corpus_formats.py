"""Readers for public speech corpora in their published layouts, all into `Utterance`s.

    read_corpus("librispeech", "LibriSpeech/train-clean-100")

Every reader normalises the transcript with `normalize_text` (ARCHITECTURE.md's one)
and skips utterances whose normalised text is empty, since there is nothing to learn from or
score. Malformed lines raise ValueError naming the file and line; a listed audio file that is
missing raises FileNotFoundError naming the path, so a half-copied corpus fails at once rather
than in the middle of writing a set (VCTK, whose published transcripts and audio do not pair
up fully, and the paired-text layout skip unpaired files instead). Audio is only located here,
never read: `write_set` and `load_utterance` in real_speech.py read it (mono, 16 kHz).

Layouts:
  kaldi        a Kaldi data directory (real_speech.read_kaldi_dir)
  librispeech  <root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + <utt>.flac
  commonvoice  <root>/<train|dev|test|validated...>.tsv + <root>/clips/<path>
  nemo         a NeMo JSON-lines manifest (audio_filepath, text, duration, offset, speaker)
  lhotse       Lhotse recordings + supervisions manifests (.jsonl or .jsonl.gz)
  lhotse-cuts  a Lhotse CutSet manifest of MonoCuts (.jsonl or .jsonl.gz)
  speech-commands  Google Speech Commands: <root>/<word>/<speakerhash>_nohash_<n>.wav
  vctk         <root>/txt/<spk>/<spk>_<n>.txt + <root>/wav48*/<spk>/<spk>_<n>[_mic1].wav|flac
  paired-text  one speaker's <name>.wav + <name>.txt pairs at any depth (Rhasspy voices)
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from edge_asr.daemon.text import normalize_text
from edge_asr.models.real_speech import (
    AUDIO_SUFFIXES,
    Utterance,
    _find_audio,
    read_kaldi_dir,
)

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
            out.append(Utterance(id=utt, audio=_find_audio(trans.parent / f"{utt}.flac"),
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
            out.append(Utterance(id=clip.stem, audio=_find_audio(root / "clips" / clip),
                                 text=text, speaker=fields["client_id"], corpus=corpus))
    return out


# --------------------------------------------------------------------------- NeMo


def read_nemo_manifest(path: Path | str, corpus: str = "nemo") -> list[Utterance]:
    """A NeMo manifest: one JSON object a line with `audio_filepath`, `text`, `duration` and
    optionally `offset` and `speaker` (or `spk_id`).

    Relative audio paths are resolved against the manifest's folder, as NeMo does. `offset`
    and `duration` select the stretch of the file, as NeMo reads it (duration missing: to the
    end of the file). When a line names no speaker, the speaker is the name of the audio
    file's parent folder (corpora are commonly laid out one folder per speaker); that is a
    guess, so give `speaker` where the folders are not per speaker. Id: the audio file's stem,
    with `-<line number>` added where several lines share a stem (segments of one file).
    """
    path = Path(path)
    rows = []
    for lineno, row in _json_lines(path):
        where = f"{path}:{lineno}"
        for key in ("audio_filepath", "text"):
            if key not in row:
                raise ValueError(f"{where}: no '{key}'")
        audio = Path(row["audio_filepath"])
        if not audio.is_absolute():
            audio = path.parent / audio
        text = normalize_text(str(row["text"] or ""))
        if text:
            rows.append((lineno, row, audio, text))
    stems = Counter(audio.stem for _, _, audio, _ in rows)
    out = []
    for lineno, row, audio, text in rows:
        where = f"{path}:{lineno}"
        speaker = row.get("speaker", row.get("spk_id"))
        out.append(Utterance(
            id=audio.stem if stems[audio.stem] == 1 else f"{audio.stem}-{lineno}",
            audio=_find_audio(audio), text=text,
            speaker=audio.parent.name if speaker is None else str(speaker), corpus=corpus,
            offset=_seconds(row, "offset", where) or 0.0,
            duration=_seconds(row, "duration", where)))
    return out


# --------------------------------------------------------------------------- Lhotse

# Transforms that change only the sample rate: load_utterance resamples to 16 kHz anyway.
_HARMLESS_TRANSFORMS = {"Resample"}


def read_lhotse(recordings: Path | str, supervisions: Path | str, corpus: str = "lhotse",
                root: Path | str | None = None) -> list[Utterance]:
    """Lhotse `recordings.jsonl(.gz)` and `supervisions.jsonl(.gz)` manifests.

    Each supervision becomes an utterance (id: the supervision id) over its recording's audio
    file from `start` for `duration`. Only `file` audio sources are read (url, command, memory
    and shar sources raise ValueError), and recordings with transforms other than resampling
    (speed or volume perturbation...) are refused, since the file alone is not their audio.
    Relative source paths are taken as Lhotse takes them, relative to the current folder,
    unless `root` is given. Speaker: the supervision's, else the recording id. Audio is
    mixed to mono when read, so a supervision of one channel of a multi-channel file hears
    all its channels; for multi-file recordings the file holding the supervision's channel is
    used.
    """
    recordings, supervisions = Path(recordings), Path(supervisions)
    recs: dict[str, tuple[str, dict[str, Any]]] = {}
    for lineno, rec in _json_lines(recordings):
        where = f"{recordings}:{lineno}"
        rec_id = _field(rec, "id", where)
        if rec_id in recs:
            raise ValueError(f"{where}: recording {rec_id} already given at {recs[rec_id][0]}")
        recs[rec_id] = (where, rec)
    base = Path(root) if root is not None else None
    out = []
    for lineno, sup in _json_lines(supervisions):
        where = f"{supervisions}:{lineno}"
        rec_id = _field(sup, "recording_id", where)
        if rec_id not in recs:
            raise ValueError(f"{where}: recording {rec_id} is not in {recordings}")
        rec_where, rec = recs[rec_id]
        utt = _lhotse_utterance(sup, rec, 0.0, where, rec_where, base, corpus)
        if utt is not None:
            out.append(utt)
    return out


def read_lhotse_cuts(cuts_path: Path | str, corpus: str = "lhotse",
                     root: Path | str | None = None) -> list[Utterance]:
    """A Lhotse CutSet manifest (`cuts.jsonl(.gz)`) of MonoCuts with their recording embedded.

    Each supervision of each cut becomes an utterance as in `read_lhotse`; supervision times
    are relative to the cut, so the offset into the file is the cut's `start` plus the
    supervision's. A supervision is taken whole even where it runs past its cut, since its
    text is of the whole. A supervision repeated in several cuts (windowed cut sets) gives one
    utterance. MixedCuts and cuts without a recording raise ValueError.
    """
    cuts_path = Path(cuts_path)
    base = Path(root) if root is not None else None
    out: list[Utterance] = []
    seen: dict[str, Utterance] = {}
    for lineno, cut in _json_lines(cuts_path):
        where = f"{cuts_path}:{lineno}"
        kind = cut.get("type", "MonoCut")
        if kind not in ("MonoCut", "Cut"):  # "Cut": older Lhotse's name for MonoCut
            raise ValueError(f"{where}: a {kind}; only MonoCuts are supported "
                             "(mix or flatten the cut set first)")
        rec = cut.get("recording")
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: cut {cut.get('id')} has no recording")
        start = _seconds(cut, "start", where) or 0.0
        for sup in cut.get("supervisions") or []:
            utt = _lhotse_utterance(sup, rec, start, where, where, base, corpus)
            if utt is None:
                continue
            if utt.id in seen:
                if not _same_stretch(seen[utt.id], utt):
                    raise ValueError(f"{where}: supervision {utt.id} given twice, differently")
                continue
            seen[utt.id] = utt
            out.append(utt)
    return out


def _same_stretch(a: Utterance, b: Utterance) -> bool:
    """The same supervision seen from two cuts: offsets are sums of floats, so they may differ
    in the last bits."""
    return (a.audio, a.text, a.speaker) == (b.audio, b.text, b.speaker) and abs(
        a.offset - b.offset) < 1e-6 and abs((a.duration or 0.0) - (b.duration or 0.0)) < 1e-6


def _lhotse_utterance(sup: dict[str, Any], rec: dict[str, Any], cut_start: float, where: str,
                      rec_where: str, root: Path | None, corpus: str) -> Utterance | None:
    if not isinstance(sup, dict):
        raise ValueError(f"{where}: a supervision that is not a JSON object")
    text = normalize_text(str(sup.get("text") or ""))
    if not text:
        return None
    sup_id = _field(sup, "id", where)
    offset = cut_start + _required_seconds(sup, "start", where)
    if offset < 0:  # a start before the cut's is fine, one before the recording's is not
        raise ValueError(f"{where}: supervision {sup_id} starts {-offset:g} s before its "
                         "recording")
    speaker = sup.get("speaker")
    return Utterance(
        id=sup_id, audio=_lhotse_audio(rec, sup.get("channel"), rec_where, root), text=text,
        speaker=_field(rec, "id", rec_where) if speaker is None else str(speaker),
        corpus=corpus, offset=offset, duration=_required_seconds(sup, "duration", where))


def _lhotse_audio(rec: dict[str, Any], channel: int | list[int] | None, where: str,
                  root: Path | None) -> Path:
    """The audio file of a Lhotse recording that holds `channel` (None: all channels)."""
    rec_id = rec.get("id")
    for transform in rec.get("transforms") or []:
        name = transform.get("name") if isinstance(transform, dict) else transform
        if name not in _HARMLESS_TRANSFORMS:
            raise ValueError(f"{where}: recording {rec_id} has a '{name}' transform; the file "
                             "alone is not its audio (apply the transform first)")
    sources = rec.get("sources")
    if not isinstance(sources, list) or not sources or not all(
            isinstance(s, dict) for s in sources):
        raise ValueError(f"{where}: recording {rec_id} has no sources (a list of objects)")
    wanted = None if channel is None else set(channel if isinstance(channel, list)
                                              else [channel])
    holding = [s for s in sources
               if wanted is None or wanted & set(s.get("channels") or [])]
    which = "all channels" if wanted is None else f"channel {channel}"
    if not holding:
        raise ValueError(f"{where}: recording {rec_id} has no source for {which}")
    if len(holding) > 1:
        raise ValueError(f"{where}: recording {rec_id}: {which} span {len(holding)} source "
                         "files; only one file per utterance is read")
    source = holding[0]
    kind = source.get("type")
    if kind != "file":
        raise ValueError(f"{where}: recording {rec_id} has a '{kind}' audio source; only "
                         "'file' sources are supported (write the audio to files first)")
    audio = Path(_field(source, "source", where))
    if root is not None and not audio.is_absolute():
        audio = root / audio
    return _find_audio(audio)


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


def _open_text(path: Path) -> IO[str]:
    """The file as text, gunzipped when its name ends in .gz."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: a JSON {type(row).__name__}, "
                                 "not an object")
            yield lineno, row


def _field(row: dict[str, Any], key: str, where: str) -> str:
    if row.get(key) is None:
        raise ValueError(f"{where}: no '{key}'")
    return str(row[key])


def _seconds(row: dict[str, Any], key: str, where: str) -> float | None:
    """row[key] as a number of seconds; None when absent. Only a `start` may be negative:
    a Lhotse supervision may begin before its cut (its offset into the file is checked)."""
    value = row.get(key)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{key}' is {value!r}, not a number of seconds") from None
    if seconds < 0 and key != "start":
        raise ValueError(f"{where}: '{key}' is negative ({seconds:g} s)")
    return seconds


def _required_seconds(row: dict[str, Any], key: str, where: str) -> float:
    seconds = _seconds(row, key, where)
    if seconds is None:
        raise ValueError(f"{where}: no '{key}'")
    return seconds


# --------------------------------------------------------------------------- entry point


def _lhotse_pair(path: Path | str, supervisions: Path | str | None = None,
                 **kw: Any) -> list[Utterance]:
    """read_lhotse from a recordings manifest (or a folder holding one); the supervisions
    manifest, unless given, is the one named alike with `supervisions` for `recordings`."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*recordings*.jsonl*"))
        if len(found) != 1:
            raise ValueError(f"{path}: {len(found)} *recordings*.jsonl(.gz) files; "
                             "name the recordings manifest itself")
        path = found[0]
    if supervisions is None:
        if "recordings" not in path.name:
            raise ValueError(f"{path}: cannot tell the supervisions manifest from this name; "
                             "give supervisions=")
        supervisions = path.with_name(path.name.replace("recordings", "supervisions"))
    return read_lhotse(path, supervisions, **kw)


def _kaldi(path: Path | str, corpus: str = "kaldi", root: Path | str | None = None
           ) -> list[Utterance]:
    return read_kaldi_dir(Path(path), corpus, root=Path(root) if root is not None else None)


READERS: dict[str, Callable[..., list[Utterance]]] = {
    "kaldi": _kaldi,
    "librispeech": read_librispeech,
    "commonvoice": read_common_voice,
    "nemo": read_nemo_manifest,
    "lhotse": _lhotse_pair,
    "lhotse-cuts": read_lhotse_cuts,
    "speech-commands": read_speech_commands,
    "vctk": read_vctk,
    "paired-text": read_paired_text,
}


def read_corpus(kind: str, path: Path | str, **kw: Any) -> list[Utterance]:
    """The utterances of the corpus at `path` in layout `kind` (one of READERS).

    `path` is what the layout's reader takes first: the Kaldi data directory, the LibriSpeech
    or Common Voice folder, the NeMo or cuts manifest, or for "lhotse" the recordings manifest
    (or its folder), whose supervisions manifest is found by name unless `supervisions=` is
    given; the Speech Commands, VCTK or paired-text folder. Other keywords go to the reader
    (corpus=, tsv=, root=, mic=).
    """
    if kind not in READERS:
        raise ValueError(f"unknown corpus layout {kind!r}; one of {', '.join(READERS)}")
    return READERS[kind](path, **kw)
