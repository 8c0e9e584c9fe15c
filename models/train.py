"""Train the transducer: resumable, with progress bars, a loss / dev-WER log and checkpoints.

    python -m edge_asr.models.train --data DIR --exp DIR [--epochs N]

Checkpoints (`exp/checkpoint.pt`, rewritten every few minutes and at each epoch end) carry
model, optimiser, scheduler and position, so an interrupted run resumes where it stopped.

This module is the loop and its step; what it is set to is train_config.py, the dev WER
it logs comes from greedy_decode.py, and the weights it ships are chosen by
final_weights.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.models import compress
from edge_asr.models.augment import AugmentConfig
from edge_asr.models.dataset import SpeechDataset, collate, duration_batches
from edge_asr.models.final_weights import WeightAverage, choose_final
from edge_asr.models.greedy_decode import dev_wer
from edge_asr.models.grow import grow_encoder
from edge_asr.models.model import ModelConfig, Transducer, count_parameters, subsampled_length
from edge_asr.models.rnnt_loss import rnnt_loss
from edge_asr.models.tokenizer import Tokenizer
from edge_asr.models.train_config import TrainConfig, gentle_augmentation
from edge_asr.models.warm_start import load_from_onnx


def spec_augment(x: torch.Tensor, lens: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    x = x.clone()
    n, t, f = x.shape
    for b in range(n):
        for _ in range(cfg.freq_masks):
            width = int(torch.randint(0, 13, (1,), generator=gen))
            start = int(torch.randint(0, f - width + 1, (1,), generator=gen))
            x[b, :, start : start + width] = x[b].mean()
        for _ in range(cfg.time_masks):
            width = int(torch.randint(0, max(1, int(lens[b]) // 20) + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(1, int(lens[b]) - width), (1,), generator=gen))
            x[b, start : start + width, :] = x[b].mean()
    return x


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
             target_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """CTC loss summed over each utterance, averaged over the batch (as the transducer's)."""
    return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, lengths,
                                        target_lengths, blank=blank, reduction="sum",
                                        zero_infinity=True) / targets.shape[0]


def data_workers(configured: int, device: torch.device, cpus: int | None) -> int:
    """Loader processes: as configured on a CPU, where training wants the other cores; on a
    GPU enough to feed it, since rendering and featurising a 90 s batch costs a worker about
    0.3 s of CPU here, several times the step the GPU takes."""
    if device.type == "cpu":
        return configured
    return max(configured, min(8, (cpus or 2) - 1))


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.peak_lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.peak_lr * (cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * cosine)


