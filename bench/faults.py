"""Faults, each with what the user gets (figures printed, never asserted;
tests/test_faults.py keeps the same behaviour from regressing, in seconds).

    python bench/faults.py [--model DIR] [--only cloud,network,kill,cpu,device]
                           [--starve-s 60] [--network-s 60]

Real processes throughout: `edge-asr daemon` playing the bundled clips in real time as its
microphone (a private PulseAudio device for the device fault), `edge-asr cloud` with
models/cloud-lm, the simulator's network emulator and CPU load, and a client that follows
the daemon across restarts (daemon/api/resubscribe.py), as an assistant would.

- cloud: the cloud killed (SIGKILL) while an utterance is open, back on its port after
  `--cloud-down-s`;
- network: the link to the cloud partitioned (black hole, then connections reset) for the
  middle third of `--network-s`, and slow (latency, jitter, loss, a bandwidth cap);
- kill: the daemon killed with SIGKILL mid-utterance, three times, restarted a second later
  as systemd's Restart= would, with a pushed stream under way each time;
- cpu: the daemon's core taken by the simulator's music-player load for `--starve-s`;
- device: the microphone's sound server killed mid-utterance, back after 5 s.

For each: the utterances and how each closed (RESCORED, ON_DEVICE_FINAL and why, lost and
said so, or lost silently), and how long the user waited and the recovery took.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from edge_asr.daemon.api.client import start_cloud
from edge_asr.daemon.api.proto import edge_asr_pb2 as pb
from edge_asr.daemon.api.proto import edge_asr_pb2_grpc as pb_grpc
from edge_asr.daemon.api.resubscribe import RECONNECT_OPTIONS, Follower
from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR
from edge_asr.simulator.cpu_load import set_niceness
from edge_asr.simulator.netem import NetworkConfig, NetworkEmulator

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CLIPS = sorted(str(p) for p in DATA.glob("clip*.flac"))
CLOUD_LM = ROOT / "models" / "cloud-lm"
NAME = pb.EventType.Name
CLOSING = (pb.RESCORED, pb.ON_DEVICE_FINAL)
DECISIONS = (pb.CONFIRMED, pb.FINAL_ENDPOINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a daemon and the client that follows it ------------------------------------------------

@dataclass
class Received:
    arrived: float  # wall time at the client
    event: pb.Event


class Client(threading.Thread):
    """Follows the daemon on `sock` across restarts, keeping every event with its arrival."""

    def __init__(self, sock: str) -> None:
        super().__init__(daemon=True)
        self.follower = Follower(lambda: grpc.insecure_channel(f"unix:{sock}",
                                                               options=RECONNECT_OPTIONS),
                                 partials=False)
        self.got: list[Received] = []

    def run(self) -> None:
        for event in self.follower.events():
            self.got.append(Received(time.time(), event))

    def wait_for(self, test: Callable[[Received], bool], timeout: float, since: int = 0
                 ) -> Received | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for r in self.got[since:]:
                if test(r):
                    return r
            time.sleep(0.02)
        return None

    def count(self, kind: int, since: int = 0) -> int:
        return sum(r.event.type == kind for r in self.got[since:])


class DaemonProcess:
    def __init__(self, folder: Path, model: str, cloud: str = "", ring_s: float = 2.0,
                 kind: str = "files", preexec: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.sock = str(folder / "d.sock")
        source = {"kind": kind, "ring_seconds": ring_s}
        if kind == "files":
            source.update(files=CLIPS, loop=True, gap_s=1.0)
        else:
            source["device"] = "pulse"
        cloud_table = f'[cloud]\naddress = "{cloud}"\n' if cloud else ""
        self.config = folder / "daemon.toml"
        self.config.write_text(
            "[source]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in source.items())
            + f'[server]\nsocket = "{self.sock}"\n[recognizer]\nmodel_dir = "{model}"\n'
            + cloud_table)
        self.local_only = not cloud
        self.preexec, self.env = preexec, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Starts it; seconds until it serves."""
        t0 = time.monotonic()
        args = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config",
                str(self.config)] + (["--local-only"] if self.local_only else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, preexec_fn=self.preexec,
                                     env=self.env)
        with grpc.insecure_channel(f"unix:{self.sock}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        return time.monotonic() - t0

    def status(self) -> pb.Status:
        with grpc.insecure_channel(f"unix:{self.sock}") as channel:
            return pb_grpc.EdgeAsrStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        return self.proc.wait(30)


@contextlib.contextmanager
def running(daemon: DaemonProcess):
    daemon.start()
    client = Client(daemon.sock)
    client.start()
    try:
        yield client
    finally:
        daemon.stop()  # SIGTERM: the open utterance is finished and sent first
        time.sleep(0.5)
        client.follower.stop()
        client.join(10)


# -- what the user got ------------------------------------------------------------------------

@dataclass
class Utterance:
    id: str
    started: float
    decided: float | None = None  # arrival of the final end-point (CONFIRMED / FINAL)
    closings: list[Received] = field(default_factory=list)
    lost: Received | None = None  # the client's UTTERANCE_LOST

    @property
    def wait_s(self) -> float | None:
        """From the final end-point to the closing event, at the client."""
        if self.decided is None or not self.closings:
            return None
        return self.closings[0].arrived - self.decided


def utterances(got: list[Received]) -> list[Utterance]:
    """Per utterance, in order; an id used again by a restarted daemon is a new one."""
    done: list[Utterance] = []
    now: dict[str, Utterance] = {}
    for r in got:
        e = r.event
        if e.type == pb.SPEECH_STARTED:
            if e.utterance_id in now:
                done.append(now.pop(e.utterance_id))
            now[e.utterance_id] = Utterance(e.utterance_id, r.arrived)
            continue
        u = now.get(e.utterance_id)
        if u is None:
            continue
        if e.type in DECISIONS:
            u.decided = r.arrived
        elif e.type in CLOSING:
            u.closings.append(r)
        elif e.type == pb.UTTERANCE_LOST:
            u.lost = r
    return done + list(now.values())


def closings_line(us: list[Utterance]) -> str:
    kinds = Counter(f"{NAME(u.closings[0].event.type)}"
                    + (f" ({u.closings[0].event.reason})" if u.closings[0].event.reason else "")
                    for u in us if u.closings)
    said_lost = sum(u.lost is not None and not u.closings for u in us)
    twice = sum(len(u.closings) > 1 for u in us)
    silent = sum(not u.closings and u.lost is None for u in us)
    return (f"{len(us)} utterances: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
            + f"; reported lost {said_lost}; closed twice {twice}; lost silently {silent}")


def waits_line(us: list[Utterance]) -> str:
    waits = sorted(u.wait_s for u in us if u.wait_s is not None)
    if not waits:
        return "no closing after a final end-point"
    return (f"wait after the final end-point: p50 {statistics.median(waits):.2f} s, "
            f"p90 {np.percentile(waits, 90):.2f} s, max {waits[-1]:.2f} s")


def first_after(us: list[Utterance], t: float, kind: int) -> Utterance | None:
    return next((u for u in us if u.started > t and u.closings
                 and u.closings[0].event.type == kind), None)


# -- the faults --------------------------------------------------------------------------------

def cloud_killed(model: str, down_s: float) -> list[str]:
    port = free_port()
    cloud, _ = start_cloud(CLOUD_LM, extra_args=["--port", str(port)])
    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(Path(tmp), model, f"127.0.0.1:{port}")
        with running(daemon) as client:
            client.wait_for(lambda r: r.event.type == pb.RESCORED, 60)
            victim = client.wait_for(lambda r: r.event.type == pb.SPEECH_STARTED, 30,
                                     len(client.got))
            cloud.send_signal(signal.SIGKILL)
            cloud.wait(10)
            killed_at = time.time()
            time.sleep(down_s)
            cloud, _ = start_cloud(CLOUD_LM, extra_args=["--port", str(port)])
            back_at = time.time()
            while not daemon.status().counters["cloud_connected"]:
                time.sleep(0.05)
            linked_at = time.time()
            client.wait_for(lambda r: r.event.type == pb.RESCORED, 60, len(client.got))
            time.sleep(8)  # a few more utterances with the cloud back
    cloud.terminate()
    cloud.wait(10)
    us = utterances(client.got)
    cut = next(u for u in us if u.id == victim.event.utterance_id and u.started == victim.arrived)
    first = first_after(us, back_at, pb.RESCORED)
    down = [u for u in us if u.decided and killed_at <= u.decided < back_at]
    return [
        f"cloud killed mid-utterance, back on its port after {down_s:.0f} s: {closings_line(us)}",
        f"  the utterance open at the kill: {NAME(cut.closings[0].event.type)} "
        f"({cut.closings[0].event.reason}), {cut.wait_s:.2f} s after its final end-point",
        f"  decided while the cloud was down: {closings_line(down)}; {waits_line(down)}",
        f"  cloud back: the link connected again {linked_at - back_at:.1f} s after the cloud "
        "served (its backoff); the first RESCORED for an utterance that started "
        + (f"{first.started - back_at:.1f} s after the restart" if first else "never"),
    ]


NETWORKS = {
    "partitioned, black hole": lambda third: NetworkConfig(outages=[[third, 2 * third]]),
    "partitioned, connections reset": lambda third: NetworkConfig(
        outages=[[third, 2 * third]], outage_mode="reset"),
    "slow: 150 +- 50 ms each way, 2% loss, 256 kbit/s": lambda third: NetworkConfig(
        latency_ms=150, jitter_ms=50, loss=0.02, bandwidth_kbps=256),
    "slower than the 0.5 s deadline: 400 ms each way": lambda third: NetworkConfig(
        latency_ms=400),
}


def network(model: str, seconds: float) -> list[str]:
    lines = []
    for name, make in NETWORKS.items():
        cloud, address = start_cloud(CLOUD_LM)
        config = make(seconds / 3)
        netem = NetworkEmulator(address, config, seed=1)
        try:
            device_address = netem.start()
            t0 = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                daemon = DaemonProcess(Path(tmp), model, device_address)
                with running(daemon) as client:
                    time.sleep(seconds)
                    status = daemon.status()
        finally:
            netem.stop()
            cloud.terminate()
            cloud.wait(10)
        us = utterances(client.got)
        lines.append(f"network {name}: {closings_line(us)}")
        if config.outages:
            start, end = (t0 + t for t in config.outages[0])
            during = [u for u in us if u.decided and start <= u.decided < end]
            first = first_after(us, end, pb.RESCORED)
            lines.append(f"  during the partition ({end - start:.0f} s): "
                         f"{closings_line(during)}; {waits_line(during)}")
            lines.append("  healed: first RESCORED for an utterance that started "
                         + (f"{first.started - end:.1f} s after" if first else "never"))
        else:
            lines.append(f"  {waits_line(us)}")
        late = status.counters["cloud_stale_results"] + status.counters["cloud_late_answers"]
        lines.append(f"  late or stale answers dropped {late:.0f}, "
                     f"cloud sessions {status.counters['cloud_sessions']:.0f}, "
                     f"segments lost {netem.stats.lost_segments} of {netem.stats.segments}")
    return lines


def _push_until_error(sock: str, out: list) -> None:
    """A client pushing audio in real time when the daemon dies: what its call ends with."""
    audio = (read_audio(CLIPS[0]) * 32767).astype("<i2")

    def requests():
        yield pb.RecognizeRequest(config=pb.RecognizeConfig(sample_rate=16000,
                                                            encoding=pb.PCM_S16LE))
        while True:
            for i in range(0, len(audio), 1600):
                yield pb.RecognizeRequest(audio=audio[i:i + 1600].tobytes())
                time.sleep(0.1)

    start = time.monotonic()
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        try:
            for _ in pb_grpc.EdgeAsrStub(channel).Recognize(requests(), timeout=120):
                pass
            out.append(("OK", time.monotonic() - start))
        except grpc.RpcError as e:
            out.append((e.code().name, time.monotonic() - start))


def daemon_killed(model: str, kills: int = 3, restart_after_s: float = 1.0) -> list[str]:
    pushed: list[tuple[str, float]] = []
    reports, serving, resubscribed = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(Path(tmp), model)
        with running(daemon) as client:
            for _ in range(kills):
                open_at_kill = client.wait_for(lambda r: r.event.type == pb.SPEECH_STARTED, 30,
                                               len(client.got))
                pusher = threading.Thread(target=_push_until_error, args=(daemon.sock, pushed))
                pusher.start()
                time.sleep(0.5)
                subscriptions, seen = client.follower.subscriptions, len(client.got)
                killed = time.time()
                daemon.kill()
                pusher.join(30)
                lost = client.wait_for(lambda r, u=open_at_kill.event.utterance_id:
                                       r.event.type == pb.UTTERANCE_LOST
                                       and r.event.utterance_id == u, 10, seen)
                reports.append(lost.arrived - killed if lost else None)
                time.sleep(restart_after_s)
                serving.append(daemon.start())
                back = time.time()
                end = time.monotonic() + 15
                while client.follower.subscriptions == subscriptions and time.monotonic() < end:
                    time.sleep(0.01)
                resubscribed.append(time.time() - back)
            time.sleep(5)
    us = utterances(client.got)
    told = [r for r in reports if r is not None]
    return [
        f"daemon killed (SIGKILL) mid-utterance {kills} times, restarted after "
        f"{restart_after_s:.0f} s: {closings_line(us)}",
        f"  the open utterance reported lost by the following client: {len(told)} of {kills}, "
        f"{max(told):.2f} s at most after the kill" if told else "  never reported lost",
        f"  restarted daemon serving after {max(serving):.2f} s at most; the client "
        f"subscribed again {max(resubscribed):.2f} s at most after that",
        "  pushed streams under way: " + ", ".join(
            f"{code} after {s:.1f} s" for code, s in pushed),
    ]


def cpu_starved(model: str, seconds: float, players: int = 2) -> list[str]:
    core = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(Path(tmp), model,
                               preexec=lambda: os.sched_setaffinity(0, {core}))
        with running(daemon) as client:
            time.sleep(15)
            load_from = time.time()
            set_niceness(daemon.proc.pid, 19)  # the players keep their priority: it yields
            load = [subprocess.Popen([sys.executable, "-m", "edge_asr.simulator.cpu_load",
                                      "--load", "1.0", "--core", str(core), "--seconds",
                                      str(seconds)]) for _ in range(players)]
            for p in load:
                p.wait()
            load_to = time.time()
            restored = set_niceness(daemon.proc.pid, 0)
            time.sleep(20)
            status = daemon.status()
    us = utterances(client.got)
    notices = [r for r in client.got if r.event.type == pb.AUDIO_OVERRUN]
    told = sum(r.event.lost_audio_s for r in notices)
    lags = _decision_lags(client.got)
    before = [lag for t, lag in lags if t < load_from]
    during = [lag for t, lag in lags if load_from <= t < load_to]
    after = [(t, lag) for t, lag in lags if t >= load_to]
    calm = next((t - load_to for t, lag in after if lag < 0.5), None)
    after_load = [u for u in us if u.started >= load_to]
    return [
        f"CPU starved for {seconds:.0f} s ({players} players at full load on the daemon's "
        f"core, the daemon at nice 19 meanwhile"
        + ("" if restored else ", and after: lowering it again needs root")
        + f"): {closings_line(us)}",
        f"  overruns {status.overruns}, audio lost {status.counters['audio_lost_s']:.1f} s, "
        f"AUDIO_OVERRUN events {len(notices)} (telling {told:.1f} s lost), the first "
        f"{notices[0].arrived - load_from:.1f} s into the load"
        if notices else "  no overrun",
        f"  decision lag (behind the audio, lost audio left out): before "
        f"{_med(before)}, during {_med(during)}, after {_med([lag for _, lag in after])}",
        "  recovered: decisions within 0.5 s of the audio again "
        + (f"{calm:.1f} s after the load ended" if calm is not None else "never")
        + f"; utterances after it {closings_line(after_load)}",
    ]


def _decision_lags(got: list[Received]) -> list[tuple[float, float]]:
    """(arrival, seconds behind the audio) of each final decision, with the audio lost so
    far left out (a decision's audio time counts only the audio recognised)."""
    lost, rows = 0.0, []
    for r in got:
        if r.event.type == pb.AUDIO_OVERRUN:
            lost += r.event.lost_audio_s
        elif r.event.type in DECISIONS:
            rows.append((r.arrived, r.arrived - r.event.audio_time - lost))
    if not rows:
        return []
    base = min(lag for _, lag in rows)  # the stream's start, as the quickest decision saw it
    return [(t, lag - base) for t, lag in rows]


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (max {max(values):.2f})" if values else "-"


def device_lost(model: str, unplugged_s: float = 5.0) -> list[str]:
    pulse = _pulse_helpers()
    if isinstance(pulse, str):
        return [f"device: skipped ({pulse})"]
    start_server, stop_server, sink = pulse
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            server = start_server(folder / "pulse")
        except BaseException as e:  # the helper skips (pytest) when the server won't start
            return [f"device: skipped ({e})"]
        env = {**os.environ, "PULSE_SERVER": f"unix:{server.socket}",
               "PULSE_SOURCE": f"{sink}.monitor", "PULSE_SINK": sink}
        speech = folder / "speech.wav"
        gap = np.zeros(16000, np.float32)
        sf.write(speech, np.concatenate([x for c in CLIPS[:6] for x in (read_audio(c), gap)]),
                 16000)
        playing = threading.Event()
        playing.set()

        def play() -> None:  # someone talking to the device, whenever it has a device
            while playing.is_set():
                subprocess.run(["paplay", f"--device={sink}", str(speech)], env=env,
                               stderr=subprocess.DEVNULL, check=False)
                time.sleep(0.2)

        daemon = DaemonProcess(folder, model, kind="microphone", env=env)
        threading.Thread(target=play, daemon=True).start()
        try:
            with running(daemon) as client:
                client.wait_for(lambda r: r.event.type in CLOSING, 60)
                open_at = client.wait_for(lambda r: r.event.type == pb.SPEECH_STARTED, 30,
                                          len(client.got))
                unplugged = time.time()
                server.process.kill()  # the device is gone
                server.process.wait(5)
                time.sleep(unplugged_s)
                server = start_server(folder / "pulse")
                plugged = time.time()
                restored = client.wait_for(lambda r: r.event.type == pb.SOURCE_RESTORED, 60)
                time.sleep(20)
                exit_code = daemon.stop()
        finally:
            playing.clear()
            stop_server(server)
    us = utterances(client.got)
    lost = next(r for r in client.got if r.event.type == pb.SOURCE_LOST)
    cut = next(u for u in us if u.id == open_at.event.utterance_id and u.closings)
    after = [u for u in us if u.started > plugged]
    return [
        f"device unplugged mid-utterance for {unplugged_s:.0f} s: {closings_line(us)}",
        f"  SOURCE_LOST {lost.arrived - unplugged:.2f} s after ({lost.event.reason}); the cut "
        f"utterance closed with {NAME(cut.closings[0].event.type)} "
        f"({cut.closings[0].event.reason or 'no reason'}) "
        f"{cut.closings[0].arrived - lost.arrived:.2f} s after it",
        "  SOURCE_RESTORED " + (f"{restored.arrived - plugged:.2f} s after the device came "
                                "back" if restored else "never"),
        f"  after it: {closings_line(after)}; the daemon exited with {exit_code} when stopped",
    ]


def _pulse_helpers() -> tuple | str:
    """The private PulseAudio server of tests/test_microphone.py, or why there is none."""
    import shutil

    missing = [t for t in ("pulseaudio", "pactl", "paplay") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    spec = importlib.util.spec_from_file_location("pulse_helpers",
                                                  ROOT / "tests" / "test_microphone.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)

    def start(folder: Path):
        folder.mkdir(exist_ok=True)
        return module._start_server(folder)

    return start, module._stop_server, module.SINK


FAULTS = {
    "cloud": lambda a: cloud_killed(a.model, a.cloud_down_s),
    "network": lambda a: network(a.model, a.network_s),
    "kill": lambda a: daemon_killed(a.model),
    "cpu": lambda a: cpu_starved(a.model, a.starve_s),
    "device": lambda a: device_lost(a.model),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--only", default=",".join(FAULTS), help="comma-separated: " + ", ".join(FAULTS))
    p.add_argument("--starve-s", type=float, default=60.0)
    p.add_argument("--network-s", type=float, default=60.0)
    p.add_argument("--cloud-down-s", type=float, default=10.0)
    args = p.parse_args()
    for name in args.only.split(","):
        t0 = time.monotonic()
        lines = FAULTS[name](args)
        print("\n".join(lines) + f"\n  ({time.monotonic() - t0:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
