"""A linear echo canceller that keeps still while someone speaks: the partitioned-block
frequency-domain Kalman filter (Enzner and Vary, "Frequency-domain adaptive Kalman filter
for acoustic echo control in hands-free telephones", Signal Processing 86(6), 2006; the
partitioned form after Kuech, Mabande and Enzner, ICASSP 2014).

Why not speexdsp's filter alone: measured in the music_playing scenario, it takes the echo
out between requests but bends the person's words while they talk over the music (its
output then keeps 0.3 of the speech and the rest is error: 4 dB worse than doing nothing,
median over the requests). A recogniser needs the near-end speech intact more than it needs
the last decibels of echo gone.

The filter models the echo path (loudspeaker -> room -> microphone) as `partitions` blocks
of FRAME taps per frequency bin and predicts the echo from the reference. How far it moves
each frame is the Kalman gain: its own uncertainty about each weight (large at first, so it
learns fast) over the energy of what it cannot explain (the error spectrum: near-end speech,
noise, echo it has not learnt). While a person talks, the error is large and the gain
small, so double talk does not drag the filter away; no separate double-talk detector.
"""

from __future__ import annotations

import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.frontend.frames import FRAME

# The state-transition factor: how far the echo path may drift per frame (1 - A^2 of each
# weight's energy becomes new uncertainty). A device's loudspeaker and microphone do not
# move, but a tonal song excites a few frequencies at a time, and a filter too sure of
# itself underestimates what it leaves at each new note (and the VAD, which rises above
# that estimate, hears the rest as speech). Over six development renderings of
# music_playing (simulator/scenarios/dev/), 0.9999 / 0.9995 / 0.999 gave 6.0 / 5.4 /
# 5.6% WER (RESULTS.md, "Echo cancellation").
TRANSITION = 0.9995
# Smoothing of the error spectrum that stands for the near-end's energy (per frame), taken
# no lower than the frame's own error so that a word's onset cuts the gain at once.
ERROR_SMOOTHING = 0.95
INITIAL_UNCERTAINTY = 1.0
# Energy floor per bin (-80 dBFS): bins without reference energy learn nothing.
FLOOR = 2 * FRAME * 1e-8


class KalmanEchoCanceller:
    """`process(mic, reference)` on 10 ms float frames; returns the microphone with the
    predicted echo subtracted (a linear filter only: nothing is gated or suppressed)."""

    def __init__(self, filter_ms: int = 256) -> None:
        self.partitions = -(-filter_ms * SAMPLE_RATE // 1000 // FRAME)
        bins = FRAME + 1
        shape = (self.partitions, bins)
        self._previous = np.zeros(FRAME)  # the reference's last frame (overlap-save)
        self._spectra = np.zeros(shape, complex)  # the reference, newest partition first
        self._weights = np.zeros(shape, complex)
        self._uncertainty = np.full(shape, INITIAL_UNCERTAINTY)
        self._error_power = np.zeros(bins)
        self._zeros = np.zeros(FRAME)
        # The echo the filter expects to have missed in the last frame's output (mean
        # square): its uncertainty times the reference's energy, by its own account.
        self.residual_mean_square = 0.0

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        if len(mic) != FRAME or len(reference) != FRAME:
            raise ValueError(f"the Kalman canceller takes {FRAME}-sample frames, got "
                             f"{len(mic)} and {len(reference)}")
        reference = np.asarray(reference, np.float64)
        spectrum = np.fft.rfft(np.concatenate((self._previous, reference)))
        self._previous = reference
        self._spectra[1:] = self._spectra[:-1]
        self._spectra[0] = spectrum
        # prediction: the path may have drifted, so each weight is a little less certain
        self._uncertainty = (TRANSITION ** 2 * self._uncertainty
                             + (1 - TRANSITION ** 2) * np.abs(self._weights) ** 2)
        echo = np.fft.irfft((self._weights * self._spectra).sum(axis=0), 2 * FRAME)[FRAME:]
        error = np.asarray(mic, np.float64) - echo
        error_spectrum = np.fft.rfft(np.concatenate((self._zeros, error)))
        error_power = np.abs(error_spectrum) ** 2
        self._error_power = (ERROR_SMOOTHING * self._error_power
                             + (1 - ERROR_SMOOTHING) * error_power)
        reference_power = np.abs(self._spectra) ** 2
        # The echo power per bin that the weights' uncertainty leaves unexplained
        # (overlap-save uses half of each 2*FRAME transform, hence the factor 0.5).
        missed = 0.5 * (reference_power * self._uncertainty).sum(axis=0)
        gain = self._uncertainty / (missed + np.maximum(self._error_power, error_power)
                                    + FLOOR)
        # Summed over the bins of a zero-padded frame's transform, power is about FRAME
        # times the frame's energy, which is FRAME times its mean square.
        self.residual_mean_square = float(missed.sum()) / FRAME ** 2
        self._weights += gain * np.conj(self._spectra) * error_spectrum
        # The weights stay FRAME taps long per partition (the rest would wrap around).
        taps = np.fft.irfft(self._weights, 2 * FRAME, axis=1)
        taps[:, FRAME:] = 0.0
        self._weights = np.fft.rfft(taps, axis=1)
        self._uncertainty *= 1 - 0.5 * gain * reference_power
        return error.astype(np.float32)
