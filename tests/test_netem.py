"""The network emulator between device and cloud: delay, throttling, loss and outages,
checked on a loopback echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from edge_asr.simulator.netem import NetworkConfig, NetworkEmulator


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture()
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _round_trip(sock: socket.socket, payload: bytes) -> float:
    start = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    assert got == payload
    return time.monotonic() - start


def _emulator(upstream: str, config: NetworkConfig, clock=None) -> NetworkEmulator:
    emulator = NetworkEmulator(upstream, config, clock)
    emulator.start()
    return emulator


def test_latency_delays_each_direction(echo_server):
    emulator = _emulator(echo_server, NetworkConfig(latency_ms=100))
    try:
        with _connect(emulator.address) as s:
            rtt = _round_trip(s, b"hello")
        assert rtt >= 0.2  # 100 ms up, 100 ms down
        assert emulator.stats.bytes_up == 5 and emulator.stats.bytes_down == 5
    finally:
        emulator.stop()


def test_bandwidth_cap_serialises_large_messages(echo_server):
    # 64 kB at 1 Mbit/s takes 0.51 s to serialise; the echo pipelines the way back
    emulator = _emulator(echo_server, NetworkConfig(bandwidth_kbps=1000))
    try:
        with _connect(emulator.address) as s:
            rtt = _round_trip(s, bytes(64_000))
        assert rtt >= 0.5
        assert emulator.stats.bytes_down == 64_000
    finally:
        emulator.stop()


def test_lost_segments_arrive_one_rto_late_and_in_order(echo_server):
    emulator = _emulator(echo_server, NetworkConfig(loss=0.999999, rto_ms=150))
    try:
        with _connect(emulator.address) as s:
            rtt = _round_trip(s, b"x" * 1000)
        assert rtt >= 0.3  # retransmitted once each way
        assert emulator.stats.lost_segments >= 2
    finally:
        emulator.stop()


def test_blackhole_outage_holds_data_until_the_link_returns(echo_server):
    clock = ManualClock()
    emulator = _emulator(echo_server, NetworkConfig(outages=[[10.0, 20.0]]), clock)
    try:
        with _connect(emulator.address) as s:
            assert _round_trip(s, b"before") < 0.5
            clock.t = 12.0
            s.sendall(b"during")
            s.settimeout(0.4)
            with pytest.raises(TimeoutError):
                s.recv(100)  # black-holed: nothing comes back, the connection stays open
            clock.t = 20.0
            s.settimeout(5)
            assert s.recv(100) == b"during"
    finally:
        emulator.stop()


def test_reset_outage_cuts_connections_and_refuses_new_ones(echo_server):
    clock = ManualClock()
    emulator = _emulator(echo_server, NetworkConfig(outages=[[10.0, 20.0]],
                                                    outage_mode="reset"), clock)
    try:
        with _connect(emulator.address) as s:
            _round_trip(s, b"ping")
            clock.t = 15.0
            time.sleep(0.1)
            s.settimeout(2)
            with pytest.raises(OSError):  # reset by the emulator
                s.sendall(b"x")
                assert s.recv(10) == b""
                raise ConnectionResetError
        with _connect(emulator.address) as s:
            s.settimeout(2)
            with pytest.raises(OSError):
                s.sendall(b"x")
                assert s.recv(10) == b""
                raise ConnectionResetError
        assert emulator.stats.cut == 1 and emulator.stats.refused == 1
        clock.t = 25.0
        with _connect(emulator.address) as s:
            _round_trip(s, b"back")
    finally:
        emulator.stop()


def test_bad_settings_are_refused_with_the_key_named():
    with pytest.raises(ValueError, match="loss"):
        NetworkConfig(loss=1.5)
    with pytest.raises(ValueError, match="outages"):
        NetworkConfig(outages=[[5.0, 2.0]])
    with pytest.raises(ValueError, match="outage_mode"):
        NetworkConfig(outage_mode="flaky")
