"""bench/soak.py at CI size: the same code path as the hour-long `make reliability` (a real
daemon process, bundled clips looped in real time, one subscriber, SIGTERM at the end), for
about 40 seconds over the tiny random model, whose VAD-driven utterances open and close
like the shipped model's. Every utterance started must be closed exactly once.

The ledger that counts lost and duplicated closings is checked on its own first, so a
ledger that could never count either cannot make the soak pass.
"""

import sys
from pathlib import Path

import pytest
from bench_modules import load_bench

ROOT = Path(__file__).resolve().parent.parent
SOAK_MINUTES = 0.6
WARMUP_MINUTES = 0.25
# Only gross growth can show in the 20 s after the warm-up (something kept per 20 ms piece,
# a queue that never empties); smaller leaks need the hour of `make reliability`. 30 MB: a
# healthy short run grows a few MB at most, but on a shared, noisy machine the allocator and
# ONNX Runtime's arenas may still grow a few MB after 15 s of warm-up, and this must not flake.
MAX_GROWTH_MB = 30


@pytest.fixture(scope="module")
def soak():
    module = load_bench("soak")
    yield module
    sys.modules.pop(module.__name__, None)


def test_the_ledger_counts_lost_duplicated_and_unopened_closings(soak):
    ledger = soak.Ledger()
    for kind, utterance in [("SPEECH_STARTED", "mic-1"), ("PARTIAL", "mic-1"),
                            ("CONFIRMED", "mic-1"), ("ON_DEVICE_FINAL", "mic-1"),
                            ("SPEECH_STARTED", "mic-2"), ("RESCORED", "mic-2"),
                            ("ON_DEVICE_FINAL", "mic-2"),  # a second closing
                            ("SPEECH_STARTED", "mic-3"),  # never closed
                            ("ON_DEVICE_FINAL", "mic-9")]:  # never started
        ledger.add(kind, utterance, dropped_partials_before=1 if kind == "PARTIAL" else 0)
    assert ledger.lost == ["mic-3"]
    assert ledger.duplicated == 1
    assert ledger.unopened == ["mic-9"]
    assert ledger.closed == 4 and ledger.dropped_partials == 1


def test_clips_played_follows_the_looping_playlist(soak):
    starts = [0.0, 2.0, 5.0, 6.0]  # three clips, a pass of 6 s
    assert [soak.clips_played(starts, s) for s in (0.0, 1.9, 2.0, 5.9, 6.0, 13.0)] == \
        [1, 1, 2, 3, 4, 7]


def test_a_short_soak_loses_and_duplicates_no_final(soak, tiny_model_dir):
    result = soak.soak(tiny_model_dir, SOAK_MINUTES, WARMUP_MINUTES, sample_s=1.0)
    print(soak.table(result))
    assert result["daemon_exit_code"] == 0
    assert result["subscription_error"] is None
    assert result["clips_played"] >= 4  # about 6 s a clip with its gap: a real workload
    assert result["utterances_started"] >= 3
    assert result["utterances_closed"] == result["utterances_started"]
    assert result["lost"] == 0, result["lost_ids"]
    assert result["duplicated"] == 0
    assert result["unopened"] == 0
    assert result["unseen_starts"] == 0
    assert result["rss_growth_after_warmup_mb"] < MAX_GROWTH_MB
