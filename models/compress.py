"""Compression during training: gradual magnitude pruning and quantisation-aware training.

Pruning (Zhu & Gupta 2017, "To prune or not to prune", arXiv:1710.01878): the sparsity of
every pruned weight rises from 0 to `target` along a cubic schedule,

    s(t) = target * (1 - (1 - (t - t0) / (t1 - t0))^3)     for t0 <= t <= t1,

fast at first, when many small weights can go, and slowly near the end, so that the network
recovers between steps. Each tensor keeps its own largest-magnitude weights (the same
sparsity in every layer); a pruned weight stays zero (its mask only ever shrinks).

Quantisation-aware training: the forward and backward passes run on the weights as the int8
runtime will see them (`quantized_weights`), and the optimiser updates the float weights
(the straight-through estimator). The grid is the one onnxruntime's dynamic quantisation
uses for these weights: symmetric, one scale per output channel, scale = max|w| / 127,
codes rounded to [-127, 127] (for b bits: 2^(b-1) - 1, so 4 bits have 15 levels); so the
exported weights quantise to exactly the codes trained with (a test checks it against
onnxruntime). A regulariser, `grid_penalty`, adds the squared distance of each weight to its
nearest grid point, in grid steps, so that weights end near representable values instead
of anywhere between two of them.

What is compressed: the LSTM matrices, every linear layer and the convolutions: the weights
onnxruntime quantises, 97% of the parameters. The decoder's embedding (a Gather, quantised
per tensor by onnxruntime) and the biases stay as they are. On the block-wise grids
(`block` > 0, below; 4 or 8 bits) every matrix takes part, the embedding too, and the
convolutions not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from edge_asr.models.blockwise import BITS, code_range


def compressible_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of matrices and convolutions, by name (the training-only CTC head excluded)."""
    out = {}
    for name, p in model.named_parameters():
        if name.startswith("ctc_head") or "embedding" in name or p.dim() < 2:
            continue
        out[name] = p
    return out


def cubic_sparsity(step: int, start: int, end: int, target: float) -> float:
    if step <= start:
        return 0.0
    if step >= end:
        return target
    return target * (1.0 - (1.0 - (step - start) / (end - start)) ** 3)


class MagnitudePruner:
    """Masks for the weights of `compressible_weights`, tightened on a cubic schedule."""

    def __init__(self, model: nn.Module, target: float, start: int, end: int,
                 every: int = 20) -> None:
        if not 0.0 <= target < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {target}")
        self.weights = compressible_weights(model)
        # A model continued from a pruned export keeps its zeros pruned: the schedule only
        # tightens once it asks for more than the least-pruned weight already has.
        self.masks = {n: p.detach() != 0 for n, p in self.weights.items()}
        self.target, self.start, self.end, self.every = target, start, end, every
        self.sparsity = min((1.0 - m.float().mean().item() for m in self.masks.values()),
                            default=0.0)

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Called after each optimiser step: re-masks every `every` steps, zeroes always."""
        wanted = cubic_sparsity(step, self.start, self.end, self.target)
        if wanted > self.sparsity and (step % self.every == 0 or step >= self.end):
            for name, p in self.weights.items():
                k = int(round(wanted * p.numel()))
                if k == 0:
                    continue
                # Already-pruned weights are zero, so they are among the k smallest.
                magnitude = p.detach().abs().masked_fill(~self.masks[name], -1.0).flatten()
                drop = torch.topk(magnitude, k, largest=False).indices
                mask = self.masks[name].flatten().clone()
                mask[drop] = False
                self.masks[name] = mask.view_as(p)
            self.sparsity = wanted
        for name, p in self.weights.items():
            p.masked_fill_(~self.masks[name], 0.0)  # +0.0: multiplying by 0 leaves -0.0

    def state_dict(self) -> dict:
        return {"masks": self.masks, "sparsity": self.sparsity}

    def load_state_dict(self, state: dict) -> None:
        # On the device of the weights they mask (a checkpoint is read onto the CPU).
        self.masks = {n: m.to(torch.bool).to(self.weights[n].device)
                      for n, m in state["masks"].items()}
        self.sparsity = state["sparsity"]

    def measured(self) -> float:
        return zero_share(self.weights.values())


def zero_share(weights: Iterable[torch.Tensor]) -> float:
    """Share of exactly-zero elements over `weights`."""
    weights = list(weights)
    return sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)


def _levels(bits: int) -> tuple[float, int, int]:
    top = 2 ** (bits - 1) - 1  # symmetric: 127 for 8 bits, 7 for 4
    return float(top), -top, top


def channel_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """One scale per output channel (dim 0 of a torch weight), broadcastable to `w`."""
    reach, _, _ = _levels(bits)
    absmax = w.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-8)
    return (absmax / reach).view(-1, *([1] * (w.dim() - 1)))


def fake_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The weights as the integer runtime sees them: codes times the channel's scale."""
    return _on_grid(w, channel_scale(w, bits), bits)


