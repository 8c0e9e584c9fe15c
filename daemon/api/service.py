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
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_asr.daemon.api.bus import EventBus
from edge_asr.daemon.api.config import DaemonConfig
from edge_asr.daemon.api.metrics import Metrics
from edge_asr.daemon.api.notices import Notice, NoticeType, OverrunWatch
from edge_asr.daemon.capture.audio import AudioFormatError
from edge_asr.daemon.capture.capture_thread import CaptureThread
from edge_asr.daemon.capture.microphone import MicrophoneSource, refresh_devices
from edge_asr.daemon.capture.reference import open_reference
from edge_asr.daemon.capture.reopen import ReopeningSource
from edge_asr.daemon.capture.sources import AudioSource, AudioSourceError, PlaylistSource
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import StreamDriver
from edge_asr.daemon.endpointing.endpoint import Phase
from edge_asr.daemon.frontend.cleanup import MicFrontEnd, front_end
from edge_asr.daemon.pipeline import Event, Pipeline
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.uplink.cloud_link import CloudLink
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.daemon.uplink.lattice import serialize


class Daemon:
    """Owns the model, the bus, the own-source pipeline and the worker thread."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.recognizer = Recognizer(config.recognizer)
        self.bus = EventBus()
        self.metrics = Metrics()
        self._closings: dict[str, int] = {}  # closing events by type, of every stream
        self.pipeline_config = config.pipeline_config(Path(config.recognizer.model_dir).name)
        # The own source waits for the wake word, if one is set; pushed audio never does.
        self.pipeline = Pipeline(self.recognizer, config.pipeline_config(
            self.pipeline_config.model_version, wake=True), source="mic")
        # Before the cloud link and the server: a bad playlist or device stops the start here,
        # and so does a missing or unreadable playback reference.
        self.reference = open_reference(config.source.reference,
                                        config.frontend.echo_cancellation)
        self.frontend = front_end(config.frontend)  # FrontEndError if livekit is missing
        self.overrun_watch = OverrunWatch()
        self.source_losses = 0
        self.source: AudioSource | None = self.open_source()
        self.link: CloudLink | None = None
        if config.cloud.address and not config.local_only:
            try:
                self.link = CloudLink(config.cloud).start()
            except Exception:
                if self.source is not None:
                    self.source.close()
                raise
        self._utterance_bytes: dict[str, int] = {}  # lattice bytes sent, per open utterance
        self._bytes_lock = threading.Lock()
        self.finisher = self.new_finisher(self._publish_one)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.failure: BaseException | None = None  # what ended the worker, if not the audio
        # The own source's audio is cleaned before its pipeline (echo, noise); the
        # reference plays beside it from the source's first sample.
        self.driver = StreamDriver(self.pipeline, self.finisher, self.frontend, self.reference)
        self._context_entries = 0

    # -- the Core protocol the gRPC servicer uses -------------------------------------

    def new_pipeline(self, source: str) -> Pipeline:
        return Pipeline(self.recognizer, self.pipeline_config, source=source)

    def new_echo_frontend(self) -> MicFrontEnd:
        # the daemon's canceller and its settings, on whether or not its own source uses one
        options = dataclasses.replace(self.config.frontend, echo_cancellation=True,
                                      noise_suppression="off")
        return MicFrontEnd(options)

    def new_finisher(self, emit: Callable[[Event], None]) -> Finisher:
        # Every stream's utterances (own source and Recognize calls) close through a finisher
        # made here, the own source's first (in __init__): its closings are counted for all.

        def observed(event: Event) -> None:
            self._count_bytes(event)
            emit(event)

        return Finisher(observed, self.link, self.config.cloud.answer_deadline_s)

    def _count_bytes(self, event: Event) -> None:
        """Lattice bytes per utterance, observed when the utterance closes, and the closing
        events by type; of every stream."""
        with self._bytes_lock:
            if event.lattice is not None and self.link is not None:
                size = len(serialize(event.lattice))
                self._utterance_bytes[event.utterance_id] = \
                    self._utterance_bytes.get(event.utterance_id, 0) + size
            if event.type.closes_utterance:
                sent = self._utterance_bytes.pop(event.utterance_id, 0)
                self.metrics.bytes_per_utterance.observe(sent)
                kind = event.type.value
                self._closings[kind] = self._closings.get(kind, 0) + 1

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
            "audio_lost_s": getattr(self.source, "lost_audio_s", 0.0),
            "overrun_notices": self.overrun_watch.notices,
            "source_losses": self.source_losses,
            # every stream's, Recognize calls' too: the finisher's own counts only its source
            "rescored": self._closings.get("RESCORED", 0),
            "on_device_finals": self._closings.get("ON_DEVICE_FINAL", 0),
            "cloud_timeouts": self.finisher.counters.timeouts,
            "cloud_stale_results": self.finisher.counters.stale_results,
            **({"cloud_connected": float(self.link.connected),
                "cloud_bytes_sent": self.link.counters.bytes_sent,
                "cloud_sessions": self.link.counters.sessions,
                "cloud_outbox_drops": self.link.counters.outbox_drops,
                # answers that came after their utterance was closed on the device
                "cloud_late_answers": self.link.counters.unrouted}
               if self.link is not None else {}),
        }

    # -- the recognition worker ------------------------------------------------------

    def open_source(self) -> AudioSource | None:
        """The configured source, checked (every file decodes, the device exists) but not
        yet capturing: start() starts it."""
        cfg = self.config.source
        if cfg.kind == "none":
            return None
        if cfg.kind == "files":
            playlist = PlaylistSource(cfg.files, realtime=cfg.realtime, gap_s=cfg.gap_s,
                                      loop=cfg.loop)
            # played in real time, files are a microphone: they do not wait for recognition
            return CaptureThread(playlist, cfg.ring_seconds) if cfg.realtime else playlist
        if cfg.kind == "microphone":
            device: str | int | None = cfg.device or None
            if isinstance(device, str) and device.isdigit():
                device = int(device)

            def reopen() -> MicrophoneSource:
                refresh_devices()  # PortAudio sees a device plugged in again only after this
                return MicrophoneSource(device, ring_seconds=cfg.ring_seconds)

            # The first opening stops the start if it fails; a device lost later is waited for.
            return ReopeningSource(MicrophoneSource(device, ring_seconds=cfg.ring_seconds),
                                   reopen, self._source_lost, self._source_restored)
        raise ValueError(f"unknown source kind {cfg.kind!r}: microphone, files or none")

    def _source_lost(self, reason: str) -> None:
        """On the worker, between pieces: say so, then close the utterance it cut off."""
        self.source_losses += 1
        self._notify(Notice(NoticeType.SOURCE_LOST, self.driver.audio_seconds, reason))
        self.driver.interrupt()

    def _source_restored(self, device: str) -> None:
        self._notify(Notice(NoticeType.SOURCE_RESTORED, self.driver.audio_seconds,
                            f"{device} delivers audio again"))

    def _notify(self, notice: Notice) -> None:
        self.metrics.events.labels(notice.type.value).inc()
        self.bus.publish(notice)
        if self.config.print_events:
            print(f"{notice.audio_time:8.2f}s {notice.type.value:<21} {notice.reason}",
                  flush=True)

    def start(self) -> None:
        if self.config.source.wait_for_subscriber:
            deadline = time.monotonic() + 30
            while self.bus.subscribers == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        start = getattr(self.source, "start", None)
        if start is not None:
            start()
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
        try:
            try:
                self._play()
            finally:
                self.driver.finish(self.config.cloud.answer_deadline_s + 0.5)
        except Exception as e:  # run_daemon sees it and exits non-zero
            self.failure = e
            _report_failure(e)
        finally:
            self.bus.close()

    def _play(self) -> None:
        stop_at: float | None = None
        for piece in self.source.pieces():
            self.driver.feed(piece)
            self.metrics.audio_seconds.inc(len(piece) / SAMPLE_RATE)
            self._update_gauges()
            notice = self.overrun_watch.check(getattr(self.source, "overruns", 0),
                                              getattr(self.source, "lost_audio_s", 0.0),
                                              self.driver.audio_seconds)
            if notice is not None:
                self._notify(notice)
            if self._stop.is_set():
                # Shutting down: let the open utterance reach its end-point first.
                stop_at = stop_at or time.monotonic() + self.config.shutdown_grace_s
                if self.pipeline.endpointer.phase is Phase.IDLE or \
                        time.monotonic() > stop_at:
                    break

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
        if getattr(self.source, "lost", False):  # waiting for a device: nothing to finish
            self.source.close()
        if self._worker is not None:
            self._worker.join(self.config.shutdown_grace_s + 2.0)
        if self.source is not None:
            self.source.close()
        if self.link is not None:
            self.link.close()

    def wait(self, done: threading.Event | None = None) -> None:
        """Until `done` is set or the worker ends: its audio is over, or it failed."""
        if done is None:
            if self._worker is not None:
                self._worker.join()
            return
        while not done.wait(0.2):
            # Without a source of its own (clients push audio) only `done` ends the wait.
            if self._worker is not None and not self._worker.is_alive():
                return


def _report_failure(error: Exception) -> None:
    """A source's own error in words; anything else with its traceback, to be fixed."""
    if not isinstance(error, (AudioSourceError, AudioFormatError)):
        traceback.print_exception(error, file=sys.stderr)
    print(f"edge-asr daemon: error: recognition stopped: {error}", file=sys.stderr, flush=True)


