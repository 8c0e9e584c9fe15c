"""Scores what the client saw: the daemon's utterances matched to the requests by time, one
row per request with the same definitions as `edge-asr eval` (models/evaluate.py
`summarize`), and the session's summary with the simulator's own figures beside eval's.

With a wake word or other speech in the room, its WAKE_WORD events and what the daemon made
of speech nobody addressed to it are counted too (simulator/addressed.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edge_asr.daemon.api.proto import edge_asr_pb2
from edge_asr.daemon.text import normalize_text
from edge_asr.models.evaluate import names_in, summarize, word_error_rate
from edge_asr.simulator.addressed import addressed_figures, mark_wakes, non_addressed
from edge_asr.simulator.received_events import (
    ReceivedEvent,
    Utterance,
    group_utterances,
    wall_offset,
)
from edge_asr.simulator.room import Request, Session
from edge_asr.simulator.scenario import Scenario

_E = edge_asr_pb2.EventType
_RESULTS = (_E.RESCORED, _E.ON_DEVICE_FINAL)
_DECISIONS = (_E.CONFIRMED, _E.FINAL_ENDPOINT)


@dataclass
class Matching:
    owned: dict[int, list[Utterance]]  # utterances whose words count for the request
    covering: dict[int, list[Utterance]]  # every utterance that overlaps it
    spurious: list[Utterance]  # utterances that overlap no request (noise taken for speech)


def match(requests: list[Request], utterances: list[Utterance], slack: float = 0.5) -> Matching:
    """Each daemon utterance's words go to the request its speech overlaps most (within
    `slack` seconds of it). An utterance that runs over several requests (in babble the VAD
    may hear speech throughout) also covers the others: they were heard, merged into it.
    A request spans its wake phrase too, which a daemon without the wake word hears as
    words (and may end an utterance after)."""
    owned: dict[int, list[Utterance]] = {r.index: [] for r in requests}
    covering: dict[int, list[Utterance]] = {r.index: [] for r in requests}
    spurious = []
    for u in utterances:
        best, best_overlap = None, 0.0
        for r in requests:
            overlap = min(u.end, r.speech_end + slack) - max(u.start, r.start - slack)
            if overlap > 0:
                covering[r.index].append(u)
            if overlap > best_overlap:
                best, best_overlap = r, overlap
        if best is None:
            spurious.append(u)
        else:
            owned[best.index].append(u)
    return Matching(owned, covering, spurious)


def score_request(r: Request, owned: list[Utterance], covering: list[Utterance],
                  wall_offset: float | None, phrase_in_reference: bool = False) -> dict:
    """One request's row, with eval's keys and definitions (see models/evaluate.py). A
    request merged into another's utterance has no words of its own; its end-points and
    result are those of the utterance that swallowed it. With `phrase_in_reference` (a wake
    phrase said to a daemon that does not wait for it) the phrase is among the words it
    should hear."""
    reference = normalize_text(r.said if phrase_in_reference else r.text)
    timed = owned or covering
    decisions = [u.first(*(_E.Name(k) for k in _DECISIONS)) for u in timed]
    results = [u.first(*(_E.Name(k) for k in _RESULTS)) for u in timed]
    hypothesis = normalize_text(" ".join(
        d.text for u, d in zip(timed, decisions, strict=True) if d and d.text and u in owned))
    delivered = normalize_text(" ".join(
        x.text for u, x in zip(timed, results, strict=True) if x and x.text and u in owned))
    spec = timed[0].first("SPECULATIVE_ENDPOINT") if timed else None
    spoken = names_in(reference, r.context_names)
    perceived = None
    if wall_offset is not None and results and results[-1] is not None:
        # the request's answer is complete when its last utterance's result arrives
        perceived = results[-1].arrived - (r.speech_end + wall_offset)
    rescored = all(x is not None and x.kind == "RESCORED" for x in results) and bool(results)
    return {
        "index": r.index, "audio_filepath": r.source, "text": reference,
        "utterance_ids": [u.id for u in timed],  # the daemon utterances behind this row
        "hypothesis": hypothesis,
        "rescored": delivered if rescored else None,
        "delivered": delivered,
        "speculative_endpoint": spec.audio_time if spec else None,
        "final_endpoint": decisions[0].audio_time if decisions and decisions[0] else None,
        "reset": any(u.first("RESET") for u in owned),
        "lattice_bytes": sum(e.lattice_bytes for u in owned for e in u.events),
        "utterances": len(owned),
        "cpu_seconds": 0.0,  # the daemon's CPU is measured for the whole session
        "duration": round(r.speech_end - r.speech_start, 3),
        "speech_start": round(r.speech_start, 3), "speech_end": round(r.speech_end, 3),
        "phrase_start": None if r.phrase_start is None else round(r.phrase_start, 3),
        "phrase_end": None if r.phrase_end is None else round(r.phrase_end, 3),
        "tags": r.tags,
        "context_names": spoken,
        "context_names_recognized": [n for n in spoken if names_in(hypothesis, [n])],
        "result_kinds": [x.kind if x else None for x in results],
        "result_reasons": [x.reason for x in results if x and x.reason],
        "intent": next((x.intent for x in results if x and x.intent), ""),
        "missed": not timed,
        "merged": not owned and bool(covering),
        "lost": any(x is None for x in results),
        "perceived_latency": None if perceived is None else round(perceived, 3),
    }


def score_session(scenario: Scenario, session: Session, events: list[ReceivedEvent],
                  cpu: float) -> tuple[list[dict], dict, list[dict]]:
    """The rows (one per request), the summary, and the rows of speech not addressed to the
    device (addressed.non_addressed), from the events of one run and the daemon's CPU
    seconds over it."""
    utterances = group_utterances(events)
    matching = match(session.requests, utterances)
    offset = wall_offset(events) if scenario.realtime and events else None
    listening = scenario.listens_for_wake_word
    rows = [score_request(r, matching.owned[r.index], matching.covering[r.index], offset,
                          phrase_in_reference=not listening)
            for r in session.requests]
    wakes = [e for e in events if e.kind == "WAKE_WORD"]
    if listening:
        mark_wakes(rows, session.requests, wakes)
    others = non_addressed(matching.spurious, session.others)
    summary = dataclasses.asdict(summarize(rows))
    summary["rtf"] = round(cpu / session.duration, 4)
    summary["daemon_cpu_seconds"] = round(cpu, 2)
    # utterances over another source's speech are counted as that, not as noise
    summary.update(_simulator_figures(rows, matching.spurious, len(others)))
    summary.update(addressed_figures(rows, session.requests, wakes, others, session.duration,
                                     listening, bool(scenario.room.other_speech)))
    if offset is not None:
        # how far behind the audio the daemon's decisions reach the client: CPU contention
        # and a slow device show here first
        lags = [e.arrived - offset - e.audio_time for e in events
                if e.kind in ("CONFIRMED", "FINAL_ENDPOINT")]
        summary["decision_lag_p50"] = _median(lags)
        summary["decision_lag_p90"] = round(float(np.percentile(lags, 90)), 3) if lags else None
    return rows, summary, others


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 3) if values else None


def _simulator_figures(rows: list[dict], spurious: list[Utterance],
                       over_other_speech: int = 0) -> dict:
    perceived = [r["perceived_latency"] for r in rows if r["perceived_latency"] is not None]
    kinds = [k for r in rows for k in r["result_kinds"] if k]
    return {
        # what the user got, whether the cloud rescored it or the device answered alone
        "delivered_wer": word_error_rate([r["text"] for r in rows],
                                         [r["delivered"] for r in rows]),
        "lost": sum(r["lost"] for r in rows),
        "missed": sum(r["missed"] for r in rows),
        "merged": sum(r["merged"] for r in rows),
        "spurious": len(spurious) - over_other_speech,
        "rescored_results": kinds.count("RESCORED"),
        "on_device_finals": kinds.count("ON_DEVICE_FINAL"),
        "perceived_p50": _median(perceived),
        "perceived_p90": round(float(np.percentile(perceived, 90)), 3) if perceived else None,
    }
