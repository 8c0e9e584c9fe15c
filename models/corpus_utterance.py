"""A transcribed stretch of a recorded corpus (`Utterance`), the file it lives in, and the
Kaldi data-directory reader: what every corpus reader (corpus_formats.py and the readers
it picks from) and the recipe's speaker split (real_speech.py) share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_asr.daemon.text import normalize_text


@dataclass(frozen=True)
class Utterance:
    """One transcribed stretch of a corpus's audio file."""

    id: str
    audio: Path
    text: str  # normalised (ARCHITECTURE.md, "Text normalisation")
    speaker: str
    corpus: str
    offset: float = 0.0  # seconds into the file (segmented corpora)
    duration: float | None = None  # seconds; None: to the end of the file


def read_kaldi_dir(folder: Path, corpus: str, root: Path | None = None) -> list[Utterance]:
    """A Kaldi data directory (`text`, `wav.scp`, `utt2spk`; `segments` when present).

    wav.scp paths are taken relative to `root` (default: the directory's parent). A listed
    file that is missing is looked for under the same stem with another audio suffix, since
    corpora are often re-encoded (speechocean762's .WAV files as .opus, say). Piped wav.scp
    entries (`cmd |`) are refused: the recipe reads files, it runs no commands from data.
    """
    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent
    texts = _kaldi_table(folder / "text", empty_ok=True)  # an empty transcript is skipped
    spk = _kaldi_table(folder / "utt2spk")
    wavs = _kaldi_table(folder / "wav.scp")
    segments = _kaldi_table(folder / "segments") if (folder / "segments").exists() else {}
    out = []
    for utt, raw_text in texts.items():
        text = normalize_text(raw_text)
        if not text:
            continue
        if utt not in spk:
            raise ValueError(f"{folder / 'utt2spk'}: no speaker for utterance {utt}")
        offset, duration, rec = 0.0, None, utt
        if segments:
            if utt not in segments:
                raise ValueError(f"{folder / 'segments'}: no segment for utterance {utt}")
            try:
                rec, start, end = segments[utt].split()
                offset, end_s = float(start), float(end)
            except ValueError as e:
                raise ValueError(f"{folder / 'segments'}: {utt}: expected 'recording start "
                                 f"end', got {segments[utt]!r}") from e
            # Kaldi writes an end of -1 for "to the end of the recording".
            duration = None if end_s < 0 else end_s - offset
        if rec not in wavs:
            raise ValueError(f"{folder / 'wav.scp'}: no audio for recording {rec}")
        if wavs[rec].rstrip().endswith("|"):
            raise ValueError(f"{folder / 'wav.scp'}: {rec} is a command, not a file; "
                             "convert it to a file first")
        out.append(Utterance(id=utt, audio=find_audio(root / wavs[rec]), text=text,
                             speaker=spk[utt], corpus=corpus, offset=offset,
                             duration=duration))
    return out


def _kaldi_table(path: Path, empty_ok: bool = False) -> dict[str, str]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (a Kaldi data directory needs text, "
                                "wav.scp and utt2spk)")
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, *value = line.split(maxsplit=1)
        if not value and not empty_ok:
            raise ValueError(f"{path}:{lineno}: a key with no value")
        table[key] = value[0].strip() if value else ""
    return table


AUDIO_SUFFIXES = (".wav", ".WAV", ".flac", ".opus", ".ogg", ".mp3")


def find_audio(path: Path) -> Path:
    if path.exists():
        return path
    for suffix in AUDIO_SUFFIXES:
        other = path.with_suffix(suffix)
        if other.exists():
            return other
    raise FileNotFoundError(f"{path}: no such audio file (nor with another audio suffix)")
