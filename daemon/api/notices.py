"""Notices: events about the daemon's own audio source rather than about an utterance.

The pipeline's events (daemon/pipeline.py) belong to utterances. What happens to the audio
before a pipeline hears it (the capture buffer overflowing because recognition was starved
of CPU, the device vanishing and coming back) reaches subscribers as a notice on the same
bus, in order with the utterances it affects, so that lost audio is never lost silently.
A notice is never dropped on the way to a client, as a final event is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class NoticeType(Enum):
    AUDIO_OVERRUN = "AUDIO_OVERRUN"
    SOURCE_LOST = "SOURCE_LOST"
    SOURCE_RESTORED = "SOURCE_RESTORED"

    # The bus and the finisher ask these of every event type (pipeline.EventType has them).
    @property
    def is_final(self) -> bool:
        return True

    @property
    def closes_utterance(self) -> bool:
        return False


@dataclass
class Notice:
    type: NoticeType
    audio_time: float  # the source's stream seconds when it was noticed
    reason: str = ""
    overruns: int = 0  # on AUDIO_OVERRUN: the source's overruns since the start
    lost_audio_s: float = 0.0  # on AUDIO_OVERRUN: audio lost since the previous notice
    wall_time: float = field(default_factory=time.time)
    utterance_id: str = ""  # a notice belongs to no utterance


class OverrunWatch:
    """Turns a source's overrun counters into AUDIO_OVERRUN notices.

    Called after every piece; while audio keeps being lost (a CPU starved for a minute) it
    says so at most once every `interval_s` of wall time, each notice carrying the audio
    lost since the one before, so a long starvation is neither silent nor a flood.
    """

    def __init__(self, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.notices = 0
        self.lost_audio_s = 0.0  # all the audio lost, as reported so far
        self._overruns = 0
        self._seen_lost_s = 0.0
        self._last_notice: float | None = None

    def check(self, overruns: int, lost_audio_s: float, audio_time: float) -> Notice | None:
        if overruns <= self._overruns:
            return None
        pending = lost_audio_s - self._seen_lost_s
        now = self.clock()
        if self._last_notice is not None and now - self._last_notice < self.interval_s:
            return None  # told less than a second ago; this loss goes into the next notice
        self._overruns, self._seen_lost_s, self._last_notice = overruns, lost_audio_s, now
        self.notices += 1
        self.lost_audio_s = lost_audio_s
        return Notice(NoticeType.AUDIO_OVERRUN, audio_time, overruns=overruns,
                      lost_audio_s=pending,
                      reason=f"recognition fell behind the audio and {pending:.2f} s of it "
                             f"was lost ({overruns} buffer overruns since the start)")
