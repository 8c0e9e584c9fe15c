"""Who may talk to the cloud: TLS (server certificate, optionally a client certificate)
and a bearer token checked on every call of the Cloud service.

Health and reflection stay open, so that a load balancer or `grpcurl` can probe a
replica without the devices' token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import grpc

from edge_asr.daemon.api.proto import cloud_pb2

_SERVICE = cloud_pb2.DESCRIPTOR.services_by_name["Cloud"]


@dataclass(frozen=True)
class CloudSecurity:
    token: str = ""  # "" = no token required
    tls_cert: str = ""  # PEM files of the server's certificate chain and key ("" = plaintext)
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM of the CA that signs device certificates: then required

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("the cloud's TLS needs both a certificate and its key")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("client certificates need TLS: give tls_cert and tls_key too")

    def credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls_cert:
            return None
        pair = (Path(self.tls_key).read_bytes(), Path(self.tls_cert).read_bytes())
        client_ca = Path(self.tls_client_ca).read_bytes() if self.tls_client_ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                           require_client_auth=client_ca is not None)

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [BearerToken(self.token)] if self.token else []


def _deny(method: str) -> grpc.RpcMethodHandler:
    def abort(_request, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      "missing or wrong bearer token (metadata 'authorization: Bearer ...')")

    if _SERVICE.methods_by_name[method].client_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerToken(grpc.ServerInterceptor):
    """Refuses Cloud calls whose `authorization` metadata is not `Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._prefix = f"/{_SERVICE.full_name}/"
        self._denied = {name: _deny(name) for name in _SERVICE.methods_by_name}

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if not details.method.startswith(self._prefix):
            return continuation(details)  # health, reflection
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(given, str):
            given = given.encode()
        if hmac.compare_digest(given, self._expected):  # constant time
            return continuation(details)
        return self._denied.get(details.method.removeprefix(self._prefix))
