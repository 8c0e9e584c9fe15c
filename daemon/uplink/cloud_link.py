"""The device's link to the cloud-rescoring service (`edge-asr cloud`, protos/cloud.proto).

One long-lived `Session` stream per daemon, kept up by a background thread that
reconnects with exponential backoff and jitter. Only lattices (and resets and confirms)
are sent; nothing here can carry audio. Recognition never waits for the cloud: `upload`,
`reset` and `confirm` only append to a bounded outbox (the oldest message gives way when
it is full, and is counted), and each result comes back through the callback given with
its utterance's upload (one link serves every stream of the daemon).

    link = CloudLink(CloudLinkConfig(address="127.0.0.1:50061"))
    link.start()
    link.upload(lattice, on_result=print)          # returns at once
    ...
    link.close()

Utterances still waiting for an answer when the session breaks are uploaded again on the
next session (the cloud is stateless per utterance), so a reconnect loses nothing that is
still worth answering; what the finisher gave up on (`forget`) is not re-sent.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from edge_asr.daemon.api.proto import cloud_pb2, cloud_pb2_grpc
from edge_asr.daemon.uplink.lattice import Lattice, to_proto

log = logging.getLogger(__name__)

_CLOSE = object()  # ends the request stream of the current session


@dataclass
class CloudLinkConfig:
    address: str = ""  # host:port of `edge-asr cloud` ("" = no cloud); dns:/// for several
    device_id: str = "edge-asr-device"
    # How long the device waits, after its final end-point, for the cloud's answer before
    # it gives its own best (ON_DEVICE_FINAL). Rescoring takes a few ms; a round trip
    # over a home connection 20-100 ms.
    answer_deadline_s: float = 0.5
    connect_timeout_s: float = 2.0  # deadline for a new session's Welcome
    # A session whose answers stop coming (a hung or black-holed cloud) is dropped and
    # opened anew after this many answer deadlines missed in a row.
    max_missed_answers: int = 3
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 10.0
    backoff_jitter: float = 0.5  # each wait is scaled by a random factor in [1-j, 1+j]
    outbox_size: int = 64
    nbest: int = 10
    token: str = ""  # bearer token the cloud checks ("" = none)
    tls_root_cert: str = ""  # PEM of the CA that signed the cloud's certificate
    tls_client_cert: str = ""  # PEM certificate and key, when the cloud wants a client cert
    tls_client_key: str = ""
    tls_server_name: str = ""  # overrides the name checked in the server certificate
    # A token over plaintext is refused unless this says it is meant (loopback tests): on
    # any real network it would hand the device's credential to whoever listens.
    allow_insecure_token: bool = False

    def __post_init__(self) -> None:
        for name in ("answer_deadline_s", "connect_timeout_s", "backoff_initial_s",
                     "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CloudLinkConfig.{name} must be > 0")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("CloudLinkConfig.backoff_jitter must be in [0, 1)")
        if self.outbox_size < 1 or self.nbest < 1 or self.max_missed_answers < 1:
            raise ValueError("CloudLinkConfig.outbox_size, nbest and max_missed_answers must "
                             "be >= 1")
        if bool(self.tls_client_cert) != bool(self.tls_client_key):
            raise ValueError("CloudLinkConfig: tls_client_cert and tls_client_key go together")


@dataclass(frozen=True)
class CloudResult:
    """The cloud's answer for one (utterance, revision)."""

    utterance_id: str
    revision: int
    nbest: list[tuple[str, float]]  # (text, total score), best first
    intent: str = ""
    slots: dict[str, str] = field(default_factory=dict)
    server_ms: float = 0.0


@dataclass
class LinkCounters:
    sessions: int = 0  # sessions that got a Welcome
    connect_failures: int = 0
    uploads: int = 0
    bytes_sent: int = 0  # serialized lattices, as they went on the wire
    outbox_drops: int = 0
    results: int = 0
    unrouted: int = 0  # results for an utterance nobody waits for any more (late, reset)
    cancelled: int = 0
    errors: int = 0  # Error messages from the cloud (bad lattice, busy ...)
    garbage: int = 0  # results the device could not use (unknown utterance, bad shape)
    stalled_sessions: int = 0  # sessions dropped because answers stopped coming
    refused: int = 0  # tries the cloud turned away: token refused, TLS handshake failed


