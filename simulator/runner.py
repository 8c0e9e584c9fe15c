"""Plays a scenario against a real daemon and a real cloud, and scores what clients saw.

One run:
  1. the room renders the microphone signal and the ground truth (simulator/room.py);
  2. `edge-asr cloud` starts in its own process, behind the network emulator;
  3. `edge-asr daemon` starts in its own process (pinned to the device profile's cores,
     a music player beside it when asked), configured by simulator/daemon_config.py, and
     plays the signal as its microphone;
  4. this process is the client (simulator/listener.py): it sets the context, subscribes,
     and stamps every event with the wall time it arrived, until the daemon has played
     everything and exits;
  5. the daemon's utterances are matched to the requests by time and scored with the same
     definitions as `edge-asr eval` (simulator/scoring.py); with a wake word or other
     speech in the room, its WAKE_WORD events and what it made of speech nobody addressed
     to it are counted too (simulator/addressed.py).

This module starts and stops the processes and writes each run's files; the steps' own
work lives in the modules named above.

User-perceived latency is the time from the end of a request's speech to the arrival, at
the client, of its RESCORED (or ON_DEVICE_FINAL) event. It needs the audio to be paced in
real time, so accelerated runs leave it out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from edge_asr.daemon.api.client import start_cloud
from edge_asr.models.augment import SAMPLE_RATE
from edge_asr.simulator.daemon_config import daemon_toml, session_context
from edge_asr.simulator.listener import ScenarioClock, listen
from edge_asr.simulator.netem import NetworkEmulator
from edge_asr.simulator.received_events import ReceivedEvent
from edge_asr.simulator.room import Session, render_session
from edge_asr.simulator.scenario import REPO_ROOT, Scenario
from edge_asr.simulator.scoring import score_session


@dataclass
class RunResult:
    scenario: str
    speculative: bool
    realtime: bool
    duration: float
    rows: list[dict]  # one per request: eval's keys plus the simulator's
    summary: dict
    events: list[ReceivedEvent]
    network: dict
    daemon_exit: int
    wake_word: str = ""  # the phrase the daemon listened for; "" = none
    non_addressed: list[dict] = field(default_factory=list)  # addressed.non_addressed rows


def _reap(proc: subprocess.Popen, timeout: float) -> tuple[int, os.struct_rusage]:
    """Wait for `proc` to exit (killing it after `timeout`) and return its exit status and
    its resource usage: the CPU time of the whole run, counted by the kernel."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            deadline = math.inf
        time.sleep(0.05)


def run_once(scenario: Scenario, session: Session, wav: Path, speculative: bool,
             log=print, reference: Path | None = None) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="edge-asr-sim-") as tmp:
        clock = ScenarioClock(scenario.realtime)
        lm = scenario.cloud.lm or str(REPO_ROOT / "models" / "cloud-lm")
        cloud_args = ["--nlu-cost-ms", str(scenario.cloud.nlu_cost_ms),
                      "--slow-ms", str(scenario.cloud.slow_ms)]
        cloud, cloud_address = start_cloud(Path(lm), extra_args=cloud_args)
        netem = NetworkEmulator(cloud_address, scenario.network, clock, seed=scenario.seed)
        player = daemon = None
        try:
            device_address = netem.start()
            socket = os.path.join(tmp, "daemon.sock")
            config = Path(tmp) / "daemon.toml"
            config.write_text(daemon_toml(scenario, wav, socket, device_address, speculative,
                                          reference))
            cores = set(scenario.device.cores)
            if scenario.device.music_load:
                player = subprocess.Popen(
                    [sys.executable, "-m", "edge_asr.simulator.cpu_load", "--load",
                     str(scenario.device.music_load), "--core", str(min(cores))])
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config", str(config)],
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
            log(f"  daemon pid {daemon.pid}, cloud {cloud_address} behind {device_address}"
                f", speculation {'on' if speculative else 'off'}")
            events, cpu_at_start = listen(socket, session_context(session.requests,
                                                                  scenario.utterances.contacts),
                                          clock, daemon)
            _, usage = _reap(daemon, timeout=60.0)
            cpu = usage.ru_utime + usage.ru_stime - cpu_at_start
        finally:
            for proc in (daemon, player, cloud):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
            netem.stop()
    rows, summary, others = score_session(scenario, session, events, cpu)
    listening = scenario.listens_for_wake_word
    return RunResult(scenario.name, speculative, scenario.realtime, session.duration, rows,
                     summary, events, dataclasses.asdict(netem.stats), daemon.returncode,
                     scenario.wake_word.phrase if listening else "", others)


def run_scenario(scenario: Scenario, out_dir: Path, log=print) -> list[RunResult]:
    """Renders the session once, plays it (twice when comparing speculation on and off),
    and writes the session audio, its ground truth and the results under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    session = render_session(scenario.utterances, scenario.room, scenario.base, scenario.seed,
                             wake_phrase=scenario.wake_word.phrase.strip())
    wav = out_dir / "session.wav"
    sf.write(wav, session.samples, SAMPLE_RATE, subtype="PCM_16")
    with open(out_dir / "timeline.jsonl", "w") as f:  # the ground truth, labelled
        for row in session.timeline():
            f.write(json.dumps(row) + "\n")
    reference = None
    if session.reference is not None:  # what the device played, for its echo canceller
        reference = out_dir / "reference.wav"
        sf.write(reference, session.reference, SAMPLE_RATE, subtype="PCM_16")
    log(f"{scenario.name}: {len(session.requests)} requests, {session.duration:.1f} s of audio"
        f" ({'real time' if scenario.realtime else 'accelerated'})"
        + (f", {len(session.others)} sentences not addressed to the device"
           if session.others else "")
        + (f", wake word {scenario.wake_word.phrase!r}"
           f"{'' if scenario.listens_for_wake_word else ' said, not listened for'}"
           if scenario.wake_word.enabled else ""))
    runs = []
    for speculative in ([True, False] if scenario.compare_speculation else [True]):
        result = run_once(scenario, session, wav, speculative, log, reference)
        runs.append(result)
        name = "results" if speculative else "results-no-speculation"
        with open(out_dir / f"{name}.jsonl", "w") as f:
            for row in result.rows:
                f.write(json.dumps(row) + "\n")
        with open(out_dir / f"{name}-events.jsonl", "w") as f:
            for e in result.events:
                f.write(json.dumps(dataclasses.asdict(e)) + "\n")
        if session.others:
            with open(out_dir / f"{name}-non-addressed.jsonl", "w") as f:
                for row in result.non_addressed:
                    f.write(json.dumps(row) + "\n")
    return runs
