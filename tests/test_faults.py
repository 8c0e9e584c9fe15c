"""Faults, each with what the user gets. bench/faults.py plays the same faults longer and
prints the figures; these keep them short (seconds) and fail if the behaviour regresses.

- the cloud killed mid-utterance and restarted: that utterance closes with ON_DEVICE_FINAL,
  later ones with RESCORED again, and every utterance closes exactly once;
- the network to the cloud partitioned (black hole, or connections reset) and slow, through
  the simulator's network emulator: ON_DEVICE_FINAL on time, late answers never surface,
  RESCORED once the network heals;
- the daemon killed with SIGKILL and restarted: a following client says which utterance
  was cut off (UTTERANCE_LOST) and subscribes again; a pushed stream gets UNAVAILABLE;
- the CPU starved by the simulator's load: ring-buffer overruns counted, told as
  AUDIO_OVERRUN, and recognition goes on;
- the audio device disappearing and coming back: SOURCE_LOST, the cut-off utterance
  closed, SOURCE_RESTORED, and recognition goes on.

The daemon runs the tiny random model (conftest.py): the words are random, the events and
their order are the daemon's.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from edge_asr.daemon.api.bus import Subscription, SubscriptionClosed
from edge_asr.daemon.api.config import DaemonConfig, SourceConfig
from edge_asr.daemon.api.notices import Notice, OverrunWatch
from edge_asr.daemon.api.proto import edge_asr_pb2 as pb
from edge_asr.daemon.api.proto import edge_asr_pb2_grpc as pb_grpc
from edge_asr.daemon.api.resubscribe import RECONNECT_OPTIONS, Follower
from edge_asr.daemon.api.service import Daemon
from edge_asr.daemon.capture.capture_thread import CaptureThread
from edge_asr.daemon.capture.reopen import ReopeningSource
from edge_asr.daemon.capture.sources import AudioSourceError
from edge_asr.daemon.pipeline import Event, EventType
from edge_asr.daemon.recognition.recognizer import RecognizerConfig
from edge_asr.daemon.uplink.cloud_link import CloudLink, CloudLinkConfig
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.daemon.uplink.lattice import Path as LatticePath
from edge_asr.daemon.uplink.lattice import WordArc, build_lattice
from edge_asr.simulator.cpu_load import set_niceness
from edge_asr.simulator.netem import NetworkConfig, NetworkEmulator

DATA = Path(__file__).parent / "data"
# The four shortest bundled clips (about 3 s each): an utterance every 4 s or so.
CLIPS = [str(DATA / f"clip{n:02d}.flac") for n in (3, 4, 13, 10)]
CLOSING = ("RESCORED", "ON_DEVICE_FINAL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def bus_events(sub: Subscription, timeout: float) -> Iterator[Event | Notice]:
    """What a subscriber of the daemon's bus receives, until the bus ends or `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            delivery = sub.get(timeout=0.1)
        except SubscriptionClosed:
            return
        if delivery is not None:
            yield delivery.event
    raise AssertionError(f"no end after {timeout} s")


def closings_by_utterance(events: list) -> dict[str, list[str]]:
    """The closing events of each utterance that started, by utterance id."""
    closed: dict[str, list[str]] = {}
    for e in events:
        kind = e.type.value
        if kind == "SPEECH_STARTED":
            closed.setdefault(e.utterance_id, [])
        elif kind in CLOSING:
            closed.setdefault(e.utterance_id, []).append(kind)
    return closed


def playlist_config(model_dir: Path, **source) -> DaemonConfig:
    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=model_dir),
                          source=SourceConfig(kind="files", files=CLIPS, loop=True, gap_s=0.8,
                                              **source))
    config.server.socket = ""  # in-process: the bus is what Subscribe streams
    return config


# -- the cloud killed mid-utterance and restarted -------------------------------------------

