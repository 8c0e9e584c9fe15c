"""A second opinion on each wake-word detection, from the encoder that heard it.

The spotter's beam boosts the phrase, so it finds "hey marvin" in words that only sound a
little like it ("hey mervyn", "hey martin", a name in a request), and the phrase's token
probabilities along that path are then often as high as when someone says it. The verifier
looks at the detection itself: the encoder's frames from just before the phrase's first token
to the end of the chunk that emitted its last one, pooled (mean and max per dimension), with
the spotter's score and the span's length, through a logistic regression trained by the recipe
(models/wake_verifier.py) on the phrase said by the training voices against confusable
phrases and the spotter's detections in training speech. It ships in the model folder
(`wake_verifier.json`), for one phrase; any other phrase is spotted without it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERIFIER_FILE = "wake_verifier.json"
LEAD_FRAMES = 2  # encoder frames before the phrase's first token that the features include


def pooled_features(encoder_out: np.ndarray, first_frame: int, end_frame: int,
                    score: float) -> np.ndarray:
    """Mean and max of encoder frames first_frame - LEAD_FRAMES .. end_frame - 1, the
    spotter's log score and the span's length in frames."""
    start = max(0, first_frame - LEAD_FRAMES)
    end = min(len(encoder_out), max(start + 1, end_frame))
    span = np.asarray(encoder_out[start:end], np.float64)
    return np.concatenate((span.mean(axis=0), span.max(axis=0),
                           [math.log(max(score, 1e-12)), float(end - start)]))


@dataclass(frozen=True)
class WakeVerifier:
    phrase: str  # normalised, as the spotter spells it
    mean: np.ndarray  # feature standardisation
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float  # lowest probability that confirms a detection

    def probability(self, features: np.ndarray) -> float:
        if features.shape != self.weights.shape:
            raise ValueError(f"the verifier takes {self.weights.shape[0]} features, got "
                             f"{features.shape[0]}")
        z = float(((features - self.mean) / self.scale) @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> dict:
        return {"phrase": self.phrase, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias, "threshold": self.threshold}

    @classmethod
    def from_json(cls, data: dict, where: str = VERIFIER_FILE) -> WakeVerifier:
        try:
            arrays = [np.asarray(data[k], np.float64) for k in ("mean", "scale", "weights")]
            verifier = cls(str(data["phrase"]), *arrays, float(data["bias"]),
                           float(data["threshold"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not a wake-word verifier ({e!r})") from e
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 \
                or not np.all(arrays[1] > 0) or not 0.0 <= verifier.threshold <= 1.0:
            raise ValueError(f"{where}: mean, scale (> 0) and weights must be vectors of one "
                             f"length and the threshold in [0, 1]")
        return verifier


@functools.lru_cache(maxsize=8)
def load_verifier(model_dir: str, phrase: str) -> WakeVerifier | None:
    """The model folder's verifier when it was trained for `phrase` (normalised), else None.
    Read once per folder and phrase: the daemon starts a spotter every second of speech."""
    path = Path(model_dir) / VERIFIER_FILE
    if not path.is_file():
        return None
    verifier = WakeVerifier.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    return verifier if verifier.phrase == phrase else None
