"""80-dim log-mel filterbank features, the one implementation for training and run time.

The options mirror what sherpa-onnx's online recognizer uses (no dither, no snipped edges,
20 Hz to Nyquist-400 Hz, samples in [-1, 1]), so the same model gives the same features in
our daemon, in sherpa-onnx and in the training recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import kaldi_native_fbank as knf
import numpy as np

from edge_asr.daemon.constants import SAMPLE_RATE


@dataclass(frozen=True)
class FbankConfig:
    num_bins: int = 80
    sample_rate: int = SAMPLE_RATE
    low_freq: float = 20.0
    high_freq: float = -400.0  # negative: offset from Nyquist, as in Kaldi
    dither: float = 0.0  # deterministic features: identical decisions on identical audio

    def options(self) -> knf.FbankOptions:
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = self.sample_rate
        opts.frame_opts.dither = self.dither
        opts.frame_opts.snip_edges = False
        opts.mel_opts.num_bins = self.num_bins
        opts.mel_opts.low_freq = self.low_freq
        opts.mel_opts.high_freq = self.high_freq
        return opts


class StreamingFbank:
    """Accepts audio in pieces of any size and hands out frames as they become ready."""

    def __init__(self, config: FbankConfig | None = None) -> None:
        config = config or FbankConfig()
        self.config = config
        self._fbank = knf.OnlineFbank(config.options())
        self._next = 0  # index of the next frame not yet handed out
        self.finished = False

    def accept(self, samples: np.ndarray) -> None:
        """Feed float samples in [-1, 1] at the configured rate."""
        if self.finished:
            raise RuntimeError("StreamingFbank.accept after finish()")
        if samples.size:
            audio = np.ascontiguousarray(samples, np.float32)
            self._fbank.accept_waveform(self.config.sample_rate, audio)

    def finish(self) -> None:
        """No more audio: flush the last frames (needed because edges are not snipped)."""
        if not self.finished:
            self._fbank.input_finished()
            self.finished = True

    def pop_frames(self) -> np.ndarray:
        """All frames ready since the last call, shape (n, num_bins), float32."""
        ready = self._fbank.num_frames_ready
        if ready == self._next:
            return np.zeros((0, self.config.num_bins), np.float32)
        # get_frame returns views into knf's buffer: copy them before pop() frees it.
        frames = np.array([self._fbank.get_frame(i) for i in range(self._next, ready)], np.float32)
        # Frames already handed out are released so a long-running stream keeps no history.
        self._fbank.pop(ready - self._next)
        self._next = ready
        return frames


def compute_fbank(samples: np.ndarray, config: FbankConfig | None = None) -> np.ndarray:
    """Features of a whole utterance: the streaming extractor fed once, then flushed."""
    fbank = StreamingFbank(config)
    fbank.accept(samples)
    fbank.finish()
    return fbank.pop_frames()
