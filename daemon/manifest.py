"""JSON Lines manifests (ARCHITECTURE.md, "Manifests"; NeMo / Lhotse keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_asr.daemon.recognition.context_graph import context_by_kind


@dataclass
class Entry:
    audio_filepath: str  # absolute after loading
    text: str = ""
    duration: float | None = None
    speech_start: float | None = None
    speech_end: float | None = None
    # The biasing context: a list, or by kind as SetContext takes it ({"contacts": [...],
    # "devices": [...], "phrases": [...]}); `context_names` flattens either.
    context: list[str] | dict[str, list[str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # any other keys, kept for the output

    @property
    def context_names(self) -> list[str]:
        """Every entry of the context, whatever its kind, in order."""
        if isinstance(self.context, dict):
            return [name for names in self.context.values() for name in names]
        return list(self.context)

    @property
    def context_by_kind(self) -> dict[str, list[str]]:
        """The context as SetContext's lists (a list without kinds is contacts)."""
        return context_by_kind(self.context)


_KNOWN = {"audio_filepath", "text", "duration", "speech_start", "speech_end", "context", "tags"}


def read_manifest(path: str | Path) -> list[Entry]:
    """Entries with audio paths resolved against the manifest's folder; clear errors per line."""
    path = Path(path)
    entries = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from e
            if not isinstance(row, dict) or "audio_filepath" not in row:
                raise ValueError(f"{path}:{lineno}: each line needs an 'audio_filepath'")
            audio = Path(row["audio_filepath"])
            if not audio.is_absolute():
                audio = path.parent / audio
            entries.append(Entry(
                audio_filepath=str(audio),
                text=row.get("text", ""),
                duration=row.get("duration"),
                speech_start=row.get("speech_start"),
                speech_end=row.get("speech_end"),
                context=_context(row.get("context"), f"{path}:{lineno}"),
                tags=list(row.get("tags") or []),
                extra={k: v for k, v in row.items() if k not in _KNOWN},
            ))
    return entries


def _context(value: object, where: str) -> list[str] | dict[str, list[str]]:
    """The context key as given: a list, or lists by kind (kinds checked when it is used)."""
    if isinstance(value, dict):
        if not all(isinstance(v, list) for v in value.values()):
            raise ValueError(f"{where}: 'context' by kind needs a list for each kind")
        return {str(k): list(v) for k, v in value.items()}
    if value is not None and not isinstance(value, list):
        raise ValueError(f"{where}: 'context' must be a list or lists by kind")
    return list(value or [])


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
