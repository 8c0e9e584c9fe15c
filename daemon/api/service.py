"""`edge-asr daemon`: the long-running device service.

One process: an audio source (microphone, files or none) -> a recognition worker thread
running the `Pipeline` -> the `EventBus` -> the gRPC client API (Unix socket and/or
loopback TCP), plus Prometheus metrics. Clients may also push their own audio
(`Recognize`), each call getting a pipeline of its own over the shared model.

Configuration: a TOML file (`--config`) whose tables mirror `DaemonConfig`, overridden by
command-line flags. SIGTERM / SIGINT stop the source, let the open utterance finish (up
to `shutdown_grace_s`), deliver its final events, then stop the server.

With a cloud address (`[cloud] address` or `--cloud`), lattices go to `edge-asr cloud`
over one `CloudLink`, and a `Finisher` per stream closes each utterance with RESCORED or,
when the cloud is down or late, ON_DEVICE_FINAL. `local_only` sends nothing at all.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_asr.daemon.api.bus import EventBus
from edge_asr.daemon.api.metrics import Metrics
from edge_asr.daemon.capture.sources import AudioSource, MicrophoneSource, PlaylistSource
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import StreamDriver
from edge_asr.daemon.endpointing.endpoint import EndpointConfig, Phase
from edge_asr.daemon.pipeline import Event, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.uplink.cloud_link import CloudLink, CloudLinkConfig
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.daemon.uplink.lattice import serialize


def default_socket() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return str(Path(runtime) / "edge-asr.sock")


@dataclass
class SourceConfig:
    kind: str = "microphone"  # "microphone", "files" or "none" (clients push audio)
    device: str = ""  # microphone name (substring) or index; "" = the default input
    files: list[str] = field(default_factory=list)
    realtime: bool = True  # pace files as a microphone would
    loop: bool = False
    gap_s: float = 1.5  # silence between files
    wait_for_subscriber: bool = False  # start playing once a client listens (demos, tests)


@dataclass
class ServerConfig:
    socket: str = field(default_factory=default_socket)  # "" disables the Unix socket
    tcp: str = ""  # e.g. "127.0.0.1:50051"; loopback only
    max_message_bytes: int = 1 << 20


@dataclass
class DaemonConfig:
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    cloud: CloudLinkConfig = field(default_factory=CloudLinkConfig)
    local_only: bool = False  # nothing leaves the device, even with a cloud address
    vad_mode: int = 2
    vad_noise_gate_db: float = 3.0  # a speech frame must be this far above the noise floor
    vad_level_gate: float = PipelineConfig.vad_level_gate  # ... and this share of the way
    # up to the speech level
    partials: bool = True
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    shutdown_grace_s: float = 3.0
    print_events: bool = False

    def pipeline_config(self, model_version: str, partials: bool | None = None
                        ) -> PipelineConfig:
        """What every pipeline of this daemon (and `transcribe`/`eval` given its TOML) runs
        with; `partials` overrides the configured setting."""
        return PipelineConfig(endpoint=self.endpoint, vad_mode=self.vad_mode,
                              vad_noise_gate_db=self.vad_noise_gate_db,
                              vad_level_gate=self.vad_level_gate,
                              partials=self.partials if partials is None else partials,
                              model_version=model_version)


def config_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """A dataclass from a TOML table; nested tables fill nested dataclasses, and an unknown
    key is an error that names it (a typo must not silently leave a default in force)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        sub = known[name].default_factory if known[name].default_factory is not \
            dataclasses.MISSING else None
        if isinstance(value, dict) and sub is not None and dataclasses.is_dataclass(sub):
            value = config_from_dict(sub, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path | None) -> DaemonConfig:
    """DaemonConfig from a TOML file (tables: recognizer, endpoint, source, server)."""
    if path is None:
        return DaemonConfig()
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return config_from_dict(DaemonConfig, data, str(path))