def train(data: Path, exp: Path, cfg: TrainConfig, feat_mean: torch.Tensor,
          feat_istd: torch.Tensor) -> Path:
    """Runs (or resumes) training; returns the path of the final averaged weights."""
    exp.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    # Tiny LSTM gradients late in training turn into denormal floats, which x86 CPUs
    # process ~10x slower (measured: 2.4 s per batch became 25-30 s); flush them to zero.
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    lang = data / "lang"
    tok = Tokenizer(lang / "bpe.model")
    cfg.model.vocab_size = tok.vocab_size
    manifests = [data / "manifests" / f"{name}.jsonl" for name in ["train", *cfg.extra_train]]
    train_set = SpeechDataset(manifests, lang / "bpe.model", True, cfg.seed,
                              concat_prob=cfg.concat_prob, vtlp_prob=cfg.vtlp_prob)
    dev_set = SpeechDataset(data / "manifests" / f"{cfg.dev_set}.jsonl", lang / "bpe.model",
                            False)
    # A CUDA GPU is used when present; the recipe's budget is set for this 2-core CPU.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = data_workers(cfg.num_workers, device, os.cpu_count())
    ckpt = exp / "checkpoint.pt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False) if ckpt.exists() else None
    if cfg.init_from and saved is None:
        model = warm_start(Path(cfg.init_from), exp, lang / "bpe.model")
        if model.cfg.vocab_size != tok.vocab_size:
            raise ValueError(f"{cfg.init_from} has {model.cfg.vocab_size} tokens, the "
                             f"tokenizer {tok.vocab_size}")
        if cfg.grow_layers:
            model = grow_encoder(model, cfg.grow_layers, cfg.seed)
            print(f"grown to {model.cfg.num_encoder_layers} encoder layers "
                  f"({count_parameters(model):,} parameters)")
        cfg.model = model.cfg
        model.train()
    else:
        if saved is not None:  # the architecture it was saved with (a grown one differs)
            cfg.model = ModelConfig(**saved["config"]["model"])
        model = Transducer(cfg.model)
        model.encoder.feat_mean.copy_(feat_mean)
        model.encoder.feat_istd.copy_(feat_istd)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.peak_lr, weight_decay=cfg.weight_decay)
    batches_per_epoch = len(duration_batches([d + 1.0 for d in train_set.durations()],
                                             cfg.batch_seconds, 0))
    total_steps = cfg.ctc_only_steps + batches_per_epoch * cfg.epochs
    state = {"epoch": 0, "batch": 0, "step": 0, "log": []}
    average = WeightAverage()
    average_from = int(total_steps * (1 - cfg.average_fraction))
    pruner = compress.MagnitudePruner(model, cfg.sparsity, int(total_steps * cfg.prune_from),
                                      int(total_steps * cfg.prune_until)) \
        if cfg.sparsity else None
    # SpecAugment's masks come from their own stream, dropout from torch's global one.
    gen = torch.Generator().manual_seed(cfg.seed)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])  # its state follows the parameters' device
        state = saved["state"]
        if saved.get("average"):  # added to the model's tensors: onto their device
            average.count = saved["average"][0]
            average.state = {k: v.to(device) for k, v in saved["average"][1].items()}
        if pruner is not None and saved.get("pruner"):
            pruner.load_state_dict(saved["pruner"])
        if saved.get("rng"):  # both streams go on where they were, as if never interrupted
            gen.set_state(saved["rng"]["spec_augment"])
            torch.set_rng_state(saved["rng"]["torch"])
            if device.type == "cuda" and saved["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(saved["rng"]["cuda"])
        print(f"resuming at epoch {state['epoch']} batch {state['batch']} step {state['step']}")
    print(f"model: {count_parameters(model):,} parameters on {device}; {len(train_set)} training "
          f"utterances, {batches_per_epoch} batches an epoch, {cfg.epochs} epochs")
    (exp / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def save(path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "state": state, "config": asdict(cfg),
                    "average": (average.count, average.state),
                    "pruner": pruner.state_dict() if pruner is not None else None,
                    "rng": {"spec_augment": gen.get_state(), "torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state() if device.type == "cuda"
                            else None}}, tmp)
        tmp.replace(path)  # atomic: an interruption never leaves a half-written checkpoint

    model.train()

    def as_deployed():
        """The weights as the runtime will hold them (QAT), or a no-op."""
        if cfg.qat_bits:
            return compress.quantized_weights(model, cfg.qat_bits, cfg.qat_block)
        return contextlib.nullcontext()

    def compression_figures() -> dict:
        figures = {}
        if pruner is not None:
            figures["sparsity"] = round(pruner.measured(), 4)
        if cfg.qat_bits:
            with torch.no_grad():
                figures["grid_distance"] = round(
                    float(compress.grid_penalty(model, cfg.qat_bits, cfg.qat_block)), 5)
        return figures

    def step(x, xl, y, yl, ctc_only: bool) -> float:
        for group in opt.param_groups:
            group["lr"] = lr_at(state["step"], total_steps, cfg)
        if not ctc_only:
            x = spec_augment(x, xl, cfg, gen)
        x, xl, y, yl = x.to(device), xl.to(device), y.to(device), yl.to(device)
        opt.zero_grad()
        with as_deployed():  # QAT: gradients taken at the quantised weights
            if ctc_only:
                hidden = model.encoder.hidden(x)
                enc_lens, ctc_lp = subsampled_length(xl), model.ctc_head(hidden).log_softmax(-1)
                loss = ctc_loss(ctc_lp, y, enc_lens, yl, cfg.model.blank_id)
            else:
                logits, enc_lens, ctc_lp = model(
                    x, xl, y, yl, ctc_head_only=state["step"] < cfg.ctc_head_steps)
                loss = rnnt_loss(logits, y, enc_lens, yl, blank=cfg.model.blank_id)
                if cfg.ctc_weight:
                    loss = loss + cfg.ctc_weight * ctc_loss(ctc_lp, y, enc_lens, yl,
                                                            cfg.model.blank_id)
            loss.backward()
        if cfg.qat_bits:  # on the float weights: pulls them towards the grid
            (cfg.grid_weight * compress.grid_penalty(model, cfg.qat_bits, cfg.qat_block)
             ).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] += 1
        if pruner is not None:
            pruner.step(state["step"])
        if state["step"] > average_from:
            average.update(model)
        return loss.item()

    def loader(batches: list[list[int]]) -> torch.utils.data.DataLoader:
        # A generator of its own: a loader draws its workers' seed when it starts, and from
        # torch's global stream that would shift dropout's on every resume. (The dataset
        # seeds its augmentation itself.)
        return torch.utils.data.DataLoader(
            train_set, batch_sampler=batches, collate_fn=collate, num_workers=workers,
            prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(cfg.seed))

    last_save = time.monotonic()

    def maybe_save() -> None:
        nonlocal last_save
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            save(ckpt)
            last_save = time.monotonic()

    if state["step"] < cfg.ctc_only_steps:  # phase 1: CTC alone on clean audio
        train_set.augment = False
        batches = duration_batches([d + 1.0 for d in train_set.durations()], cfg.batch_seconds,
                                   cfg.seed + 1000)[state["step"]:cfg.ctc_only_steps]
        bar = tqdm(loader(batches), total=cfg.ctc_only_steps, initial=state["step"],
                   desc="ctc warm-up", mininterval=10)
        running = 0.0
        for x, xl, y, yl in bar:
            loss = step(x, xl, y, yl, ctc_only=True)
            running = 0.98 * running + 0.02 * loss if running else loss
            bar.set_postfix(ctc=f"{running:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            maybe_save()
        save(ckpt)
        train_set.augment = True

    while state["epoch"] < cfg.epochs:  # phase 2: transducer + CTC, augmented
        epoch = state["epoch"]
        train_set.epoch = epoch
        train_set.config = gentle_augmentation() if epoch < cfg.warmup_augment_epochs \
            else AugmentConfig()
        batches = duration_batches([d + 1.0 for d in train_set.durations()], cfg.batch_seconds,
                                   cfg.seed + epoch)
        bar = tqdm(loader(batches[state["batch"]:]), total=len(batches),
                   initial=state["batch"], desc=f"epoch {epoch}", mininterval=10)
        running = 0.0
        for x, xl, y, yl in bar:
            loss = step(x, xl, y, yl, ctc_only=False)
            state["batch"] += 1
            running = 0.98 * running + 0.02 * loss if running else loss
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            maybe_save()
        with as_deployed():
            wer = dev_wer(model.cpu(), dev_set, tok)
        model.to(device)
        state["log"].append({"epoch": epoch, "loss": round(running, 4), "dev_wer": round(wer, 4),
                             "step": state["step"], "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                             **compression_figures()})
        print(json.dumps(state["log"][-1]), flush=True)
        with (exp / "log.jsonl").open("a") as f:
            f.write(json.dumps(state["log"][-1]) + "\n")
        state["epoch"] += 1
        state["batch"] = 0
        save(exp / f"epoch-{epoch}.pt")
        save(ckpt)
    final = exp / "final.pt"
    chosen, chosen_wer, averaged = choose_final(
        model, state["log"][-1]["dev_wer"], average,
        pruner.masks if pruner is not None else {}, cfg.qat_bits,
        lambda m: dev_wer(m.cpu(), dev_set, tok), cfg.qat_block)
    torch.save({"model": chosen, "config": asdict(cfg), "dev_wer": chosen_wer,
                "averaged_steps": average.count if averaged else 0}, final)
    return final


def warm_start(model_dir: Path, exp: Path, tokenizer: Path | None = None) -> Transducer:
    """The exported model's weights, and its card's history kept in exp/lineage.json (the
    export will overwrite the folder, and the new card records what it grew from).
    `tokenizer`: the data folder's bpe.model, which must be the one the model learnt."""
    card = json.loads((model_dir / "model_card.json").read_text())
    if tokenizer is not None:
        check_same_tokenizer(model_dir, card, tokenizer)
    model = load_from_onnx(model_dir)
    sets = card.get("evaluation", {}).get("sets", {})
    lineage = {"init_from": str(model_dir), "sha256": card.get("sha256", {}),
               "training_log": card.get("training_log", []),
               "evaluation_wer": {name: {k: v.get("wer") for k, v in by.items()}
                                  for name, by in sets.items()},
               "continued_from": card.get("continued_from")}
    (exp / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
    print(f"continuing from {model_dir} ({count_parameters(model):,} parameters)")
    return model


def check_same_tokenizer(model_dir: Path, card: dict, tokenizer: Path) -> None:
    """Refuses to go on training a model on another tokenizer's ids: with the same number of
    pieces nothing else fails, and the run would teach the model a new alphabet (a data
    folder rebuilt from nothing trains its own bpe.model)."""
    own = card.get("sha256", {}).get("bpe.model")
    if own is None and (model_dir / "bpe.model").is_file():
        own = sha256_of(model_dir / "bpe.model")
    if own is None:
        raise ValueError(f"{model_dir}: its card names no bpe.model, so the data folder's "
                         f"tokenizer cannot be checked against it")
    theirs = sha256_of(tokenizer)
    if own != theirs:
        raise ValueError(f"{model_dir} learnt another tokenizer (bpe.model {own[:12]}) than "
                         f"{tokenizer} ({theirs[:12]}): copy the model's bpe.model and "
                         f"tokens.txt into {tokenizer.parent}, or train from nothing")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = p.parse_args()
    stats = torch.load(args.data / "lang" / "cmvn.pt")
    train(args.data, args.exp, TrainConfig(epochs=args.epochs), stats["mean"], stats["istd"])


if __name__ == "__main__":
    main()
