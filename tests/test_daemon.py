"""`edge-asr daemon` as users run it: its own process, a simulated microphone, clients
over the Unix socket; clean shutdown on SIGTERM; metrics; configuration errors."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from edge_asr.daemon.api.config import load_config
from edge_asr.daemon.api.proto import edge_asr_pb2, edge_asr_pb2_grpc

DATA = Path(__file__).parent / "data"
CLIPS = [str(DATA / json.loads(line)["audio_filepath"])
         for line in (DATA / "manifest.jsonl").open()][:2]


@pytest.fixture
def start(tmp_path, tiny_model_dir):
    def _run(*extra: str) -> tuple[subprocess.Popen, str]:
        return _start(tmp_path, "--model", str(tiny_model_dir), *extra)
    return _run


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    socket = str(tmp_path / "d.sock")
    cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--source", "files",
           "--files", *CLIPS, "--socket", socket, "--wait-for-subscriber", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(socket):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "daemon did not start"
        time.sleep(0.05)
    return proc, socket


def _events(socket: str, until: int | None = None):
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = edge_asr_pb2_grpc.EdgeAsrStub(channel)
        got = []
        for event in stub.Subscribe(edge_asr_pb2.SubscribeRequest(partials=False), timeout=60):
            got.append(edge_asr_pb2.EventType.Name(event.type))
            if until is not None and len(got) >= until:
                break
        return got


def test_daemon_plays_its_source_to_subscribers_and_exits_cleanly(start):
    proc, socket = start("--no-realtime")
    events = _events(socket)
    assert proc.wait(timeout=60) == 0
    out = proc.stdout.read()
    assert "serving on unix:" in out and "stopped" in out
    finals = [e for e in events if e in ("CONFIRMED", "FINAL_ENDPOINT")]
    assert events.count("SPEECH_STARTED") == len(finals) >= len(CLIPS)
    # Without a cloud, the device's own best closes every utterance.
    assert events.count("ON_DEVICE_FINAL") == len(finals)


def test_sigterm_finishes_the_open_utterance_first(start):
    proc, socket = start("--realtime")
    # Stop as soon as the first utterance has started: its final must still arrive.
    events = []
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = edge_asr_pb2_grpc.EdgeAsrStub(channel)
        for event in stub.Subscribe(edge_asr_pb2.SubscribeRequest(partials=False), timeout=60):
            name = edge_asr_pb2.EventType.Name(event.type)
            events.append(name)
            if name == "SPEECH_STARTED" and len(events) == 1:
                proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert events[0] == "SPEECH_STARTED"
    assert events[-2] in ("CONFIRMED", "FINAL_ENDPOINT"), events
    assert events[-1] == "ON_DEVICE_FINAL", events
    assert "SIGTERM, finishing" in proc.stdout.read()


def test_metrics_endpoint_and_status(start):
    proc, socket = start("--realtime", "--metrics-port", "0")
    try:
        line = ""
        while "metrics http://" not in line:
            line = proc.stdout.readline()
            assert line, "daemon exited before printing its endpoints"
        url = line.split("metrics ")[1].split()[0].rstrip(")")
        _events(socket, until=3)  # the first utterance is over; the daemon still runs
        body = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        assert "edge_asr_real_time_factor" in body
        assert "edge_asr_final_endpoint_delay_seconds_bucket" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unknown_config_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[recognizer]\nbeem = 4\n")
    with pytest.raises(ValueError, match="unknown setting.*beem"):
        load_config(bad)
    good = tmp_path / "good.toml"
    good.write_text('vad_mode = 3\nvad_level_gate = 0.25\n[endpoint]\nspec_silence = 0.2\n'
                    '[source]\nkind = "none"\n')
    config = load_config(good)
    assert config.vad_mode == 3 and config.endpoint.spec_silence == 0.2
    pc = config.pipeline_config("m")  # what every pipeline of the daemon runs with
    assert (pc.vad_mode, pc.vad_level_gate) == (3, 0.25)