def test_cloud_killed_mid_utterance_and_restarted(cloud, tiny_model_dir):
    port = free_port()
    server = cloud(port=port)
    config = playlist_config(tiny_model_dir)
    config.cloud = CloudLinkConfig(address=f"127.0.0.1:{port}", answer_deadline_s=0.3,
                                   backoff_initial_s=0.05, backoff_max_s=0.3,
                                   connect_timeout_s=0.5)
    daemon = Daemon(config)
    sub = daemon.bus.subscribe(partials=False)
    daemon.start()
    events: list = []
    killed = ""  # the utterance that was open when the cloud died
    restarted_at = None
    after_restart: list[str] = []  # closings of utterances that started after the restart
    started_after: set[str] = set()
    try:
        for e in bus_events(sub, timeout=60):
            events.append(e)
            kind = e.type.value
            if kind == "SPEECH_STARTED" and not killed and "RESCORED" in _kinds(events):
                server.stop(None).wait()  # the cloud dies while the user speaks
                killed = e.utterance_id
            elif kind in CLOSING and e.utterance_id == killed and restarted_at is None:
                server = cloud(port=port)  # back on the same address
                restarted_at = e.wall_time
            elif kind == "SPEECH_STARTED" and restarted_at is not None:
                started_after.add(e.utterance_id)
            elif kind in CLOSING and e.utterance_id in started_after:
                after_restart.append(kind)
                if kind == "RESCORED":
                    break
    finally:
        daemon.stop()
    events += list(bus_events(sub, timeout=30))  # the open utterance's end, then the bus ends
    closed = closings_by_utterance(events)
    assert killed and closed[killed] == ["ON_DEVICE_FINAL"]
    cut = next(e for e in events if e.utterance_id == killed and e.type.value in CLOSING)
    assert cut.reason in ("cloud unreachable", "cloud late") and cut.nbest
    assert after_restart and after_restart[-1] == "RESCORED", after_restart
    assert all(kinds in (["RESCORED"], ["ON_DEVICE_FINAL"]) for kinds in closed.values()), closed


def _kinds(events: list) -> list[str]:
    return [e.type.value for e in events]


# -- the network to the cloud partitioned and slow ------------------------------------------

class ScenarioClock:
    """The network emulator's outage windows are read against this, set by the test."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def utterance(utt: str) -> list[Event]:
    """One utterance's pipeline events, speculative end-point then confirmed."""
    words = "turn off the kitchen lights".split()
    lat = build_lattice([LatticePath([WordArc(w, 0.3 * i, 0.3 * i + 0.25, -1.0)
                                      for i, w in enumerate(words)])], utt, 1, True)
    text = " ".join(words)
    return [Event(EventType.SPEECH_STARTED, utt, 0.1, speech_start=0.1),
            Event(EventType.SPECULATIVE_ENDPOINT, utt, 1.6, text, revision=1,
                  nbest=[(text, -5.0)], lattice=lat),
            Event(EventType.CONFIRMED, utt, 1.8, text, revision=1)]


class Device:
    """A finisher and cloud link through the network emulator: what closes each utterance,
    and how long after the final end-point."""

    def __init__(self, address: str, deadline_s: float, connect_timeout_s: float = 0.5) -> None:
        self.out: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.link = CloudLink(CloudLinkConfig(
            address=address, max_missed_answers=2,
            connect_timeout_s=connect_timeout_s), seed=0).start()
        self.finisher = Finisher(self.out.put, self.link, deadline_s=deadline_s)

    def close(self) -> None:
        self.finisher.close()
        self.link.close()

    def speak(self, utt: str, wait_s: float = 5.0) -> tuple[str, str, float]:
        """(closing type, its reason, seconds from the final end-point to the closing)."""
        events = utterance(utt)
        self.finisher.process(events[:2])
        time.sleep(0.2)  # the user's pause before the final end-point; the cloud works
        decided = time.monotonic()
        self.finisher.process(events[2:])
        while True:
            e = self.out.get(timeout=wait_s)
            if e.utterance_id == utt and e.type.closes_utterance:
                return e.type.value, e.reason, time.monotonic() - decided

    def rescored(self) -> list[str]:
        seen = []
        while not self.out.empty():
            e = self.out.get()
            if e.type is EventType.RESCORED:
                seen.append(e.utterance_id)
        return seen


