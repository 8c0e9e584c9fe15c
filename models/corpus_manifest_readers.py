"""Readers for speech corpora described by JSON-lines manifests: NeMo manifests, and Lhotse
recordings + supervisions manifests or CutSets (plain or gzipped).

Each returns `Utterance`s as corpus_formats.py describes; a manifest line that is not a JSON
object, or lacks a field the layout requires, raises ValueError naming the file and line.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edge_asr.daemon.text import normalize_text
from edge_asr.models.corpus_utterance import Utterance, find_audio

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
            audio=find_audio(audio), text=text,
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
    return find_audio(audio)


# --------------------------------------------------------------------------- shared


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
