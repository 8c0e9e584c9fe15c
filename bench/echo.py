"""Echo cancellation: how much of the device's own playback the canceller takes out.

For each trial the simulator's playback path (simulator/room.py: music from a loudspeaker
10 cm away, a simulated room, an output delay) renders the echo of 20 s of music; the
microphone hears only that echo and its self-noise. Printed: ERLE (echo return loss
enhancement: microphone energy over the cleaned energy) after the first 2 s, in which the
canceller converges, median and worst over the trials; and the canceller's CPU time per
second of audio. A figure, not a test (tests/test_echo.py holds the pass/fail ones).

    python bench/echo.py [--trials 8] [--delay-ms 10 30 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import microphone_pieces
from edge_asr.daemon.frontend.echo import EchoCanceller
from edge_asr.models.augment import make_noise
from edge_asr.simulator.room import Playback, render_playback

SECONDS = 20.0
CONVERGED_S = 2.0


def erle_db(mic: np.ndarray, cleaned: np.ndarray) -> float:
    start = int(CONVERGED_S * SAMPLE_RATE)
    power = [float(np.mean(np.square(x[start:], dtype=np.float64))) for x in (mic, cleaned)]
    return 10 * np.log10(power[0] / max(power[1], 1e-20))


def trial(delay_ms: float, seed: int, echo_level: float = 0.1) -> tuple[float, float]:
    """ERLE in dB and CPU seconds per audio second of one rendering."""
    rng = np.random.default_rng(seed)
    n = int(SECONDS * SAMPLE_RATE)
    reference, echo = render_playback(Playback(kind="music", delay_ms=delay_ms), n, rng)
    mic = echo * np.float32(echo_level) + make_noise("pink", n, rng) * np.float32(10 ** -3.5)
    canceller = EchoCanceller()
    started = time.process_time()
    cleaned = np.concatenate([canceller.process(m, r) for m, r in
                              zip(microphone_pieces(mic), microphone_pieces(reference),
                                  strict=True)] + [canceller.flush()])
    cpu = (time.process_time() - started) / SECONDS
    return erle_db(mic, cleaned), cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8, help="renderings per delay")
    p.add_argument("--delay-ms", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    args = p.parse_args()
    print("| output delay | ERLE median | ERLE worst | CPU s per audio s |")
    print("|---|---|---|---|")
    for delay in args.delay_ms:
        results = [trial(delay, seed) for seed in range(args.trials)]
        erle = [r[0] for r in results]
        cpu = [r[1] for r in results]
        print(f"| {delay:.0f} ms | {np.median(erle):.1f} dB | {min(erle):.1f} dB | "
              f"{np.median(cpu):.4f} |")


if __name__ == "__main__":
    main()