def _on_grid(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    _, low, high = _levels(bits)
    return torch.clamp(torch.round(w / scale), low, high) * scale


# Block-wise (`block` > 0): the grid of models/blockwise.py, which onnxruntime's MatMulNBits
# and GatherBlockQuantized run. Each row of a (out, in) weight is cut into blocks of `block`
# inputs; a block's scale is its largest-magnitude weight over -8 for 4 bits, -128 for 8 (so
# that weight is the lowest code exactly, as onnxruntime's symmetric quantizer makes it),
# codes are rounded into [-8, 7] or [-128, 127], and the scale is then held in half
# precision, as the export stores it. Every 2-D weight takes part, the decoder's embedding
# included (a GatherBlockQuantized); the convolutions stay float (onnxruntime has no
# block-quantized convolution).


def block_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights the block-wise export quantises: every matrix but the CTC head's."""
    return {name: p for name, p in model.named_parameters()
            if p.dim() == 2 and not name.startswith("ctc_head")}


def block_grid(w: torch.Tensor, block: int, bits: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weights on the block grid, each weight's scale) for a (out, in) weight."""
    low, high = code_range(bits)
    rows, cols = w.shape
    blocks = torch.nn.functional.pad(w, (0, (-cols) % block)).view(rows, -1, block)
    peak = blocks.gather(-1, blocks.detach().abs().argmax(-1, keepdim=True))
    scale = (peak / low).detach()
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero block
    codes = torch.clamp(torch.round(blocks / scale), low, high)
    held = scale.half().float()  # what the file stores
    on_grid = (codes * held).view(rows, -1)[:, :cols]
    return on_grid, held.expand_as(blocks).reshape(rows, -1)[:, :cols].abs()


def _grid_weights(model: nn.Module, block: int) -> dict[str, nn.Parameter]:
    return block_weights(model) if block else compressible_weights(model)


def _quantize(w: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    if block:
        if bits not in BITS:
            raise ValueError(f"block-wise grids are 4- or 8-bit, not {bits}-bit")
        return block_grid(w, block, bits)[0]
    return fake_quantize(w, bits)


def grid_penalty(model: nn.Module, bits: int, block: int = 0) -> torch.Tensor:
    """Mean squared distance of the weights to their grid, in grid steps (0 on the grid,
    1/12 for weights spread evenly between grid points)."""
    total, count = 0.0, 0
    for p in _grid_weights(model, block).values():
        if block:
            on_grid, scale = block_grid(p, block, bits)
        else:
            scale = channel_scale(p, bits)
            on_grid = _on_grid(p, scale, bits)
        residual = (p - on_grid.detach()) / scale
        total = total + residual.pow(2).sum()
        count += p.numel()
    return total / max(1, count)


@contextmanager
def quantized_weights(model: nn.Module, bits: int, block: int = 0) -> Iterator[None]:
    """Inside: the compressible weights hold their quantised values (gradients computed
    there); on exit the float weights come back, to be updated with those gradients."""
    weights = _grid_weights(model, block)
    saved = {n: p.data.clone() for n, p in weights.items()}
    with torch.no_grad():
        for p in weights.values():
            p.data.copy_(_quantize(p.data, bits, block))
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in weights.items():
                p.data.copy_(saved[n])


@torch.no_grad()
def snap_to_grid(model: nn.Module, bits: int, block: int = 0) -> None:
    """Replace the weights by their quantised values (at the end of QAT, before export)."""
    for p in _grid_weights(model, block).values():
        p.copy_(_quantize(p, bits, block))
