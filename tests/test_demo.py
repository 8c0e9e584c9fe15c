"""`make run` end to end: the cloud, the daemon playing a clip as its microphone, and the
listener printing events, each in a process of its own."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLOUD_LM = REPO / "models" / "cloud-lm"


@pytest.mark.skipif(not (CLOUD_LM / "model_card.json").exists(), reason="no cloud LM")
def test_demo_runs_cloud_daemon_and_listener(tiny_model_dir):
    clip = sorted((REPO / "tests" / "data").glob("*.flac"))[0]
    done = subprocess.run([sys.executable, "-m", "edge_asr.daemon.cli", "demo", str(clip),
                           "--no-realtime", "--model", str(tiny_model_dir)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "cloud rescoring on 127.0.0.1:" in out
    # Event lines read "   1.23s  SPEECH_STARTED   mic-1  text".
    lines = [fields[1] for fields in map(str.split, out.splitlines())
             if len(fields) > 1 and fields[0].endswith("s")
             and fields[0][:-1].replace(".", "", 1).isdigit()]
    assert "SPEECH_STARTED" in lines and "SPECULATIVE_ENDPOINT" in lines
    # The cloud answered (or, on a very slow machine, the device closed the utterance itself).
    assert lines[-1] in ("RESCORED", "ON_DEVICE_FINAL"), out
