"""The simulated client: it sets the session's context on the daemon, subscribes, and
stamps every event with the wall time it arrived, until the daemon closes the stream.

The events' audio times also drive the scenario's clock (`ScenarioClock`), which the
network emulator's outage windows are timed by.
"""

from __future__ import annotations

import subprocess
import threading
import time

import grpc

from edge_asr.daemon.api.client import wait_for_socket
from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc
from edge_asr.simulator.process_stats import process_cpu_seconds
from edge_asr.simulator.received_events import ReceivedEvent

_E = edge_asr_pb2.EventType


class ScenarioClock:
    """The scenario's time, for the network emulator's outage windows: the audio time of the
    latest event, running on with the wall clock when the audio is paced in real time."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._audio, self._wall = 0.0, time.monotonic()
        self._lock = threading.Lock()

    def observe(self, audio_time: float) -> None:
        with self._lock:
            if audio_time >= self._audio:
                self._audio, self._wall = audio_time, time.monotonic()

    def __call__(self) -> float:
        with self._lock:
            if self.realtime:
                return self._audio + time.monotonic() - self._wall
            return self._audio


def _received(event) -> ReceivedEvent:
    return ReceivedEvent(
        kind=_E.Name(event.type), utterance_id=event.utterance_id,
        audio_time=event.audio_time, arrived=time.time(), text=event.text,
        revision=event.revision, reason=event.reason,
        lattice_bytes=event.lattice.ByteSize() if event.HasField("lattice") else 0,
        speech_start=event.speech_start if event.HasField("speech_start") else None,
        intent=event.intent.name, score=event.score)


def listen(socket: str, context: edge_asr_pb2.ContextLists, clock: ScenarioClock,
           daemon: subprocess.Popen) -> tuple[list[ReceivedEvent], float]:
    """Set the context, then collect every event until the daemon closes the stream.
    Returns the events and the daemon's CPU seconds when it began to serve."""
    if not wait_for_socket(daemon, socket, timeout=60):
        raise RuntimeError(f"the daemon did not start (exit status {daemon.poll()})")
    cpu_at_start = process_cpu_seconds(daemon.pid)
    events = []
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = edge_asr_pb2_grpc.EdgeAsrStub(channel)
        stub.SetContext(context, timeout=60, wait_for_ready=True)
        for event in stub.Subscribe(edge_asr_pb2.SubscribeRequest(partials=True)):
            clock.observe(event.audio_time)
            if event.type != _E.PARTIAL:
                events.append(_received(event))
    return events, cpu_at_start
