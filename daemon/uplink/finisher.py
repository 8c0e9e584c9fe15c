"""Closes every utterance with exactly one RESCORED or ON_DEVICE_FINAL (ARCHITECTURE.md,
"Events and the two end-pointers").

Sits between a pipeline and whoever receives its events (the bus, a Recognize call, eval):

- SPECULATIVE_ENDPOINT: lattice revision 1 goes to the cloud at once, so the rescoring
  runs while the final end-pointer still listens. A result for revision 1 that arrives
  before the final decision is kept, and becomes RESCORED the moment CONFIRMED says
  revision 1 stands: that is the latency the speculative end-point buys.
- RESET: the cloud is told to cancel; a kept result for revision 1 is dropped.
- FINAL_ENDPOINT: revision 2 goes to the cloud.
- CONFIRMED / FINAL_ENDPOINT start the answer deadline. The cloud's answer for the standing
  revision before it -> RESCORED; none (cloud down, slow, or refusing) -> ON_DEVICE_FINAL
  with the device's own n-best. Answers for any other revision, or after the deadline,
  are stale: dropped and counted. Without a cloud link (local-only) ON_DEVICE_FINAL
  follows the final decision at once.

Events are emitted under one lock, so a client sees them in this order whichever thread
(pipeline, cloud link, deadline timer) produced them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge_asr.daemon.pipeline import Event, EventType
from edge_asr.daemon.uplink.cloud_link import CloudLink, CloudResult

_FINAL_DECISIONS = (EventType.CONFIRMED, EventType.FINAL_ENDPOINT)


@dataclass
class _Open:
    """An utterance past its speculative end-point, not yet closed."""

    revision: int
    text: str
    nbest: list[tuple[str, float]]
    decision: Event | None = None  # CONFIRMED or FINAL_ENDPOINT, once taken
    early: CloudResult | None = None  # an answer that came before the decision
    timer: threading.Timer | None = None


@dataclass
class FinisherCounters:
    rescored: int = 0
    on_device: int = 0
    stale_results: int = 0  # answers for a withdrawn revision, an unknown or closed utterance
    early_results: int = 0  # answers that were ready when the final decision came
    timeouts: int = 0


@dataclass
class Finisher:
    emit: Callable[[Event], None]
    link: CloudLink | None = None
    deadline_s: float = 0.5
    counters: FinisherCounters = field(default_factory=FinisherCounters)

    def __post_init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)

    # -- the pipeline's side -------------------------------------------------------------

    def process(self, events: Iterable[Event]) -> None:
        for event in events:
            with self._lock:
                self.emit(event)
                self._follow(event)

    def _follow(self, event: Event) -> None:
        utt = event.utterance_id
        kind = event.type
        if kind is EventType.SPECULATIVE_ENDPOINT or kind is EventType.FINAL_ENDPOINT:
            state = self._open.setdefault(utt, _Open(event.revision, event.text, event.nbest))
            state.revision, state.text, state.nbest = event.revision, event.text, event.nbest
            if self.link is not None and event.lattice is not None:
                self.link.upload(event.lattice, self.on_result, event.contacts)
        elif kind is EventType.RESET:
            if utt in self._open:
                self._open[utt].early = None
            if self.link is not None:
                self.link.reset(utt)
        if kind in _FINAL_DECISIONS and utt in self._open:
            if kind is EventType.CONFIRMED and self.link is not None:
                self.link.confirm(utt, event.revision)
            self._decided(utt, event)

    def _decided(self, utt: str, decision: Event) -> None:
        state = self._open[utt]
        state.decision = decision
        if self.link is None:
            self._close(utt, self._on_device(state, "local-only"))
        elif state.early is not None and state.early.revision == state.revision:
            self.counters.early_results += 1
            self._close(utt, self._rescored(state, state.early))
        else:
            state.timer = threading.Timer(self.deadline_s, self._deadline, (utt, state))
            state.timer.daemon = True
            state.timer.start()

    # -- the cloud's side ----------------------------------------------------------------

    def on_result(self, result: CloudResult) -> None:
        with self._lock:
            state = self._open.get(result.utterance_id)
            if state is None or result.revision != state.revision:
                self.counters.stale_results += 1
            elif state.decision is None:
                state.early = result
            else:
                state.timer.cancel()
                self._close(result.utterance_id, self._rescored(state, result))

    def _deadline(self, utt: str, state: _Open) -> None:
        with self._lock:
            if self._open.get(utt) is not state:
                return  # answered just before the timer fired
            self.counters.timeouts += 1
            connected = self.link is not None and self.link.connected
            if connected:
                self.link.missed_answer()
            self._close(utt, self._on_device(state, "cloud late" if connected
                                             else "cloud unreachable"))

    # -- closing -------------------------------------------------------------------------

    def _rescored(self, state: _Open, result: CloudResult) -> Event:
        self.counters.rescored += 1
        return self._closing_event(state, EventType.RESCORED, result.nbest[0][0], result.nbest,
                                   "", result.intent, result.slots)

    def _on_device(self, state: _Open, reason: str) -> Event:
        self.counters.on_device += 1
        return self._closing_event(state, EventType.ON_DEVICE_FINAL, state.text, state.nbest,
                                   reason)

    @staticmethod
    def _closing_event(state: _Open, kind: EventType, text: str,
                       nbest: list[tuple[str, float]], reason: str, intent: str = "",
                       slots: dict[str, str] | None = None) -> Event:
        decision = state.decision
        return Event(kind, decision.utterance_id, decision.audio_time, text=text,
                     revision=state.revision, nbest=list(nbest), reason=reason,
                     speech_start=decision.speech_start, intent=intent,
                     slots=dict(slots or {}), wall_time=time.time())

    def _close(self, utt: str, event: Event) -> None:
        del self._open[utt]
        if self.link is not None:
            self.link.forget(utt)
        self.emit(event)
        self._idle.notify_all()

    # -- for callers that must wait (a Recognize call ending, eval, shutdown) -------------

    @property
    def waiting(self) -> int:
        """Utterances decided and waiting for the cloud."""
        with self._lock:
            return sum(s.decision is not None for s in self._open.values())

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no decided utterance waits for the cloud (at most `timeout` s)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self.waiting:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Gives every waiting utterance its on-device final now (nothing is lost)."""
        with self._lock:
            for utt, state in list(self._open.items()):
                if state.decision is not None:
                    if state.timer is not None:
                        state.timer.cancel()
                    self._close(utt, self._on_device(state, "shutting down"))
