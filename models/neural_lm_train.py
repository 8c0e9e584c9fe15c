"""Trains the cloud's LSTM word LM with PyTorch and exports it to ONNX.

Training only: serving runs the exported graph with onnxruntime (`neural_lm.NeuralLM`).
One LSTM layer over word embeddings, a linear layer to the vocabulary; trained with Adam
on whole sentences (<s> w1 .. wn -> w1 .. wn </s>) in shuffled, length-sorted batches, for
a number of epochs or a time budget, whichever ends first. The weights that scored best
on the dev sentences are the ones exported. The time budget counts this process's CPU
seconds, so a run that shares busy cores (nice'd beside another job) trains as many steps.

`quantize_onnx` turns the exported graph into int8 weights (onnxruntime's dynamic
quantisation: the LSTM becomes DynamicQuantizeLSTM, the output layer MatMulInteger, the
embedding an int8 table), a quarter of the size and faster on CPU.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_asr.daemon.recognition.ngram_lm import BOS, EOS, UNK
from edge_asr.simulator.cloud.neural_lm import INPUTS, OUTPUTS

OPSET = 17
IGNORE = -100  # target id of padding positions
WARMUP = 0.03  # share of training spent raising the learning rate
QUANTIZED_OPS = ["Gather", "LSTM", "MatMul"]  # embedding, recurrence, output layer


@dataclass(frozen=True)
class NeuralOptions:
    embedding: int = 128
    hidden: int = 256
    epochs: int = 3
    max_seconds: float | None = None  # stop after this many CPU seconds (checked per batch)
    batch_sentences: int = 128
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    dropout: float = 0.1
    seed: int = 0


class LstmLm(nn.Module):
    def __init__(self, vocab_size: int, embedding: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden, (hn, cn) = self.lstm(self.dropout(self.embed(tokens)), (h0, c0))
        return torch.log_softmax(self.out(self.dropout(hidden)), dim=-1), hn, cn


def _encode(sentences: Sequence[Sequence[str]], vocab: Sequence[str]) -> list[list[int]]:
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    return [[index[BOS], *(index.get(w, unk) for w in s), index[EOS]] for s in sentences]


def _batches(encoded: list[list[int]], size: int, rng: random.Random
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) pairs; sentences of similar length share a batch (less padding)."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), rng.random()))
    groups = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(groups)
    out = []
    for group in groups:
        length = max(len(encoded[i]) for i in group) - 1
        inputs = torch.zeros(len(group), length, dtype=torch.int64)
        targets = torch.full((len(group), length), IGNORE, dtype=torch.int64)
        for row, i in enumerate(group):
            ids = encoded[i]
            inputs[row, :len(ids) - 1] = torch.tensor(ids[:-1])
            targets[row, :len(ids) - 1] = torch.tensor(ids[1:])
        out.append((inputs, targets))
    return out


def _learning_rate(options: NeuralOptions, step_fraction: float, elapsed: float) -> float:
    """Warm-up, then cosine decay over the epochs or the time budget, whichever is shorter,
    so a run cut short by its budget still ends with a small learning rate."""
    progress = step_fraction
    if options.max_seconds:
        progress = max(progress, elapsed / options.max_seconds)
    if progress < WARMUP:
        return options.learning_rate * max(progress / WARMUP, 0.05)
    decay = min((progress - WARMUP) / (1 - WARMUP), 1.0)
    return options.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * decay)))


@torch.no_grad()
def _mean_nll(model: LstmLm, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in batches:
        zeros = torch.zeros(1, inputs.shape[0], model.lstm.hidden_size)
        log_probs, _, _ = model(inputs, zeros, zeros)
        mask = targets != IGNORE
        total -= log_probs.gather(2, targets.clamp(min=0)[:, :, None])[:, :, 0][mask].sum().item()
        count += int(mask.sum())
    model.train()
    return total / max(count, 1)


def train_lstm_lm(sentences: Sequence[Sequence[str]], vocab: Sequence[str],
                  dev: Sequence[Sequence[str]] = (), options: NeuralOptions = NeuralOptions(),
                  log: Callable[[str], None] = print) -> LstmLm:
    """Trains on tokenised sentences over `vocab` (the n-gram model's, specials included)."""
    if not sentences:
        raise ValueError("no sentences to train the neural LM on")
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    model = LstmLm(len(vocab), options.embedding, options.hidden, options.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    encoded = _encode(sentences, vocab)
    dev_batches = _batches(_encode(dev, vocab), 256, random.Random(0)) if dev else []
    total_steps = options.epochs * math.ceil(len(encoded) / options.batch_sentences)
    step = 0
    best_nll, best_state = math.inf, None
    start, wall_start = time.process_time(), time.monotonic()
    out_of_time = False
    for epoch in range(1, options.epochs + 1):
        total, count = 0.0, 0
        for inputs, targets in _batches(encoded, options.batch_sentences, rng):
            zeros = torch.zeros(1, inputs.shape[0], options.hidden)
            log_probs, _, _ = model(inputs, zeros, zeros)
            loss = nn.functional.nll_loss(log_probs.reshape(-1, len(vocab)),
                                          targets.reshape(-1), ignore_index=IGNORE)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), options.clip_norm)
            optimizer.step()
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(options, step / total_steps,
                                             time.process_time() - start)
            total += loss.item()
            count += 1
            if options.max_seconds is not None and \
                    time.process_time() - start > options.max_seconds:
                out_of_time = True
                break
        message = f"neural LM epoch {epoch}: train nll {total / count:.3f}"
        if dev_batches:
            nll = _mean_nll(model, dev_batches)
            message += f", dev ppl {math.exp(nll):.2f}"
            if nll < best_nll:
                best_nll = nll
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
        log(f"{message} ({time.process_time() - start:.0f} CPU s, "
            f"{time.monotonic() - wall_start:.0f} s{', time budget spent' * out_of_time})")
        if out_of_time:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


@torch.no_grad()
def export_onnx(model: LstmLm, path: Path) -> None:
    """Writes the graph neural_lm.NeuralLM runs: dynamic batch and time axes."""
    model.eval()
    hidden = model.lstm.hidden_size
    tokens = torch.zeros(2, 3, dtype=torch.int64)
    zeros = torch.zeros(1, 2, hidden)
    with warnings.catch_warnings():
        # torch warns about LSTMs with a batch other than 1; h0 and c0 are inputs here,
        # which is the fix it recommends (tests run the graph at other batch sizes).
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
        torch.onnx.export(
            model, (tokens, zeros, zeros), str(path), input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={"tokens": {0: "B", 1: "T"}, "h0": {1: "B"}, "c0": {1: "B"},
                          "log_probs": {0: "B", 1: "T"}, "hn": {1: "B"}, "cn": {1: "B"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True)


def quantize_onnx(source: Path, target: Path) -> None:
    """Writes `source` with int8 weights to `target`; activations are quantised per run.

    Per-tensor scales: on the cloud LM they lost less perplexity than per-channel ones.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(Path(source), Path(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=QUANTIZED_OPS, per_channel=False)
