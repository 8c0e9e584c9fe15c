"""The gRPC client API (protos/edge_asr.proto) over the daemon's core.

`serve()` listens on a Unix socket (mode 0660) and/or a loopback TCP port, with gRPC's
standard health service and server reflection beside `edge_asr.v1.EdgeAsr`.

Access: the socket's file mode decides who may call over it. TCP has no such guard, so
every EdgeAsr call that arrives over TCP must carry `authorization: Bearer TOKEN` metadata
(UNAUTHENTICATED otherwise); health and reflection stay open.

Threads: this is gRPC's synchronous server, so every call runs on a thread of one pool
and a streaming call (Subscribe, Recognize) holds its thread for as long as it lasts.
The pool is therefore large (64 by default) and streaming calls are capped a few threads
below it (`max_streams`), so health checks, GetStatus and SetContext always find a free
thread. The cap is split: `max_recognize` threads for Recognize (each decodes on the CPU
that the daemon's own source needs too), the rest for Subscribe, so that subscribers can
never take the threads Recognize needs. Calls past either cap are refused with
RESOURCE_EXHAUSTED. A Recognize call that sends no message for `idle_timeout_s` is ended
with DEADLINE_EXCEEDED, so that silent clients cannot hold the slots.

Recognize runs a pipeline of its own for each call, in the call's thread: pushed audio
is validated and resampled by a `PushSource`, then recognized, and the events go back on
the same call. Nothing of it touches the daemon's own source or the event bus.

Errors: bad audio, a missing RecognizeConfig and bad context entries end that call with
INVALID_ARGUMENT and a message saying what was wrong; a client that vanishes mid-stream
only loses its own pipeline. The server goes on serving in every case.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from concurrent import futures
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health

from edge_asr.daemon.api.access import TcpAuth
from edge_asr.daemon.api.addresses import (
    SOCKET_MODE,
    ServeError,
    bind,
    check_tcp,
    check_unix_path,
    read_token,
)
from edge_asr.daemon.api.config import ServerConfig
from edge_asr.daemon.api.probes import add_health_and_reflection
from edge_asr.daemon.api.servicer import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_RECOGNIZE,
    DEFAULT_WORKERS,
    RESERVED_WORKERS,
    SERVICE_NAME,
    Core,
    EdgeAsrServicer,
)
from edge_asr.daemon.api.wire import add_servicer

log = logging.getLogger(__name__)

class ApiServer(grpc.Server):
    """The grpc.Server, plus a stop() that ends Subscribe streams cleanly (with OK after
    their queued events) and marks health NOT_SERVING before gRPC stops."""

    def __init__(self, server: grpc.Server, servicer: EdgeAsrServicer,
                 health_servicer: health.HealthServicer, unix_path: str | None,
                 tcp_token: str | None = None) -> None:
        self.grpc_server = server
        self.servicer = servicer
        self.health = health_servicer
        self.unix_path = unix_path
        self.tcp_token = tcp_token  # what EdgeAsr calls over TCP must carry; None without TCP

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self.grpc_server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self.grpc_server.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self.grpc_server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self.grpc_server.add_secure_port(address, server_credentials)

    def start(self) -> None:
        self.grpc_server.start()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)

    def stop(self, grace: float | None) -> threading.Event:
        self.health.enter_graceful_shutdown()
        self.servicer.shutdown()
        return self.grpc_server.stop(grace)  # gRPC removes the Unix socket file itself


class Served(NamedTuple):
    server: ApiServer
    port: int | None  # the bound TCP port (useful with port 0), None without TCP


def _settings(core: Core) -> ServerConfig:
    """The daemon's [server] settings (edge_asr.daemon.api.service.Daemon has them); the
    defaults for a core without a configuration."""
    return getattr(getattr(core, "config", None), "server", None) or ServerConfig(socket="")


def _tcp_token(core: Core) -> str:
    """The token in the core's configured token file, else a new random one."""
    path = _settings(core).tcp_token_file
    return read_token(path) if path else secrets.token_urlsafe(32)


def serve(core: Core, unix_socket: str | None = None, tcp: str | None = None,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, allow_remote: bool = False,
          max_workers: int = DEFAULT_WORKERS, max_recognize: int = DEFAULT_MAX_RECOGNIZE,
          tcp_token: str | None = None, idle_timeout_s: float | None = None,
          start: bool = True) -> Served:
    """Serves `core` on a Unix socket and/or TCP; returns the started server and TCP port.

    unix_socket: a path (an optional "unix:" prefix is accepted); the socket file gets
        mode 0660. A live daemon already on it is an error; a stale socket file is
        replaced.
    tcp: "host:port"; the host must be loopback (127.0.0.1, ::1, localhost) unless
        `allow_remote`. Port 0 binds a free port, returned as `port`.
    max_message_bytes: largest request message; gRPC refuses bigger ones with
        RESOURCE_EXHAUSTED.
    max_workers: gRPC's thread pool; Subscribe and Recognize calls each hold a thread, up
        to max_workers - 8 of them at once (the rest keep unary calls answered).
    max_recognize: Recognize calls decoding at once; more get RESOURCE_EXHAUSTED. The other
        max_workers - 8 - max_recognize streaming slots are Subscribe's.
    tcp_token: the bearer token EdgeAsr calls over TCP must carry; by default the one in
        the core's `config.server.tcp_token_file`, else a random one (the server's
        `tcp_token`).
    idle_timeout_s: a Recognize call that sends nothing for this long is ended; by default
        the core's `config.server.idle_timeout_s` (30 s).
    """
    if not unix_socket and not tcp:
        raise ServeError("nowhere to listen: give a Unix socket path, a TCP address or both")
    if max_workers <= RESERVED_WORKERS:
        raise ValueError(f"max_workers must be more than {RESERVED_WORKERS}, got {max_workers}")
    unix_path = check_unix_path(unix_socket) if unix_socket else None
    tcp_address = check_tcp(tcp, allow_remote) if tcp else None
    if tcp_address is not None and not tcp_token:
        tcp_token = _tcp_token(core)
    if idle_timeout_s is None:
        idle_timeout_s = _settings(core).idle_timeout_s
    servicer = EdgeAsrServicer(core, max_streams=max_workers - RESERVED_WORKERS,
                               max_recognize=max_recognize, idle_timeout_s=idle_timeout_s)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-api"),
        interceptors=[TcpAuth(tcp_token, SERVICE_NAME)] if tcp_address is not None else [],
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 # Linux gRPC sets SO_REUSEPORT, which would let a second daemon share
                 # the port silently.
                 ("grpc.so_reuseport", 0)])
    add_servicer(servicer, server)  # malformed requests: INVALID_ARGUMENT, not INTERNAL
    health_servicer = add_health_and_reflection(server, SERVICE_NAME)
    port = None
    try:
        if tcp_address is not None:  # first: a port in use is the likelier failure
            port = bind(server, tcp_address)
        if unix_path is not None:
            bind(server, f"unix:{unix_path}")
            os.chmod(unix_path, SOCKET_MODE)  # before start(): nobody else can connect yet
    except BaseException:
        # gRPC releases bound listeners (and removes the socket file) only when a started
        # server stops.
        server.start()
        server.stop(None).wait()
        raise
    api = ApiServer(server, servicer, health_servicer, unix_path,
                    tcp_token if tcp_address is not None else None)
    if start:
        api.start()
    return Served(api, port)
