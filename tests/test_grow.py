"""Continuing a trained model: a grown encoder starts as the model it grew from and its new
layers learn (test_train.py resumes a grown run); a fresh CTC head can learn alone."""

import pytest
import torch

from edge_asr.models.grow import grow_encoder
from edge_asr.models.model import ModelConfig, Transducer
from edge_asr.models.rnnt_loss import rnnt_loss

SMALL = ModelConfig(vocab_size=40, d_model=16, rnn_hidden_size=24, decoder_dim=16,
                    joiner_dim=16, subsampling_channels=4, num_encoder_layers=2)


def batch():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 60, 80, generator=g) * 3 - 7
    return (feats, torch.tensor([60, 44]), torch.randint(1, 40, (2, 4), generator=g),
            torch.tensor([4, 3]))


def test_a_grown_model_computes_what_it_grew_from():
    torch.manual_seed(0)
    model = Transducer(SMALL).eval()
    grown = grow_encoder(model, 2).eval()
    assert grown.cfg.num_encoder_layers == 4 and len(grown.encoder.lstms) == 4
    with torch.no_grad():
        for a, b in zip(model(*batch()), grown(*batch()), strict=True):
            assert torch.equal(a, b)
    assert model.cfg.num_encoder_layers == 2  # the source is left as it was


def test_the_new_layers_learn_from_the_first_step():
    torch.manual_seed(0)
    grown = grow_encoder(Transducer(SMALL), 1).train()
    new = grown.encoder.lstms[2]
    assert not new.weight_hr_l0.any()
    opt = torch.optim.SGD(grown.parameters(), lr=0.1)
    feats, lens, y, ylens = batch()
    logits, enc_lens, _ = grown(feats, lens, y, ylens)
    rnnt_loss(logits, y, enc_lens, ylens, blank=0).backward()
    assert new.weight_hr_l0.grad.abs().sum() > 0
    opt.step()
    assert new.weight_hr_l0.any()


def test_growing_by_nothing_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        grow_encoder(Transducer(SMALL), 0)


def test_a_fresh_ctc_head_can_learn_without_moving_the_encoder():
    from edge_asr.models.train import ctc_loss

    torch.manual_seed(0)
    model = Transducer(SMALL).train()
    feats, lens, y, ylens = batch()
    for head_only in (True, False):
        model.zero_grad()
        _, enc_lens, ctc = model(feats, lens, y, ylens, ctc_head_only=head_only)
        ctc_loss(ctc, y, enc_lens, ylens, 0).backward()
        encoder_grad = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters()
                           if p.grad is not None)
        assert model.ctc_head.weight.grad.abs().sum() > 0
        assert (encoder_grad == 0) == head_only
