"""Training data: manifest -> augmented audio -> fbank -> (features, tokens) batches."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from edge_asr.daemon.manifest import Entry, read_manifest
from edge_asr.models.augment import AugmentConfig, Augmenter
from edge_asr.models.tokenizer import Tokenizer
from edge_asr.models.vtlp import warped_fbank

# Jaitly and Hinton (2013) drew VTLP factors from 0.9-1.1; adult vocal tracts differ by
# about that much, and children's are shorter still.
VTLP_WARP = (0.9, 1.1)


def load_audio(path: str) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != 16000:
        raise ValueError(f"{path}: expected 16 kHz audio, got {rate} Hz")
    return audio[:, 0]


class SpeechDataset(torch.utils.data.Dataset):
    """One item = (fbank (T, 80) float32, token ids (U,) int64) of one utterance.

    With `augment`, every epoch hears a different random rendering (speed, room, noise, level,
    band-limiting ...) of each clip; the random stream is seeded by (seed, epoch, index) so a
    resumed run sees what an uninterrupted one would have seen.
    """

    def __init__(self, manifest: Path | Sequence[Path], tokenizer: Path, augment: bool,
                 seed: int = 0, config: AugmentConfig | None = None,
                 concat_prob: float = 0.0, vtlp_prob: float = 0.0,
                 vtlp_warp: tuple[float, float] = VTLP_WARP) -> None:
        manifests = [manifest] if isinstance(manifest, str | Path) else list(manifest)
        self.entries: list[Entry] = [e for m in manifests for e in read_manifest(m)]
        self.tokenizer_path = tokenizer
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._tok: Tokenizer | None = None
        self._aug: Augmenter | None = None
        self.config = config or AugmentConfig()
        # With augmentation, this share of items is two utterances back to back (a random
        # partner after 0-0.8 s), so the model learns that speech can go on after a sentence
        # ends: trained on single sentences, it heard nothing after the first one.
        self.concat_prob = concat_prob
        # With augmentation, this share of items is heard through a filterbank warped as
        # by a vocal tract of another length (vtlp.py), a factor drawn from `vtlp_warp`.
        if not 0.0 <= vtlp_prob <= 1.0:
            raise ValueError(f"vtlp_prob must be in [0, 1], got {vtlp_prob}")
        self.vtlp_prob, self.vtlp_warp = vtlp_prob, vtlp_warp

    @property
    def config(self) -> AugmentConfig:
        return self._config

    @config.setter
    def config(self, config: AugmentConfig) -> None:
        # A new chain for a new config (the trainer sets one per epoch); a loader's worker
        # process builds its own either way, but a loader without workers reuses this one.
        self._config = config
        self._aug = None

    def __len__(self) -> int:
        return len(self.entries)

    def durations(self) -> list[float]:
        """Seconds of each item this epoch, pairs included, so that batches of similar
        lengths keep pairs together (one pair in a batch of singles doubles its padding)."""
        out = []
        for i, e in enumerate(self.entries):
            pair = self._partner(i)
            out.append((e.duration or 0.0) + (pair[1] + (self.entries[pair[0]].duration or 0.0)
                                               if pair else 0.0))
        return out

    def _partner(self, i: int) -> tuple[int, float] | None:
        """(index, gap in seconds) of the utterance that follows item i this epoch, if any."""
        if not (self.augment and self.concat_prob > 0):
            return None
        pick = np.random.default_rng([self.seed, self.epoch, i, 1])
        if pick.random() >= self.concat_prob:
            return None
        return int(pick.integers(len(self.entries))), float(pick.uniform(0.0, 0.8))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tok is None:  # created lazily: once per worker process
            self._tok = Tokenizer(self.tokenizer_path)
        entry = self.entries[i]
        audio, text = load_audio(entry.audio_filepath), entry.text
        pair = self._partner(i)
        if pair is not None:
            other = self.entries[pair[0]]
            gap = np.zeros(int(pair[1] * 16000), np.float32)
            audio = np.concatenate([audio, gap, load_audio(other.audio_filepath)])
            text = f"{text} {other.text}"
        if self.augment:
            if self._aug is None:  # its pools take seconds to build: only when needed
                self._aug = Augmenter(self.config, seed=self.seed)
            rng = np.random.default_rng([self.seed, self.epoch, i])
            self._aug.add_to_babble_pool(audio)
            audio = self._aug(audio, rng)
        warp = 1.0
        if self.augment and self.vtlp_prob > 0:
            # A stream of its own, so the audio chain hears what it did without VTLP.
            pick = np.random.default_rng([self.seed, self.epoch, i, 2])
            if pick.random() < self.vtlp_prob:
                warp = float(pick.uniform(*self.vtlp_warp))
        # warped_fbank at 1 is compute_fbank itself
        feats = warped_fbank(audio, warp)
        tokens = self._tok.encode(text)
        return torch.from_numpy(feats), torch.tensor(tokens, dtype=torch.int64)


def duration_batches(durations: list[float], max_seconds: float, seed: int,
                     max_items: int = 64) -> list[list[int]]:
    """Batches of similar-length utterances whose padded length stays under max_seconds."""
    rng = random.Random(seed)
    order = sorted(range(len(durations)), key=lambda i: (durations[i], rng.random()))
    batches, current, longest = [], [], 0.0
    for i in order:
        longest_if_added = max(longest, durations[i])
        if current and (longest_if_added * (len(current) + 1) > max_seconds
                        or len(current) >= max_items):
            batches.append(current)
            current, longest_if_added = [], durations[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]):
    feats, tokens = zip(*items, strict=True)
    feat_lens = torch.tensor([f.shape[0] for f in feats])
    token_lens = torch.tensor([t.shape[0] for t in tokens])
    # Pad features with a low log-energy, like silence, rather than zeros (a loud value).
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=-15.0)
    y = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=0)
    return x, feat_lens, y, token_lens
