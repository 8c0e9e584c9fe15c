"""Lattice rescoring with the interpolated cloud LM, and tuning its weights."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import random
import re
from pathlib import Path as FsPath

import pytest

from edge_asr.daemon.recognition.ngram_arpa import save_arpa
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.daemon.uplink.lattice import Path, WordArc, build_lattice, parse, serialize
from edge_asr.models.ngram_train import NgramOptions, train_ngram
from edge_asr.simulator.cloud.dev_set import (
    DevSetError,
    DevUtterance,
    encode_dev_line,
    load_dev_set,
    word_errors,
)
from edge_asr.simulator.cloud.lm import (
    CloudLM,
    CloudLmError,
    RescoreWeights,
    interpolate,
)
from edge_asr.simulator.cloud.name_classes import Contacts
from edge_asr.simulator.cloud.rescore import RescoreOptions, rescore
from edge_asr.simulator.cloud.weight_tuning import (
    CONTACT_BONUS_GRID,
    DEVICE_BONUS_GRID,
    DEVICE_LM_WEIGHT_GRID,
    OOV_PENALTY_GRID,
    TOKEN_BONUS_GRID,
    main,
    tune,
)

TRAIN = [s.split() for s in [
    "turn on the kitchen lights", "turn off the kitchen lights", "turn off the fan",
    "turn on the bedroom lights", "set a timer for ten minutes", "set a timer for five minutes",
    "play some jazz in the kitchen", "play some rock in the bedroom", "what time is it",
    "call mom on her mobile", "call dad at work", "lock the front door", "next song",
]] * 3
# (reference, what the device's acoustics prefer): only the LM can tell them apart.
CONFUSIONS = [
    ("turn off the kitchen lights", "turn of the kitchen lights"),
    ("set a timer for ten minutes", "set a time for ten minutes"),
    ("play some jazz in the kitchen", "play some jazz in the kitten"),
    ("call mom on her mobile", "call mom on her noble"),
    ("what time is it", "what time is at"),
]


def make_path(text: str, acoustic: float, bias: float = 0.0, device_lm: float = 0.0) -> Path:
    words = text.split()
    share = acoustic / max(len(words), 1)
    return Path([WordArc(w, 0.3 * i, 0.3 * i + 0.25, share, bias / len(words),
                         device_lm / len(words)) for i, w in enumerate(words)])


def make_lattice(texts_and_scores: list[tuple[str, float]], utterance_id: str = "u1",
                 revision: int = 1):
    return build_lattice([make_path(t, s) for t, s in texts_and_scores], utterance_id,
                         revision, speculative=revision == 1)


@pytest.fixture(scope="module")
def lm() -> CloudLM:
    return CloudLM(train_ngram(TRAIN, NgramOptions(order=3)), None,
                   RescoreWeights(lm_weight=1.0, length_bonus=0.0, ngram_lambda=1.0), "test")


def test_lm_fixes_the_acoustically_best_path(lm):
    reference, confusion = CONFUSIONS[0]
    lattice = make_lattice([(confusion, -5.0), (reference, -6.0)])
    assert rescore(lattice, lm, weights=RescoreWeights(lm_weight=0.0))[0].text == confusion
    assert rescore(lattice, lm)[0].text == reference


def test_total_is_acoustic_plus_bias_plus_weighted_lm_plus_length_bonus(lm):
    lattice = build_lattice([make_path("turn on the kitchen lights", -4.0, bias=1.5),
                             make_path("turn on the kitchen light", -3.0)], "u", 1, True)
    weights = RescoreWeights(lm_weight=0.7, length_bonus=0.4, ngram_lambda=1.0)
    for p in rescore(lattice, lm, weights=weights):
        expected_lm = lm.ngram.sentence_logprob(list(p.words))
        assert p.lm == pytest.approx(expected_lm)
        assert p.total == pytest.approx(p.acoustic + p.bias + 0.7 * expected_lm
                                        + 0.4 * len(p.words))
    best = rescore(lattice, lm, weights=weights)[0]
    assert best.bias == pytest.approx(1.5) and best.acoustic == pytest.approx(-4.0)


def test_the_device_lms_score_counts_with_its_weight(lm):
    # The audio prefers "next son"; the device's own LM preferred "next song" (it ranked
    # its n-best by acoustic + bias + lm) and the lattice says so (Arc.lm).
    lattice = build_lattice([make_path("next son", -2.0, device_lm=-6.0),
                             make_path("next song", -3.0, device_lm=-1.0)], "u", 1, True)
    acoustic_only = RescoreWeights(lm_weight=0.0, device_lm_weight=0.0)
    assert rescore(lattice, lm, weights=acoustic_only)[0].text == "next son"
    with_device = RescoreWeights(lm_weight=0.0, device_lm_weight=0.5)
    best = rescore(lattice, lm, weights=with_device)[0]
    assert best.text == "next song"
    assert best.device_lm == pytest.approx(-1.0)
    assert best.total == pytest.approx(-3.0 + 0.5 * -1.0)


def test_a_token_bonus_keeps_a_name_of_many_pieces(lm):
    # The device chose "call pilar" by score per piece (4 pieces of -1.6); summed, the one
    # piece of "pell" looks better. The lattice says how many pieces each word took.
    pilar = Path([WordArc("call", 0.0, 0.3, -0.5, tokens=1),
                  WordArc("pilar", 0.3, 0.9, -6.4, tokens=4)])
    pell = Path([WordArc("call", 0.0, 0.3, -0.5, tokens=1),
                 WordArc("pell", 0.3, 0.9, -3.0, tokens=1)])
    lattice = parse(serialize(build_lattice([pilar, pell], "u", 1, True)))
    plain = RescoreWeights(lm_weight=0.0)
    assert rescore(lattice, lm, weights=plain)[0].text == "call pell"
    per_piece = RescoreWeights(lm_weight=0.0, token_bonus=1.5)
    best = rescore(lattice, lm, weights=per_piece)[0]
    assert best.text == "call pilar"
    assert best.total == pytest.approx(-6.9 + 1.5 * 5)


def test_a_bonus_for_the_devices_own_choice(lm):
    # The device chose "call pilar" (its context rescued the name); by the sums the lattice
    # carries, "call pell" looks better. The lattice marks the device's choice.
    lattice = parse(serialize(build_lattice([make_path("call pilar", -7.0),
                                             make_path("call pell", -4.0)], "u", 1, True)))
    assert rescore(lattice, lm, weights=RescoreWeights(lm_weight=0.0))[0].text == "call pell"
    best = rescore(lattice, lm, weights=RescoreWeights(lm_weight=0.0, device_bonus=4.0))[0]
    assert best.text == "call pilar" and best.total == pytest.approx(-7.0 + 4.0)


def test_a_bonus_for_each_contact_the_path_says(lm):
    # "call giovanni" is the user's contact, read by the device's rescue with a worse
    # acoustic score than the word the beam heard; the bonus counts each contact once.
    contacts = Contacts.of(["Giovanni", "Ksenia Sokolov"])
    lattice = build_lattice([make_path("call giovanni", -9.0),
                             make_path("call javani", -4.0)], "u", 1, True)
    plain = RescoreWeights(lm_weight=0.0)
    assert rescore(lattice, lm, weights=plain, contacts=contacts)[0].text == "call javani"
    named = RescoreWeights(lm_weight=0.0, contact_bonus=8.0)
    best = rescore(lattice, lm, weights=named, contacts=contacts)[0]
    assert best.text == "call giovanni" and best.total == pytest.approx(-9.0 + 8.0)
    # Without the list there is no contact to reward.
    assert rescore(lattice, lm, weights=named)[0].text == "call javani"


def test_a_penalty_for_each_word_the_lm_does_not_know(lm):
    # The device pieced "zong" together; the LM reads it as <unk> and cannot tell it from
    # a rare real word. The penalty charges it; a contact of the user's list is known.
    lattice = build_lattice([make_path("next zong", -3.0), make_path("next song", -4.0)],
                            "u", 1, True)
    assert rescore(lattice, lm, weights=RescoreWeights(lm_weight=0.0))[0].text == "next zong"
    charged = RescoreWeights(lm_weight=0.0, oov_penalty=2.0)
    ranked = rescore(lattice, lm, weights=charged)
    assert [p.text for p in ranked] == ["next song", "next zong"]
    assert ranked[1].total == pytest.approx(-3.0 - 2.0)
    named = build_lattice([make_path("call giovanni", -3.0), make_path("call dad", -4.0)],
                          "u", 1, True)
    assert rescore(named, lm, weights=charged)[0].text == "call dad"
    listed = rescore(named, lm, weights=charged, contacts=Contacts.of(["Giovanni"]))
    assert listed[0].text == "call giovanni" and listed[0].total == pytest.approx(-3.0)


def test_tuning_finds_the_oov_penalty_where_non_words_win(lm):
    dev = [DevUtterance(build_lattice([make_path(wrong, -3.0), make_path(right, -4.0)],
                                      f"u{i}", 1, True), tuple(right.split()))
           for i, (right, wrong) in enumerate([("next song", "next zong"),
                                               ("lock the front door", "lock the frondoor")])]
    grid = {"lm_weights": (0.0,), "length_bonuses": (0.0,), "device_bonuses": (0.0,)}
    assert tune(dev, lm, **grid, oov_penalties=(0.0,)).wer > 0.0
    result = tune(dev, lm, **grid)
    assert result.wer == 0.0 and result.weights.oov_penalty > 0.0


def test_tuning_finds_the_contact_bonus_where_names_are_right(lm):
    names = ["ksenia sokolov", "giovanni", "tendai"]
    dev = [DevUtterance(build_lattice([make_path(f"call {name}", -12.0),
                                       make_path("call kassia", -4.0)], f"u{i}", 1, True),
                        ("call", *name.split()), contacts=Contacts.of(names))
           for i, name in enumerate(names)]
    without = tune(dev, lm, device_bonuses=(0.0,), contact_bonuses=(0.0,))
    assert without.wer > 0.0
    result = tune(dev, lm, device_bonuses=(0.0,))
    assert result.wer == 0.0 and result.weights.contact_bonus > 0.0


def test_tuning_keeps_the_contacts_the_device_heard(lm):
    # The bonus that keeps "giovanni", the one contact said, also keeps it where the device
    # put it in wrongly (twice): fewest word errors alone would drop it everywhere.
    listed = Contacts.of(["Giovanni", "Tendai"])
    lattice = [make_path("call giovanni", -9.0), make_path("call javani", -4.0)]
    dev = [DevUtterance(build_lattice(lattice, f"u{i}", 1, True), tuple(reference.split()),
                        ("call", "giovanni"), listed)
           for i, reference in enumerate(["call giovanni", "call javani", "call javani"])]
    grid = {"lm_weights": (0.0,), "device_bonuses": (0.0,), "oov_penalties": (0.0,)}
    fewest = tune(dev, lm, **grid, keep_recall=False)
    assert fewest.weights.contact_bonus == 0.0
    assert (fewest.device_name_recall, fewest.name_recall) == (1.0, 0.0)
    kept = tune(dev, lm, **grid)
    assert kept.weights.contact_bonus > 0.0 and kept.name_recall == 1.0
    assert kept.wer > fewest.wer
    # Where no contact is said, there is no recall to keep.
    assert tune(dev[1:], lm, **grid).name_recall is None


def test_tuning_trusts_the_device_where_its_choice_is_right(lm):
    names = ["pilar", "ingrid", "tomasz"]
    dev = [DevUtterance(build_lattice([make_path(f"call {name}", -7.0),
                                       make_path("call pell", -4.0)], f"u{i}", 1, True),
                        ("call", name)) for i, name in enumerate(names)]
    assert tune(dev, lm, device_bonuses=(0.0,)).wer == pytest.approx(0.5)
    result = tune(dev, lm)
    assert result.wer == 0.0 and result.weights.device_bonus > 0.0
    # Dev lines from before the mark name the device's words instead.
    unmarked = [DevUtterance(build_lattice([make_path("call pell", -4.0),
                                            make_path(f"call {name}", -7.0)], f"u{i}", 1, True),
                             ("call", name), ("call", name)) for i, name in enumerate(names)]
    assert tune(unmarked, lm).wer == 0.0


def test_tuning_weighs_the_device_lm_when_only_it_knows(lm):
    # Sentences the cloud LM never saw, so only the device LM's score can set them right.
    pairs = [("dim the porch lamp", "dim the porch lamb"), ("open the garage", "open the garbage"),
             ("start the kettle", "start the cattle")]
    dev = [DevUtterance(build_lattice([make_path(wrong, -5.0, device_lm=-8.0),
                                       make_path(right, -6.0, device_lm=-2.0)], f"u{i}", 1, True),
                        tuple(right.split())) for i, (right, wrong) in enumerate(pairs)]
    without = tune(dev, lm, device_lm_weights=(0.0,))
    assert without.wer > 0.2
    result = tune(dev, lm)
    assert result.wer == 0.0 and result.weights.device_lm_weight > 0.0


def test_weights_files_from_before_the_device_lm_ignore_it(tmp_path):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"lm_weight": 0.5, "length_bonus": 3.0, "ngram_lambda": 0.0}))
    assert RescoreWeights.load(path).device_lm_weight == 0.0


def test_paths_with_the_same_words_are_merged_and_nbest_is_capped(lm):
    same_a = make_path("next song", -2.0)
    same_b = Path([WordArc("next", 0.0, 0.4, -0.5), WordArc("song", 0.5, 0.9, -0.6)])
    other = [make_path(t, -3.0 - i) for i, t in enumerate(["next son", "text song", "nest"])]
    lattice = build_lattice([same_a, same_b, *other], "u", 1, True)
    scored = rescore(lattice, lm, RescoreOptions(max_paths=10, nbest=3))
    assert len(scored) == 3
    assert [p.text for p in scored].count("next song") == 1
    assert scored[0].text == "next song" and scored[0].acoustic == pytest.approx(-1.1)


def test_empty_lattice_rescored_as_empty_sentence(lm):
    lattice = build_lattice([], "u", 1, True)
    [only] = rescore(lattice, lm)
    assert only.words == () and only.lm == pytest.approx(lm.ngram.sentence_logprob([]))


def test_interpolation_is_a_mixture_of_probabilities():
    ngram, neural = [math.log(0.2), math.log(0.5)], [math.log(0.4), math.log(0.1)]
    assert interpolate(ngram, neural, 1.0) == pytest.approx(sum(ngram))
    assert interpolate(ngram, neural, 0.0) == pytest.approx(sum(neural))
    assert interpolate(ngram, neural, 0.25) == pytest.approx(
        math.log(0.25 * 0.2 + 0.75 * 0.4) + math.log(0.25 * 0.5 + 0.75 * 0.1))
    assert interpolate(ngram, None, 0.3) == pytest.approx(sum(ngram))


def test_word_errors():
    assert word_errors("a b c".split(), "a b c".split()) == 0
    assert word_errors("a b c".split(), "a x c d".split()) == 2
    assert word_errors([], "a b".split()) == 2


def _dev_set() -> list[DevUtterance]:
    dev = []
    for i, (reference, confusion) in enumerate(CONFUSIONS):
        lattice = make_lattice([(confusion, -5.0), (reference, -6.0)], f"u{i}")
        dev.append(DevUtterance(lattice, tuple(reference.split())))
    # one where the acoustics are right and confidently so
    lattice = make_lattice([("lock the front door", -2.0), ("lock the front floor", -9.0)], "x")
    dev.append(DevUtterance(lattice, tuple("lock the front door".split())))
    return dev


def test_tuning_finds_weights_that_let_the_lm_fix_the_errors(lm):
    result = tune(_dev_set(), lm)
    assert result.device_wer > 0.15
    assert result.wer == 0.0
    assert result.weights.lm_weight > 0.0
    # ties keep the weakest LM that works: weight 0 never wins when it is worse
    no_lm = tune(_dev_set(), lm, lm_weights=(0.0,), length_bonuses=(0.0,),
                 oov_penalties=(0.0,))
    assert no_lm.wer == pytest.approx(result.device_wer)


def test_tuning_searches_the_interpolation_weight_with_a_neural_lm(lm, tmp_path):
    torch = pytest.importorskip("torch")
    from edge_asr.models.neural_lm_train import NeuralOptions, export_onnx, train_lstm_lm
    from edge_asr.simulator.cloud.neural_lm import NeuralLM, write_vocab

    torch.set_num_threads(1)
    model = train_lstm_lm(TRAIN, lm.ngram.vocab, options=NeuralOptions(
        embedding=8, hidden=16, epochs=15, batch_sentences=8, learning_rate=1e-2,
        dropout=0.0), log=lambda _: None)
    export_onnx(model, tmp_path / "neural.onnx")
    write_vocab(lm.ngram.vocab, tmp_path / "vocab.txt")
    both = CloudLM(lm.ngram, NeuralLM(tmp_path / "neural.onnx", tmp_path / "vocab.txt"))
    result = tune(_dev_set(), both, lm_weights=(0.0, 0.5, 1.0), length_bonuses=(0.0,),
                  lambdas=(0.0, 0.5, 1.0))
    assert result.grid_points == (9 * len(DEVICE_LM_WEIGHT_GRID) * len(TOKEN_BONUS_GRID)
                                  * len(DEVICE_BONUS_GRID) * len(CONTACT_BONUS_GRID)
                                  * len(OOV_PENALTY_GRID))
    assert result.wer == 0.0
    scored = rescore(_dev_set()[0].lattice, both, weights=RescoreWeights(1.0, 0.0, 0.5))
    assert scored[0].text == CONFUSIONS[0][0]


def _write_lm_folder(lm: CloudLM, folder) -> None:
    folder.mkdir()
    save_arpa(lm.ngram, folder / "ngram.arpa.gz")


def test_tune_command_reads_jsonl_and_writes_weights_next_to_the_lm(lm, tmp_path, capsys):
    folder = tmp_path / "lm"
    _write_lm_folder(lm, folder)
    dev_path = tmp_path / "dev.jsonl"
    dev_path.write_text("".join(encode_dev_line(serialize(u.lattice), " ".join(u.reference))
                                + "\n" for u in _dev_set()))
    assert len(load_dev_set(dev_path)) == len(_dev_set())
    assert main(["--lm", str(folder), "--dev", str(dev_path), "--write"]) == 0
    assert "rescored WER 0.00%" in capsys.readouterr().out
    stored = RescoreWeights.load(folder / "weights.json")
    assert stored.lm_weight > 0
    assert CloudLM.load(folder).weights == stored


def _two_sets() -> list[DevUtterance]:
    """Two dev sets: on "voices" the LM fixes every error; on "people" (long utterances the
    device gets mostly wrong) the same LM weight adds one error to each, more errors in all
    than it fixes."""
    voices = [DevUtterance(make_lattice([(confusion, -5.0), (reference, -6.0)], f"v{i}"),
                           tuple(reference.split()), dev_set="voices")
              for i, (reference, confusion) in enumerate(CONFUSIONS[:2])]
    said = "turn of the kitchen lights"  # as the speaker said it, and the audio says
    people = [DevUtterance(make_lattice([(f"ya yb yc yd {said}", -5.0),
                                         (f"ya yb yc yd {said.replace('of', 'off')}", -6.0)],
                                        f"p{i}"),
                           ("xa", "xb", "xc", "xd", *said.split()), dev_set="people")
              for i in range(4)]
    return voices + people


def test_tuning_weighs_each_dev_set_alike(lm):
    grid = {"lm_weights": (0.0, 1.0), "length_bonuses": (0.0,), "device_lm_weights": (0.0,),
            "token_bonuses": (0.0,), "device_bonuses": (0.0,), "contact_bonuses": (0.0,)}
    dev = _two_sets()
    result = tune(dev, lm, **grid)
    # Summed errors would keep the device's (18 against 20); per set the LM halves them.
    assert result.weights.lm_weight == 1.0
    assert result.per_set["voices"].wer == 0.0
    assert result.per_set["voices"].device_wer == pytest.approx(2 / 11)
    assert result.per_set["people"].wer == pytest.approx(20 / 36)
    assert result.per_set["people"].device_wer == pytest.approx(16 / 36)
    assert result.wer == pytest.approx(20 / 47) and result.device_wer == pytest.approx(18 / 47)
    # One set: the fewest word errors, as before.
    one = [dataclasses.replace(u, dev_set="all") for u in dev]
    assert tune(one, lm, **grid).weights.lm_weight == 0.0


def test_tune_command_takes_one_file_per_dev_set(lm, tmp_path, capsys):
    folder = tmp_path / "lm"
    _write_lm_folder(lm, folder)
    files = []
    for name in ("voices", "people"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(encode_dev_line(serialize(u.lattice), " ".join(u.reference))
                                + "\n" for u in _two_sets() if u.dev_set == name))
        files.append(str(path))
    assert main(["--lm", str(folder), "--dev", *files]) == 0
    out = capsys.readouterr().out
    assert re.search(r"voices .* device +18\.18% -> +0\.00% \(0\.000x\)", out)
    assert re.search(r"people +36 words +device +44\.44% -> ", out)
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "voices.jsonl"
    twin.write_text((tmp_path / "voices.jsonl").read_text())
    assert main(["--lm", str(folder), "--dev", files[0], str(twin)]) == 2
    assert "two --dev files of one name" in capsys.readouterr().err


@pytest.mark.parametrize("line,message", [
    ("not json", "expected"),
    (json.dumps({"text": "a"}), "expected"),
    (json.dumps({"lattice": "@@@", "text": "a"}), "expected"),
    (json.dumps({"lattice": "AAEC", "text": "a"}), "lattice|Lattice|node"),
])
def test_bad_dev_lines_are_refused_with_their_line_number(tmp_path, line, message):
    path = tmp_path / "dev.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DevSetError, match=f"dev.jsonl:1: .*({message})"):
        load_dev_set(path)


@pytest.mark.parametrize("contacts,message", [
    ("Ana Lima", "\"contacts\" is not a list of strings"),
    (["Ana Lima", 7], "\"contacts\" is not a list of strings"),
    (["x" * 201], "a contact of 201 characters, more than the 200 allowed"),
])
def test_dev_lines_with_a_bad_contact_list_are_refused(tmp_path, contacts, message):
    lattice = base64.b64encode(serialize(make_lattice([("call ana lima", -3.0)]))).decode()
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"lattice": lattice, "text": "call ana lima",
                                "contacts": contacts}) + "\n")
    with pytest.raises(DevSetError, match=f"dev.jsonl:1: {message}"):
        load_dev_set(path)


def test_cloud_lm_folder_is_checked_against_its_card(lm, tmp_path):
    folder = tmp_path / "lm"
    _write_lm_folder(lm, folder)
    card = {"files": {"ngram.arpa.gz": {"sha256": sha256_of(folder / "ngram.arpa.gz")}}}
    (folder / "model_card.json").write_text(json.dumps(card))
    assert CloudLM.load(folder).ngram.vocab == lm.ngram.vocab
    (folder / "ngram.arpa.gz").write_bytes(b"replaced")
    with pytest.raises(CloudLmError, match="sha256"):
        CloudLM.load(folder)
    with pytest.raises(CloudLmError, match="no cloud LM folder"):
        CloudLM.load(tmp_path / "nowhere")


def test_weights_are_validated(tmp_path):
    with pytest.raises(CloudLmError, match="ngram_lambda"):
        RescoreWeights(ngram_lambda=1.5)
    (tmp_path / "w.json").write_text('{"lm_weight": 1, "typo": 2}')
    with pytest.raises(CloudLmError, match="expected an object"):
        RescoreWeights.load(tmp_path / "w.json")


SHIPPED = FsPath(__file__).resolve().parent.parent / "models" / "cloud-lm"


@pytest.mark.skipif(not (SHIPPED / "model_card.json").exists(),
                    reason="no cloud LM built (make cloud-lm)")
def test_shipped_cloud_lm_knows_the_domain():
    lm = CloudLM.load(SHIPPED)  # checks every file against the card's sha256
    card = json.loads((SHIPPED / "model_card.json").read_text())
    # committed to git, so `make run` needs no build: keep it small (it runs in the cloud,
    # not on the device, and with general English its vocabulary is twice the grammar's)
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) <= 8_000_000
    dev = card["perplexity"]["dev"]
    assert dev["interpolated"] <= min(dev["ngram"], dev["neural"]) + 1e-6
    assert lm.neural is not None and lm.ngram.order >= 3
    rng = random.Random(1)
    for text in ["dim the hallway lamp to thirty percent", "call mom on their mobile",
                 "what's the weather tomorrow in denver", "add oat milk to my shopping list"]:
        words = text.split()
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        good, bad = lm.sentence_logprobs([words, shuffled])
        assert good > bad + 5.0
    for reference, confusion in [*CONFUSIONS[:3], CONFUSIONS[4],
                                 ("call mom on their mobile", "call mom on their noble")]:
        lattice = make_lattice([(confusion, -5.0), (reference, -6.0)])
        assert rescore(lattice, lm, weights=RescoreWeights(1.0, 0.0, 0.5))[0].text == reference


def test_dev_lines_may_carry_what_the_device_delivered(lm, tmp_path):
    dev = _dev_set()
    path = tmp_path / "dev.jsonl"
    # The device's own choice (its length-normalised best) was right every time.
    path.write_text("".join(encode_dev_line(serialize(u.lattice), " ".join(u.reference),
                                            " ".join(u.reference)) + "\n" for u in dev))
    loaded = load_dev_set(path)
    assert all(u.device == u.reference for u in loaded)
    assert tune(loaded, lm, lm_weights=(0.0,), length_bonuses=(0.0,)).device_wer == 0.0
    path.write_text(json.dumps({"lattice": "", "text": "a", "device": 3}) + "\n")
    with pytest.raises(DevSetError, match="device"):
        load_dev_set(path)
