"""The real capture path: PortAudio -> ALSA pulse plugin -> a private PulseAudio server.

The test starts its own PulseAudio server on a socket in a temporary folder (so it never
touches a desktop's sound server or speakers), with one null sink. A tone played into
that sink with paplay comes back on the sink's monitor, which the server offers as its
default source; MicrophoneSource records it through PortAudio's ALSA "pulse" device.

Needs the Debian packages pulseaudio, pulseaudio-utils, libasound2-plugins and
libportaudio2 (the Makefile's APT_PKGS); without them the tests skip and say which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.capture import microphone
from edge_asr.daemon.capture.audio import SUPPORTED_RATES
from edge_asr.daemon.capture.microphone import MicrophoneSource
from edge_asr.daemon.capture.sources import AudioSourceError

SINK = "edge_asr_test"
TONE_HZ = 440.0

# Only what the test needs: a client socket without cookies, and a null sink whose
# monitor is the default source. No hardware, D-Bus or session modules.
SERVER_CONFIG = """\
load-module module-native-protocol-unix socket={socket} auth-anonymous=1
load-module module-null-sink sink_name={sink} rate=48000 channels=1
set-default-sink {sink}
set-default-source {sink}.monitor
"""


@dataclass
class PulseServer:
    socket: Path
    process: subprocess.Popen[bytes]


def _start_server(folder: Path) -> PulseServer:
    socket = folder / "native"
    config = folder / "server.pa"
    config.write_text(SERVER_CONFIG.format(socket=socket, sink=SINK))
    # Its own runtime, state and home folders: nothing is shared with another server.
    env = {**os.environ, "HOME": str(folder), "XDG_CONFIG_HOME": str(folder / "config"),
           "PULSE_RUNTIME_PATH": str(folder / "run"), "PULSE_STATE_PATH": str(folder / "state")}
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
         "-n", "-F", str(config), "--log-target=stderr"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    server = PulseServer(socket, process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        info = subprocess.run(["pactl", "--server", f"unix:{socket}", "info"],
                              capture_output=True, timeout=10)
        if info.returncode == 0:
            return server
        time.sleep(0.2)
    _stop_server(server)
    tail = (folder / "server.log").read_text(errors="replace")[-1500:]
    pytest.skip(f"PulseAudio did not start a server on {socket} "
                f"(exit code {process.returncode}); its log ends: {tail}")


def _stop_server(server: PulseServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: install the Debian packages pulseaudio "
                    "and pulseaudio-utils (make system-deps)")
    try:
        microphone.list_input_devices()
    except AudioSourceError as e:
        pytest.skip(str(e))
    server = _start_server(tmp_path_factory.mktemp("pulse"))
    with pytest.MonkeyPatch.context() as patch:
        # Read by libpulse inside the ALSA plugin whenever PortAudio opens "pulse".
        patch.setenv("PULSE_SERVER", f"unix:{server.socket}")
        patch.setenv("PULSE_SOURCE", f"{SINK}.monitor")
        patch.setenv("PULSE_SINK", SINK)
        microphone.refresh_devices()  # PortAudio probes devices only when it initialises
        names = [d["name"] for d in microphone.list_input_devices()]
        if "pulse" not in names:
            _stop_server(server)
            pytest.skip(f"PortAudio lists no 'pulse' input device (it lists {names}): the "
                        "ALSA pulse plugin, Debian package libasound2-plugins, is missing")
        yield server
        _stop_server(server)
    microphone.refresh_devices()


def write_tone(path: Path, seconds: float, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)  # no clicks at the ends
    sf.write(str(path), (0.5 * fade * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32),
             rate, subtype="PCM_16")


def test_pulse_device_is_listed_with_its_details(pulse: PulseServer) -> None:
    device = next(d for d in microphone.list_input_devices() if d["name"] == "pulse")
    assert device["channels"] > 0 and device["default_rate"] > 0
    assert device["host_api"] == "ALSA"


def test_microphone_records_the_tone_played_into_the_virtual_device(
        pulse: PulseServer, tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    write_tone(wav, 1.5)
    pieces: list[np.ndarray] = []
    failures: list[BaseException] = []

    def read(mic: MicrophoneSource) -> None:
        try:
            pieces.extend(mic.pieces())
        except BaseException as e:  # re-raised below, on the test's thread
            failures.append(e)

    with MicrophoneSource("pulse", block_ms=20) as mic:
        reader = threading.Thread(target=read, args=(mic,))
        reader.start()
        # A fresh server's first capture stream takes a second or two to deliver.
        deadline = time.monotonic() + 10
        while mic.captured_samples == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mic.captured_samples > 0, "the capture never started"
        played = subprocess.run(["paplay", f"--device={SINK}", str(wav)],
                                capture_output=True, timeout=30)
        assert played.returncode == 0, played.stderr.decode(errors="replace")
        time.sleep(0.3)  # the tail of the tone is still on its way through the buffers
    reader.join(5.0)
    assert not reader.is_alive()
    if failures:
        raise failures[0]

    assert mic.rate in SUPPORTED_RATES
    assert all(p.shape == (320,) and p.dtype == np.float32 for p in pieces)
    assert (mic.overruns, mic.dropped_samples, mic.input_overflows) == (0, 0, 0)
    audio = np.concatenate(pieces)
    assert len(audio) >= 1.5 * 16000, f"only {len(audio) / 16000:.2f} s captured"
    # The whole tone arrived, without gaps: 1.5 s of 20 ms pieces at the played level.
    loud = [np.sqrt(np.mean(np.square(p))) > 0.3 for p in pieces]
    assert abs(sum(loud) - 75) <= 2, f"{sum(loud)} pieces of tone, 75 played"

    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    assert abs(freqs[np.argmax(spectrum)] - TONE_HZ) < 2.0
    near_tone = spectrum[np.abs(freqs - TONE_HZ) < 15].sum()
    assert near_tone / spectrum.sum() > 0.95  # the capture is the tone, not noise or garbage


def test_unknown_device_names_the_real_inputs(pulse: PulseServer) -> None:
    with pytest.raises(AudioSourceError, match="no audio device matches 'no-such-mic'.*'pulse'"):
        MicrophoneSource("no-such-mic")
