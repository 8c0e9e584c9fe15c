"""The client API under property-based fuzzing (hypothesis): bench/fuzz.py's cases, a few
hundred of them, against a real daemon serving the tiny random model on a Unix socket.

Every call of every RPC (Recognize streams with any config and audio bytes, SetContext
lists, Subscribe flags, GetStatus, and raw bytes that may not parse) must end within its
deadline and either succeed or fail with an allowed status and a message; a Recognize that
succeeds closes every utterance it started. Afterwards the daemon still answers GetStatus,
with no stream left open. A failing case is shrunk and printed by hypothesis.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from bench_modules import load_bench
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parent.parent


fuzz = load_bench("fuzz")  # at import: @given below needs its strategies


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    daemon = fuzz.ServedDaemon(tiny_model_dir)
    yield daemon
    daemon.close()


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(call=fuzz.calls)
def test_every_call_ends_in_time_with_a_clear_status(served, call):
    outcome = fuzz.run_case(served.channel, call, deadline_s=20.0)
    assert outcome.verdict == "ok", outcome


def test_the_daemon_still_serves_after_the_fuzzing(served):
    ok, said = fuzz.still_serving(served.channel)
    assert ok, said


def test_bytes_that_are_no_message_get_invalid_argument_naming_it(served):
    for rpc in ("Recognize", "SetContext", "Subscribe", "GetStatus"):
        outcome = fuzz.run_case(served.channel, fuzz.Call(rpc, (b"\xff\xff\xff",), raw=True))
        assert outcome.code == "INVALID_ARGUMENT", outcome
        assert "not a valid edge_asr.v1." in outcome.details


def test_the_judge_calls_a_crash_a_crash():
    """The fuzzer's verdicts themselves: what must count against the daemon does."""
    crash = fuzz.Outcome("Recognize", "INTERNAL", "recognition failed", 0.1)
    silent = fuzz.Outcome("SetContext", "INVALID_ARGUMENT", " ", 0.1)
    open_utterance = fuzz.Outcome("Recognize", "OK", "", 0.1, 3, ["push-1"])
    hang = fuzz.Outcome("Recognize", grpc.StatusCode.DEADLINE_EXCEEDED.name, "late", 20.0)
    assert [o.verdict for o in (crash, silent, open_utterance, hang)] == \
        ["crash", "crash", "crash", "hang"]
    assert fuzz.Outcome("SetContext", "INVALID_ARGUMENT", "bad entry", 0.1).verdict == "ok"
