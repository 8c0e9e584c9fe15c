"""Seconds per training step of the student and of the teacher on one thread (printed, never
asserted): what a teacher epoch would cost on this machine.

    python bench/train_step.py [--repeats 3]

One step is what the recipe does per batch: forward, transducer loss plus CTC loss,
backward, on the same synthetic batch for both models (32 utterances of 2.8 s, 14 tokens
each: about the recipe's 90 s batches). The models alternate, so the ratio is measured
under the same machine load. Real batches also pay for loading and augmenting audio in a
worker process, so the recipe's steps are slower than these; the ratio carries over.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from rtf import cpu_name  # bench/ is on the path when this file runs

from edge_asr.models.distill import MODEL_SIZES
from edge_asr.models.model import Transducer, count_parameters
from edge_asr.models.rnnt_loss import rnnt_loss
from edge_asr.models.train import TrainConfig, ctc_loss


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n, frames, tokens = 32, 280, 14
    batch = (torch.randn(n, frames, 80), torch.full((n,), frames),
             torch.randint(1, 256, (n, tokens)), torch.full((n,), tokens))
    models = {name: Transducer(cfg) for name, cfg in MODEL_SIZES.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(step_seconds(model, batch))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; one thread")
    for name, model in models.items():
        print(f"{name}: {count_parameters(model):,} parameters, "
              f"{statistics.median(times[name]):.2f} s a step (median of {args.repeats})")
    ratio = statistics.median(times["teacher"]) / statistics.median(times["student"])
    print(f"teacher / student: {ratio:.2f}x")


if __name__ == "__main__":
    main()
