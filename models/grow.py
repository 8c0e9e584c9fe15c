"""Grow a trained transducer's encoder by residual LSTM layers that start silent.

Training a deeper encoder from nothing costs the whole schedule again (rnnt-v1 took 23
epochs here). Instead the new layers go on top of the trained ones with their output
projection (LSTM `weight_hr`) at zero: each adds nothing to the residual stream, so the grown
model computes exactly what the old one did, and training gives the layers a voice from
there (the projection's gradient is not zero, so it moves on the first step; the rest of the
layer follows once it does). The same trick as a ResNet block whose last weights start at
zero (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
"""

from __future__ import annotations

import dataclasses

import torch

from edge_asr.models.model import Transducer


@torch.no_grad()
def grow_encoder(model: Transducer, extra_layers: int, seed: int = 0) -> Transducer:
    """A copy of `model` with `extra_layers` more encoder layers on top, computing the same
    outputs as `model` until it is trained. The CTC head is kept."""
    if extra_layers < 1:
        raise ValueError(f"extra_layers must be at least 1, not {extra_layers}")
    cfg = dataclasses.replace(model.cfg,
                              num_encoder_layers=model.cfg.num_encoder_layers + extra_layers)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        grown = Transducer(cfg)
    own = grown.state_dict()
    for name, value in model.state_dict().items():
        own[name] = value.clone()  # every old weight keeps its name: layers are appended
    for layer in range(model.cfg.num_encoder_layers, cfg.num_encoder_layers):
        own[f"encoder.lstms.{layer}.weight_hr_l0"].zero_()
    grown.load_state_dict(own)
    return grown.train(model.training)