class Daemon:
    """Owns the model, the bus, the own-source pipeline and the worker thread."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.recognizer = Recognizer(config.recognizer)
        self.bus = EventBus()
        self.metrics = Metrics()
        self.pipeline_config = config.pipeline_config(Path(config.recognizer.model_dir).name)
        self.pipeline = self.new_pipeline("mic")
        self.link: CloudLink | None = None
        if config.cloud.address and not config.local_only:
            self.link = CloudLink(config.cloud).start()
        self._utterance_bytes: dict[str, int] = {}  # lattice bytes sent, per open utterance
        self._bytes_lock = threading.Lock()
        self.finisher = self.new_finisher(self._publish_one)
        self.source: AudioSource | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.driver = StreamDriver(self.pipeline, self.finisher)
        self._context_entries = 0

    # -- the Core protocol the gRPC servicer uses -------------------------------------

    def new_pipeline(self, source: str) -> Pipeline:
        return Pipeline(self.recognizer, self.pipeline_config, source=source)

    def new_finisher(self, emit: Callable[[Event], None]) -> Finisher:
        def observed(event: Event) -> None:
            self._count_bytes(event)
            emit(event)

        return Finisher(observed, self.link, self.config.cloud.answer_deadline_s)

    def _count_bytes(self, event: Event) -> None:
        """Lattice bytes per utterance, observed when the utterance closes."""
        with self._bytes_lock:
            if event.lattice is not None and self.link is not None:
                size = len(serialize(event.lattice))
                self._utterance_bytes[event.utterance_id] = \
                    self._utterance_bytes.get(event.utterance_id, 0) + size
            elif event.type.closes_utterance:
                sent = self._utterance_bytes.pop(event.utterance_id, 0)
                self.metrics.bytes_per_utterance.observe(sent)

    def set_context(self, context: dict[str, list[str]]) -> int:
        """Validates (ContextError names a bad entry) and applies from the next utterance."""
        from edge_asr.daemon.recognition.context_graph import context_entries

        entries = context_entries(context)
        self.pipeline.set_context(context if entries else None)
        self._context_entries = len(entries)
        return len(entries)

    def status(self) -> dict[str, Any]:
        source = self.config.source
        return {
            "uptime_s": time.monotonic() - self.started,
            "model": str(self.config.recognizer.model_dir),
            "model_version": self.pipeline_config.model_version,
            "utterances": self.pipeline.utterances,
            "subscribers": self.bus.subscribers,
            "dropped_partials": self.bus.dropped,
            "overruns": getattr(self.source, "overruns", 0),
            "context_entries": self._context_entries,
            "rtf": self.driver.cpu_seconds / self.driver.audio_seconds
            if self.driver.audio_seconds else 0.0,
            "source": source.kind if source.kind != "microphone" else
            f"microphone {source.device or '(default)'}",
            "audio_seconds": self.driver.audio_seconds,
            "rescored": self.finisher.counters.rescored,
            "on_device_finals": self.finisher.counters.on_device,
            "cloud_timeouts": self.finisher.counters.timeouts,
            "cloud_stale_results": self.finisher.counters.stale_results,
            **({"cloud_connected": float(self.link.connected),
                "cloud_bytes_sent": self.link.counters.bytes_sent,
                "cloud_sessions": self.link.counters.sessions,
                "cloud_outbox_drops": self.link.counters.outbox_drops}
               if self.link is not None else {}),
        }

    # -- the recognition worker ------------------------------------------------------

    def open_source(self) -> AudioSource | None:
        cfg = self.config.source
        if cfg.kind == "none":
            return None
        if cfg.kind == "files":
            return PlaylistSource(cfg.files, realtime=cfg.realtime, gap_s=cfg.gap_s,
                                  loop=cfg.loop)
        if cfg.kind == "microphone":
            device: str | int | None = cfg.device or None
            if isinstance(device, str) and device.isdigit():
                device = int(device)
            mic = MicrophoneSource(device)
            mic.start()
            return mic
        raise ValueError(f"unknown source kind {cfg.kind!r}: microphone, files or none")

    def start(self) -> None:
        if self.config.source.wait_for_subscriber:
            deadline = time.monotonic() + 30
            while self.bus.subscribers == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        self.source = self.open_source()
        if self.source is not None:
            self._worker = threading.Thread(target=self._run, name="recognition", daemon=True)
            self._worker.start()

    def _publish_one(self, event: Event) -> None:
        """Own-source events to metrics, subscribers and stdout (any thread: the cloud's
        answers and deadlines arrive on other threads than recognition)."""
        timing = self.pipeline.endpointer.timing
        self.metrics.observe_event(event, timing.speech_end if timing else None)
        if event.lattice is not None:
            self.metrics.lattice_bytes.inc(len(serialize(event.lattice)))
        self.bus.publish(event)
        if self.config.print_events:
            print(format_event(event), flush=True)

    def _run(self) -> None:
        stop_at: float | None = None
        try:
            for piece in self.source.pieces():
                self.driver.feed(piece)
                self.metrics.audio_seconds.inc(len(piece) / SAMPLE_RATE)
                self._update_gauges()
                if self._stop.is_set():
                    # Shutting down: let the open utterance reach its end-point first.
                    stop_at = stop_at or time.monotonic() + self.config.shutdown_grace_s
                    if self.pipeline.endpointer.phase is Phase.IDLE or \
                            time.monotonic() > stop_at:
                        break
        finally:
            self.driver.finish(self.config.cloud.answer_deadline_s + 0.5)
            self.bus.close()

    def _update_gauges(self) -> None:
        m = self.metrics
        if self.driver.audio_seconds:
            m.rtf.set(self.driver.cpu_seconds / self.driver.audio_seconds)
        m.subscribers.set(self.bus.subscribers)
        m.dropped_partials.set(self.bus.dropped)
        m.overruns.set(getattr(self.source, "overruns", 0))
        if self.link is not None:
            m.cloud_bytes_sent.set(self.link.counters.bytes_sent)
            m.cloud_connected.set(self.link.connected)

    def stop(self) -> None:
        """Stop taking audio; the worker finishes the open utterance, then ends."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(self.config.shutdown_grace_s + 2.0)
        if self.source is not None:
            self.source.close()
        if self.link is not None:
            self.link.close()

    def wait(self) -> None:
        if self._worker is not None:
            self._worker.join()


