"""One device's session with the cloud (see server.py for the protocol): its reader feeds
`handle()`, its worker rescores the queued lattices, and staleness is decided under its lock."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import grpc

from edge_asr.daemon.api.proto import cloud_pb2
from edge_asr.daemon.uplink.lattice import Lattice
from edge_asr.simulator.cloud.engine import (
    Engine,
    Refused,
    Undecodable,
    check_contacts,
    check_lattice,
    hypotheses,
    intent,
)
from edge_asr.simulator.cloud.name_classes import NO_CONTACTS, Contacts
from edge_asr.simulator.cloud.nlu import NluCancelled

log = logging.getLogger(__name__)

CLOSED = object()  # ends a session's outbox
SEND_POLL_S = 0.5  # a blocked send re-checks that the session is still open this often


@dataclass
class _Job:
    utterance_id: str
    revision: int
    lattice: Lattice
    nbest: int
    contacts: Contacts = NO_CONTACTS
    arrived: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: bool = False


@dataclass
class _Utterance:
    revision: int
    job: _Job | None
    withdrawn: bool = False  # a Reset withdrew `revision`
    confirmed: bool = False


class DeviceSession:
    """One device's session: its reader feeds handle(), its worker runs the jobs."""

    def __init__(self, engine: Engine, device_id: str) -> None:
        self.engine = engine
        self.options = engine.options
        self.device_id = device_id
        self.outbox: queue.Queue = queue.Queue(maxsize=4 * self.options.max_pending + 16)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._utterances: OrderedDict[str, _Utterance] = OrderedDict()
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._work, name=f"cloud-{device_id}",
                                        daemon=True)
        self._worker.start()

    # -- sending --------------------------------------------------------------------

    def _send(self, message: cloud_pb2.ServerMessage | object) -> None:
        """Blocks while the client reads slowly (flow control), never past close()."""
        while not self._closed.is_set():
            try:
                self.outbox.put(message, timeout=SEND_POLL_S)
                return
            except queue.Full:
                continue

    def _error(self, code: grpc.StatusCode, text: str, utterance_id: str = "",
               revision: int = 0) -> None:
        self._send(cloud_pb2.ServerMessage(error=cloud_pb2.Error(
            code=code.name, message=text, utterance_id=utterance_id, revision=revision)))

    def _cancelled(self, utterance_id: str, revision: int, was_running: bool,
                   reason: str) -> None:
        self._send(cloud_pb2.ServerMessage(cancelled=cloud_pb2.Cancelled(
            utterance_id=utterance_id, revision=revision, was_running=was_running,
            reason=reason)))

    # -- client messages (reader thread) ----------------------------------------------

    def handle(self, message: cloud_pb2.ClientMessage | Undecodable) -> None:
        if isinstance(message, Undecodable):
            self._error(grpc.StatusCode.INVALID_ARGUMENT,
                        f"not a ClientMessage: {message.reason}")
            return
        kind = message.WhichOneof("message")
        if kind == "lattice":
            self._upload(message.lattice)
        elif kind == "reset":
            self._reset(message.reset.utterance_id)
        elif kind == "confirm":
            self._confirm(message.confirm.utterance_id, message.confirm.revision)
        elif kind == "hello":
            self._error(grpc.StatusCode.FAILED_PRECONDITION,
                        "Hello is only allowed as the first message")
        else:
            self._error(grpc.StatusCode.INVALID_ARGUMENT, "empty ClientMessage")

    def _upload(self, upload: cloud_pb2.LatticeUpload) -> None:
        wire = upload.lattice
        try:
            lattice = check_lattice(wire, self.options.max_lattice_bytes)
            contacts = check_contacts(upload.context)
        except Refused as exc:
            self._error(exc.code, exc.message, wire.utterance_id, wire.revision)
            return
        if not lattice.utterance_id:
            self._error(grpc.StatusCode.INVALID_ARGUMENT, "lattice has no utterance_id",
                        revision=lattice.revision)
            return
        with self._lock:
            known = self._utterances.get(lattice.utterance_id)
            if known is not None and lattice.revision <= known.revision:
                self._error(grpc.StatusCode.INVALID_ARGUMENT,
                            f"revision {lattice.revision} is not newer than revision "
                            f"{known.revision} of this utterance", lattice.utterance_id,
                            lattice.revision)
                return
            if self._pending >= self.options.max_pending:
                self._error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{self._pending} lattices already wait in this session "
                            f"(limit {self.options.max_pending})", lattice.utterance_id,
                            lattice.revision)
                return
            if known is not None and known.job is not None and not known.job.finished \
                    and not known.job.cancel.is_set():
                known.job.cancel.set()
                self._cancelled(known.job.utterance_id, known.job.revision, True,
                                "superseded")
            job = _Job(lattice.utterance_id, lattice.revision, lattice, upload.nbest, contacts)
            self._remember(lattice.utterance_id, _Utterance(lattice.revision, job))
            self._pending += 1
        self._jobs.put(job)

    def _remember(self, utterance_id: str, utterance: _Utterance) -> None:
        self._utterances[utterance_id] = utterance
        self._utterances.move_to_end(utterance_id)
        while len(self._utterances) > self.options.recent_utterances:
            self._utterances.popitem(last=False)

    def _reset(self, utterance_id: str) -> None:
        with self._lock:
            known = self._utterances.get(utterance_id)
            if known is None:
                self._error(grpc.StatusCode.NOT_FOUND,
                            f"Reset of unknown utterance {utterance_id!r}", utterance_id)
                return
            job = known.job
            was_running = job is not None and not job.finished and not job.cancel.is_set()
            if job is not None:
                job.cancel.set()
            known.withdrawn = True
            self._cancelled(utterance_id, known.revision, was_running, "reset")

    def _confirm(self, utterance_id: str, revision: int) -> None:
        with self._lock:
            known = self._utterances.get(utterance_id)
            if known is None or known.revision != revision or known.withdrawn:
                self._error(grpc.StatusCode.NOT_FOUND,
                            f"Confirm of revision {revision} of {utterance_id!r}, which is "
                            "not the utterance's standing revision", utterance_id, revision)
                return
            known.confirmed = True

    # -- work (worker thread) ---------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(job)
            except Exception:  # a bug in one job must not end the session's work
                log.exception("rescoring %s rev %d failed", job.utterance_id, job.revision)
                self._error(grpc.StatusCode.INTERNAL, "rescoring failed on the server",
                            job.utterance_id, job.revision)
            finally:
                with self._lock:
                    self._pending -= 1
                    job.finished = True

    def _run(self, job: _Job) -> None:
        if job.cancel.is_set():
            return
        started = time.monotonic()
        try:
            scored, result, timings = self.engine.run(job.lattice, job.nbest, job.cancel,
                                                      contacts=job.contacts)
        except NluCancelled:
            return
        with self._lock:
            current = self._utterances.get(job.utterance_id)
            if job.cancel.is_set() or current is None or current.job is not job:
                return  # stale: a Reset or a newer revision came first
            now = time.monotonic()
            self._send(cloud_pb2.ServerMessage(rescored=cloud_pb2.Rescored(
                utterance_id=job.utterance_id, revision=job.revision,
                nbest=hypotheses(scored), intent=intent(result) if result else None,
                timings=cloud_pb2.Timings(queue_ms=1000 * (started - job.arrived),
                                          total_ms=1000 * (now - job.arrived), **timings))))
            if current.confirmed:
                del self._utterances[job.utterance_id]

    # -- lifetime ---------------------------------------------------------------------

    def finish(self) -> None:
        """The client half-closed: answer what is queued, then end the outbox."""
        self._jobs.put(None)
        self._worker.join()
        self._send(CLOSED)

    def close(self) -> None:
        """The call is over: cancel all work and stop the worker."""
        self._closed.set()
        with self._lock:
            for utterance in self._utterances.values():
                if utterance.job is not None:
                    utterance.job.cancel.set()
        self._jobs.put(None)
