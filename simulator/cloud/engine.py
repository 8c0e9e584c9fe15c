"""The cloud's work on one lattice, shared by device sessions and the unary call: the
service's options, the lattice's admission check, rescoring with the cloud LM and the NLU."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import grpc

from edge_asr.daemon.api.proto import cloud_pb2, lattice_pb2
from edge_asr.daemon.uplink.lattice import Lattice, LatticeError, from_proto, validate
from edge_asr.simulator.cloud.lm import CloudLM
from edge_asr.simulator.cloud.name_classes import NO_CONTACTS, Contacts, ContextError
from edge_asr.simulator.cloud.nlu import NluCancelled, NluOptions, NluResult, run_nlu, understand
from edge_asr.simulator.cloud.rescore import RescoreOptions, ScoredPath, rescore


@dataclass(frozen=True)
class CloudOptions:
    nbest: int = 10  # hypotheses returned when the request says 0
    max_nbest: int = 50
    max_paths: int = 50  # lattice paths rescored
    max_lattice_bytes: int = 256 * 1024  # refused with an Error above this, session goes on
    max_message_bytes: int = 1 << 20  # gRPC's hard limit: the call ends above it
    max_pending: int = 8  # uploads a session may have queued
    max_sessions: int = 64
    nlu_cost_s: float = 0.0  # emulated NLU service time (cancellable)
    slow_s: float = 0.0  # extra latency before every result, to emulate a slow cloud
    recent_utterances: int = 256  # utterances a session remembers for Reset and Confirm
    server_id: str = "edge-asr-cloud"

    def __post_init__(self) -> None:
        if min(self.nbest, self.max_nbest, self.max_paths, self.max_pending,
               self.max_sessions, self.recent_utterances) < 1:
            raise ValueError("nbest, max_nbest, max_paths, max_pending, max_sessions and "
                             "recent_utterances must be at least 1")
        if self.nlu_cost_s < 0 or self.slow_s < 0:
            raise ValueError("nlu_cost_s and slow_s must be >= 0")
        if self.max_lattice_bytes >= self.max_message_bytes:
            raise ValueError("max_lattice_bytes must be below max_message_bytes, so that an "
                             "oversized lattice gets an Error instead of ending the session")


DEFAULT_OPTIONS = CloudOptions()


class Undecodable(NamedTuple):
    reason: str


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_contacts(message: cloud_pb2.Context) -> Contacts:
    """The upload's contact list, or Refused with what breaks the limits."""
    try:
        return Contacts.of(message.contacts)
    except ContextError as exc:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad context: {exc}") from exc


def check_lattice(message: lattice_pb2.Lattice, max_bytes: int) -> Lattice:
    """The wire lattice as a validated Lattice, or Refused with the reason."""
    size = message.ByteSize()
    if size > max_bytes:
        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"lattice is {size} bytes, more than the {max_bytes} allowed")
    try:
        lattice = from_proto(message)
        validate(lattice)
    except LatticeError as exc:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad lattice: {exc}") from exc
    return lattice


def hypotheses(scored: list[ScoredPath]) -> list[cloud_pb2.Hypothesis]:
    return [cloud_pb2.Hypothesis(words=p.words, acoustic=p.acoustic, bias=p.bias, lm=p.lm,
                                 total=p.total) for p in scored]


def intent(result: NluResult) -> cloud_pb2.Intent:
    return cloud_pb2.Intent(name=result.intent, slots=result.slots)


def wait_or_cancel(seconds: float, cancel: threading.Event) -> None:
    if seconds > 0 and cancel.wait(seconds) or cancel.is_set():
        raise NluCancelled()


class Engine:
    """Rescoring plus NLU for one lattice; shared by sessions and the unary call."""

    def __init__(self, lm: CloudLM, options: CloudOptions) -> None:
        self.lm = lm
        self.options = options
        understand(["stop"])  # loads the NLU's gazetteers now, not in the first request

    def nbest_for(self, requested: int) -> int:
        return min(requested or self.options.nbest, self.options.max_nbest)

    def run(self, lattice: Lattice, nbest: int, cancel: threading.Event, nlu: bool = True,
            contacts: Contacts = NO_CONTACTS
            ) -> tuple[list[ScoredPath], NluResult | None, dict[str, float]]:
        """Raises NluCancelled when `cancel` is set before the result is ready."""
        started = time.monotonic()
        scored = rescore(lattice, self.lm, RescoreOptions(self.options.max_paths,
                                                          self.nbest_for(nbest)),
                         contacts=contacts)
        rescored = time.monotonic()
        if cancel.is_set():
            raise NluCancelled()
        result = None
        if nlu:
            best = scored[0].words if scored else ()
            result = run_nlu(best, NluOptions(self.options.nlu_cost_s), cancel)
        understood = time.monotonic()
        wait_or_cancel(self.options.slow_s, cancel)
        return scored, result, {"rescore_ms": 1000 * (rescored - started),
                                "nlu_ms": 1000 * (understood - rescored)}