@pytest.mark.parametrize("mode", ["blackhole", "reset"])
def test_network_partition_gives_on_device_finals_on_time_then_rescored(cloud, mode):
    clock = ScenarioClock()
    netem = NetworkEmulator(f"127.0.0.1:{cloud().port}",
                            NetworkConfig(outages=[[10.0, 20.0]], outage_mode=mode), clock)
    netem.start()
    device = Device(netem.address, deadline_s=0.3)
    try:
        assert device.link.wait_connected(10.0)
        assert device.speak("before")[0] == "RESCORED"
        clock.t = 12.0  # partitioned
        # a reset outage cuts the open connection when the emulator next looks (10 ms)
        wait_for(lambda: mode == "blackhole" or netem.stats.cut >= 1, 5, "the cut")
        during = [device.speak(f"during{i}") for i in range(4)]
        for kind, reason, after in during:
            assert kind == "ON_DEVICE_FINAL", during
            assert reason in ("cloud late", "cloud unreachable")
            assert after < 0.3 + 0.25  # the deadline, not the partition, sets the wait
        if mode == "reset":  # the cut was seen at once: nothing waits for an answer
            assert during[-1][1] == "cloud unreachable" and netem.stats.cut >= 1
        clock.t = 25.0  # healed
        healed = []
        end = time.monotonic() + 15
        while "RESCORED" not in healed:  # after the link's backoff, a fresh session
            assert time.monotonic() < end, healed
            healed.append(device.speak(f"after{len(healed)}")[0])
        time.sleep(0.3)  # answers held up by the partition may arrive now: never shown
        assert not any(u.startswith("during") for u in device.rescored())
    finally:
        device.close()
        netem.stop()


@pytest.mark.parametrize("network, closing", [
    (NetworkConfig(latency_ms=60, jitter_ms=10, bandwidth_kbps=128), "RESCORED"),
    (NetworkConfig(latency_ms=400, bandwidth_kbps=128), "ON_DEVICE_FINAL"),
])
def test_slow_network_rescored_within_the_deadline_or_the_device_answers(
        cloud, network, closing):
    netem = NetworkEmulator(f"127.0.0.1:{cloud().port}", network)
    netem.start()
    # a session's handshake takes a few round trips: room for them on a slow network
    device = Device(netem.address, deadline_s=0.5, connect_timeout_s=3.0)
    try:
        assert device.link.wait_connected(10.0)
        results = [device.speak(f"u{i}") for i in range(3)]
        assert [kind for kind, _, _ in results] == [closing] * 3, results
        assert all(after < 0.5 + 0.25 for _, _, after in results)
        if closing == "ON_DEVICE_FINAL":
            assert all(reason == "cloud late" for _, reason, _ in results)
            time.sleep(1.0)  # the late answers arrive: they never surface
            assert device.rescored() == []
    finally:
        device.close()
        netem.stop()


# -- the daemon killed with SIGKILL and restarted ------------------------------------------

