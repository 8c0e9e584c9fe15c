"""Look inside a training checkpoint: does the encoder listen yet?

    python -m edge_asr.models.inspect_checkpoint DATA/exp/checkpoint.pt [--data DATA] [--n 8]

Decodes the first dev utterances with the transducer (greedy) and with the CTC head, and
measures how much the encoder's states differ between utterances. A model that has only
learned its decoder's language model prints the same words for every utterance and a
near-zero difference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edge_asr.models.dataset import SpeechDataset, collate
from edge_asr.models.greedy_decode import greedy_decode
from edge_asr.models.model import ModelConfig, Transducer
from edge_asr.models.tokenizer import Tokenizer


def ctc_greedy(log_probs: torch.Tensor, blank: int = 0) -> tuple[list[int], float]:
    ids = log_probs.argmax(-1).tolist()
    out = [i for k, i in enumerate(ids) if i != blank and (k == 0 or ids[k - 1] != i)]
    return out, sum(i == blank for i in ids) / max(1, len(ids))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "edge-asr")
    p.add_argument("--n", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = Transducer(ModelConfig(**saved["config"]["model"]))
    model.load_state_dict(saved["model"])
    model.eval()
    print(f"step {saved.get('state', {}).get('step', '?')}")
    lang = args.data / "lang" / "bpe.model"
    tok = Tokenizer(lang)
    dev = SpeechDataset(args.data / "manifests" / "dev.jsonl", lang, augment=False)
    x, xl, y, _ = collate([dev[i] for i in range(args.n)])
    with torch.no_grad():
        hidden = model.encoder.hidden(x)
        ctc = model.ctc_head(hidden).log_softmax(-1)
    for b, hyp in enumerate(greedy_decode(model, x, xl)):
        ctc_ids, blank = ctc_greedy(ctc[b])
        print(f"ref  {tok.decode(y[b].tolist())}\n  rnnt {tok.decode(hyp)!r}\n"
              f"  ctc  {tok.decode(ctc_ids)!r} (blank on {100 * blank:.0f}% of frames)")
    frame = min(20, hidden.shape[1] - 1)
    spread = (hidden[:, frame] - hidden[:, frame].mean(0)).abs().mean().item()
    print(f"encoder state spread across utterances at frame {frame}: {spread:.4f} "
          f"(state std {hidden.std().item():.4f})")


if __name__ == "__main__":
    main()
