"""A learned end-of-query classifier: has the speaker finished, or only paused?

The rules in completeness.py judge the words alone, and a misheard prefix ("play send")
or a phrasing the grammar does not know looks as finished to them as a real request. This
model weighs what the device has at each decoded chunk of a pause: how long the VAD has
heard silence and the decoder blanks, the device LM's probability that the sentence ends
here (and how that compares with its likeliest next token), the rules' own score, how many
words there are and whether the room is noisy. A small MLP (one tanh layer) turns these into
P(the request is over); the final end-pointer ends the utterance once that reaches a
threshold tuned on development speakers (endpoint.py, `_decide_end_learned`).

This is the end-of-query classifier of Shannon et al., "Improved End-of-Query Detection for
Streaming Speech Recognition" (Interspeech 2017), on the device's own signals. The
transducer decoder's output and the encoder's output at the last word were tried as further
inputs and generalised worse to voices and speakers training never heard (RESULTS.md,
"Learned end-of-query"). The recipe trains it (models/query_end_train.py) on recordings and
synthetic requests with pauses inserted, and ships it as query_end.json in the model folder.
Inference is a few hundred multiply-adds in numpy and one LM lookup per new hypothesis.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.daemon.endpointing.completeness import looks_complete
from edge_asr.daemon.recognition.model_loading import load_device_lm
from edge_asr.daemon.recognition.token_lm import TokenLM

QUERY_END_FILE = "query_end.json"  # in the model folder, beside the recognizer

# The features, in order.
FEATURES = ("silence_s", "blank_s", "lm_end", "lm_end_margin", "rules", "log_words",
                   "no_words", "noisy")
NOISY_SNR_DB = 15.0  # as EndpointConfig.noisy_snr_db
_LM_FLOOR = -20.0  # ln p below this carries no more information (and keeps the scale sane)


class QueryEndFormatError(ValueError):
    """A query_end.json that cannot be used."""


@dataclass(frozen=True)
class QueryEndModel:
    """The trained classifier: standardisation, one tanh layer, a logistic output."""

    mean: np.ndarray  # (F,) feature means over the training points
    scale: np.ndarray  # (F,) their standard deviations (1 where a feature is constant)
    w1: np.ndarray  # (H, F)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (H,)
    b2: float
    threshold: float  # P(over) at which the final end-point fires, tuned on dev

    @property
    def num_features(self) -> int:
        return self.mean.size

    def probability(self, features: np.ndarray) -> float:
        x = (features - self.mean) / self.scale
        h = np.tanh(self.w1 @ x + self.b1)
        z = float(self.w2 @ h + self.b2)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def save(self, path: Path) -> None:
        data = {"features": list(FEATURES), "threshold": self.threshold,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "w1": self.w1.tolist(), "b1": self.b1.tolist(), "w2": self.w2.tolist(),
                "b2": self.b2}
        path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> QueryEndModel:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            model = cls(mean=_vector(data["mean"]), scale=_vector(data["scale"]),
                        w1=np.asarray(data["w1"], np.float64), b1=_vector(data["b1"]),
                        w2=_vector(data["w2"]), b2=float(data["b2"]),
                        threshold=float(data["threshold"]))
            names = tuple(data["features"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise QueryEndFormatError(f"{path}: not a query-end model: {e}") from e
        if names != FEATURES:
            raise QueryEndFormatError(f"{path}: made for the features {list(names)}, this "
                                      f"version computes {list(FEATURES)}")
        f, h = len(FEATURES), model.b1.size
        if (model.mean.size, model.scale.size, model.w1.shape, model.w2.size) != (f, f, (h, f), h):
            raise QueryEndFormatError(f"{path}: weight shapes do not fit {f} features")
        if not 0.0 < model.threshold < 1.0 or np.any(model.scale <= 0):
            raise QueryEndFormatError(f"{path}: threshold must be in (0, 1), scales > 0")
        return model


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> QueryEndModel:
    """Every pipeline (one per `eval` utterance) shares its model folder's classifier."""
    return QueryEndModel.load(Path(path))


def _vector(values: object) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(-1)


class QueryEnd:
    """The classifier with what it reads besides the end-pointer's own state: the device LM.

    `probability` is called by the final end-pointer only while it waits in a pause, once
    per decoded chunk; the LM's answer is cached per hypothesis.
    """

    def __init__(self, model: QueryEndModel, lm: TokenLM) -> None:
        self.model = model
        self._lm = lm
        self._lm_cache: dict[tuple[int, ...], tuple[float, float]] = {}

    @classmethod
    def for_recognizer(cls, recognizer) -> QueryEnd | None:
        """The model folder's query-end model, or None if it ships none."""
        folder = Path(recognizer.config.model_dir)
        path = folder / QUERY_END_FILE
        if not path.is_file():
            return None
        model = _load_cached(str(path), path.stat().st_mtime_ns)
        lm = recognizer.lm or load_device_lm(recognizer.model, QUERY_END_FILE)
        return cls(model, lm)

    def features(self, tokens: tuple[int, ...], text: str, silence_s: float, blank_s: float,
                 snr_db: float | None) -> np.ndarray:
        """What the classifier reads for the best hypothesis (`tokens`, `text`)."""
        lm_end, margin = self._lm_end(tokens)
        words = len(text.split())
        noisy = snr_db is not None and snr_db < NOISY_SNR_DB
        return np.array([min(silence_s, 2.0), min(blank_s, 2.0), lm_end, margin,
                         float(looks_complete(text)), math.log1p(words), float(words == 0),
                         float(noisy)])

    def probability(self, tokens: tuple[int, ...], text: str, silence_s: float,
                    blank_s: float, snr_db: float | None) -> float:
        return self.model.probability(self.features(tokens, text, silence_s, blank_s, snr_db))

    def _lm_end(self, tokens: tuple[int, ...]) -> tuple[float, float]:
        """ln p(end of sentence | tokens), and that minus the likeliest next token's ln p."""
        cached = self._lm_cache.get(tokens)
        if cached is not None:
            return cached
        state = self._lm.start()
        for token in tokens:
            state = self._lm.advance(state, token)
        end = max(_LM_FLOOR, float(self._lm.end_logprob(state)))
        best_next = float(np.max(self._lm.token_logprobs(state)))
        value = (end, max(_LM_FLOOR, end - best_next))
        if len(self._lm_cache) > 4096:
            self._lm_cache.clear()
        self._lm_cache[tokens] = value
        return value
