"""A small gRPC client of the daemon: `edge-asr listen` and the `make run` demo.

Over the Unix socket a client needs nothing but access to the socket file; over TCP every
call carries the daemon's bearer token (`authorization: Bearer TOKEN`), read from the token
file the daemon wrote (by default beside its default socket)."""

from __future__ import annotations

import collections
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from edge_asr.daemon.api.addresses import (
    check_private,
    default_socket,
    default_token_file,
    read_token,
    user_folder,
)
from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc


def channel_for(socket: str | None, tcp: str | None, token_file: str | None = None,
                options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A channel to the daemon: over TCP with the token in `token_file` (default: the
    daemon's default token file), else over `socket` (default: the daemon's)."""
    if tcp:
        return bearer_channel(tcp, read_token(token_file or default_token_file()), options)
    if not socket and user_folder().exists():
        check_private(user_folder())  # a socket someone else planted there is not the daemon
    return grpc.insecure_channel(f"unix:{socket or default_socket()}", options=options)


def bearer_channel(target: str, token: str,
                   options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """An insecure (loopback) channel whose every call carries `authorization: Bearer token`."""
    return grpc.intercept_channel(grpc.insecure_channel(target, options=options),
                                  _BearerToken(token))


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(details.method, details.timeout,
                            [*(details.metadata or ()), self._header], details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def format_pb_event(event) -> str:
    kind = edge_asr_pb2.EventType.Name(event.type)
    extra = ""
    if event.HasField("lattice"):
        extra = (f"  (lattice rev {event.lattice.revision}: {len(event.lattice.arcs)} arcs, "
                 f"{event.lattice.ByteSize()} bytes)")
    elif kind == "PARTIAL" and event.stable_prefix:
        extra = f"  [stable: {event.stable_prefix}]"
    elif kind == "WAKE_WORD":
        extra = f"  (score {event.score:.2f})"
    elif kind in ("RESET", "ON_DEVICE_FINAL", "UTTERANCE_LOST") and event.reason:
        extra = f"  ({event.reason})"
    elif not event.utterance_id and event.reason:  # a notice about the source
        extra = f"  {event.reason}"
    elif kind == "RESCORED" and event.intent.name:
        slots = ", ".join(f"{k}={v}" for k, v in sorted(event.intent.slots.items()))
        extra = f"  -> {event.intent.name}({slots})"
    return f"{event.audio_time:7.2f}s  {kind:<21} {event.utterance_id:<8} {event.text}{extra}"


def listen(socket: str | None, tcp: str | None, partials: bool = True,
           timeout: float | None = None, out=sys.stdout, token_file: str | None = None,
           reconnect: bool = False) -> int:
    """Print the daemon's events until it stops (or `timeout` seconds pass); with
    `reconnect`, subscribe again each time it comes back, until `timeout` or Ctrl-C."""
    if reconnect:
        return _follow(socket, tcp, partials, timeout, out, token_file)
    with channel_for(socket, tcp, token_file) as channel:
        stub = edge_asr_pb2_grpc.EdgeAsrStub(channel)
        try:
            stream = stub.Subscribe(edge_asr_pb2.SubscribeRequest(partials=partials),
                                    timeout=timeout, wait_for_ready=True)
            for event in stream:
                print(format_pb_event(event), file=out, flush=True)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return 0
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                print(f"edge-asr: daemon not reachable: {e.details()}", file=sys.stderr)
                return 2
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                print(f"edge-asr: the daemon refused the call: {e.details()}", file=sys.stderr)
                return 2
            raise
    return 0


def _follow(socket: str | None, tcp: str | None, partials: bool, timeout: float | None,
            out, token_file: str | None) -> int:
    from edge_asr.daemon.api.resubscribe import RECONNECT_OPTIONS, Follower

    def on_break(why: str) -> None:
        print(f"edge-asr: lost the daemon ({why}); subscribing again", file=sys.stderr,
              flush=True)

    follower = Follower(lambda: channel_for(socket, tcp, token_file, RECONNECT_OPTIONS),
                        partials, on_break=on_break)
    timer = threading.Timer(timeout, follower.stop) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        for event in follower.events():
            print(format_pb_event(event), file=out, flush=True)
    except grpc.RpcError as e:
        print(f"edge-asr: the daemon refused the call: {e.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if timer is not None:
            timer.cancel()
    return 0


def wait_for_socket(daemon: subprocess.Popen, socket: str, timeout: float) -> bool:
    """True once the daemon process has made its Unix socket; False if it exited first or
    `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(socket):
        if daemon.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_cloud(lm: Path, timeout: float = 60.0,
                extra_args: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """`edge-asr cloud` on a free loopback port, in its own process; returns it and its
    address once it serves."""
    cloud = subprocess.Popen([sys.executable, "-m", "edge_asr.daemon.cli", "cloud", "--port",
                              "0", "--lm", str(lm), *(extra_args or [])],
                             stdout=subprocess.PIPE, bufsize=0)
    # "edge-asr cloud: serving on 127.0.0.1:PORT (...)"
    line = wait_for_line(cloud, "serving on", timeout)
    if line is None:
        cloud.kill()
        raise RuntimeError(f"edge-asr cloud did not start (exit status {cloud.wait()})")
    return cloud, line.split("serving on", 1)[1].split()[0]


def wait_for_line(proc: subprocess.Popen, marker: str, timeout: float) -> str | None:
    """The first line of `proc`'s stdout that holds `marker`, or None if it exits or the
    timeout passes first. The rest of its output is then drained by a thread, so that a
    chatty child never blocks on a full pipe that nobody reads."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline, seen = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        # read what is there without blocking past the deadline (a hung start prints nothing)
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            return None  # timed out, or it exited
        seen += chunk
        for line in seen.decode(errors="replace").split("\n")[:-1]:  # whole lines only
            if marker in line:
                threading.Thread(target=_drain, args=(fd,), daemon=True).start()
                return line
    return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # the pipe was closed on our side
        pass


def run_demo(files: list[str], model: str | Path, realtime: bool = True,
             cloud_lm: Path | None = None) -> int:
    """`make run`: the cloud and the daemon in processes of their own; the daemon plays the
    files as its microphone and sends lattices to the cloud; this process subscribes over
    the Unix socket and prints every event."""
    with tempfile.TemporaryDirectory(prefix="edge-asr-") as tmp:
        socket = os.path.join(tmp, "daemon.sock")
        cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--source", "files",
               "--files", *files, "--socket", socket, "--model", str(model),
               "--realtime" if realtime else "--no-realtime", "--wait-for-subscriber"]
        cloud = None
        if cloud_lm is not None:
            cloud, address = start_cloud(cloud_lm)
            cmd += ["--cloud", address]
            print(f"cloud rescoring on {address} (LM {cloud_lm})", flush=True)
        else:
            print("no cloud LM (`make cloud-lm` builds one): on-device results only", flush=True)
        daemon = subprocess.Popen(cmd)
        try:
            if not wait_for_socket(daemon, socket, timeout=30):
                print("edge-asr: the daemon did not start", file=sys.stderr)
                return 2
            print(f"playing {len(files)} clips through the daemon's simulated microphone\n",
                  flush=True)
            listen(socket, None)
            return daemon.wait(timeout=30)
        finally:
            for proc in (daemon, cloud):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
