"""The cloud's language model as shipped: n-gram + neural LM, interpolated, with weights.

A cloud-LM folder holds

    ngram.arpa.gz    the Kneser-Ney n-gram model (ngram.arpa, uncompressed, also works)
    neural.onnx      the LSTM LM, int8 weights (optional: without it the n-gram model is
                     used alone)
    vocab.txt        the neural LM's vocabulary (the n-gram model's words)
    weights.json     RescoreWeights: LM weight, length bonus, interpolation weight
    model_card.json  sizes, sha256 of every file, perplexities (written by lm_recipe)

Files listed in the card are checked against their sha256 before loading, as the daemon
does with its acoustic model, so a corrupt or swapped file is refused by name.

The interpolated probability of a word is lambda * p_ngram + (1 - lambda) * p_neural,
both over the same vocabulary, so it is a proper distribution too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edge_asr.daemon.recognition.ngram_arpa import load_arpa
from edge_asr.daemon.recognition.ngram_lm import LmFormatError, NgramLM
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.simulator.cloud.name_classes import CONTACT
from edge_asr.simulator.cloud.neural_lm import NeuralLM, NeuralLmError

NGRAM_FILES = ("ngram.arpa.gz", "ngram.arpa")
NEURAL_FILE = "neural.onnx"
VOCAB_FILE = "vocab.txt"
WEIGHTS_FILE = "weights.json"
CARD_FILE = "model_card.json"


class CloudLmError(ValueError):
    """A cloud-LM folder is missing a file, or a file is corrupt."""


@dataclass(frozen=True)
class RescoreWeights:
    """total = acoustic + bias + device_lm_weight * device_lm + lm_weight * lm
    + length_bonus * words + token_bonus * tokens + device_bonus * [the device's answer]
    + contact_bonus * [contacts the path says] - oov_penalty * [words the LM does not know]
    (natural logs; simulator/cloud/rescore.py)."""

    lm_weight: float = 0.5
    length_bonus: float = 0.0
    ngram_lambda: float = 0.5  # share of the n-gram model in the interpolation
    # The device LM's score in the lattice; 0 (weights files from before the lattice
    # carried it) ignores it.
    device_lm_weight: float = 0.0
    # Per word piece of the path (Arc.tokens): the device ranks by score per piece, so
    # without it a name of many pieces loses to a short word that sounds alike.
    token_bonus: float = 0.0
    # For the path the device itself chose (Arc.device): the device's choice already
    # weighed what the lattice's sums cannot show (its per-piece ranking, a rescued name).
    device_bonus: float = 0.0
    # Per contact of the user's list that the path says: the device put a name in its lattice
    # because the list made it likely (its bias, a rescue), and a name read by a forced
    # alignment scores worse acoustically than the word the beam heard in its place.
    contact_bonus: float = 0.0
    # Per word of the path the LM does not know (a contact of the user's list is known, as
    # its class). The LMs read any such word as <unk>, whose probability is that of every
    # rare word together: without a charge a pieced-together non-word ("anyonet") is as
    # likely as a real one, and one in place of two real words is likelier.
    oov_penalty: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if not math.isfinite(getattr(self, f.name)):
                raise CloudLmError(f"weight {f.name} is {getattr(self, f.name)}")
        if not 0.0 <= self.ngram_lambda <= 1.0:
            raise CloudLmError(f"ngram_lambda is {self.ngram_lambda}; it must be in [0, 1]")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> RescoreWeights:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CloudLmError(f"cannot read weights {path}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            raise CloudLmError(f"{path}: expected an object with keys {sorted(known)}")
        try:
            return cls(**{k: float(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise CloudLmError(f"{path}: {exc}") from exc


def verify_against_card(folder: Path) -> dict:
    """Checks every file the card lists; returns the card ({} when there is none)."""
    card_path = folder / CARD_FILE
    if not card_path.exists():
        return {}
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CloudLmError(f"cannot read {card_path}: {exc}") from exc
    for name, info in card.get("files", {}).items():
        path = folder / name
        if not path.exists():
            raise CloudLmError(f"{path} is listed in {CARD_FILE} but missing")
        if sha256_of(path) != info.get("sha256"):
            raise CloudLmError(f"{path} does not match the sha256 in {CARD_FILE}: "
                               "corrupt or replaced; rebuild with `make cloud-lm`")
    return card


class CloudLM:
    """The interpolated LM and the weights tuned for it."""

    def __init__(self, ngram: NgramLM, neural: NeuralLM | None = None,
                 weights: RescoreWeights = RescoreWeights(), version: str = "") -> None:
        if neural is not None and neural.vocab != ngram.vocab:
            raise CloudLmError("the neural LM's vocabulary differs from the n-gram model's")
        self.ngram = ngram
        self.neural = neural
        self.weights = weights
        self.version = version

    @classmethod
    def load(cls, folder: Path, threads: int = 1) -> CloudLM:
        folder = Path(folder)
        if not folder.is_dir():
            raise CloudLmError(f"no cloud LM folder {folder}: build one with `make cloud-lm`")
        card = verify_against_card(folder)
        arpa = next((folder / n for n in NGRAM_FILES if (folder / n).exists()), None)
        if arpa is None:
            raise CloudLmError(f"{folder} has no {' or '.join(NGRAM_FILES)}")
        try:
            ngram = load_arpa(arpa)
            neural = None
            if (folder / NEURAL_FILE).exists():
                neural = NeuralLM(folder / NEURAL_FILE, folder / VOCAB_FILE, threads)
        except (LmFormatError, NeuralLmError) as exc:
            raise CloudLmError(str(exc)) from exc
        weights_path = folder / WEIGHTS_FILE
        weights = RescoreWeights.load(weights_path) if weights_path.exists() else RescoreWeights()
        version = card.get("version") or folder.name
        return cls(ngram, neural, weights, version)

    @property
    def has_contact_class(self) -> bool:
        """Trained with names as <contact> (name_classes.py); older LMs were not."""
        return CONTACT in self.ngram.index

    def knows(self, word: str) -> bool:
        """Whether the word is in the LMs' vocabulary (else they read it as <unk>)."""
        return word in self.ngram.index

    def component_logprobs(self, sentences: Sequence[Sequence[str]]
                           ) -> list[tuple[list[float], list[float] | None]]:
        """Per sentence: ln p of each word and </s> from the n-gram and the neural LM."""
        ngram = [self.ngram.word_logprobs(s) for s in sentences]
        neural = (self.neural.word_logprobs(sentences) if self.neural is not None
                  else [None] * len(sentences))
        return list(zip(ngram, neural, strict=True))

    def sentence_logprobs(self, sentences: Sequence[Sequence[str]],
                          ngram_lambda: float | None = None) -> list[float]:
        """Interpolated ln p of each whole sentence (with </s>)."""
        share = self.weights.ngram_lambda if ngram_lambda is None else ngram_lambda
        return [interpolate(ng, nn, share) for ng, nn in self.component_logprobs(sentences)]


def interpolate(ngram: Sequence[float], neural: Sequence[float] | None, share: float) -> float:
    """Sum over words of ln(share * p_ngram + (1 - share) * p_neural)."""
    if neural is None or share >= 1.0:
        return float(sum(ngram))
    if share <= 0.0:
        return float(sum(neural))
    log_share, log_rest = math.log(share), math.log1p(-share)
    total = 0.0
    for a, b in zip(ngram, neural, strict=True):
        x, y = log_share + a, log_rest + b
        high = max(x, y)
        total += high + math.log1p(math.exp(min(x, y) - high))
    return total
