"""Pruning and quantisation-aware training (models/compress.py): the schedule, the masks,
and a grid that is exactly the one onnxruntime's int8 quantisation uses."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edge_asr.models import compress
from edge_asr.models.model import ModelConfig, Transducer


def small_model() -> Transducer:
    torch.manual_seed(0)
    return Transducer(ModelConfig(vocab_size=40, d_model=32, rnn_hidden_size=48,
                                  decoder_dim=32, joiner_dim=32, subsampling_channels=8))


def test_cubic_schedule_rises_fast_then_slowly():
    s = [compress.cubic_sparsity(t, 100, 1100, 0.7) for t in (0, 100, 350, 600, 850, 1100, 5000)]
    assert s[0] == s[1] == 0.0 and s[-2] == s[-1] == 0.7
    assert s[2] - s[1] > s[3] - s[2] > s[4] - s[3] > 0  # cubic: the steps shrink
    assert s[3] == pytest.approx(0.7 * (1 - 0.5 ** 3))


def test_pruner_reaches_the_target_in_every_weight_and_never_revives_one():
    model = small_model()
    pruner = compress.MagnitudePruner(model, 0.7, start=0, end=100, every=10)
    weights = compress.compressible_weights(model)
    assert "encoder.lstms.0.weight_hh_l0" in weights and "joiner.out.weight" in weights
    assert not any("embedding" in n or "ctc_head" in n for n in weights)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    previous = {n: torch.ones_like(p, dtype=torch.bool) for n, p in weights.items()}
    for step in range(1, 121):
        opt.zero_grad()
        sum((p ** 2).sum() * -1 for p in weights.values()).backward()  # pushes weights out
        opt.step()
        pruner.step(step)
        for n, mask in pruner.masks.items():
            assert not (mask & ~previous[n]).any()  # a pruned weight stays pruned
            previous[n] = mask.clone()
    for n, p in weights.items():
        assert (p == 0).float().mean().item() == pytest.approx(0.7, abs=0.01), n
        # +0.0 everywhere: a -0.0 is not zero to the packed format's bitmask (its bytes differ)
        assert not torch.signbit(p[p == 0]).any(), n
    assert pruner.measured() == pytest.approx(0.7, abs=0.01)


def test_pruner_keeps_the_largest_weights():
    layer = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(100, dtype=torch.float32).view(10, 10) - 49.5)
    pruner = compress.MagnitudePruner(nn.Sequential(layer), 0.5, start=0, end=1, every=1)
    pruner.step(1)
    kept = layer.weight[layer.weight != 0].abs()
    assert kept.numel() == 50 and kept.min() >= 25


def test_fake_quantization_gives_onnxruntimes_int8_codes(tmp_path):
    """Export a linear layer, quantise it with onnxruntime (as models/quantize.py does) and
    compare its int8 weights and scales with ours."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(1)
    layer = nn.Linear(64, 48)
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.1, 3.0, 48)[:, None])  # scales differ per channel
    torch.onnx.export(layer, (torch.zeros(1, 64),), str(tmp_path / "f.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y"])
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", weight_type=QuantType.QInt8,
                     per_channel=True)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    codes = next(v for k, v in inits.items() if k.endswith("_quantized"))  # (64, 48) = W^T
    scale = next(v for k, v in inits.items() if k.endswith("_scale") and v.size == 48)
    ours_scale = compress.channel_scale(layer.weight, 8).flatten().detach().numpy()
    np.testing.assert_allclose(scale, ours_scale, rtol=1e-6)
    ours_codes = torch.round(compress.fake_quantize(layer.weight, 8)
                             / compress.channel_scale(layer.weight, 8)).detach().numpy()
    np.testing.assert_array_equal(codes.T.astype(np.float32), ours_codes)


def test_four_bit_grid_is_symmetric_with_fifteen_levels():
    w = torch.randn(8, 100)
    codes = torch.round(compress.fake_quantize(w, 4) / compress.channel_scale(w, 4))
    assert codes.min() == -7 or codes.max() == 7
    assert codes.abs().max() <= 7 and len(torch.unique(codes)) <= 15


def test_qat_context_runs_on_quantized_weights_and_restores_float_ones():
    model = small_model()
    w = model.joiner.out.weight
    before = w.detach().clone()
    with compress.quantized_weights(model, 4):
        assert torch.equal(w.detach(), compress.fake_quantize(before, 4))
        (model.joiner(torch.randn(3, 32), torch.randn(3, 32)) ** 2).sum().backward()
    assert torch.equal(w.detach(), before)
    assert w.grad is not None and w.grad.abs().sum() > 0  # gradient for the float weights


