"""A subscriber that outlives the daemon: when the daemon goes away (killed, restarted by
systemd, upgraded) it subscribes again as soon as a daemon serves, and first says which
utterances it had seen start and never saw close.

A daemon killed with SIGKILL cannot tell anyone what it was in the middle of, and its
successor starts from nothing; only the client knows what it was waiting for. So the
follower yields an UTTERANCE_LOST event for each such utterance (its id, the last text
and audio time seen, and why) before the events of the new subscription: nothing in
flight disappears silently.

    follower = Follower(lambda: channel_for(socket, None, options=RECONNECT_OPTIONS))
    for event in follower.events():        # edge_asr_pb2.Event, UTTERANCE_LOST included
        ...                                # follower.stop() from another thread ends it
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc

from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc

# gRPC's own reconnection backs off up to 120 s; a restarted daemon is back in seconds.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                     ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000)]
_CLOSING = (edge_asr_pb2.RESCORED, edge_asr_pb2.ON_DEVICE_FINAL)
# Not a break to ride out: the daemon refused this client; subscribing again cannot help.
_FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
          grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT)


class Follower:
    def __init__(self, connect: Callable[[], grpc.Channel], partials: bool = True,
                 retry_s: float = 0.1, retry_max_s: float = 2.0,
                 on_break: Callable[[str], None] | None = None) -> None:
        self.connect = connect
        self.partials = partials
        self.retry_s, self.retry_max_s = retry_s, retry_max_s
        self.on_break = on_break  # told why, each time the subscription broke
        self.breaks = 0
        self.subscriptions = 0
        self.lost = 0  # UTTERANCE_LOST events yielded
        self._open: dict[str, edge_asr_pb2.Event] = {}  # latest event of each open utterance
        self._stopped = threading.Event()
        self._call: grpc.Call | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Ends events() from any thread: the current call is cancelled."""
        self._stopped.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def events(self) -> Iterator[edge_asr_pb2.Event]:
        delay = self.retry_s
        while not self._stopped.is_set():
            with self.connect() as channel:
                stub = edge_asr_pb2_grpc.EdgeAsrStub(channel)
                try:
                    # wait_for_ready: while no daemon serves, the call waits instead of failing
                    call = stub.Subscribe(edge_asr_pb2.SubscribeRequest(partials=self.partials),
                                          wait_for_ready=True)
                    with self._lock:
                        self._call = call
                    if self._stopped.is_set():
                        call.cancel()
                    self.subscriptions += 1
                    for event in call:
                        delay = self.retry_s
                        self._track(event)
                        yield event
                    why = "the daemon ended the subscription"
                except grpc.RpcError as e:
                    if self._stopped.is_set():
                        return
                    if e.code() in _FATAL:
                        raise
                    why = f"{e.code().name}: {e.details()}"
                finally:
                    with self._lock:
                        self._call = None
            self.breaks += 1
            yield from self._report_lost(why)
            if self.on_break is not None:
                self.on_break(why)
            if self._stopped.wait(delay):
                return
            delay = min(self.retry_max_s, delay * 2)

    def _track(self, event: edge_asr_pb2.Event) -> None:
        if not event.utterance_id or event.type == edge_asr_pb2.WAKE_WORD:
            return  # a notice, or a wake word: neither is an utterance that closes
        if event.type in _CLOSING:
            self._open.pop(event.utterance_id, None)
        else:
            self._open[event.utterance_id] = event

    def _report_lost(self, why: str) -> Iterator[edge_asr_pb2.Event]:
        for utterance_id, last in self._open.items():
            self.lost += 1
            yield edge_asr_pb2.Event(
                type=edge_asr_pb2.UTTERANCE_LOST, utterance_id=utterance_id,
                text=last.text, audio_time=last.audio_time, wall_time=time.time(),
                reason=f"the connection to the daemon broke before this utterance closed "
                       f"({why}); it will not be closed")
        self._open.clear()
