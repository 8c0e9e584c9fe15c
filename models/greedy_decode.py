"""Greedy search on the PyTorch transducer, and the dev WER it gives.

Training logs the dev WER each epoch and picks its final weights by it (train.py,
final_weights.py), and so does the averaging of runs (average.py); distillation transcribes
with the search (distill.py), and inspect_checkpoint.py shows what a checkpoint hears.
"""

from __future__ import annotations

import jiwer
import torch

from edge_asr.models.dataset import SpeechDataset, collate
from edge_asr.models.model import Transducer
from edge_asr.models.tokenizer import Tokenizer


@torch.no_grad()
def greedy_decode(model: Transducer, feats: torch.Tensor, lens: torch.Tensor,
                  max_symbols: int = 3) -> list[list[int]]:
    """Offline greedy search on the torch model (for dev WER during training)."""
    model.eval()
    enc, enc_lens = model.encoder(feats, lens)
    cfg = model.cfg
    results = []
    for b in range(enc.shape[0]):
        ctx = [-1] * (cfg.context_size - 1) + [cfg.blank_id]
        hyp: list[int] = []
        dec = model.decoder(torch.tensor([ctx], device=enc.device))[:, -1]
        for t in range(int(enc_lens[b])):
            for _ in range(max_symbols):
                token = int(model.joiner(enc[b, t : t + 1], dec).argmax(-1))
                if token == cfg.blank_id:
                    break
                hyp.append(token)
                ctx = ctx[1:] + [token]
                dec = model.decoder(torch.tensor([ctx], device=enc.device))[:, -1]
        results.append(hyp)
    return results


def dev_wer(model: Transducer, dev: SpeechDataset, tok: Tokenizer, batch: int = 16) -> float:
    refs, hyps = [], []
    for start in range(0, len(dev), batch):
        items = [dev[i] for i in range(start, min(len(dev), start + batch))]
        x, xl, y, yl = collate(items)
        for hyp, ref in zip(greedy_decode(model, x, xl), y, strict=True):
            hyps.append(tok.decode(hyp))
            refs.append(tok.decode(ref.tolist()))
    model.train()
    return jiwer.wer(refs, [h if h else "<empty>" for h in hyps])
