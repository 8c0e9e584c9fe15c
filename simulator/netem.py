"""The network between device and cloud: a TCP proxy that delays, throttles, loses and cuts.

The daemon's cloud link connects to the proxy instead of the cloud; the proxy forwards each
direction through a model of a home uplink:

- latency and jitter: every segment is delivered `latency_ms` (plus a jitter draw) after it
  was sent, never before a segment sent earlier (TCP delivers in order);
- bandwidth: segments are serialised at `bandwidth_kbps`, so large lattices queue;
- loss: TCP never loses data, it retransmits; a lost segment arrives one retransmission
  timeout (`rto_ms`, 200 ms is Linux's minimum) later, and holds up every segment behind
  it (head-of-line blocking);
- outages, in scenario seconds: "blackhole" holds all data until the outage ends (Wi-Fi
  that drops packets: the device learns only from its own deadlines), "reset" aborts the
  open connections and refuses new ones (a router reboot: the device sees errors at once).

Outage windows are read against `clock`, a callable giving the scenario's time: wall time
when the scenario plays in real time, the audio time of the daemon's latest event when it
plays accelerated.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_POLL_S = 0.01  # how often a held segment or the outage monitor looks at the clock
_READ_BYTES = 16384


@dataclass(frozen=True)
class NetworkConfig:
    latency_ms: float = 0.0  # one way, each direction
    jitter_ms: float = 0.0  # standard deviation of a normal draw added to the latency (>= 0)
    bandwidth_kbps: float = 0.0  # each direction; 0 = unlimited
    loss: float = 0.0  # probability that a segment is lost once and retransmitted
    rto_ms: float = 200.0
    outages: list[list[float]] = field(default_factory=list)  # [[start_s, end_s], ...]
    outage_mode: str = "blackhole"  # or "reset"

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "bandwidth_kbps", "rto_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"network.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"network.loss must be in [0, 1), got {self.loss!r}")
        if self.outage_mode not in ("blackhole", "reset"):
            raise ValueError(f"network.outage_mode must be 'blackhole' or 'reset', "
                             f"got {self.outage_mode!r}")
        for window in self.outages:
            if len(window) != 2 or not 0 <= window[0] < window[1]:
                raise ValueError(f"network.outages: each window is [start_s, end_s] with "
                                 f"0 <= start < end, got {window!r}")

    def in_outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)


@dataclass
class NetworkStats:
    connections: int = 0
    refused: int = 0  # connections turned away during a "reset" outage
    cut: int = 0  # open connections aborted when a "reset" outage began
    segments: int = 0
    lost_segments: int = 0
    bytes_up: int = 0  # device -> cloud
    bytes_down: int = 0


class _Direction:
    """One direction of one connection: a schedule of delivery times, kept in order."""

    def __init__(self, cfg: NetworkConfig, rng: random.Random, stats: NetworkStats) -> None:
        self.cfg, self.rng, self.stats = cfg, rng, stats
        self.link_free_at = 0.0  # when the (emulated) link finishes sending queued bytes
        self.last_delivery = 0.0

    def delivery_time(self, now: float, size: int) -> float:
        cfg = self.cfg
        sent = now
        if cfg.bandwidth_kbps > 0:
            sent = max(now, self.link_free_at) + size * 8 / (cfg.bandwidth_kbps * 1000)
            self.link_free_at = sent
        delay = cfg.latency_ms + (abs(self.rng.gauss(0.0, cfg.jitter_ms)) if cfg.jitter_ms
                                  else 0.0)
        self.stats.segments += 1
        if cfg.loss and self.rng.random() < cfg.loss:
            self.stats.lost_segments += 1
            delay += cfg.rto_ms
        self.last_delivery = max(self.last_delivery, sent + delay / 1000)
        return self.last_delivery


class NetworkEmulator:
    """A loopback TCP proxy to `upstream` ("host:port") with `config`'s impairments.

    `start()` runs it on a thread of its own and returns the address to give the device.
    """

    def __init__(self, upstream: str, config: NetworkConfig,
                 clock: Callable[[], float] | None = None, seed: int = 0) -> None:
        self.upstream_host, _, port = upstream.rpartition(":")
        self.upstream_port = int(port)
        self.config = config
        t0 = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - t0)
        self.stats = NetworkStats()
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.address = ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0))
            self._loop.create_task(self._watch_outages())
            port = self._server.sockets[0].getsockname()[1]
            self.address = f"127.0.0.1:{port}"
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="netem", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.address

    def stop(self) -> None:
        if self._thread is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for link in list(self._links):
                for w in link:
                    w.transport.abort()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None

    # ------------------------------------------------------------ connections

    def _outage(self) -> bool:
        return self.config.in_outage(self.clock())

    async def _accept(self, down_reader: asyncio.StreamReader,
                      down_writer: asyncio.StreamWriter) -> None:
        if self.config.outage_mode == "reset" and self._outage():
            self.stats.refused += 1
            down_writer.transport.abort()
            return
        self.stats.connections += 1
        while self.config.outage_mode == "blackhole" and self._outage():
            await asyncio.sleep(_POLL_S)  # the SYN is lost until the link is back
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                 self.upstream_port)
        except OSError:
            down_writer.transport.abort()  # the cloud is down: the device sees a reset
            return
        link = (down_writer, up_writer)
        self._links.add(link)
        up = _Direction(self.config, self._rng, self.stats)
        down = _Direction(self.config, self._rng, self.stats)
        try:
            await asyncio.gather(self._pump(down_reader, up_writer, up, "bytes_up"),
                                 self._pump(up_reader, down_writer, down, "bytes_down"))
        finally:
            self._links.discard(link)
            for w in link:
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: _Direction, counter: str) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                while self.config.outage_mode == "blackhole" and self._outage():
                    await asyncio.sleep(_POLL_S)
                # counted before the write, so that a reader never sees bytes not yet counted
                setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(_READ_BYTES)
                if not data:
                    break
                queue.put_nowait((direction.delivery_time(time.monotonic(), len(data)), data))
            queue.put_nowait((0.0, b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            writer.transport.abort()

    async def _watch_outages(self) -> None:
        """In "reset" mode, abort every open connection when an outage begins."""
        was_out = False
        while True:
            out = self._outage()
            if out and not was_out and self.config.outage_mode == "reset":
                for link in list(self._links):
                    self.stats.cut += 1
                    for w in link:
                        w.transport.abort()
                self._links.clear()
            was_out = out
            await asyncio.sleep(_POLL_S)
