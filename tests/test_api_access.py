"""Who may use the client API, and for how long: idle Recognize calls are ended, subscribers
cannot take Recognize's threads, TCP calls need the daemon's bearer token, the default
socket lives in a folder only its user may write, and GetStatus counts every stream.

Everything runs on loopback against a real server over the tiny random model (conftest).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_asr.daemon.api import addresses
from edge_asr.daemon.api.addresses import ServeError, check_unix_path, default_socket
from edge_asr.daemon.api.bus import EventBus
from edge_asr.daemon.api.client import bearer_channel
from edge_asr.daemon.api.config import DaemonConfig, ServerConfig, SourceConfig
from edge_asr.daemon.api.proto import edge_asr_pb2 as pb
from edge_asr.daemon.api.proto import edge_asr_pb2_grpc as pb_grpc
from edge_asr.daemon.api.server import serve
from edge_asr.daemon.api.service import Daemon
from edge_asr.daemon.cli import main
from edge_asr.daemon.frontend.cleanup import FrontEndConfig, MicFrontEnd
from edge_asr.daemon.pipeline import Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.uplink.finisher import Finisher

SR = 16000


# -- helpers -------------------------------------------------------------------------------

class Core:
    """The servicer's Core over a real recognizer, with no source of its own."""

    def __init__(self, recognizer: Recognizer, config: DaemonConfig | None = None) -> None:
        self.recognizer = recognizer
        self.bus = EventBus()
        if config is not None:
            self.config = config

    def new_pipeline(self, source: str) -> Pipeline:
        return Pipeline(self.recognizer, PipelineConfig(model_version="test"), source=source)

    def new_echo_frontend(self) -> MicFrontEnd:
        return MicFrontEnd(FrontEndConfig(echo_cancellation=True))

    def new_finisher(self, emit) -> Finisher:
        return Finisher(emit)

    def set_context(self, context: dict[str, list[str]]) -> int:
        return sum(len(v) for v in context.values())

    def status(self) -> dict[str, Any]:
        return {"model": "random-test", "subscribers": self.bus.subscribers}


@pytest.fixture(scope="module")
def recognizer(tiny_model_dir) -> Recognizer:
    return Recognizer(RecognizerConfig(model_dir=tiny_model_dir))


@pytest.fixture
def socket_path() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="ea-")  # short: Unix socket paths are limited
    yield os.path.join(folder, "api.sock")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


@pytest.fixture
def start(recognizer) -> Iterator[Callable[..., Any]]:
    """start(unix=None, tcp=None, **options): a served core; stopped after the test."""
    servers = []

    def _start(unix: str | None = None, tcp: str | None = None, core: Any = None,
               **options: Any):
        served = serve(core or Core(recognizer), unix, tcp, **options)
        servers.append(served.server)
        return served

    yield _start
    for server in servers:
        server.servicer.core.bus.close()
        server.stop(0).wait(10)


