"""Fan-out of pipeline events to subscribers, without ever stalling recognition.

The recognition worker calls `publish`, which only appends to each subscriber's queue
under that queue's lock: it never waits for a reader. Each queue is bounded. When one is
full, PARTIAL events give way (the oldest partial first, and a new partial when the queue
holds nothing else); they are counted per subscriber and in total, and the next event the
subscriber does receive says how many were dropped just before it. Final events (every
other type) are never dropped: a queue full of them grows past its bound, and a
subscriber that lets `max_backlog` of them pile up is disconnected with a reason instead
of growing without end.

    sub = bus.subscribe(partials=True)
    while True:
        delivery = sub.get(timeout=1.0)     # None when the timeout passed
        ...                                 # raises SubscriptionClosed once it ended
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from edge_asr.daemon.api.notices import Notice
from edge_asr.daemon.pipeline import Event

DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_BACKLOG = 10_000


class SubscriptionClosed(Exception):
    """The subscription has ended and its queue is empty; `reason` says why."""

    def __init__(self, reason: str, disconnected: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.disconnected = disconnected  # the bus cut the subscriber off (it fell behind)


@dataclass(frozen=True)
class Delivery:
    event: Event | Notice
    dropped_before: int  # partials dropped for this subscriber since its previous delivery


class _Entry:
    """A queued event and the partials dropped right before it (mutable: drops add up)."""

    __slots__ = ("event", "dropped_before")

    def __init__(self, event: Event | Notice, dropped_before: int) -> None:
        self.event = event
        self.dropped_before = dropped_before


class Subscription:
    """One subscriber's bounded queue. Created by `EventBus.subscribe`."""

    def __init__(self, bus: EventBus, partials: bool, max_queue: int, max_backlog: int) -> None:
        self.partials = partials
        self.max_queue = max_queue
        self.max_backlog = max_backlog
        self.dropped = 0  # partials dropped for this subscriber
        self.over_bound = 0  # finals queued past max_queue
        self.delivered = 0
        self._bus = bus
        self._queue: deque[_Entry] = deque()
        self._queued_partials = 0
        self._pending_drops = 0  # dropped partials not yet attributed to a queued event
        self._cond = threading.Condition(threading.Lock())
        self._ended: SubscriptionClosed | None = None

    # -- reader side -------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next event, waiting up to `timeout` seconds (None: until one comes).

        Returns None on timeout. Once the subscription has ended and everything queued
        before the end was read, raises SubscriptionClosed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._ended is not None, timeout)
            if self._queue:
                entry = self._queue.popleft()
                if not entry.event.type.is_final:
                    self._queued_partials -= 1
                self.delivered += 1
                return Delivery(entry.event, entry.dropped_before)
            if self._ended is not None:
                raise self._ended
            return None

    def close(self, reason: str = "the subscriber closed the subscription") -> None:
        """Ends the subscription now, discarding what is queued; wakes a waiting get()."""
        self._end(SubscriptionClosed(reason), discard=True)

    def end(self, reason: str) -> None:
        """Ends the subscription after what is queued: get() returns that, then raises."""
        self._end(SubscriptionClosed(reason), discard=False)

    @property
    def closed(self) -> bool:
        return self._ended is not None

    @property
    def reason(self) -> str | None:
        return None if self._ended is None else self._ended.reason

    @property
    def backlog(self) -> int:
        """Events queued and not yet read."""
        with self._cond:
            return len(self._queue)

    # -- bus side ----------------------------------------------------------------------

    def _end(self, closed: SubscriptionClosed, discard: bool) -> None:
        with self._cond:
            if self._ended is not None:
                return
            self._ended = closed
            if discard:
                self._queue.clear()
                self._queued_partials = 0
            self._cond.notify_all()
        self._bus._remove(self)

    def _offer(self, event: Event | Notice) -> tuple[int, bool]:
        """Queues `event`; returns (partials dropped, whether it went past the bound)."""
        partial = not event.type.is_final
        if partial and not self.partials:
            return 0, False
        with self._cond:
            if self._ended is not None:
                return 0, False
            dropped, over = 0, False
            if len(self._queue) >= self.max_queue:
                if self._queued_partials:
                    self._drop_oldest_partial()
                    dropped = 1
                elif partial:  # nothing older may give way, so the new partial does
                    self._pending_drops += 1
                    self.dropped += 1
                    return 1, False
                elif len(self._queue) >= self.max_backlog:
                    self._disconnect()
                    return 0, False
                else:
                    over = True
                    self.over_bound += 1
            self._queue.append(_Entry(event, self._pending_drops))
            self._pending_drops = 0
            self._queued_partials += int(partial)
            self._cond.notify()
            return dropped, over

    def _drop_oldest_partial(self) -> None:
        queue = self._queue
        i = next(i for i, e in enumerate(queue) if not e.event.type.is_final)
        gone = queue[i]
        del queue[i]
        self._queued_partials -= 1
        self.dropped += 1
        carried = gone.dropped_before + 1  # its own earlier drops move on with it
        if i < len(queue):
            queue[i].dropped_before += carried
        else:
            self._pending_drops += carried

    def _disconnect(self) -> None:
        """Called with the lock held, from _offer: the subscriber stopped reading."""
        reason = (f"disconnected: the subscriber fell {len(self._queue)} final events "
                  f"behind (the limit is {self.max_backlog}); it does not read its events")
        self._ended = SubscriptionClosed(reason, disconnected=True)
        self._queue.clear()
        self._queued_partials = 0
        self._cond.notify_all()
        self._bus._disconnected(self)


