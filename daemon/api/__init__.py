"""The service and its API: the daemon's core, the gRPC server, event bus, client,
metrics and probes."""
