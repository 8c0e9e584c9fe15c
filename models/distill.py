"""Teacher-student training: a teacher five times the student's size labels extra speech
that has no transcript, and the student learns from the labelled and the teacher-labelled
speech together (sequence-level knowledge distillation, Kim and Rush 2016; "noisy student"
pseudo-labelling for ASR, Park et al. 2020).

Three commands; the teacher wants a GPU (`make train` uses one when present): on the
2-core CPU one teacher epoch would take several hours.

    # 1. The teacher: the recipe with the larger model (TEACHER, 20.3 M parameters).
    python -m edge_asr.models.recipe --data D --out D/models/teacher --exp D/exp-teacher \\
        --model-size teacher --epochs 10 --until train
    # 2. Untranscribed audio: training sentences the recipe did not render, spoken by the
    #    training voices; the teacher transcribes it into D/manifests/pseudo.jsonl.
    python -m edge_asr.models.distill --data D --teacher D/exp-teacher/final.pt --n 16000
    # 3. The student on both (train.jsonl + pseudo.jsonl).
    python -m edge_asr.models.recipe --data D --out models/rnnt-v1 --extra-train pseudo

The sentences of step 2 are kept beside the audio only to report how good the teacher's
labels are (their WER, printed and written to pseudo.summary.json); training never reads
them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jiwer
import numpy as np
import torch

from edge_asr.daemon.frontend.features import compute_fbank
from edge_asr.daemon.manifest import read_manifest
from edge_asr.models import prepare
from edge_asr.models.dataset import collate, duration_batches, load_audio
from edge_asr.models.greedy_decode import greedy_decode
from edge_asr.models.model import ModelConfig, load_model
from edge_asr.models.tokenizer import Tokenizer

# The student is ModelConfig(): 4.0 M parameters. Wider LSTM cells and projections and a
# fourth layer make the teacher 5.1x larger; it stays streaming-capable (and exportable),
# which the runtime does not need but costs the teacher little.
TEACHER = ModelConfig(subsampling_channels=64, d_model=512, rnn_hidden_size=1024,
                      num_encoder_layers=4, decoder_dim=512, joiner_dim=512)
MODEL_SIZES = {"student": ModelConfig(), "teacher": TEACHER}
PSEUDO_TAG = "pseudo"


def render_unlabelled(data: Path, n: int, skip: int, workers: int = 2) -> Path:
    """Audio for `n` training sentences after the first `skip` (the ones train.jsonl has),
    by the training voices; returns DATA/manifests/unlabelled.jsonl."""
    sentences = prepare.load_split(data / "corpus", "train")[skip : skip + n]
    if len(sentences) < n:
        raise ValueError(f"the corpus has only {len(sentences)} training sentences after the "
                         f"first {skip}; build it with a larger --n-corpus")
    voices = prepare.pick_voices(len(sentences), np.random.default_rng(11))
    return prepare.render_set("unlabelled", sentences, voices, data, None, 5, 0.4, workers)


@torch.no_grad()
def pseudo_label(model: torch.nn.Module, tokenizer: Tokenizer, manifest: Path, out: Path,
                 batch_seconds: float = 120.0) -> dict:
    """Transcribe every clip of `manifest` with `model` (offline greedy search on clean
    features) into `out`, a training manifest whose text is the model's. Clips it hears no
    word in are left out. Returns the labels' WER against the manifest's own text, which
    is only reported."""
    entries = read_manifest(manifest)
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    device = next(model.parameters()).device
    model.eval()
    labels: list[str] = [""] * len(entries)
    for batch in duration_batches([e.duration or 0.0 for e in entries], batch_seconds, 0):
        items = [(torch.from_numpy(compute_fbank(load_audio(entries[i].audio_filepath))),
                  torch.zeros(0, dtype=torch.int64)) for i in batch]
        x, lens, _, _ = collate(items)
        for i, hyp in zip(batch, greedy_decode(model, x.to(device), lens.to(device)),
                          strict=True):
            labels[i] = tokenizer.decode(hyp)
    kept = 0
    with out.open("w", encoding="utf-8") as f:
        for row, entry, label in zip(rows, entries, labels, strict=True):
            if not label:
                continue
            row = {**row, "text": label, "tags": [*row.get("tags", []), PSEUDO_TAG],
                   "audio_filepath": os.path.relpath(entry.audio_filepath, out.parent)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            kept += 1
    refs = [e.text for e in entries]
    return {"utterances": len(entries), "labelled": kept,
            "label_wer": round(jiwer.wer(refs, [h or "<empty>" for h in labels]), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the recipe's cache folder")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's final.pt")
    p.add_argument("--n", type=int, default=16000, help="untranscribed utterances to render")
    p.add_argument("--skip", type=int, default=24000,
                   help="training sentences already rendered (the recipe's --n-train)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not args.teacher.is_file():
        p.error(f"--teacher {args.teacher}: no such checkpoint (step 1 writes final.pt)")
    manifest = render_unlabelled(args.data, args.n, args.skip, args.workers)
    model = load_model(args.teacher)
    if torch.cuda.is_available():
        model.cuda()
    out = args.data / "manifests" / "pseudo.jsonl"
    summary = pseudo_label(model, Tokenizer(args.data / "lang" / "bpe.model"), manifest, out)
    (args.data / "manifests" / "pseudo.summary.json").write_text(json.dumps(summary) + "\n")
    print(f"{out}: {summary['labelled']} of {summary['utterances']} clips labelled, "
          f"labels' WER {100 * summary['label_wer']:.2f}%")


if __name__ == "__main__":
    main()
