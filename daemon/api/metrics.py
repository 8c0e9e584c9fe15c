"""Prometheus metrics of the daemon (prometheus-client), served on a loopback port.

Each daemon owns its own CollectorRegistry, so several daemons in one test process never
share counters (no global mutable state outside the daemon's own objects).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from edge_asr.daemon.pipeline import Event, EventType

_LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events = Counter("edge_asr_events", "Events emitted, by type", ["type"], registry=r)
        self.utterances = Counter("edge_asr_utterances", "Utterances started", registry=r)
        self.resets = Counter("edge_asr_resets", "Speculative end-points revised", registry=r)
        # Decision delay after the VAD's last speech frame: the live stand-in for end-point
        # latency (eval measures it against the true end of speech).
        self.speculative_delay = Histogram(
            "edge_asr_speculative_endpoint_delay_seconds",
            "Speculative end-point decision after the last speech frame",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.final_delay = Histogram(
            "edge_asr_final_endpoint_delay_seconds",
            "Final end-point decision after the last speech frame",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.rtf = Gauge("edge_asr_real_time_factor",
                         "CPU seconds per audio second of the recognition worker", registry=r)
        self.audio_seconds = Counter("edge_asr_audio_seconds", "Audio processed", registry=r)
        self.overruns = Gauge("edge_asr_capture_overruns",
                              "Capture ring-buffer overruns (audio dropped)", registry=r)
        self.dropped_partials = Gauge("edge_asr_dropped_partials",
                                      "Partial results dropped for slow subscribers", registry=r)
        self.subscribers = Gauge("edge_asr_subscribers", "Connected subscribers", registry=r)
        self.queue_depth = Gauge("edge_asr_capture_queue_seconds",
                                 "Audio waiting in the capture ring buffer", registry=r)
        self.lattice_bytes = Counter("edge_asr_lattice_bytes", "Lattice bytes produced",
                                     registry=r)
        self.bytes_per_utterance = Histogram(
            "edge_asr_cloud_bytes_per_utterance", "Lattice bytes sent to the cloud per utterance",
            buckets=(0, 100, 200, 400, 800, 1600, 3200, 6400, 12800), registry=r)
        self.cloud_bytes_sent = Gauge("edge_asr_cloud_bytes_sent",
                                      "Bytes of lattices sent to the cloud", registry=r)
        self.cloud_connected = Gauge("edge_asr_cloud_connected",
                                     "1 while a cloud session is up", registry=r)

    def observe_event(self, event: Event, speech_end: float | None) -> None:
        self.events.labels(event.type.value).inc()
        if event.type is EventType.SPEECH_STARTED:
            self.utterances.inc()
        elif event.type is EventType.RESET:
            self.resets.inc()
        if speech_end is not None:
            delay = max(0.0, event.audio_time - speech_end)
            if event.type is EventType.SPECULATIVE_ENDPOINT:
                self.speculative_delay.observe(delay)
            elif event.type in (EventType.CONFIRMED, EventType.FINAL_ENDPOINT):
                self.final_delay.observe(delay)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (0 picks a free one)."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_address[1]
