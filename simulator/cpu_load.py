"""CPU contention on the device: a music player sharing the daemon's core.

A smart speaker plays music while it listens. This process does what a player does, block
by block in real time (synthesise the next 20 ms of a chord, resample 44.1 -> 48 kHz, run
an equaliser), and repeats the block's work until it has used `load` of each period's
CPU time. Pinned to the daemon's core, it takes that share of the core away from
recognition, like the real thing.

    python -m edge_asr.simulator.cpu_load --load 0.4 --core 0
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import soxr

_RATE_IN, _RATE_OUT = 44100, 48000
_PERIOD_S = 0.02


def _play_block(phase: float, eq_state: np.ndarray) -> float:
    """One 20 ms block of the player's work; returns the oscillator phase to go on from."""
    n = int(_RATE_IN * _PERIOD_S)
    t = phase + np.arange(n) / _RATE_IN
    chord = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((220.0, 277.2, 329.6)))
    out = soxr.resample(chord.astype(np.float32), _RATE_IN, _RATE_OUT)
    # a one-pole low-shelf "bass boost", sample by sample as a DSP loop would run it
    alpha = 0.05
    acc = eq_state[0]
    for i in range(0, len(out), 8):
        acc += alpha * (float(out[i]) - acc)
    eq_state[0] = acc
    return phase + n / _RATE_IN


def play(load: float, seconds: float | None = None) -> None:
    """Burn `load` of one core in 20 ms periods until killed (or for `seconds`)."""
    if not 0.0 < load <= 1.0:
        raise ValueError(f"load must be in (0, 1], got {load!r}")
    phase, eq_state = 0.0, np.zeros(1)
    end = None if seconds is None else time.monotonic() + seconds
    next_period = time.monotonic()
    while end is None or time.monotonic() < end:
        budget = time.thread_time() + load * _PERIOD_S
        while time.thread_time() < budget:
            phase = _play_block(phase, eq_state)
        next_period += _PERIOD_S
        pause = next_period - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:  # starved by the scheduler: start the next period now rather than catch up
            next_period = time.monotonic()


def set_niceness(pid: int, niceness: int) -> bool:
    """Sets every thread of process `pid` to `niceness` (Linux keeps it per thread); False
    when that is not allowed: only root may lower it again. Starving the daemon for a while
    means lowering its priority under the player's, then giving it back."""
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
    except PermissionError:
        return False
    except (FileNotFoundError, ProcessLookupError):  # it exited, or a thread did meanwhile
        pass
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", type=float, required=True, help="share of one core, (0, 1]")
    p.add_argument("--core", type=int, action="append", help="pin to this core (repeatable)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until killed)")
    args = p.parse_args()
    if args.core:
        os.sched_setaffinity(0, set(args.core))
    try:
        play(args.load, args.seconds)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
