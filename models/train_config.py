"""What a training run is set to (`TrainConfig`), and the gentler augmentation its first
epoch hears.

Saved beside the run (exp/config.json) and in its checkpoints; models/train.py runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_asr.models.augment import AugmentConfig
from edge_asr.models.model import ModelConfig


@dataclass
class TrainConfig:
    epochs: int = 3  # 30-40 min each on the 2-core CPU
    peak_lr: float = 1e-3
    # Training starts with the CTC loss alone, on clean audio, for this many batches (about
    # 15 min here). Trained jointly from the start, the transducer first learns its decoder's
    # language model and its encoder ignores the audio for thousands of steps (measured: still
    # input-independent after 880 steps); a CTC-only encoder starts to listen after ~400.
    ctc_only_steps: int = 600
    ctc_weight: float = 0.3  # afterwards CTC stays as an auxiliary loss on the encoder
    # The first epoch hears gentler augmentation so that alignments form on clearer speech.
    warmup_augment_epochs: int = 1
    warmup_steps: int = 100
    final_lr_ratio: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    batch_seconds: float = 90.0  # padded audio seconds per batch
    num_workers: int = 1
    threads: int = 2
    seed: int = 0
    checkpoint_minutes: float = 5.0
    freq_masks: int = 2  # SpecAugment: masks of up to 12 mel bins
    time_masks: int = 1  # and up to 5% of the frames
    # Weights are averaged over every step of the last `average_fraction` of training (at the
    # low end of the cosine schedule); the average ships if it beats the last weights on dev.
    average_fraction: float = 0.3
    # Continue training an exported model (a folder with ONNX files and model_card.json)
    # instead of starting from random weights; see warm_start.py. The encoder already
    # listens, so the recipe then skips the CTC warm-up and the gentle first epoch.
    init_from: str | None = None
    # A continuation's CTC head is drawn afresh (it is not exported), and against an encoder
    # that has moved since (a grown one) it does not fit: a grown rnnt-v2's continuation
    # began at a loss of about 180 per item, against 41 at the end of the run before. For this many
    # steps the CTC loss trains the head alone, lest its gradients shake the encoder.
    ctc_head_steps: int = 0
    # Residual LSTM layers put on top of init_from's encoder, silent at first (grow.py): more
    # capacity without training the model again from nothing.
    grow_layers: int = 0
    # Compression while training (compress.py): gradual magnitude pruning to `sparsity`
    # between these fractions of the steps, and quantisation-aware training at `qat_bits`
    # (8 or 4; 0 = float) with the grid penalty weighted by `grid_weight`.
    sparsity: float = 0.0
    prune_from: float = 0.05
    prune_until: float = 0.7
    qat_bits: int = 0
    # With qat_bits 4: 0 = one scale per output channel (onnxruntime's dynamic int8 grid,
    # models/quantize.py); N = a scale per N inputs (models/blockwise.py, --block-4bit N).
    qat_block: int = 0
    grid_weight: float = 2.0
    # More training manifests (names in DATA/manifests) beside train.jsonl, e.g. "pseudo":
    # speech the teacher transcribed (distill.py).
    extra_train: list[str] = field(default_factory=list)
    # The set (in DATA/manifests) whose WER is logged each epoch and picks the final weights:
    # "dev" (training voices) or "dev_voices" (speakers no training set has; prepare.py).
    dev_set: str = "dev"
    # Share of training items that are two utterances back to back (dataset.py says why).
    concat_prob: float = 0.0
    # Share of training items whose features are warped as another vocal tract's (vtlp.py).
    vtlp_prob: float = 0.0
    model: ModelConfig = field(default_factory=ModelConfig)


def gentle_augmentation() -> AugmentConfig:
    return AugmentConfig(p_speed=0.4, speed=(0.9, 1.15), p_reverb=0.15, p_noise=0.35,
                         snr_db=(12.0, 30.0), p_clip=0.0, p_band8k=0.05, p_dc=0.0)