def daemon_toml(tmp_path: Path, model_dir: Path, **source) -> tuple[Path, str]:
    sock = str(tmp_path / "d.sock")
    values = {"kind": "files", "files": CLIPS, "loop": True, "gap_s": 0.8, **source}
    text = ("[source]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            + f'[server]\nsocket = "{sock}"\n[recognizer]\nmodel_dir = "{model_dir}"\n')
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    return path, sock


def start_daemon(config: Path, sock: str, preexec_fn=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config",
                             str(config), "--local-only"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    # after a SIGKILL the dead daemon's socket file is still there: wait for the new one
    # to answer rather than for the file
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            proc.kill()
            raise AssertionError(f"daemon did not start: {proc.communicate()[1]}") from None
    return proc


class Following(threading.Thread):
    """A client that follows the daemon across restarts (daemon/api/resubscribe.py)."""

    def __init__(self, sock: str) -> None:
        super().__init__(daemon=True)
        self.follower = Follower(
            lambda: grpc.insecure_channel(f"unix:{sock}", options=RECONNECT_OPTIONS),
            partials=False)
        self.events: list[pb.Event] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in self.follower.events():
                self.events.append(event)
        except BaseException as e:  # noqa: BLE001 - checked by the test
            self.error = e

    def kinds(self) -> list[tuple[str, str]]:
        return [(pb.EventType.Name(e.type), e.utterance_id) for e in list(self.events)]


def test_daemon_killed_and_restarted_clients_resubscribe_and_hear_what_was_lost(
        tmp_path, tiny_model_dir):
    config, sock = daemon_toml(tmp_path, tiny_model_dir, wait_for_subscriber=True)
    first = start_daemon(config, sock)
    client = Following(sock)
    client.start()
    pushing: list[grpc.RpcError | None] = []
    second = None
    try:
        # the user is speaking
        wait_for(lambda: ("SPEECH_STARTED", "mic-1") in client.kinds(), 30, "an utterance")
        pusher = threading.Thread(target=lambda: pushing.append(_push_until_error(sock)))
        pusher.start()
        time.sleep(0.3)  # the pushed stream is under way too
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        pusher.join(10)
        assert not pusher.is_alive(), "a pushed stream hung when its daemon died"
        wait_for(lambda: any(k == "UTTERANCE_LOST" for k, _ in client.kinds()), 10,
                 "UTTERANCE_LOST")
        second = start_daemon(config, sock)  # what systemd's Restart= does
        # the client subscribed again by itself and hears the new daemon's utterances
        wait_for(lambda: client.follower.subscriptions >= 2, 15, "a new subscription")
        wait_for(lambda: _closed_after_loss(client.kinds()), 30, "an utterance after")
    finally:
        client.follower.stop()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    client.join(10)
    assert client.error is None, client.error
    kinds = client.kinds()
    lost = [e for e in client.events if e.type == pb.UTTERANCE_LOST]
    # Exactly the utterance that was open, never closed before, its last words kept.
    assert [e.utterance_id for e in lost] == ["mic-1"]
    assert ("ON_DEVICE_FINAL", "mic-1") not in kinds[:kinds.index(("UTTERANCE_LOST", "mic-1"))]
    assert "UNAVAILABLE" in lost[0].reason and client.follower.breaks >= 1
    assert pushing and pushing[0] is not None
    assert pushing[0].code() == grpc.StatusCode.UNAVAILABLE, pushing[0]


def _push_until_error(sock: str) -> grpc.RpcError | None:
    """Pushes silence in real time until the call fails; the error (None if it ended OK)."""
    def requests():
        yield pb.RecognizeRequest(config=pb.RecognizeConfig(sample_rate=16000,
                                                            encoding=pb.PCM_S16LE))
        for _ in range(300):
            yield pb.RecognizeRequest(audio=bytes(3200))  # 100 ms
            time.sleep(0.1)

    with grpc.insecure_channel(f"unix:{sock}") as channel:
        try:
            for _ in pb_grpc.EdgeAsrStub(channel).Recognize(requests(), timeout=60):
                pass
        except grpc.RpcError as e:
            return e
    return None


def _closed_after_loss(kinds: list[tuple[str, str]]) -> bool:
    if ("UTTERANCE_LOST", "mic-1") not in kinds:
        return False
    after = kinds[kinds.index(("UTTERANCE_LOST", "mic-1")) + 1:]
    started = {u for k, u in after if k == "SPEECH_STARTED"}
    return any(k in CLOSING and u in started for k, u in after)


# -- the CPU starved -----------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_cpu_starvation_overruns_are_counted_and_told_and_recognition_recovers(
        tmp_path, tiny_model_dir):
    core = min(os.sched_getaffinity(0))
    config, sock = daemon_toml(tmp_path, tiny_model_dir, wait_for_subscriber=True,
                               ring_seconds=0.3)
    daemon = start_daemon(config, sock, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    client = Following(sock)
    client.start()
    load = []
    try:
        wait_for(lambda: client.kinds(), 30, "the first event")  # the daemon plays
        set_niceness(daemon.pid, 19)  # the load, at the default priority, takes its core
        load = [subprocess.Popen([sys.executable, "-m", "edge_asr.simulator.cpu_load",
                                  "--load", "1.0", "--core", str(core), "--seconds", "4"])
                for _ in range(3)]
        for player in load:
            player.wait(30)
        load_ended = time.time()
        set_niceness(daemon.pid, 0)  # as root; else it stays low, as on a busy device
        seen = len(client.events)
        # recognition goes on: an utterance that starts after the load ends, and closes
        wait_for(lambda: _utterance_closed_since(client.events[seen:], load_ended), 30,
                 "an utterance after the load")
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            status = pb_grpc.EdgeAsrStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
    finally:
        client.follower.stop()
        for player in load:
            if player.poll() is None:
                player.kill()
        daemon.terminate()
        daemon.wait(30)
    overruns = [e for e in client.events if e.type == pb.AUDIO_OVERRUN]
    assert overruns, "no AUDIO_OVERRUN while starved"
    assert all(e.lost_audio_s > 0 and e.overruns > 0 and not e.utterance_id for e in overruns)
    assert [e.overruns for e in overruns] == sorted(e.overruns for e in overruns)
    # at most one a second, and what they told adds up to what the status counts
    walls = [e.wall_time for e in overruns]
    assert all(b - a >= 0.9 for a, b in zip(walls, walls[1:], strict=False))
    assert status.overruns >= overruns[-1].overruns > 0
    told = sum(e.lost_audio_s for e in overruns)
    assert told == pytest.approx(status.counters["audio_lost_s"], abs=0.05)
    assert status.counters["overrun_notices"] == len(overruns)


def _utterance_closed_since(events: list[pb.Event], wall: float) -> bool:
    started = {e.utterance_id for e in events
               if e.type == pb.SPEECH_STARTED and e.wall_time > wall}
    return any(e.type in (pb.RESCORED, pb.ON_DEVICE_FINAL) and e.utterance_id in started
               for e in events)


def test_overrun_notices_come_at_most_once_an_interval_and_add_up():
    now = [0.0]
    watch = OverrunWatch(interval_s=1.0, clock=lambda: now[0])
    assert watch.check(0, 0.0, 1.0) is None
    first = watch.check(2, 0.5, 1.0)
    assert first is not None and (first.overruns, first.lost_audio_s) == (2, 0.5)
    now[0] = 0.5
    assert watch.check(5, 1.25, 1.5) is None  # too soon: kept for the next notice
    now[0] = 1.1
    second = watch.check(5, 1.25, 2.0)
    assert second is not None and second.lost_audio_s == pytest.approx(0.75)
    now[0] = 5.0
    assert watch.check(5, 1.25, 6.0) is None  # nothing new was lost
    assert watch.notices == 2 and watch.lost_audio_s == 1.25


def test_a_starved_reader_of_files_in_real_time_loses_audio_as_a_microphone_would():
    class Paced:
        """Two seconds of 20 ms pieces, delivered in real time."""

        def pieces(self):
            for i in range(100):
                time.sleep(0.02)
                yield np.full(320, i, np.float32)

        def close(self):
            pass

    capture = CaptureThread(Paced(), ring_seconds=0.2)
    capture.start()
    time.sleep(1.0)  # recognition starved for a second
    got = list(capture.pieces())
    assert capture.overruns > 0 and capture.lost_audio_s >= 0.7
    assert len(got) * 0.02 + capture.lost_audio_s == pytest.approx(2.0, abs=1e-6)
    assert [p[0] for p in got] == sorted(p[0] for p in got)  # the newest audio, in order


def test_files_in_real_time_keep_one_clock_as_a_microphone_does(tmp_path):
    """A reader that falls behind (or a file slow to open) is caught up, not added on: the
    playlist ends when its audio does, so a starved daemon loses audio instead of time."""
    import soundfile as sf

    from edge_asr.daemon.capture.sources import PlaylistSource

    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, np.full(4800, 0.1, np.float32), 16000)  # 0.3 s each
    playlist = PlaylistSource([tmp_path / "a.wav", tmp_path / "b.wav"], realtime=True,
                              gap_s=0.1)
    start = time.monotonic()
    for i, _ in enumerate(playlist.pieces()):
        if i == 14:  # the end of the first file: the reader stalls
            time.sleep(0.4)
    assert playlist.pieces_delivered == 40  # (0.3 + 0.1) * 2 s of 20 ms pieces
    assert time.monotonic() - start == pytest.approx(0.8, abs=0.15)


# -- the audio device disappearing and coming back ------------------------------------------

class FakeDevice:
    """A capture device that delivers `pieces` pieces, then is unplugged."""

    opened = 0

    def __init__(self, pieces: int, name: str = "usb mic") -> None:
        FakeDevice.opened += 1
        self.n, self.device = pieces, {"name": name}
        self.overruns, self.lost_audio_s, self.closed = 1, 0.02, False

    def pieces(self):
        for i in range(self.n):
            yield np.full(320, i, np.float32)
        raise AudioSourceError("device 'usb mic' stopped delivering audio (unplugged)")

    def close(self):
        self.closed = True


def test_a_device_that_vanishes_is_told_waited_for_and_used_again():
    calls: list[str] = []
    attempts = [0]

    def reopen():
        attempts[0] += 1
        if attempts[0] < 3:  # still unplugged
            raise AudioSourceError("no audio device matches 'usb mic'")
        return FakeDevice(2)

    first = FakeDevice(3)
    source = ReopeningSource(first, reopen, lambda why: calls.append(f"lost: {why}"),
                             lambda name: calls.append(f"restored: {name}"),
                             retry_s=0.01, retry_max_s=0.02)
    got = []
    for piece in source.pieces():
        got.append((len(calls), piece[0]))
        if len(got) == 5:
            break
    assert got == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1)]
    assert calls == ["lost: device 'usb mic' stopped delivering audio (unplugged)",
                     "restored: device 'usb mic'"]
    assert first.closed and source.losses == 1 and source.failed_opens == 2
    assert source.overruns == 2 and source.lost_audio_s == pytest.approx(0.04)
    source.close()


