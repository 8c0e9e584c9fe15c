"""Continuing training from an export: the weights read back from the ONNX files are the
trained model's (same outputs), and files that do not fit are refused."""

import json
import shutil

import onnx
import pytest
import torch

from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.models.export import StreamingEncoder, chunk_frames, export_onnx
from edge_asr.models.model import ModelConfig, Transducer
from edge_asr.models.recipe import stage_tokenizer
from edge_asr.models.train import warm_start
from edge_asr.models.warm_start import load_from_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=40, d_model=32, rnn_hidden_size=48, decoder_dim=32,
                      joiner_dim=32, subsampling_channels=8, num_encoder_layers=2)
    model = Transducer(cfg).eval()
    with torch.no_grad():  # buffers and biases away from their defaults, so they are checked
        model.encoder.feat_mean.uniform_(-9, -5)
        model.encoder.feat_istd.uniform_(0.2, 0.5)
        for lstm in model.encoder.lstms:
            lstm.bias_hh_l0.uniform_(-1, 1)
    out = tmp_path_factory.mktemp("export")
    tokens = out / "tokens_src.txt"
    tokens.write_text("".join(f"t{i} {i}\n" for i in range(40)))
    export_onnx(model, tokens, out)
    (out / "model_card.json").write_text(json.dumps(
        {"config": cfg.to_dict(), "training_log": [{"epoch": 0, "dev_wer": 0.5}],
         "sha256": {"encoder.onnx": "x"}}))
    return model, out


def test_read_back_model_computes_what_the_trained_one_did(exported):
    model, out = exported
    back = load_from_onnx(out)
    assert back.cfg == model.cfg
    torch.manual_seed(0)
    feats = torch.randn(2, 60, 80) * 3 - 7
    lens = torch.tensor([60, 45])
    targets = torch.randint(1, 40, (2, 5))
    target_lens = torch.tensor([5, 3])
    with torch.no_grad():
        a, _, _ = model(feats, lens, targets, target_lens)
        b, _, _ = back(feats, lens, targets, target_lens)
        x = torch.randn(1, chunk_frames(model), 80)
        h = torch.zeros(2, 1, 32)
        c = torch.zeros(2, 1, 48)
        ea = StreamingEncoder(model)(x, h, c)[0]
        eb = StreamingEncoder(back)(x, h, c)[0]
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(ea, eb, atol=1e-5)
    # The read-back model trains: every exported weight is a parameter with a gradient.
    back.train()
    logits, _, _ = back(feats, lens, targets, target_lens)
    logits.sum().backward()
    assert back.encoder.lstms[0].weight_hh_l0.grad is not None


def test_warm_start_keeps_the_cards_history(exported, tmp_path):
    _, out = exported
    warm_start(out, tmp_path)
    lineage = json.loads((tmp_path / "lineage.json").read_text())
    assert lineage["init_from"] == str(out)
    assert lineage["training_log"] == [{"epoch": 0, "dev_wer": 0.5}]


def test_ctc_head_is_the_same_whatever_seed_the_run_uses(exported):
    # The encoder has learnt to suit the head every continuation drew; a run with another
    # --seed must start from that head too, and the caller's random stream stays its own.
    _, out = exported
    heads = []
    for seed in (0, 4):
        torch.manual_seed(seed)
        heads.append(load_from_onnx(out).ctc_head.weight.clone())
        after = torch.rand(1)
        torch.manual_seed(seed)
        assert torch.equal(after, torch.rand(1))
    assert torch.equal(heads[0], heads[1])


def test_swapped_weights_are_detected(exported, tmp_path):
    """The folded matrices are taken in the order the export lists them; if a file lists them
    otherwise, the numeric check against onnxruntime refuses it rather than train from it."""
    _, out = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    m = onnx.load(str(bad / "encoder.onnx"))
    inits = m.graph.initializer
    folded = [i for i in inits if i.name.startswith("onnx::") and list(i.dims) == [32, 4 * 48]]
    assert len(folded) >= 2  # W_ih^T and W_hh^T of the first layer: both (32, 192)
    # Same graph, same computation, but the two matrices listed in the other order.
    order = list(inits)
    i, j = order.index(folded[0]), order.index(folded[1])
    order[i], order[j] = order[j], order[i]
    copies = [onnx.TensorProto.FromString(t.SerializeToString()) for t in order]
    del inits[:]
    inits.extend(copies)
    onnx.save(m, str(bad / "encoder.onnx"))
    with pytest.raises(ValueError, match="do not reproduce"):
        load_from_onnx(bad)


def test_recipe_refuses_a_folder_without_fp32_onnx_before_any_stage(tmp_path, recipe_refusal):
    packed = tmp_path / "rnnt-v1-int8"
    packed.mkdir()
    (packed / "encoder.onnx.pack").write_bytes(b"x")
    assert "no encoder.onnx" in recipe_refusal("--init-from", str(packed))


def _with_tokenizer(out, tmp_path, bpe_bytes: bytes):
    """A copy of the export whose card names a bpe.model of these bytes."""
    model_dir = tmp_path / "model"
    shutil.copytree(out, model_dir)
    (model_dir / "bpe.model").write_bytes(bpe_bytes)
    card = json.loads((model_dir / "model_card.json").read_text())
    card["sha256"]["bpe.model"] = sha256_of(model_dir / "bpe.model")
    (model_dir / "model_card.json").write_text(json.dumps(card))
    return model_dir


def test_warm_start_refuses_a_data_folder_with_another_tokenizer(exported, tmp_path):
    # Same number of pieces, other ids: nothing else would fail, and the run would teach
    # the model a new alphabet.
    _, out = exported
    model_dir = _with_tokenizer(out, tmp_path, b"the model's own pieces")
    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "bpe.model").write_bytes(b"pieces trained again on a new corpus")
    with pytest.raises(ValueError, match="another tokenizer"):
        warm_start(model_dir, tmp_path, lang / "bpe.model")
    assert not (tmp_path / "lineage.json").exists()
    (lang / "bpe.model").write_bytes(b"the model's own pieces")
    assert warm_start(model_dir, tmp_path, lang / "bpe.model").cfg.vocab_size == 40


def test_the_recipe_takes_the_tokenizer_of_the_model_it_continues(exported, tmp_path):
    _, out = exported
    model_dir = _with_tokenizer(out, tmp_path, b"the model's own pieces")
    (model_dir / "tokens.txt").write_text("<blk> 0\n")
    stage_tokenizer(tmp_path / "data", vocab_size=40, init_from=model_dir)
    lang = tmp_path / "data" / "lang"
    assert (lang / "bpe.model").read_bytes() == b"the model's own pieces"
    assert (lang / "tokens.txt").read_text() == "<blk> 0\n"