def test_grid_penalty_pulls_weights_onto_the_grid():
    model = small_model()
    start = float(compress.grid_penalty(model, 8))
    assert 0.05 < start < 0.12  # about 1/12 for weights spread between grid points
    opt = torch.optim.Adam(compress.compressible_weights(model).values(), lr=1e-4)
    for _ in range(200):
        opt.zero_grad()
        compress.grid_penalty(model, 8).backward()
        opt.step()
    assert float(compress.grid_penalty(model, 8)) < start / 3
    compress.snap_to_grid(model, 8)
    assert float(compress.grid_penalty(model, 8)) < 1e-8


def test_pruner_continuing_a_pruned_model_keeps_its_zeros_and_tightens_from_there():
    """`--init-from` a 30% sparse export: the zeros stay pruned from the first step (they
    would regrow under the optimiser before the schedule caught up), and a 50% target
    prunes only the weights beyond them."""
    layer = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(100, dtype=torch.float32).view(10, 10) - 49.5)
        layer.weight[layer.weight.abs() < 15] = 0.0  # 30 zeros
    zeros = layer.weight == 0
    pruner = compress.MagnitudePruner(nn.Sequential(layer), 0.5, start=0, end=100, every=1)
    assert pruner.sparsity == pytest.approx(0.3)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    opt.zero_grad()
    (layer.weight.sum() * -1).backward()  # every weight moves, the zeros too
    opt.step()
    pruner.step(1)  # the schedule asks for ~1.5%: below what is pruned already
    assert (layer.weight[zeros] == 0).all()
    assert (layer.weight == 0).sum() == 30
    pruner.step(100)
    assert (layer.weight == 0).sum() == 50 and (layer.weight[zeros] == 0).all()


def test_the_average_that_ships_after_qat_is_on_the_grid_and_keeps_the_zeros():
    from edge_asr.models.final_weights import WeightAverage, choose_final

    model = small_model()
    weights = compress.compressible_weights(model)
    name, w = next(iter(weights.items()))
    mask = (torch.rand_like(w) > 0.5).float()
    average = WeightAverage()
    with torch.no_grad():
        for _ in range(3):  # three steps' weights, each pruned as the pruner leaves them
            for p in weights.values():
                p.add_(0.01 * torch.randn_like(p))
            w.mul_(mask)
            average.update(model)
    names = {id(p): n for n, p in model.named_parameters()}
    chosen, wer, used = choose_final(model, 0.5, average, {name: mask}, 4, lambda m: 0.4)
    assert used and wer == 0.4
    for p in weights.values():
        value = chosen[names[id(p)]]
        assert torch.equal(value, compress.fake_quantize(value, 4))  # on the 4-bit grid
    assert torch.all(chosen[name][mask == 0] == 0)
    # Worse on dev: the last weights ship, on their grid, and the model holds them again.
    last, wer, used = choose_final(model, 0.3, average, {name: mask}, 4, lambda m: 0.4)
    assert not used and wer == 0.3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in last.items())


@pytest.mark.parametrize("bits", [4, 8])
def test_block_grid_qat_trains_at_the_block_grid_and_ships_on_it(bits):
    """--qat-block: the forward pass sees every matrix (the embedding too) on the block grid,
    the float weights come back after it, and the weights that ship lie on that grid."""
    from edge_asr.models.final_weights import WeightAverage, choose_final

    model = small_model()
    blocks = compress.block_weights(model)
    assert any("embedding" in n for n in blocks) and all(p.dim() == 2 for p in blocks.values())
    before = {n: p.detach().clone() for n, p in blocks.items()}
    with compress.quantized_weights(model, bits, 16):
        for n, p in blocks.items():
            assert torch.equal(p, compress.block_grid(before[n], 16, bits)[0]), n
            assert not torch.equal(p, before[n]), n
    assert all(torch.equal(p, before[n]) for n, p in blocks.items())
    assert compress.grid_penalty(model, bits, 16) > 0.01
    chosen, _, _ = choose_final(model, 0.5, WeightAverage(), {}, bits, lambda m: 0.4, 16)
    for n in blocks:
        assert torch.equal(chosen[n], compress.block_grid(chosen[n], 16, bits)[0]), n
    assert compress.grid_penalty(model, bits, 16) < 1e-10
    with pytest.raises(ValueError, match="4- or 8-bit"):
        compress.snap_to_grid(model, 2, 16)