def format_event(event: Event) -> str:
    extra = ""
    if event.lattice is not None:
        extra = f" lattice rev {event.revision} ({len(event.lattice.arcs)} arcs)"
    if event.type.value == "PARTIAL":
        extra = f" [stable: {event.stable_prefix}]" if event.stable_prefix else ""
    if event.type.value == "WAKE_WORD":
        extra = f" (score {event.score:.2f})"
    return (f"{event.audio_time:8.2f}s {event.type.value:<21} {event.utterance_id:<8} "
            f"{event.text}{extra}")


def run_daemon(config: DaemonConfig) -> int:
    """Start everything, serve until SIGTERM/SIGINT (or the end of a non-looping playlist).

    0 after a clean stop, 1 when the recognition worker died of an error. A source that
    cannot play (a bad file, no such device) raises before anything listens.
    """
    from edge_asr.daemon.api.server import serve

    t0 = time.monotonic()
    daemon = Daemon(config)
    server_cfg = config.server
    try:
        server, port = serve(daemon, server_cfg.socket or None, server_cfg.tcp or None,
                             max_message_bytes=server_cfg.max_message_bytes)
    except BaseException:
        daemon.stop()
        raise
    done = threading.Event()
    handlers = _on_signals(done)
    try:
        where = [f"unix:{server_cfg.socket}"] if server_cfg.socket else []
        if server_cfg.tcp:
            where.append(f"{server_cfg.tcp.rsplit(':', 1)[0]}:{port}")
        if config.metrics_port is not None:
            where.append(f"metrics http://127.0.0.1:{daemon.metrics.serve(config.metrics_port)}")
        print(f"edge-asr daemon serving on {', '.join(where)} "
              f"(ready in {time.monotonic() - t0:.2f} s)", flush=True)
        daemon.start()
        daemon.wait(done)
    finally:
        daemon.stop()
        server.stop(grace=1.0).wait()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if daemon.failure is not None:
        print("edge-asr daemon stopped after an error", flush=True)
        return 1
    print("edge-asr daemon stopped", flush=True)
    return 0


def _on_signals(done: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set `done`; returns the handlers they replaced."""
    def on_signal(signum: int, _frame: Any) -> None:
        print(f"edge-asr daemon: {signal.Signals(signum).name}, finishing", flush=True)
        done.set()

    return {signum: signal.signal(signum, on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)}