def format_event(event: Event) -> str:
    extra = ""
    if event.lattice is not None:
        extra = f" lattice rev {event.revision} ({len(event.lattice.arcs)} arcs)"
    if event.type.value == "PARTIAL":
        extra = f" [stable: {event.stable_prefix}]" if event.stable_prefix else ""
    return (f"{event.audio_time:8.2f}s {event.type.value:<21} {event.utterance_id:<8} "
            f"{event.text}{extra}")


def run_daemon(config: DaemonConfig) -> int:
    """Start everything, serve until SIGTERM/SIGINT (or the end of a non-looping playlist)."""
    from edge_asr.daemon.api.server import serve

    t0 = time.monotonic()
    daemon = Daemon(config)
    server_cfg = config.server
    server, port = serve(daemon, server_cfg.socket or None, server_cfg.tcp or None,
                         max_message_bytes=server_cfg.max_message_bytes)
    where = [f"unix:{server_cfg.socket}"] if server_cfg.socket else []
    if server_cfg.tcp:
        where.append(f"{server_cfg.tcp.rsplit(':', 1)[0]}:{port}")
    if config.metrics_port is not None:
        where.append(f"metrics http://127.0.0.1:{daemon.metrics.serve(config.metrics_port)}")
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"edge-asr daemon: {signal.Signals(signum).name}, finishing", flush=True)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"edge-asr daemon serving on {', '.join(where)} "
          f"(ready in {time.monotonic() - t0:.2f} s)", flush=True)
    daemon.start()
    worker = daemon._worker
    while not done.wait(0.2):
        if worker is not None and not worker.is_alive():
            break  # a playlist that does not loop has ended
    daemon.stop()
    server.stop(grace=1.0).wait()
    print("edge-asr daemon stopped", flush=True)
    return 0
