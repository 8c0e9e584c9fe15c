"""The training loop. It is resumable: a run stopped mid-epoch and started again with the
same command ends with the weights an uninterrupted run ends with, step for step (same
data, same augmentation, same dropout and SpecAugment masks, the running average and the
pruner's masks carried over), and it does not train the finished batches again. On a GPU
its data comes from enough loader processes."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import edge_asr.models.train as train_mod
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.models.augment import AugmentConfig
from edge_asr.models.export import export_onnx
from edge_asr.models.model import ModelConfig, Transducer
from edge_asr.models.train import train
from edge_asr.models.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "tests" / "data"

# The same kind of chain as training's (speed, room, noise), with pools small enough to
# build in a test and never refreshed, so that what a clip hears depends on its own seed
# only. (A refresh, or babble from the clips heard so far, depends on what this process
# loaded before: a resumed run would hear other noise. It changes the rendering, not the
# resumption.)
STILL_POOLS = AugmentConfig(rir_pool_size=2, noise_beds_per_kind=1, noise_bed_seconds=2.0,
                            noise_kinds=("white", "pink"), pool_refresh_p=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A training folder as the recipe lays it out: 6 clips to train on, 2 for dev."""
    root = tmp_path_factory.mktemp("data")
    (root / "lang").mkdir()
    shutil.copy(ROOT / "models" / "rnnt-v1" / "bpe.model", root / "lang" / "bpe.model")
    (root / "manifests").mkdir()
    rows = [json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row["audio_filepath"] = str(CLIPS / row["audio_filepath"])
    for name, part in (("train", rows[:6]), ("dev", rows[6:8])):
        (root / "manifests" / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part))
    return root


def config() -> TrainConfig:
    # 2 CTC steps, then 2 epochs of 3 batches; weights averaged over the last 4 steps and
    # pruned to half on the way, so that both are carried through the interruption.
    model = ModelConfig(d_model=16, rnn_hidden_size=24, num_encoder_layers=2,
                        decoder_dim=16, joiner_dim=16, subsampling_channels=4)
    return TrainConfig(epochs=2, ctc_only_steps=2, warmup_steps=2, warmup_augment_epochs=0,
                       batch_seconds=16.0, num_workers=0, threads=1, checkpoint_minutes=0.0,
                       average_fraction=0.5, sparsity=0.5, dev_set="dev", model=model)


class Interrupted(Exception):
    pass


def run(data: Path, exp: Path, stop_at_step: int | None = None,
        cfg: TrainConfig | None = None) -> dict:
    """train() as `make train` runs it; with stop_at_step, stopped as that step begins."""
    learning_rate = train_mod.lr_at

    def lr_at(step, total, cfg):
        if step == stop_at_step:
            raise Interrupted
        return learning_rate(step, total, cfg)

    train_mod.lr_at = lr_at
    try:
        final = train(data, exp, cfg or config(), torch.full((80,), -6.0),
                      torch.full((80,), 0.3))
    finally:
        train_mod.lr_at = learning_rate
    return torch.load(final, weights_only=False)


@pytest.fixture(autouse=True)
def still_pools(monkeypatch):
    monkeypatch.setattr(train_mod, "AugmentConfig", lambda: replace(STILL_POOLS))


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(data, tmp_path, capsys):
    whole = run(data, tmp_path / "whole")
    with pytest.raises(Interrupted):  # in the second epoch, with the average running
        run(data, tmp_path / "stopped", stop_at_step=6)
    saved = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
    assert saved["state"]["step"] == 6 and saved["average"][0] == 2
    capsys.readouterr()
    resumed = run(data, tmp_path / "stopped")
    assert "resuming at epoch 1 batch 1 step 6" in capsys.readouterr().out
    assert resumed["averaged_steps"] == whole["averaged_steps"]
    for name, weight in whole["model"].items():
        assert torch.equal(resumed["model"][name], weight), name
    # Each epoch is logged once, the interrupted one not twice.
    logged = [json.loads(line)["epoch"] for line in
              (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()]
    assert logged == [0, 1]


def test_a_run_stopped_in_the_ctc_warm_up_resumes_there(data, tmp_path, capsys):
    with pytest.raises(Interrupted):
        run(data, tmp_path / "exp", stop_at_step=1)
    capsys.readouterr()
    run(data, tmp_path / "exp")
    out = capsys.readouterr().out
    assert "resuming at epoch 0 batch 0 step 1" in out
    saved = torch.load(tmp_path / "exp" / "checkpoint.pt", weights_only=False)
    assert saved["state"]["step"] == 8  # 2 CTC steps and 2 epochs of 3, none twice


def test_a_grown_run_resumes_as_the_grown_model(data, tmp_path, capsys):
    torch.manual_seed(0)
    source = Transducer(config().model).eval()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"t{i} {i}\n" for i in range(source.cfg.vocab_size)))
    export_onnx(source, tokens, tmp_path / "source")
    (tmp_path / "source" / "model_card.json").write_text(json.dumps(
        {"config": source.cfg.to_dict(),
         "sha256": {"bpe.model": sha256_of(data / "lang" / "bpe.model")}}))
    grown = replace(config(), init_from=str(tmp_path / "source"), grow_layers=1,
                    ctc_only_steps=0, sparsity=0.0)
    whole = run(data, tmp_path / "whole", cfg=grown)
    assert whole["config"]["model"]["num_encoder_layers"] == 3
    with pytest.raises(Interrupted):
        run(data, tmp_path / "stopped", stop_at_step=4, cfg=grown)
    capsys.readouterr()
    resumed = run(data, tmp_path / "stopped", cfg=grown)
    assert "resuming at epoch 1 batch 1 step 4" in capsys.readouterr().out
    for name, weight in whole["model"].items():
        assert torch.equal(resumed["model"][name], weight), name


def test_the_ctc_head_learns_alone_for_its_first_steps(data, tmp_path, monkeypatch):
    flags = []
    forward = Transducer.forward

    def recording(self, *args, ctc_head_only=False):
        flags.append(ctc_head_only)
        return forward(self, *args, ctc_head_only=ctc_head_only)

    monkeypatch.setattr(Transducer, "forward", recording)
    # Steps 0-1 are CTC only (no transducer forward); steps 2-3 still train the head alone.
    run(data, tmp_path / "exp", cfg=replace(config(), ctc_head_steps=4))
    assert flags == [True, True, False, False, False, False]


def test_a_gpu_gets_loader_processes_enough_to_feed_it():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train_mod.data_workers(1, cpu, 16) == 1  # the CPU's cores train
    assert train_mod.data_workers(1, gpu, 16) == 8
    assert train_mod.data_workers(1, gpu, 2) == 1
    assert train_mod.data_workers(12, gpu, 16) == 12  # a configured number is kept
