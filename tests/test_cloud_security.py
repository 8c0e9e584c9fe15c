"""The device-cloud link's security and scale-out: bearer token, TLS, client certificates,
and two cloud replicas behind gRPC's round-robin, one of them killed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cloud_link import SPECULATIVE, confirmed, spec

from edge_asr.daemon.api.proto import cloud_pb2, cloud_pb2_grpc
from edge_asr.daemon.pipeline import Event, EventType
from edge_asr.daemon.uplink.cloud_link import CloudLink, CloudLinkConfig
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.simulator.cloud.security import CloudSecurity

TOKEN = "s3cret-device-token"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 / localhost and a device certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=edge-asr test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=d)
    return d


def closing_event(link: CloudLink, utt: str = "u1", deadline_s: float = 3.0) -> Event:
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=deadline_s)
    finisher.process([*spec(utt), confirmed(utt)])
    assert finisher.wait_idle(deadline_s + 5.0)
    return out[-1]


def test_a_good_token_is_served(cloud, cloud_link):
    server = cloud(security=CloudSecurity(token=TOKEN))
    link = cloud_link(f"127.0.0.1:{server.port}", token=TOKEN, allow_insecure_token=True)
    assert link.wait_connected(10.0)
    assert closing_event(link).type is EventType.RESCORED


def test_a_bad_token_is_refused_and_the_device_keeps_its_own_result(cloud, cloud_link):
    server = cloud(security=CloudSecurity(token=TOKEN))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = cloud_pb2_grpc.CloudStub(channel)
        hello = cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(device_id="d"))
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Session(iter([hello]), metadata=[("authorization", "Bearer wrong")],
                              timeout=5))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as missing:
            stub.Rescore(cloud_pb2.RescoreRequest(), timeout=5)
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # Health stays open for probes.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    link = cloud_link(f"127.0.0.1:{server.port}", token="wrong", allow_insecure_token=True)
    closing = closing_event(link, deadline_s=0.5)
    assert closing.type is EventType.ON_DEVICE_FINAL and closing.text == SPECULATIVE[0][0]
    assert not link.connected and link.counters.sessions == 0


def test_tls_with_the_cloud_certificate(cloud, cloud_link, pki):
    server = cloud(security=CloudSecurity(tls_cert=str(pki / "server.pem"),
                                   tls_key=str(pki / "server.key")))
    secure = cloud_link(f"127.0.0.1:{server.port}", tls_root_cert=str(pki / "ca.pem"))
    assert secure.wait_connected(10.0)
    assert closing_event(secure).type is EventType.RESCORED
    plaintext = cloud_link(f"127.0.0.1:{server.port}")
    assert not plaintext.wait_connected(1.5)


def test_client_certificates_when_the_cloud_requires_them(cloud, cloud_link, pki):
    server = cloud(security=CloudSecurity(tls_cert=str(pki / "server.pem"),
                                   tls_key=str(pki / "server.key"),
                                   tls_client_ca=str(pki / "ca.pem")))
    address = f"127.0.0.1:{server.port}"
    anonymous = cloud_link(address, tls_root_cert=str(pki / "ca.pem"))
    assert not anonymous.wait_connected(1.5)
    known = cloud_link(address, tls_root_cert=str(pki / "ca.pem"),
                  tls_client_cert=str(pki / "client.pem"), tls_client_key=str(pki / "client.key"))
    assert known.wait_connected(10.0)
    assert closing_event(known).type is EventType.RESCORED


def test_security_settings_are_checked():
    with pytest.raises(ValueError, match="certificate and its key"):
        CloudSecurity(tls_cert="a.pem")
    with pytest.raises(ValueError, match="need TLS"):
        CloudSecurity(tls_client_ca="ca.pem")
    with pytest.raises(ValueError, match="go together"):
        CloudLinkConfig(address="x:1", tls_client_cert="c.pem")


def test_two_replicas_one_killed_the_device_goes_on(cloud, cloud_link):
    a, b = cloud(), cloud()
    link = cloud_link(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}")
    assert link.wait_connected(10.0)
    assert closing_event(link, "u1").type is EventType.RESCORED
    serving = a if a.servicer.counters["sessions"] else b
    serving.stop(None).wait()  # the replica holding the session dies
    deadline = time.monotonic() + 15
    while link.counters.sessions < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.counters.sessions == 2  # a new session, on the other replica
    closing = closing_event(link, "u2", deadline_s=5.0)
    assert closing.type is EventType.RESCORED
    survivor = b if serving is a else a
    assert survivor.servicer.counters["sessions"] >= 1
