"""What the simulated client received from the daemon, and the utterances it makes up.

Pure records, no gRPC: the runner's listener fills them (simulator/listener.py), the
scoring, the wake-word figures and the report read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReceivedEvent:
    kind: str
    utterance_id: str
    audio_time: float
    arrived: float  # wall time (time.time()) when the client received it
    text: str = ""
    revision: int = 0
    reason: str = ""
    lattice_bytes: int = 0
    speech_start: float | None = None
    intent: str = ""
    score: float = 0.0  # on WAKE_WORD


@dataclass
class Utterance:
    """What the daemon made of one stretch of speech: its events, by kind."""

    id: str
    events: list[ReceivedEvent] = field(default_factory=list)

    def first(self, *kinds: str) -> ReceivedEvent | None:
        return next((e for e in self.events if e.kind in kinds), None)

    @property
    def start(self) -> float:
        e = self.first("SPEECH_STARTED")
        if e is not None and e.speech_start is not None:
            return e.speech_start
        return self.events[0].audio_time

    @property
    def end(self) -> float:
        decision = self.first("CONFIRMED", "FINAL_ENDPOINT")
        return decision.audio_time if decision else self.events[-1].audio_time


def group_utterances(events: list[ReceivedEvent]) -> list[Utterance]:
    """The events of each utterance; a WAKE_WORD stands alone (its id is its own), and
    notices about the source (AUDIO_OVERRUN, SOURCE_LOST ...: no utterance id) belong to
    no utterance."""
    by_id: dict[str, Utterance] = {}
    for e in events:
        if e.kind == "WAKE_WORD" or not e.utterance_id:
            continue
        by_id.setdefault(e.utterance_id, Utterance(e.utterance_id)).events.append(e)
    return sorted(by_id.values(), key=lambda u: u.start)


def wall_offset(events: list[ReceivedEvent]) -> float:
    """Wall time minus audio time for the stream: the smallest difference seen is the one
    with the least processing and delivery lag."""
    return min(e.arrived - e.audio_time for e in events)