def speech_like(bursts: int) -> np.ndarray:
    """Harmonic bursts with a syllable-rate envelope between silences: speech to the VAD."""
    t = np.arange(int(0.8 * SR)) / SR
    parts = [np.zeros(SR // 2, np.float32)]
    for i in range(bursts):
        tone = sum(np.sin(2 * np.pi * (140 + 40 * i) * k * t) / k for k in range(1, 12))
        envelope = (0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)) * np.minimum(
            1.0, np.minimum(t, t[-1] - t) / 0.02)
        parts += [(0.25 * tone / np.abs(tone).max() * envelope).astype(np.float32),
                  np.zeros(int(1.8 * SR), np.float32)]
    return np.concatenate(parts)


def config_request() -> pb.RecognizeRequest:
    return pb.RecognizeRequest(config=pb.RecognizeConfig(sample_rate=SR,
                                                         encoding=pb.PCM_S16LE))


def speech_requests(bursts: int = 1) -> list[pb.RecognizeRequest]:
    pcm = (speech_like(bursts) * 32767).astype("<i2").tobytes()
    step = 2 * SR // 10
    return [config_request()] + [pb.RecognizeRequest(audio=pcm[i:i + step])
                                 for i in range(0, len(pcm), step)]


def recognizes(stub: pb_grpc.EdgeAsrStub) -> list[str]:
    """A whole Recognize call; the names of the events it returned."""
    return [pb.EventType.Name(e.type) for e in stub.Recognize(iter(speech_requests()),
                                                              timeout=60)]


def silent_after_config(release: threading.Event) -> Iterator[pb.RecognizeRequest]:
    yield config_request()
    release.wait(60)


def error_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    return err.value


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- idle Recognize calls and the stream caps ---------------------------------------------

def test_idle_recognize_calls_are_ended_and_free_their_slots(start, socket_path):
    served = start(unix=socket_path, max_recognize=2, idle_timeout_s=0.5)
    release = threading.Event()
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = pb_grpc.EdgeAsrStub(channel)
        try:
            idle = [stub.Recognize(silent_after_config(release), timeout=20) for _ in range(2)]
            wait_for(lambda: served.server.servicer.active_streams == 2)
            full = error_of(stub.Recognize(iter([config_request()]), timeout=20))
            assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            t0 = time.monotonic()
            for call in idle:
                err = error_of(call)
                assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "sent nothing for 0.5 s" in err.details(), err.details()
            assert time.monotonic() - t0 < 5
            assert "ON_DEVICE_FINAL" in recognizes(stub)  # the slots are free again
        finally:
            release.set()
        status = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert status.counters["recognize_idle_ended"] == 2
    # the threads that read the ended calls are gone too
    wait_for(lambda: not any(t.name == "recognize-reader" and t.is_alive()
                             for t in threading.enumerate()))


def test_a_client_pushing_slowly_but_steadily_is_not_cut(start, socket_path):
    start(unix=socket_path, idle_timeout_s=0.5)

    def paced() -> Iterator[pb.RecognizeRequest]:
        for request in speech_requests()[:8]:
            time.sleep(0.2)
            yield request

    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        events = list(pb_grpc.EdgeAsrStub(channel).Recognize(paced(), timeout=30))
    assert pb.EventType.Name(events[-1].type) == "ON_DEVICE_FINAL"


def test_many_subscribers_cannot_lock_out_recognize(start, socket_path):
    served = start(unix=socket_path)  # the default pool: 56 streaming slots, 4 for Recognize
    servicer = served.server.servicer
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = pb_grpc.EdgeAsrStub(channel)
        calls = [stub.Subscribe(pb.SubscribeRequest(), timeout=60) for _ in range(56)]
        try:
            wait_for(lambda: servicer.core.bus.subscribers + servicer.counters[
                "streams_refused"] == 56, 30)
            assert servicer.core.bus.subscribers == 52
            assert "ON_DEVICE_FINAL" in recognizes(stub)
        finally:
            servicer.core.bus.close()
        errors = [err for call in calls if (err := _ended(call)) is not None]
    assert len(errors) == 4
    assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and
               "52 of them Subscribe" in e.details() for e in errors)


def _ended(call: Any) -> grpc.RpcError | None:
    try:
        list(call)
    except grpc.RpcError as e:
        return e
    return None


# -- the TCP token -------------------------------------------------------------------------

TOKEN = "correct-horse-battery-staple"
METHODS = ("GetStatus", "SetContext", "Subscribe", "Recognize")


@pytest.mark.parametrize("header, message", [
    (None, "must carry 'authorization: Bearer TOKEN'"),
    ("Bearer wrong", "not the daemon's"), ("Bearer", "not the daemon's"),
    (TOKEN, "not the daemon's"), (f"Bearer {TOKEN}x", "not the daemon's")])
