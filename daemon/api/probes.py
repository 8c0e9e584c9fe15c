"""What every gRPC server of the project serves beside its own service: the standard health
service and server reflection. Kept apart so that the cloud can use it without importing
the recognizer."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


def add_health_and_reflection(server: grpc.Server, service_name: str) -> health.HealthServicer:
    """gRPC's standard health service (SERVING for the server and `service_name`) and
    server reflection, so that probes and `grpcurl` work; returns the health servicer."""
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return health_servicer
