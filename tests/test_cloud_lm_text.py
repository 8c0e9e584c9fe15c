"""What the cloud LM's recipe trains on: names as the <contact> class, people's transcripts."""

from __future__ import annotations

import json
import random

import pytest

from edge_asr.daemon.recognition.ngram_lm import UNK
from edge_asr.models.cloud_lm_recipe import _replace_names
from edge_asr.models.corpus import Utterance
from edge_asr.models.lm_text import prose_sentences, public_text, recorded_text
from edge_asr.simulator.cloud.name_classes import CONTACT

CALL = Utterance("call ana lima on her mobile", "call", ("Ana Lima",), ())


def test_names_become_the_class_unknown_or_stay_at_the_rates_asked():
    rng = random.Random(0)
    seen = [" ".join(_replace_names(CALL, {"Ana Lima"}, 0.1, rng, 0.5)) for _ in range(2000)]
    classed = seen.count(f"call {CONTACT} on her mobile") / len(seen)
    unknown = seen.count(f"call {UNK} {UNK} on her mobile") / len(seen)
    kept = seen.count(CALL.text) / len(seen)
    assert classed + unknown + kept == 1.0
    assert classed == pytest.approx(0.45, abs=0.04) and unknown == pytest.approx(0.1, abs=0.03)
    # a device name is never a contact
    lamp = Utterance("turn on the lamp", "onoff", ("the lamp",), ())
    assert _replace_names(lamp, {"Ana Lima"}, 0.0, rng, 1.0) == lamp.text.split()


def _manifest(path, texts):
    path.write_text("".join(json.dumps({"text": t, "audio_filepath": "x.wav"}) + "\n"
                            for t in texts), encoding="utf-8")
    return path


def test_recorded_text_leaves_out_every_sentence_of_the_held_out_sets(tmp_path):
    train = _manifest(tmp_path / "train.jsonl",
                      ["John can see the sheep.", "It's not fish", "We call it bear"])
    test = _manifest(tmp_path / "test.jsonl", ["we call it bear"])
    text = recorded_text([train], [test], repeat=2)
    assert text == [["john", "can", "see", "the", "sheep"], ["it's", "not", "fish"]] * 2


def test_a_manifest_line_without_text_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "x.wav"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        recorded_text([bad], [], 1)


def test_prose_is_cut_into_sentences_without_its_references():
    text = ("Genesis 1:3: God said, \u201cLet there be light,\u201d and there was light.\n"
            "Psalm 23:1: Yahweh is my shepherd; I shall lack nothing. Amen.\n\n"
            "It was 12 o\u2019clock: time to go!\n")
    assert prose_sentences(text) == [
        "god said let there be light and there was light".split(),
        "yahweh is my shepherd".split(), "i shall lack nothing".split(),
        "it was twelve o'clock".split(), "time to go".split()]  # "amen" alone is too short


def test_public_text_keeps_the_frequent_and_known_words(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("the cat sat on the mat. the dog sat on the cat.\nzebulun sat down.\n")
    sentences = public_text([book], known={"zebulun"}, vocabulary=3)
    # the three most frequent (the, sat, on/cat) and the known word stay; the rest is <unk>
    assert sentences[2] == ["zebulun", "sat", UNK]
    assert sentences[0][:3] == ["the", "cat", "sat"] and UNK in sentences[0]


def test_public_text_drops_the_sentences_of_the_evaluation_sets(tmp_path):
    book = tmp_path / "sentences.txt"
    book.write_text("Tell me what it is.\nWhat does she say?\nTell me what it was.\n")
    held = [["tell", "me", "what", "it", "is"]]  # a test sentence the text also holds
    assert public_text([book], set(), 10, held) == [["what", "does", "she", "say"],
                                                    ["tell", "me", "what", "it", "was"]]


def test_text_that_is_not_prose_is_refused_with_its_name(tmp_path):
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes([0xff, 0xfe, 0x00, 0x81]) * 10)
    with pytest.raises(ValueError, match="x.bin"):
        public_text([binary], set(), 10)
    empty = tmp_path / "empty.txt"
    empty.write_text("Amen.\n")
    with pytest.raises(ValueError, match="no sentences"):
        public_text([empty], set(), 10)
