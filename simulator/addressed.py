"""What the device did with speech addressed to it and with speech that was not.

A request is addressed to the device (with a wake word: the phrase, then the request);
everything another source says (a TV, a second person; simulator/talkers.py) is not. From
the events a client received this finds:

- the WAKE_WORD events at each request's phrase, and those anywhere else: false wakes;
- the daemon's utterances over nothing but other speech: what the device recognised, and
  sent to the cloud as lattices, of speech nobody addressed to it. With a wake word that
  should be nothing at all.

Times are the session's audio seconds; an event belongs to a request when it falls within
`slack` of the request's speech, from the start of its phrase to its end, as the scoring's
matching of utterances does (simulator/scoring.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_asr.simulator.room import Request
from edge_asr.simulator.talkers import Spoken

if TYPE_CHECKING:
    from edge_asr.simulator.received_events import ReceivedEvent, Utterance

SLACK_S = 0.5


def _at(t: float, r: Request, slack: float) -> bool:
    return r.start - slack <= t <= r.speech_end + slack


def wake_time(e: ReceivedEvent) -> float:
    """Where the phrase the event reports began (or, without that, when it was heard)."""
    return e.speech_start if e.speech_start is not None else e.audio_time


def wakes_by_request(requests: list[Request], wakes: list[ReceivedEvent],
                     slack: float = SLACK_S) -> tuple[dict[int, ReceivedEvent], list]:
    """The first WAKE_WORD at each request (by request index), and the false wakes: those
    at no request."""
    at: dict[int, ReceivedEvent] = {}
    false = []
    for e in wakes:
        r = next((r for r in requests if _at(wake_time(e), r, slack)), None)
        if r is None:
            false.append(e)
        else:
            at.setdefault(r.index, e)
    return at, false


def non_addressed(unmatched: list[Utterance], others: list[Spoken],
                  slack: float = SLACK_S) -> list[dict]:
    """Of the utterances that overlap no request, those over another source's speech: one
    row each with what the device made of it and what it sent."""
    rows = []
    for u in unmatched:
        heard = [o for o in others
                 if min(u.end, o.speech_end + slack) > max(u.start, o.speech_start - slack)]
        if not heard:
            continue
        decision = u.first("CONFIRMED", "FINAL_ENDPOINT")
        result = u.first("RESCORED", "ON_DEVICE_FINAL")
        lattices = [e for e in u.events if e.lattice_bytes]
        rows.append({"utterance_id": u.id, "start": round(u.start, 3), "end": round(u.end, 3),
                     "labels": sorted({o.label for o in heard}),
                     "heard": [o.text for o in heard],
                     "hypothesis": decision.text if decision else "",
                     "lattices": len(lattices),
                     "lattice_bytes": sum(e.lattice_bytes for e in lattices),
                     "result": result.kind if result else None})
    return rows


def addressed_figures(rows: list[dict], requests: list[Request], wakes: list[ReceivedEvent],
                      others: list[dict], duration: float, wake_word: bool,
                      has_others: bool) -> dict:
    """The summary's wake-word and other-speech figures. `rows` are the scoring's request
    rows ("woken" set with a wake word); only the figures that apply are given."""
    out: dict = {}
    if wake_word:
        _, false = wakes_by_request(requests, wakes)
        out["woken"] = round(sum(r["woken"] for r in rows) / len(rows), 4) if rows else None
        out["wake_words"] = len(wakes)
        out["false_wakes"] = len(false)
        out["false_wakes_per_hour"] = round(len(false) * 3600 / duration, 2) if duration else None
    if has_others:
        out["non_addressed_utterances"] = len(others)
        out["non_addressed_sent"] = sum(o["lattices"] > 0 for o in others)
        out["non_addressed_lattices"] = sum(o["lattices"] for o in others)
        out["non_addressed_bytes"] = sum(o["lattice_bytes"] for o in others)
    return out


def mark_wakes(rows: list[dict], requests: list[Request], wakes: list[ReceivedEvent],
               slack: float = SLACK_S) -> None:
    """Each request's row gets the WAKE_WORD at it (`wake_time`, `wake_score`) and `woken`:
    the phrase was heard and the request recognised (an utterance of its own)."""
    at, _ = wakes_by_request(requests, wakes, slack)
    for row, r in zip(rows, requests, strict=True):
        e = at.get(r.index)
        row["wake_time"] = None if e is None else round(e.audio_time, 3)
        row["wake_score"] = None if e is None else round(e.score, 4)
        row["woken"] = e is not None and row["utterances"] > 0
