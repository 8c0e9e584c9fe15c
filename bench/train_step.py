"""Seconds per training step of the student and of the teacher on one thread (printed, never
asserted): what a teacher epoch would cost on this machine.

    python bench/train_step.py [--repeats 3]

One step is what the recipe does per batch: forward, transducer loss plus CTC loss,
backward, on the same synthetic batch for both models (32 utterances of 2.8 s, 14 tokens
each: about the recipe's 90 s batches). The models alternate, so the ratio is measured
under the same machine load. Real batches also pay for loading and augmenting audio in a
worker process, so the recipe's steps are slower than these; the ratio carries over.

It also splits the student's step (the LSTM encoder's forward and backward against the
rest) and multiplies it by the steps in the shipped model's lineage (its card's chain of
continuations): the time `make train` would need on one thread of this machine to train as
much as the shipped model was trained, against the 3 hours it has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from rtf import cpu_name  # bench/ is on the path when this file runs

from edge_asr.models.distill import MODEL_SIZES
from edge_asr.models.model import Transducer, count_parameters
from edge_asr.models.rnnt_loss import rnnt_loss
from edge_asr.models.train import ctc_loss
from edge_asr.models.train_config import TrainConfig


def step_seconds(model: Transducer, batch: tuple) -> float:
    feats, feat_lens, targets, target_lens = batch
    started = time.perf_counter()
    logits, enc_lens, ctc = model(feats, feat_lens, targets, target_lens)
    blank = model.cfg.blank_id
    loss = rnnt_loss(logits, targets, enc_lens, target_lens, blank=blank)  # as train.py
    loss = loss + TrainConfig().ctc_weight * ctc_loss(ctc, targets, enc_lens, target_lens, blank)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def rest_seconds(model: Transducer, batch: tuple) -> float:
    """The same step with the encoder's output given, not computed: what the decoder,
    joiner, CTC head and losses cost. The step's time less this is the encoder's."""
    with torch.no_grad():
        hidden = model.encoder.hidden(batch[0])
    hidden.requires_grad_(True)
    model.encoder.hidden = lambda feats: hidden  # shadows the method for this one step
    try:
        return step_seconds(model, batch)
    finally:
        del model.encoder.hidden


def lineage_steps(card_path: Path) -> int:
    """Optimiser steps behind an exported model: its run's and every run it continued."""
    run, steps = json.loads(card_path.read_text()), 0
    while run:
        log = run.get("training_log") or []
        steps += log[-1]["step"] if log else 0
        run = run.get("continued_from")
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--card", type=Path, default=Path(__file__).resolve().parent.parent
                   / "models" / "rnnt-v1" / "model_card.json",
                   help="the model whose training to project (default: the shipped rnnt-v1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, frames, tokens = 32, 280, 14
    batch = (torch.randn(n, frames, 80), torch.full((n,), frames),
             torch.randint(1, 256, (n, tokens)), torch.full((n,), tokens))
    models = {name: Transducer(cfg) for name, cfg in MODEL_SIZES.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    rest: list[float] = []
    for model in models.values():  # a first step allocates what the others reuse
        step_seconds(model, batch)
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(step_seconds(model, batch))
        rest.append(rest_seconds(models["student"], batch))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; one thread")
    for name, model in models.items():
        print(f"{name}: {count_parameters(model):,} parameters, "
              f"{statistics.median(times[name]):.2f} s a step (median of {args.repeats})")
    ratio = statistics.median(times["teacher"]) / statistics.median(times["student"])
    print(f"teacher / student: {ratio:.2f}x")
    step = statistics.median(times["student"])
    enc = step - statistics.median(rest)
    print(f"student: the encoder's forward and backward {enc:.2f} s of the step's {step:.2f} s "
          f"({enc / step:.0%})")
    steps = lineage_steps(args.card)
    print(f"{args.card.parent.name}: {steps:,} steps in its lineage; at {step:.2f} s a step "
          f"(one thread, before data loading) {steps * step / 3600:.1f} h, against "
          f"{3 * 3600 / step:,.0f} steps in 3 h")


if __name__ == "__main__":
    main()