class EventBus:
    """Delivers every published event to every subscriber, each through its own queue."""

    def __init__(self, max_queue: int = DEFAULT_MAX_QUEUE,
                 max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if max_backlog < max_queue:
            raise ValueError(f"max_backlog ({max_backlog}) must be at least max_queue "
                             f"({max_queue})")
        self.max_queue = max_queue
        self.max_backlog = max_backlog
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._closed = False
        self.published = 0
        self.dropped = 0  # partials dropped, over all subscribers ever
        self.over_bound = 0  # finals queued past a subscriber's bound
        self.disconnected = 0  # subscribers cut off for falling behind

    def subscribe(self, partials: bool = True) -> Subscription:
        """A new subscriber, from the next published event on (an ended one if the bus
        is closed)."""
        sub = Subscription(self, partials, self.max_queue, self.max_backlog)
        with self._lock:
            closed = self._closed
            if not closed:
                self._subs.append(sub)
        if closed:
            sub.end("the event source has ended")
        return sub

    def publish(self, event: Event | Notice) -> None:
        """Queues `event` (a pipeline event, or a notice about the source) for every
        subscriber; never waits for any of them."""
        with self._lock:
            subs = list(self._subs)
            self.published += 1
        dropped = over = 0
        for sub in subs:
            d, o = sub._offer(event)
            dropped += d
            over += o
        if dropped or over:
            with self._lock:
                self.dropped += dropped
                self.over_bound += over

    def close(self, reason: str = "the event source has ended") -> None:
        """No more events: subscribers read what is queued, then their get() ends."""
        with self._lock:
            self._closed = True
            subs = list(self._subs)
        for sub in subs:
            sub.end(reason)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"published": self.published, "dropped_partials": self.dropped,
                    "finals_over_bound": self.over_bound,
                    "subscribers_disconnected": self.disconnected,
                    "subscribers": len(self._subs)}

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _disconnected(self, sub: Subscription) -> None:
        # Called under the subscription's lock; the bus lock is taken after it, never
        # before it (publish releases the bus lock before offering), so no deadlock.
        with self._lock:
            self.disconnected += 1
            if sub in self._subs:
                self._subs.remove(sub)
