"""Who may call the client API and for how long: the bearer token that EdgeAsr calls over
TCP must carry, and reading a client's stream with an idle limit (a Recognize call that sends
nothing for `idle_timeout_s` is ended, so that silent clients cannot hold the slots)."""

from __future__ import annotations

import hmac
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

_PUT_POLL_S = 1.0  # a blocked hand-over re-checks that the call is still there this often


class Refused(Exception):
    """A call the servicer ends with `code` and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


END = object()  # the client half-closed


def idle_limited(requests: Iterator[Any], timeout_s: float) -> Iterator[Any]:
    """`requests`, ended with DEADLINE_EXCEEDED when none comes for `timeout_s`.

    gRPC's request iterator blocks without a timeout, so a thread of its own reads it,
    one message ahead (gRPC's flow control still paces the client). When the call ends the
    iterator wakes and that thread ends too."""
    box: queue.Queue = queue.Queue(maxsize=1)
    done = threading.Event()
    threading.Thread(target=_pump, args=(requests, box, done), name="recognize-reader",
                     daemon=True).start()
    try:
        while True:
            try:
                item = box.get(timeout=timeout_s)
            except queue.Empty:
                raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"the client sent nothing for {timeout_s:g} s, so the call was "
                               "ended to free its slot; send audio as it is captured and "
                               "half-close when done") from None
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        done.set()


def _pump(requests: Iterator[Any], box: queue.Queue, done: threading.Event) -> None:
    try:
        for request in requests:
            if not _put(box, request, done):
                return
        _put(box, END, done)
    except Exception as e:  # noqa: BLE001 - handed to the call's thread, which raises it
        _put(box, e, done)


def _put(box: queue.Queue, item: Any, done: threading.Event) -> bool:
    """Waits for room in `box`; False when the reading side has gone."""
    while not done.is_set():
        try:
            box.put(item, timeout=_PUT_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class TcpAuth(grpc.ServerInterceptor):
    """EdgeAsr calls over TCP must carry `authorization: Bearer TOKEN`; calls over the Unix
    socket pass as they are (its file mode already decided who may connect)."""

    def __init__(self, token: str, service_name: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._prefix = f"/{service_name}/"

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails
                          ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler  # health and reflection stay open
        kind = ("stream" if handler.request_streaming else "unary") + "_" + \
            ("stream" if handler.response_streaming else "unary")
        return handler._replace(**{kind: self._guard(getattr(handler, kind))})

    def _guard(self, behavior: Callable) -> Callable:
        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            if not context.peer().startswith("unix:"):
                self._check(context)
            return behavior(request, context)

        return checked

    def _check(self, context: grpc.ServicerContext) -> None:
        sent = [value for key, value in context.invocation_metadata() or ()
                if key == "authorization"]
        if not sent:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "calls over TCP must carry 'authorization: Bearer TOKEN' metadata, "
                          "with the token in the daemon's token file (edge-asr listen "
                          "--token-file); the Unix socket needs none")
        given = sent[0].encode() if isinstance(sent[0], str) else sent[0]
        if not hmac.compare_digest(given, self._expected):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "the bearer token is not the daemon's; read it from the daemon's "
                          "token file again (a restart makes a new one unless "
                          "[server] tcp_token_file names one)")
