"""The music-player load: it takes the share of a core it is asked for, not more."""

from __future__ import annotations

import time

import pytest

from edge_asr.simulator.cpu_load import play


def test_player_uses_about_its_share_of_one_core():
    cpu = time.thread_time()
    wall = time.monotonic()
    play(0.3, seconds=1.0)
    cpu = time.thread_time() - cpu
    assert time.monotonic() - wall == pytest.approx(1.0, abs=0.3)
    # each 20 ms period works until 6 ms of CPU are used: 0.3 s in all (less when starved)
    assert 0.05 < cpu < 0.45


def test_bad_load_is_refused():
    with pytest.raises(ValueError, match="load"):
        play(1.5, seconds=0.1)
