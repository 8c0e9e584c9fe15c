"""The streaming RNN-T: conv subsampling x4, LSTM-with-projection encoder, stateless decoder,
joiner. Shapes and state layout follow what sherpa-onnx expects of an `lstm` transducer
(see export.py), so training and export share one definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class ModelConfig:
    num_bins: int = 80
    vocab_size: int = 256
    blank_id: int = 0
    subsampling_channels: int = 32
    d_model: int = 256  # LSTM projection size = encoder output size (sherpa's "d_model")
    rnn_hidden_size: int = 512  # LSTM cell size (sherpa's "rnn_hidden_size")
    num_encoder_layers: int = 3
    decoder_dim: int = 256
    context_size: int = 2  # stateless decoder looks at the last two tokens
    joiner_dim: int = 256
    dropout: float = 0.1
    decode_chunk_len: int = 16  # feature frames per streaming step (160 ms)

    def to_dict(self) -> dict:
        return asdict(self)


def subsampled_length(num_frames: torch.Tensor | int):
    """Output frames of the subsampling for `num_frames` input frames (conv k3s1, k3s2, k3s2)."""
    return ((num_frames - 3) // 2 - 1) // 2


# Right context of the subsampling: a chunk of decode_chunk_len + 7 frames yields exactly
# decode_chunk_len / 4 outputs that equal the offline ones, so chunks overlap by 7 frames.
SUBSAMPLING_PAD = 7


class Subsampling(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.subsampling_channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=1), nn.ReLU(),
            nn.Conv2d(8, c, 3, stride=2), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2), nn.ReLU(),
        )
        freq = ((cfg.num_bins - 3) // 2 - 1) // 2
        self.out = nn.Linear(c * freq, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F) -> (N, T', d_model)
        x = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        n, c, t, f = x.shape
        return self.out(x.permute(0, 2, 1, 3).reshape(n, t, c * f))


class Encoder(nn.Module):
    """Global CMVN, subsampling, stacked LSTMs with projection (residual from layer 2 on)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Feature mean and inverse std measured on training data (set by the recipe).
        self.register_buffer("feat_mean", torch.zeros(cfg.num_bins))
        self.register_buffer("feat_istd", torch.ones(cfg.num_bins))
        self.subsampling = Subsampling(cfg)
        self.lstms = nn.ModuleList(
            nn.LSTM(cfg.d_model, cfg.rnn_hidden_size, proj_size=cfg.d_model, batch_first=True)
            for _ in range(cfg.num_encoder_layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.d_model, cfg.joiner_dim)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """LSTM output before the joiner projection, (N, T', d_model)."""
        x = (x - self.feat_mean) * self.feat_istd
        x = self.subsampling(x)
        for i, lstm in enumerate(self.lstms):
            y, _ = lstm(x)
            y = self.dropout(y)
            x = y if i == 0 else x + y
        return x

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(self.hidden(x)), subsampled_length(lengths)


class Decoder(nn.Module):
    """Stateless prediction network: embedding of the last `context_size` tokens + conv.

    Token -1 means "no token yet" (start of utterance) and embeds to zeros, as sherpa-onnx
    pads the initial context with -1 and a final blank.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.context_size = cfg.context_size
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.decoder_dim)
        self.conv = nn.Conv1d(cfg.decoder_dim, cfg.decoder_dim, cfg.context_size,
                              groups=cfg.decoder_dim // 4, bias=False)
        self.proj = nn.Linear(cfg.decoder_dim, cfg.joiner_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (N, U + context_size - 1) token ids -> (N, U, joiner_dim)."""
        emb = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1).to(torch.float32)
        out = self.conv(emb.permute(0, 2, 1)).permute(0, 2, 1)
        return self.proj(torch.relu(out))


class Joiner(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.out = nn.Linear(cfg.joiner_dim, cfg.vocab_size)

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(encoder_out + decoder_out))


class Transducer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.joiner = Joiner(cfg)
        # Training only (never exported): a CTC head on the encoder. Its loss makes the
        # encoder learn alignments early; without it the transducer first learns the
        # decoder's language model and ignores the audio for thousands of steps.
        self.ctc_head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def decoder_input(self, targets: torch.Tensor) -> torch.Tensor:
        """Prepend the start context (-1 ... -1, blank) to padded targets (N, U)."""
        n = targets.shape[0]
        start = torch.full((n, self.cfg.context_size), -1, dtype=targets.dtype)
        start[:, -1] = self.cfg.blank_id
        return torch.cat([start, targets], dim=1)

    def forward(self, feats, feat_lens, targets, target_lens, ctc_head_only: bool = False):
        """Joiner logits over the whole (T, U+1) grid for the transducer loss, encoder
        lengths, and the CTC head's log-probs (N, T, V). With `ctc_head_only` the CTC loss
        trains the head alone: its gradient stops before the encoder."""
        hidden = self.encoder.hidden(feats)
        enc, enc_lens = self.encoder.proj(hidden), subsampled_length(feat_lens)
        dec = self.decoder(self.decoder_input(targets))  # (N, U+1, J)
        logits = self.joiner(enc.unsqueeze(2), dec.unsqueeze(1))  # (N, T, U+1, V)
        ctc_in = hidden.detach() if ctc_head_only else hidden
        return logits, enc_lens, self.ctc_head(ctc_in).log_softmax(-1)


def count_parameters(model: nn.Module) -> int:
    """Parameters of what ships: the training-only CTC head is not counted."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("ctc_head"))


def load_model(path: Path) -> Transducer:
    """The model saved in a final.pt or checkpoint, in eval mode."""
    return model_from_saved(torch.load(path, map_location="cpu", weights_only=False))


def model_from_saved(saved: dict) -> Transducer:
    """The model of a loaded final.pt / checkpoint (its config and weights)."""
    model = Transducer(ModelConfig(**saved["config"]["model"]))
    model.load_state_dict(saved["model"])
    return model.eval()
