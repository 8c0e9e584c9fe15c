"""Echo cancellation: how much of the device's own playback the canceller takes out.

For each trial the simulator's playback path (simulator/room.py: music from a loudspeaker
10 cm away, a simulated room, an output delay) renders the echo of 20 s of music; the
microphone hears only that echo and its self-noise. Printed: ERLE (echo return loss
enhancement: microphone energy over the cleaned energy) after the first 2 s, in which the
canceller converges, median and worst over the trials; the canceller's CPU time per
second of audio; and how much of the music alone the daemon's VAD hears as speech, plain
and over the Kalman canceller's estimate of the echo it left. Then double talk, which
decides what a recogniser hears: a request (tests/data/clip*.flac) spoken 10 dB over the
music after 4 s of it; printed is the talker over what else the output holds there (the
echo left plus whatever the canceller did to the words), in dB: higher is cleaner speech.
A figure, not a test (tests/test_echo.py and tests/test_kalman_echo.py hold the pass/fail
ones).

    python bench/echo.py [--trials 8] [--delay-ms 10 30 60] [--canceller kalman speex+webrtc]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import microphone_pieces
from edge_asr.daemon.frontend.echo import BACKENDS, EchoCanceller, EchoOptions
from edge_asr.daemon.pipeline import PipelineConfig
from edge_asr.models.augment import make_noise
from edge_asr.simulator.room import Playback, render_playback

SECONDS = 20.0
CONVERGED_S = 2.0
CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data"
TALK_START_S = 4.0


def erle_db(mic: np.ndarray, cleaned: np.ndarray) -> float:
    start = int(CONVERGED_S * SAMPLE_RATE)
    power = [float(np.mean(np.square(x[start:], dtype=np.float64))) for x in (mic, cleaned)]
    return 10 * np.log10(power[0] / max(power[1], 1e-20))


def trial(delay_ms: float, seed: int, backend: str, echo_level: float = 0.1
          ) -> tuple[float, float, float, float]:
    """ERLE in dB, CPU seconds per audio second of one rendering, and the share of VAD
    frames (the daemon's VAD settings) heard as speech after CONVERGED_S, without and with
    the canceller's estimate of the echo it left as the VAD's floor."""
    rng = np.random.default_rng(seed)
    n = int(SECONDS * SAMPLE_RATE)
    reference, echo = render_playback(Playback(kind="music", delay_ms=delay_ms), n, rng)
    mic = echo * np.float32(echo_level) + make_noise("pink", n, rng) * np.float32(10 ** -3.5)
    canceller = EchoCanceller(EchoOptions(enabled=True, backend=backend))
    settings = PipelineConfig()
    vads = [settings.new_vad() for _ in range(2)]
    flags: list[list[bool]] = [[], []]
    cpu, cleaned = 0.0, []
    for m, r in zip(microphone_pieces(mic), microphone_pieces(reference), strict=True):
        started = time.process_time()
        out = canceller.process(m, r)
        cpu += time.process_time() - started
        cleaned.append(out)
        flags[0] += vads[0].process(out)
        flags[1] += vads[1].process(out, canceller.residual_echo)
    cleaned.append(canceller.flush())
    late = int(CONVERGED_S * 1000 / settings.vad_frame_ms)
    heard = [float(np.mean(f[late:])) for f in flags]
    return erle_db(mic, np.concatenate(cleaned)), cpu / SECONDS, heard[0], heard[1]


def double_talk(seed: int, backend: str, echo_level: float = 0.03) -> float:
    """Talker over everything else in the cleaned output while they speak, dB."""
    speech = read_audio(CLIPS / f"clip{seed % 24:02d}.flac")
    speech = speech / np.sqrt(np.mean(np.square(speech, dtype=np.float64))) * echo_level * 3.16
    start = int(TALK_START_S * SAMPLE_RATE)
    n = start + len(speech) + SAMPLE_RATE
    reference, echo = render_playback(Playback(kind="music"), n, np.random.default_rng(seed))
    near = np.zeros(n, np.float32)
    near[start:start + len(speech)] = speech
    mic = near + echo * np.float32(echo_level)
    canceller = EchoCanceller(EchoOptions(enabled=True, backend=backend))
    cleaned = np.concatenate([canceller.process(m, r) for m, r in
                              zip(microphone_pieces(mic), microphone_pieces(reference),
                                  strict=True)] + [canceller.flush()])
    talk = slice(start, start + len(speech))
    other = cleaned[talk] - near[talk]
    return 10 * np.log10(float(np.mean(np.square(near[talk], dtype=np.float64)))
                         / max(float(np.mean(np.square(other, dtype=np.float64))), 1e-20))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8, help="renderings per delay")
    p.add_argument("--delay-ms", type=float, nargs="+", default=[10.0, 30.0, 60.0])
    p.add_argument("--canceller", nargs="+", default=["kalman"], choices=BACKENDS)
    args = p.parse_args()
    print("| canceller | output delay | ERLE median | ERLE worst | CPU s per audio s | "
          "VAD hears speech: plain / over the canceller's estimate |")
    print("|---|---|---|---|---|---|")
    for backend in args.canceller:
        for delay in args.delay_ms:
            results = [trial(delay, seed, backend) for seed in range(args.trials)]
            erle, cpu, plain, gated = ([r[k] for r in results] for k in range(4))
            floor = f"{100 * np.median(gated):.1f}%" if backend == "kalman" else "-"
            print(f"| {backend} | {delay:.0f} ms | {np.median(erle):.1f} dB | "
                  f"{min(erle):.1f} dB | {np.median(cpu):.4f} | "
                  f"{100 * np.median(plain):.1f}% / {floor} |")
    print()
    print("| canceller | talker over the rest, 10 dB over music: median | worst |")
    print("|---|---|---|")
    for backend in args.canceller:
        clean = [double_talk(seed, backend) for seed in range(args.trials)]
        print(f"| {backend} | {np.median(clean):.1f} dB | {min(clean):.1f} dB |")


if __name__ == "__main__":
    main()