def test_tcp_calls_without_the_token_are_refused(start, header, message):
    served = start(tcp="127.0.0.1:0", tcp_token=TOKEN)
    metadata = None if header is None else [("authorization", header)]
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = pb_grpc.EdgeAsrStub(channel)
        for name in METHODS:
            with pytest.raises(grpc.RpcError) as err:
                _call(stub, name, metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert message in err.value.details(), err.value.details()
        health = health_pb2_grpc.HealthStub(channel)  # health stays open
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    core = served.server.servicer.core
    assert core.bus.subscribers == 0 and served.server.servicer.counters["recognize_calls"] == 0


def _call(stub: pb_grpc.EdgeAsrStub, name: str, metadata: list | None) -> Any:
    if name == "GetStatus":
        return stub.GetStatus(pb.GetStatusRequest(), timeout=10, metadata=metadata)
    if name == "SetContext":
        return stub.SetContext(pb.ContextLists(contacts=["Zoe"]), timeout=10,
                               metadata=metadata)
    if name == "Subscribe":
        return next(stub.Subscribe(pb.SubscribeRequest(), timeout=10, metadata=metadata))
    return list(stub.Recognize(iter(speech_requests()), timeout=10, metadata=metadata))


def test_tcp_calls_with_the_token_and_socket_calls_without_it_are_served(start, socket_path):
    served = start(unix=socket_path, tcp="127.0.0.1:0", tcp_token=TOKEN)
    assert served.server.tcp_token == TOKEN
    for channel in (bearer_channel(f"127.0.0.1:{served.port}", TOKEN),
                    grpc.insecure_channel(f"unix:{socket_path}")):
        with channel:
            stub = pb_grpc.EdgeAsrStub(channel)
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).model == "random-test"
            assert stub.SetContext(pb.ContextLists(contacts=["Zoe"]), timeout=10).entries == 1
            assert "ON_DEVICE_FINAL" in recognizes(stub)


def test_tcp_without_a_token_gets_a_random_one(start):
    served = start(tcp="127.0.0.1:0")
    token = served.server.tcp_token
    assert token and len(token) >= 32
    with bearer_channel(f"127.0.0.1:{served.port}", token) as channel:
        stub = pb_grpc.EdgeAsrStub(channel)
        assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).model == "random-test"


def test_the_daemons_server_settings_are_used(start, recognizer, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = DaemonConfig(server=ServerConfig(socket="", tcp_token_file=str(token_file),
                                              idle_timeout_s=7.0))
    served = start(tcp="127.0.0.1:0", core=Core(recognizer, config))
    assert served.server.tcp_token == TOKEN
    assert served.server.servicer.idle_timeout_s == 7.0


@pytest.mark.parametrize("content, message", [(None, "cannot read the TCP token file"),
                                              ("\n", "is empty")])
def test_an_unusable_token_file_stops_the_start(recognizer, tmp_path, content, message):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    config = DaemonConfig(server=ServerConfig(socket="", tcp_token_file=str(token_file)))
    with pytest.raises(ServeError, match=message) as err:
        serve(Core(recognizer, config), None, "127.0.0.1:0")
    assert str(token_file) in str(err.value)


def test_daemon_refuses_an_unreadable_token_file(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["daemon", "--source", "none", "--tcp", "127.0.0.1:0",
                 "--tcp-token-file", str(missing)]) == 2
    assert f"cannot read the TCP token file {missing}" in capsys.readouterr().err


def test_daemon_writes_a_private_token_that_listen_sends(tiny_model_dir, monkeypatch,
                                                         capsys):
    runtime = tempfile.mkdtemp(prefix="ea-")
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime}
    clip = Path(__file__).parent / "data" / "clip00.flac"
    toml = Path(runtime) / "daemon.toml"  # a looping playlist keeps it serving
    toml.write_text(f'[source]\nkind = "files"\nfiles = ["{clip}"]\nloop = true\n')
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config", str(toml),
         "--model", str(tiny_model_dir), "--tcp", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, bufsize=0)
    try:
        printed = _lines_until(daemon, "serving on")
        token_file = Path(runtime) / "edge-asr.token"
        assert f"TCP clients must send the bearer token in {token_file}" in printed[0]
        address = printed[-1].split(", ")[-1].split()[0]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with bearer_channel(address, token_file.read_text().strip()) as channel:
            stub = pb_grpc.EdgeAsrStub(channel)
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).source == "files"
        wrong = Path(runtime) / "wrong"
        wrong.write_text("not-the-token")
        assert main(["listen", "--tcp", address, "--timeout", "10",
                     "--token-file", str(wrong)]) == 2
        assert "bearer token is not the daemon's" in capsys.readouterr().err
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)  # listen finds the token by itself
        assert main(["listen", "--tcp", address, "--timeout", "1"]) == 0
    finally:
        daemon.terminate()
        daemon.wait(15)
        for name in os.listdir(runtime):
            os.unlink(os.path.join(runtime, name))
        os.rmdir(runtime)


