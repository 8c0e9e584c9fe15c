"""Which weights a training run ships (`choose_final`): the running average of its last
steps (`WeightAverage`, fed by the training loop) when dev finds it no worse than the last
weights, else the last weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edge_asr.models import compress
from edge_asr.models.model import Transducer


class WeightAverage:
    """Running mean of the model's floating-point weights over the steps it is fed."""

    def __init__(self) -> None:
        self.count = 0
        self.state: dict[str, torch.Tensor] = {}

    def update(self, model: torch.nn.Module) -> None:
        self.count += 1
        for k, v in model.state_dict().items():
            if not v.is_floating_point():
                self.state[k] = v.detach().clone()
            elif k not in self.state:
                self.state[k] = v.detach().to(torch.float64).clone()
            else:
                self.state[k] += (v.detach().to(torch.float64) - self.state[k]) / self.count

    def weights(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.state[k].to(v.dtype) for k, v in like.items()}


def choose_final(model: Transducer, last_wer: float, average: WeightAverage,
                 masks: dict[str, torch.Tensor], qat_bits: int,
                 evaluate: Callable[[Transducer], float], qat_block: int = 0
                 ) -> tuple[dict[str, torch.Tensor], float, bool]:
    """The weights that ship, their dev WER, and whether they are the average.

    The last weights (snapped onto the grid after QAT), or the average of the last steps
    when `evaluate` (dev WER) finds it no worse. The average keeps the pruner's zeros, and
    after QAT it is snapped too: an average of weights near grid points is off the grid,
    and the runtime holds grid values only."""
    def weights() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    if qat_bits:
        compress.snap_to_grid(model, qat_bits, qat_block)
    last = weights()
    if not average.count:
        return last, last_wer, False
    averaged = average.weights(last)
    for name, mask in masks.items():  # the masks are final by then
        averaged[name] = averaged[name].masked_fill(mask == 0, 0.0)  # +0.0, not -0.0
    model.load_state_dict(averaged)
    if qat_bits:
        compress.snap_to_grid(model, qat_bits, qat_block)
        averaged = weights()
    avg_wer = evaluate(model)
    print(f"dev WER: last weights {last_wer:.4f}, average of the last {average.count} steps "
          f"{avg_wer:.4f}")
    if avg_wer <= last_wer:
        return averaged, avg_wer, True
    model.load_state_dict(last)
    return last, last_wer, False
