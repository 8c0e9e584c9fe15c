"""Teacher-student plumbing: the teacher's size, its labels for untranscribed speech, and the
student's training set that takes them in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import pytest
import torch

from edge_asr.daemon.frontend.features import compute_fbank
from edge_asr.daemon.manifest import read_manifest
from edge_asr.models.dataset import SpeechDataset, load_audio
from edge_asr.models.distill import MODEL_SIZES, PSEUDO_TAG, TEACHER, pseudo_label
from edge_asr.models.greedy_decode import greedy_decode
from edge_asr.models.model import Transducer, count_parameters
from edge_asr.models.tokenizer import Tokenizer

CLIPS = Path(__file__).parent / "data"


def test_teacher_is_at_least_four_times_the_student():
    student = count_parameters(Transducer(MODEL_SIZES["student"]))
    assert count_parameters(Transducer(TEACHER)) >= 4 * student


def test_pseudo_labels_are_the_models_own_transcripts(shipped_model_dir, tmp_path):
    """The shipped model stands in for a teacher: each label is its greedy transcript of the
    clip alone, clips are found from the new manifest's folder, and the labels' WER is
    measured against the text the clips were rendered from."""
    from edge_asr.models.warm_start import load_from_onnx

    teacher = load_from_onnx(shipped_model_dir)
    tok = Tokenizer(shipped_model_dir / "bpe.model")
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    summary = pseudo_label(teacher, tok, CLIPS / "manifest.jsonl", out_dir / "pseudo.jsonl",
                           batch_seconds=15.0)
    source = read_manifest(CLIPS / "manifest.jsonl")
    labelled = read_manifest(out_dir / "pseudo.jsonl")
    alone = []
    for entry in source:
        feats = torch.from_numpy(compute_fbank(load_audio(entry.audio_filepath)))[None]
        alone.append(tok.decode(greedy_decode(teacher, feats, torch.tensor([feats.shape[1]]))[0]))
    assert [e.text for e in labelled] == [t for t in alone if t]
    assert all(PSEUDO_TAG in e.tags and Path(e.audio_filepath).is_file() for e in labelled)
    assert summary["utterances"] == len(source) and summary["labelled"] == len(labelled)
    assert summary["label_wer"] == pytest.approx(
        jiwer.wer([e.text for e in source], [t or "<empty>" for t in alone]), abs=1e-4)
    assert summary["label_wer"] < 0.5  # a real model's labels, not noise


def test_training_set_takes_the_extra_manifests(tmp_path):
    shutil.copytree(CLIPS, tmp_path / "clips")
    rows = [json.loads(line) for line in (tmp_path / "clips" / "manifest.jsonl").open()]
    extra = tmp_path / "clips" / "pseudo.jsonl"
    extra.write_text("".join(json.dumps({**r, "text": "call mom"}) + "\n" for r in rows[:2]))
    bpe = Path(__file__).parents[1] / "models" / "rnnt-v1" / "bpe.model"
    if not bpe.is_file():
        pytest.skip("no shipped tokenizer")
    both = SpeechDataset([tmp_path / "clips" / "manifest.jsonl", extra], bpe, augment=False)
    assert len(both) == len(rows) + 2
    assert Tokenizer(bpe).decode(both[len(rows)][1].tolist()) == "call mom"


def test_recipe_refuses_a_missing_extra_manifest_before_any_stage(recipe_refusal):
    assert "pseudo.jsonl" in recipe_refusal("--extra-train", "pseudo")


def test_recipe_refuses_an_unknown_evaluation_set_before_any_stage(recipe_refusal):
    """`--eval-sets none` once named a set "none", found missing only after training."""
    assert "unknown set(s) none" in recipe_refusal("--eval-sets", "none")


def test_recipe_refuses_a_missing_dev_set_before_any_stage(recipe_refusal):
    assert "--more-voices" in recipe_refusal("--dev-set", "dev_voices")


def test_recipe_takes_the_sets_more_voices_will_render(recipe_refusal, tmp_path):
    """dev_voices and train_voices2 do not exist before the audio stage renders them; the
    refusal that comes is the later one, for the --init-from folder."""
    printed = recipe_refusal("--more-voices", "100", "--dev-set", "dev_voices",
                             "--extra-train", "train_voices2",
                             "--init-from", str(tmp_path / "nothing"))
    assert "no encoder.onnx" in printed and "dev_voices" not in printed