def _lines_until(proc: subprocess.Popen, marker: str) -> list[str]:
    """What `proc` printed up to the line holding `marker` (it prints little, then waits)."""
    lines: list[str] = []
    while not lines or marker not in lines[-1]:
        line = proc.stdout.readline().decode()
        assert line, f"the daemon exited first, after printing {lines}"
        lines.append(line.strip())
    return lines


# -- the default socket's folder -----------------------------------------------------------

@pytest.fixture
def no_runtime_dir(monkeypatch, tmp_path) -> Path:
    """No XDG_RUNTIME_DIR, and a stand-in for /tmp; returns the per-user folder's path."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(addresses, "SHARED_TMP", str(tmp_path))
    return tmp_path / f"edge-asr-{os.getuid()}"


def test_without_xdg_runtime_dir_the_socket_goes_to_a_private_folder(no_runtime_dir):
    path = default_socket()
    assert path == str(no_runtime_dir / "edge-asr.sock")
    assert check_unix_path(path) == path
    info = os.lstat(no_runtime_dir)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()


def test_with_xdg_runtime_dir_the_socket_goes_there(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_socket() == str(tmp_path / "edge-asr.sock")


def test_a_folder_others_may_write_is_refused(no_runtime_dir):
    no_runtime_dir.mkdir()
    no_runtime_dir.chmod(0o777)
    with pytest.raises(ServeError, match="may be written by other users"):
        check_unix_path(default_socket())


def test_a_folder_another_user_made_first_is_refused(no_runtime_dir, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: 4242)  # we are now someone else
    squatted = no_runtime_dir.parent / "edge-asr-4242"
    squatted.mkdir(mode=0o700)
    with pytest.raises(ServeError, match="belongs to user id"):
        check_unix_path(default_socket())


def test_a_link_in_place_of_the_folder_is_refused(no_runtime_dir, tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    no_runtime_dir.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ServeError, match="is not a folder"):
        check_unix_path(default_socket())


def test_the_daemon_will_not_start_in_a_folder_others_may_write(no_runtime_dir, capsys,
                                                                 tiny_model_dir):
    no_runtime_dir.mkdir()
    no_runtime_dir.chmod(0o777)
    assert main(["daemon", "--source", "none", "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert str(no_runtime_dir) in err and "chmod 700" in err


def test_listen_will_not_trust_a_default_folder_others_may_write(no_runtime_dir, capsys):
    no_runtime_dir.mkdir()
    no_runtime_dir.chmod(0o777)
    assert main(["listen", "--timeout", "1"]) == 2
    assert "may be written by other users" in capsys.readouterr().err


# -- status counts every stream -----------------------------------------------------------

def test_status_counts_the_closings_of_recognize_calls(tiny_model_dir, socket_path):
    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=tiny_model_dir),
                          source=SourceConfig(kind="none"), local_only=True)
    daemon = Daemon(config)
    served = serve(daemon, socket_path)
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = pb_grpc.EdgeAsrStub(channel)
            events = list(stub.Recognize(iter(speech_requests(bursts=2)), timeout=60))
            status = stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    finally:
        served.server.stop(0).wait(10)
    closed = [e for e in events if e.type == pb.ON_DEVICE_FINAL]
    assert len(closed) == 2
    assert status.counters["on_device_finals"] == 2
    assert status.counters["rescored"] == 0


def test_the_daemon_cancels_a_calls_playback_with_its_own_canceller(tiny_model_dir):
    from edge_asr.daemon.frontend.cleanup import FrontEndConfig

    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=tiny_model_dir),
                          source=SourceConfig(kind="none"), local_only=True,
                          frontend=FrontEndConfig(echo_canceller="speex",
                                                  noise_suppression="webrtc"))
    frontend = Daemon(config).new_echo_frontend()
    # on for the call, though the own source cancels nothing; the daemon's choice of
    # canceller; pushed audio is not noise-suppressed
    assert frontend.echo is not None and frontend.echo.options.backend == "speex"
    assert frontend.denoise is None
