"""Averaging the final weights of consecutive runs (models/average.py)."""

import pytest
import torch

from edge_asr.models.average import choose_average, load_final, mean_weights


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


def test_pruned_or_quantised_runs_are_refused(tmp_path):
    torch.save({"model": {}, "config": {"sparsity": 0.3, "qat_bits": 4}}, tmp_path / "final.pt")
    with pytest.raises(ValueError, match="averaging would undo it"):
        load_final(tmp_path)