def test_closing_a_source_that_waits_for_its_device_ends_it():
    def never():
        raise AudioSourceError("no such device")

    source = ReopeningSource(FakeDevice(0), never, lambda why: None, lambda name: None,
                             retry_s=0.05)
    reader = threading.Thread(target=lambda: list(source.pieces()))
    reader.start()
    wait_for(lambda: source.lost, 5, "the loss")
    source.close()
    reader.join(5)
    assert not reader.is_alive()


@pytest.fixture
def pulse_server(tmp_path_factory, monkeypatch):
    """A private PulseAudio server whose null sink's monitor is the microphone (as in
    test_microphone.py); yields a function that kills it and one that starts it again."""
    from test_microphone import SINK, _start_server, _stop_server

    from edge_asr.daemon.capture import microphone

    for tool in ("pulseaudio", "pactl", "paplay"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found (Debian packages pulseaudio, pulseaudio-utils)")
    try:
        microphone.list_input_devices()
    except AudioSourceError as e:
        pytest.skip(str(e))
    folder = tmp_path_factory.mktemp("pulse")
    servers = [_start_server(folder)]
    monkeypatch.setenv("PULSE_SERVER", f"unix:{servers[0].socket}")
    monkeypatch.setenv("PULSE_SOURCE", f"{SINK}.monitor")
    monkeypatch.setenv("PULSE_SINK", SINK)
    microphone.refresh_devices()
    if "pulse" not in [d["name"] for d in microphone.list_input_devices()]:
        _stop_server(servers[0])
        pytest.skip("PortAudio lists no 'pulse' input (Debian package libasound2-plugins)")

    def kill() -> None:
        servers[-1].process.kill()
        servers[-1].process.wait(5)

    def restart() -> None:
        servers.append(_start_server(folder))

    yield kill, restart, SINK
    for server in servers:
        _stop_server(server)
    monkeypatch.undo()
    microphone.refresh_devices()


def test_the_microphone_unplugged_mid_utterance_and_plugged_in_again(
        pulse_server, tiny_model_dir, tmp_path):
    import soundfile as sf
    from test_server import speech_like

    kill, restart, sink = pulse_server
    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=tiny_model_dir),
                          source=SourceConfig(kind="microphone", device="pulse"))
    config.server.socket = ""
    daemon = Daemon(config)
    sub = daemon.bus.subscribe(partials=False)
    events: list = []
    speech = tmp_path / "speech.wav"
    sf.write(speech, np.concatenate([speech_like(1, 48000)[:48000]] * 4), 48000)  # 4 s

    def play() -> subprocess.Popen:
        return subprocess.Popen(["paplay", f"--device={sink}", str(speech)],
                                stderr=subprocess.DEVNULL)

    def until(kind: str, timeout: float) -> None:
        for e in bus_events(sub, timeout):
            events.append(e)
            if e.type.value == kind:
                return

    daemon.start()
    try:
        wait_for(lambda: daemon.source.current.captured_samples > 0, 15, "capture")
        player = play()
        until("SPEECH_STARTED", 15)
        kill()  # unplugged while the user speaks
        player.wait(10)
        until("SOURCE_LOST", 10)
        time.sleep(0.5)
        restart()  # plugged in again
        until("SOURCE_RESTORED", 20)
        wait_for(lambda: daemon.source.current.captured_samples > 0, 15, "capture again")
        player = play()
        until("SPEECH_STARTED", 15)
        player.wait(10)
    finally:
        daemon.stop()
    events += list(bus_events(sub, timeout=30))
    kinds = _kinds(events)
    assert daemon.failure is None and daemon.source_losses == 1
    lost = kinds.index("SOURCE_LOST")
    cut = events[0].utterance_id  # the utterance the unplugging cut off closes, at once
    assert [e.type.value for e in events[:lost] if e.utterance_id == cut] == ["SPEECH_STARTED"]
    after = [e for e in events[lost + 1:] if e.utterance_id == cut]
    assert after[0].reason == "end_of_input" and after[-1].type.value == "ON_DEVICE_FINAL"
    assert kinds.index("SOURCE_RESTORED") > kinds.index("ON_DEVICE_FINAL")
    assert "stopped delivering" in events[lost].reason
    closed = closings_by_utterance(events)
    assert len(closed) >= 2 and all(v == ["ON_DEVICE_FINAL"] for v in closed.values()), closed
    assert kinds.count("SOURCE_RESTORED") == 1
