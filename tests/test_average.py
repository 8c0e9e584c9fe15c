"""Averaging the final weights of consecutive runs (models/average.py)."""

import pytest
import torch

from edge_asr.models import compress
from edge_asr.models.average import choose_average, load_finals, mean_weights, recompress
from edge_asr.models.model import ModelConfig, Transducer


def test_mean_weights_averages_floats_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = mean_weights([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["n"].item() == 5
    with pytest.raises(ValueError, match="different models"):
        mean_weights([a, {"w": torch.zeros(3), "n": torch.tensor(1)}])


def test_the_best_count_on_dev_is_kept_and_ties_keep_fewer():
    runs = [{"model": {"w": torch.tensor([v])}} for v in (1.0, 3.0, -4.0)]
    # dev "WER" of a weight: its distance from 2 (the newest two average to exactly 2).
    score = lambda weights: abs(weights["w"].item() - 2.0)  # noqa: E731
    count, best, scores, weights = choose_average(runs, score)
    assert (count, best) == (2, 0.0) and scores == [1.0, 0.0, 2.0]
    assert weights["w"].item() == 2.0
    assert choose_average(runs[:1], score)[0] == 1
    flat = lambda weights: 0.5  # noqa: E731
    assert choose_average(runs, flat)[0] == 1


def test_runs_compressed_differently_are_refused(tmp_path):
    for name, cfg in (("a", {"sparsity": 0.3, "qat_bits": 4}), ("b", {"sparsity": 0.3}),
                      ("c", {"qat_bits": 4, "sparsity": 0.3})):
        (tmp_path / name).mkdir()
        torch.save({"model": {}, "config": cfg}, tmp_path / name / "final.pt")
    with pytest.raises(ValueError, match="compressed differently"):
        load_finals([tmp_path / "a", tmp_path / "b"])
    assert len(load_finals([tmp_path / "a", tmp_path / "c"])) == 2


def _tiny_config(**train) -> dict:
    model = ModelConfig(vocab_size=16, subsampling_channels=4, d_model=16, rnn_hidden_size=24,
                        num_encoder_layers=1, decoder_dim=16, joiner_dim=16)
    return {"model": model.to_dict(), **train}


def test_an_average_of_pruned_4bit_runs_keeps_the_newest_zeros_and_the_grid():
    torch.manual_seed(0)
    config = _tiny_config(sparsity=0.3, qat_bits=4)
    runs = []
    for _ in range(2):
        model = Transducer(ModelConfig(**config["model"]))
        with torch.no_grad():
            for p in compress.compressible_weights(model).values():
                p.mul_(torch.rand_like(p) > 0.3)
            compress.snap_to_grid(model, 4)
        runs.append(model.state_dict())
    out = recompress(mean_weights(runs), runs[0], config)
    model = Transducer(ModelConfig(**config["model"]))
    model.load_state_dict(out)
    for name, p in compress.compressible_weights(model).items():
        assert torch.all(p[runs[0][name] == 0] == 0), name  # the newest run's zeros stay
        assert torch.equal(p, compress.fake_quantize(p, 4)), name  # on the 4-bit grid
        # and the mean of the two runs was not thrown away: most values differ from both
        assert not torch.equal(p, runs[0][name]) or not torch.equal(p, runs[1][name])


def test_dense_full_precision_weights_pass_through_recompress():
    config = _tiny_config()
    w = Transducer(ModelConfig(**config["model"])).state_dict()
    assert recompress(w, w, config) is w


def test_an_exported_model_folder_stands_for_its_run(tmp_path):
    """The committed fp32 export averages like the run's final.pt (whose cache may be gone):
    averaging a run with its own export computes what the run did, folded biases and all."""
    import json

    from edge_asr.models.export import export_onnx
    from edge_asr.models.model import model_from_saved

    torch.manual_seed(5)
    config = _tiny_config()
    model = Transducer(ModelConfig(**config["model"])).eval()
    with torch.no_grad():  # the export folds bias_hh into bias_ih: make it matter
        for lstm in model.encoder.lstms:
            lstm.bias_hh_l0.uniform_(-1, 1)
    run, export = tmp_path / "run", tmp_path / "export"
    run.mkdir()
    torch.save({"model": model.state_dict(), "config": config}, run / "final.pt")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"t{i} {i}\n" for i in range(16)))
    export_onnx(model, tokens, export)
    (export / "model_card.json").write_text(json.dumps({"config": config["model"]}))

    saved = load_finals([run, export])
    mean = model_from_saved({"config": config, "model": mean_weights([s["model"] for s in saved])})
    feats, lens = torch.randn(1, 40, 80) * 3 - 7, torch.tensor([40])
    targets, target_lens = torch.randint(1, 16, (1, 4)), torch.tensor([4])
    with torch.no_grad():
        want, _, _ = model(feats, lens, targets, target_lens)
        got, _, _ = mean(feats, lens, targets, target_lens)
    assert torch.allclose(want, got, atol=1e-4)

    torch.save({"model": {}, "config": _tiny_config(qat_bits=4)}, run / "final.pt")
    with pytest.raises(ValueError, match="compressed differently"):  # the export is dense fp32
        load_finals([run, export])
    # An export whose card says its run trained on the 4-bit grid averages with a 4-bit run.
    (export / "model_card.json").write_text(json.dumps(
        {"config": config["model"], "trained_qat_bits": 4, "trained_sparsity": 0.0}))
    assert [s["config"]["qat_bits"] for s in load_finals([run, export])] == [4, 4]
    with pytest.raises(FileNotFoundError, match="neither a training folder"):
        load_finals([tmp_path / "nothing"])


def test_a_device_lm_without_an_export_is_refused(tmp_path, monkeypatch, capsys):
    """--lm-from names the LM an export keeps: without --out nothing would carry it."""
    from edge_asr.models import average

    monkeypatch.setattr("sys.argv", ["average", "--data", str(tmp_path), "--exp", str(tmp_path),
                                     "--earlier", str(tmp_path), "--out-exp", str(tmp_path / "o"),
                                     "--lm-from", str(tmp_path)])
    with pytest.raises(SystemExit):
        average.main()
    assert "give --out too" in capsys.readouterr().err