ResultCallback = Callable[[CloudResult], None]


def backoff_delays(cfg: CloudLinkConfig, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with jitter: initial, 2x, 4x ... capped, each scaled randomly so
    that a fleet of devices does not reconnect in lockstep after an outage."""
    delay = cfg.backoff_initial_s
    while True:
        yield delay * rng.uniform(1 - cfg.backoff_jitter, 1 + cfg.backoff_jitter)
        delay = min(cfg.backoff_max_s, delay * 2)


TLS_FILES = ("tls_root_cert", "tls_client_cert", "tls_client_key")
# Status codes with which a cloud turns this device away: no retry can fix them.
REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_PROBE = "/edge_asr.cloud.Probe/Handshake"  # no such method: any answer means TLS is up


def read_tls_files(cfg: CloudLinkConfig) -> dict[str, bytes]:
    """Every PEM file the link is configured with, by setting. Read when the link is made,
    so that a missing one stops the start instead of killing the link's thread later."""
    return {name: _read_pem(name, getattr(cfg, name)) for name in TLS_FILES
            if getattr(cfg, name)}


def _read_pem(name: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"[cloud] {name}: cannot read {path!r}: {e.strerror or e}") from e
    if b"-----BEGIN " not in data:
        raise ValueError(f"[cloud] {name}: {path!r} is not a PEM file (no -----BEGIN line)")
    return data


def check_token_transport(cfg: CloudLinkConfig) -> None:
    if cfg.token and not cfg.tls_root_cert and not cfg.allow_insecure_token:
        raise ValueError(
            f"[cloud] token is set without tls_root_cert: the bearer token would go to "
            f"{cfg.address} in plaintext; give tls_root_cert, or set allow_insecure_token "
            "= true where plaintext is meant (a loopback test)")


def open_channel(cfg: CloudLinkConfig, pems: dict[str, bytes] | None = None) -> grpc.Channel:
    """Round-robin over every address the name resolves to, so that replicas share the
    load and a dead one is skipped; TLS when a root certificate is configured (`pems`:
    the files already read, by setting)."""
    # gRPC's own reconnect backoff (1 s growing to 120 s by default) would otherwise hold a
    # recovered cloud back long after ours says to try again.
    options = [("grpc.lb_policy_name", "round_robin"),
               ("grpc.max_receive_message_length", 4 * 1024 * 1024),
               ("grpc.initial_reconnect_backoff_ms", int(cfg.backoff_initial_s * 1000)),
               ("grpc.min_reconnect_backoff_ms", int(cfg.backoff_initial_s * 1000)),
               ("grpc.max_reconnect_backoff_ms", int(cfg.backoff_max_s * 1000))]
    if cfg.tls_server_name:
        options.append(("grpc.ssl_target_name_override", cfg.tls_server_name))
    if not cfg.tls_root_cert:
        return grpc.insecure_channel(cfg.address, options=options)
    pems = read_tls_files(cfg) if pems is None else pems
    creds = grpc.ssl_channel_credentials(root_certificates=pems["tls_root_cert"],
                                         private_key=pems.get("tls_client_key"),
                                         certificate_chain=pems.get("tls_client_cert"))
    return grpc.secure_channel(cfg.address, creds, options=options)


def result_from_proto(message: cloud_pb2.Rescored) -> CloudResult:
    nbest = [(" ".join(h.words), float(h.total)) for h in message.nbest]
    return CloudResult(message.utterance_id, message.revision, nbest, message.intent.name,
                       dict(message.intent.slots), message.timings.total_ms)


class CloudLink:
    def __init__(self, config: CloudLinkConfig, seed: int | None = None) -> None:
        if not config.address:
            raise ValueError("CloudLink needs an address (no address: run local-only)")
        check_token_transport(config)
        self._pems = read_tls_files(config)
        self.config = config
        self.counters = LinkCounters()
        self._rng = random.Random(seed)
        self._outbox: queue.Queue = queue.Queue(config.outbox_size)
        # Utterances waiting for an answer: their latest lattice (re-sent on a new session)
        # and where the answer goes.
        # utterance id -> (lattice, its contacts, who waits for the answer)
        self._awaiting: OrderedDict[str, tuple[Lattice, Sequence[str], ResultCallback]] = \
            OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._call: grpc.Future | None = None
        self._missed = 0  # answer deadlines missed in a row on this session
        self._refusals: set[str] = set()  # reasons already logged since the last Welcome
        self._thread = threading.Thread(target=self._run, name="cloud-link", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> CloudLink:
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._offer(_CLOSE)
        self._thread.join(timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- called by the recognition side: never blocks ---------------------------------

    def upload(self, lattice: Lattice, on_result: ResultCallback,
               contacts: Sequence[str] = ()) -> None:
        """`contacts`: the user's contact list the utterance was heard with, for the cloud
        LM's name class (names, never audio)."""
        with self._lock:
            self._awaiting[lattice.utterance_id] = (lattice, contacts, on_result)
            self._awaiting.move_to_end(lattice.utterance_id)
            while len(self._awaiting) > self.config.outbox_size:
                self._awaiting.popitem(last=False)
        self._offer(self._upload_message(lattice, contacts))

    def reset(self, utterance_id: str) -> None:
        with self._lock:
            self._awaiting.pop(utterance_id, None)
        self._offer(cloud_pb2.ClientMessage(reset=cloud_pb2.Reset(utterance_id=utterance_id)))

    def confirm(self, utterance_id: str, revision: int) -> None:
        self._offer(cloud_pb2.ClientMessage(
            confirm=cloud_pb2.Confirm(utterance_id=utterance_id, revision=revision)))

    def missed_answer(self) -> None:
        """The finisher gave up waiting for an answer; enough in a row end the session."""
        with self._lock:
            self._missed += 1
            if self._missed >= self.config.max_missed_answers and self._call is not None:
                self.counters.stalled_sessions += 1
                self._missed = 0
                self._call.cancel()  # the link thread reconnects

    def forget(self, utterance_id: str) -> None:
        """The device no longer waits for this utterance: do not re-send it."""
        with self._lock:
            self._awaiting.pop(utterance_id, None)

    def _upload_message(self, lattice: Lattice, contacts: Sequence[str]
                        ) -> cloud_pb2.ClientMessage:
        return cloud_pb2.ClientMessage(lattice=cloud_pb2.LatticeUpload(
            lattice=to_proto(lattice), nbest=self.config.nbest,
            context=cloud_pb2.Context(contacts=contacts) if contacts else None))

    def _offer(self, message: object) -> None:
        while True:
            try:
                self._outbox.put_nowait(message)
                return
            except queue.Full:
                try:  # the oldest message gives way; the finisher covers what it carried
                    self._outbox.get_nowait()
                    self.counters.outbox_drops += 1
                except queue.Empty:
                    pass

    # -- the link thread ---------------------------------------------------------------

    def _requests(self, first: list[cloud_pb2.ClientMessage],
                  ended: threading.Event) -> Iterator:
        """One session's request stream. gRPC drains it on a thread of its own that may
        outlive the session, so it stops once `ended` is set and hands back what it took."""
        yield cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(
            device_id=self.config.device_id, model_version=self._model_version(first)))
        yield from first
        while not self._stop.is_set() and not ended.is_set():
            try:
                message = self._outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if message is _CLOSE:
                return
            if ended.is_set():  # taken for a session that just died: the next one sends it
                self._offer(message)
                return
            if message.WhichOneof("message") == "lattice":
                self.counters.uploads += 1
                self.counters.bytes_sent += message.lattice.lattice.ByteSize()
            yield message

    def _model_version(self, pending: list[cloud_pb2.ClientMessage]) -> str:
        return pending[0].lattice.lattice.model_version if pending else ""

    def _run(self) -> None:
        delays = backoff_delays(self.config, self._rng)
        channel = open_channel(self.config, self._pems)
        stub = cloud_pb2_grpc.CloudStub(channel)
        metadata = [("authorization", f"Bearer {self.config.token}")] if self.config.token \
            else None
        try:
            while not self._stop.is_set():
                with self._lock:  # what still waits for an answer goes first on a new session
                    again = [self._upload_message(lattice, contacts)
                             for lattice, contacts, _ in self._awaiting.values()]
                ready = grpc.channel_ready_future(channel)
                ended = threading.Event()
                try:
                    ready.result(self.config.connect_timeout_s)
                    call = stub.Session(self._requests(again, ended), metadata=metadata)
                    with self._lock:
                        self._call = call
                        self._missed = 0
                    # No Welcome within the deadline: a cloud that accepts and then hangs.
                    watchdog = threading.Timer(self.config.connect_timeout_s,
                                               lambda c=call: self.connected or c.cancel())
                    watchdog.daemon = True
                    watchdog.start()
                    for message in call:
                        if self._handle(message):
                            delays = backoff_delays(self.config, self._rng)
                except grpc.FutureTimeoutError:
                    self.counters.connect_failures += 1
                    if self._pems:
                        self._check_handshake(channel)
                except ValueError:  # "channel closed": the link is shutting down
                    break
                except grpc.RpcError as e:
                    if not self._stop.is_set():
                        self.counters.connect_failures += not self.connected
                        self._session_ended(e)
                finally:
                    ended.set()
                    ready.cancel()  # stops gRPC's connectivity polling of this channel
                    self._connected.clear()
                    with self._lock:
                        self._call = None
                if self._stop.wait(next(delays)):
                    break
        finally:
            channel.close()

    def _session_ended(self, error: grpc.RpcError) -> None:
        if error.code() in REFUSALS:
            self._refused(f"{error.code().name}: {error.details()}")
        else:
            log.info("cloud session ended: %s %s", error.code(), error.details())

    def _check_handshake(self, channel: grpc.Channel) -> None:
        """A channel that never got ready says nothing of why; a call on it carries gRPC's
        last error, which names a failed TLS handshake (wrong CA, a plaintext cloud)."""
        try:
            channel.unary_unary(_PROBE)(b"", timeout=min(1.0, self.config.connect_timeout_s))
        except grpc.RpcError as e:
            details = e.details() or ""
            if "handshake" in details.lower():
                self._refused("TLS handshake failed: " + details.split("last error: ")[-1])
        except ValueError:  # the channel closed: the link is shutting down
            pass

    def _refused(self, reason: str) -> None:
        """Turned away: a fault of setup that only a person can fix, so it is a warning,
        given once per reason rather than on every retry."""
        self.counters.refused += 1
        if reason not in self._refusals:
            self._refusals.add(reason)
            log.warning("cloud at %s refuses this device: %s", self.config.address, reason)

    def _handle(self, message: cloud_pb2.ServerMessage) -> bool:
        """Returns True on Welcome (the backoff starts over)."""
        kind = message.WhichOneof("message")
        if kind == "welcome":
            self.counters.sessions += 1
            self._refusals.clear()  # a refusal after this session is news again
            self._connected.set()
            return True
        if kind == "rescored":
            r = message.rescored
            if not r.nbest or not r.utterance_id:
                self.counters.garbage += 1  # nothing the device could use
                return False
            with self._lock:
                self._missed = 0
                waiting = self._awaiting.get(r.utterance_id)
                # An answer for an older revision (it finished before the reset reached the
                # cloud) must not take the place of the one the device now waits for.
                if waiting is not None and waiting[0].revision == r.revision:
                    del self._awaiting[r.utterance_id]
            self.counters.results += 1
            if waiting is None:
                self.counters.unrouted += 1
            else:  # the finisher decides whether the revision still stands
                waiting[2](result_from_proto(r))
        elif kind == "cancelled":
            self.counters.cancelled += 1
        elif kind == "error":
            self.counters.errors += 1
            log.info("cloud refused %s rev %d: %s %s", message.error.utterance_id,
                     message.error.revision, message.error.code, message.error.message)
        return False
