"""The cloud's neural language model at serving time: an LSTM word LM on onnxruntime.

The ONNX graph (made by `neural_lm_train.export_onnx`) takes word ids `tokens` [B, T] and
the LSTM state `h0`, `c0` [1, B, H], and returns `log_probs` [B, T, V] (log-softmax over
the vocabulary for the word after each input position) and the state after the last
position, `hn`, `cn`. The vocabulary (one word a line, `vocab.txt`) is the n-gram model's,
so both models give probabilities over the same words and can be interpolated word by word.

The shipped graph has int8 weights (`neural_lm_train.quantize_onnx`); its activations are
quantised per run, so a sentence's scores move a little with what shares its batch (at
most 0.04 nats a word on the dev set): the same batch always scores the same.

Nothing here imports torch: serving needs only numpy and onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_asr.daemon.recognition.ngram_lm import BOS, EOS, UNK

INPUTS = ("tokens", "h0", "c0")
OUTPUTS = ("log_probs", "hn", "cn")


class NeuralLmError(ValueError):
    """The model files are missing, corrupt, or do not fit together."""


@dataclass
class NeuralState:
    """LSTM state of a batch of histories: h and c are [1, B, H] float32."""

    h: np.ndarray
    c: np.ndarray

    def select(self, rows: Sequence[int]) -> NeuralState:
        """The states of some rows, e.g. to extend only some paths of a batch."""
        return NeuralState(self.h[:, list(rows)], self.c[:, list(rows)])


def read_vocab(path: Path) -> list[str]:
    try:
        words = Path(path).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise NeuralLmError(f"cannot read the vocabulary {path}: {exc}") from exc
    words = [w for w in words if w]
    for special in (BOS, EOS, UNK):
        if special not in words:
            raise NeuralLmError(f"vocabulary {path} has no {special}")
    if len(set(words)) != len(words):
        raise NeuralLmError(f"vocabulary {path} lists a word twice")
    return words


def write_vocab(words: Sequence[str], path: Path) -> None:
    Path(path).write_text("".join(w + "\n" for w in words), encoding="utf-8")


class NeuralLM:
    """Scores word sequences with the exported LSTM; thread-safe (onnxruntime runs are)."""

    def __init__(self, onnx_path: Path, vocab_path: Path, threads: int = 1) -> None:
        self.vocab = read_vocab(vocab_path)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.bos, self.eos, self.unk = self.index[BOS], self.index[EOS], self.index[UNK]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(onnx_path), options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise NeuralLmError(f"cannot load the neural LM {onnx_path}: {exc}") from exc
        names = ([i.name for i in self._session.get_inputs()],
                 [o.name for o in self._session.get_outputs()])
        if tuple(names[0]) != INPUTS or tuple(names[1]) != OUTPUTS:
            raise NeuralLmError(f"{onnx_path} has inputs {names[0]} and outputs {names[1]}; "
                                f"expected {list(INPUTS)} and {list(OUTPUTS)}")
        self.hidden = int(self._session.get_inputs()[1].shape[2])
        vocab_size = self._session.get_outputs()[0].shape[2]
        if isinstance(vocab_size, int) and vocab_size != len(self.vocab):
            raise NeuralLmError(f"{onnx_path} predicts {vocab_size} words but {vocab_path} "
                                f"lists {len(self.vocab)}")

    def word_id(self, word: str) -> int:
        return self.index.get(word, self.unk)

    def initial_state(self, batch: int = 1) -> NeuralState:
        zeros = np.zeros((1, batch, self.hidden), dtype=np.float32)
        return NeuralState(zeros, zeros.copy())

    def run(self, tokens: np.ndarray, state: NeuralState) -> tuple[np.ndarray, NeuralState]:
        """log p of the next word after each position of tokens [B, T], and the new state."""
        log_probs, h, c = self._session.run(
            list(OUTPUTS), {"tokens": tokens.astype(np.int64), "h0": state.h, "c0": state.c})
        return log_probs, NeuralState(h, c)

    def step(self, words: Sequence[int], state: NeuralState) -> tuple[np.ndarray, NeuralState]:
        """Feeds one word per history; returns log p [B, V] of the next word and the state.

        Start a history with initial_state() and step([bos, ...]); a lattice search carries
        the returned state (or `select`ed rows of it) along each path.
        """
        log_probs, new_state = self.run(np.asarray(words, dtype=np.int64)[:, None], state)
        return log_probs[:, 0, :], new_state

    def word_logprobs(self, sentences: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each sentence, ln p of each word and then of </s>, in one batched run."""
        if not sentences:
            return []
        length = max(len(s) for s in sentences) + 1
        tokens = np.full((len(sentences), length), self.eos, dtype=np.int64)
        targets = np.full((len(sentences), length), self.eos, dtype=np.int64)
        for row, sentence in enumerate(sentences):
            ids = [self.word_id(w) for w in sentence]
            tokens[row, :len(ids) + 1] = [self.bos, *ids]
            targets[row, :len(ids) + 1] = [*ids, self.eos]
        log_probs, _ = self.run(tokens, self.initial_state(len(sentences)))
        picked = np.take_along_axis(log_probs, targets[:, :, None], axis=2)[:, :, 0]
        return [picked[row, :len(s) + 1].astype(float).tolist()
                for row, s in enumerate(sentences)]

    def sentence_logprob(self, words: Sequence[str]) -> float:
        return float(sum(self.word_logprobs([words])[0]))
