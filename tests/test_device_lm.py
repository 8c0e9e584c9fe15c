"""The recipe's device LM: names as a class, files beside the model, the card's record."""

import json
import shutil

import pytest
import sentencepiece as spm
from conftest import tiny_corpus

from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.token_lm import CONTACT, LM_FILE, LM_FILES, NAMES_FILE
from edge_asr.daemon.recognition.transducer import sha256_of
from edge_asr.models.device_lm import build_device_lm, spell_with_classes


def test_contacts_become_one_class_word_and_the_rest_is_spelled_as_in_the_sentence(
        tiny_model_dir):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / "bpe.model"))
    names = {"zoe o'brien", "zoe"}
    pieces = spell_with_classes(sp, "call zoe o'brien now", names)
    assert pieces == sp.encode("call", out_type=str) + [CONTACT] + sp.encode("now", out_type=str)
    # The longest name wins; a sentence without one is spelled as the model spells it.
    assert spell_with_classes(sp, "zoe now", names).count(CONTACT) == 1
    assert spell_with_classes(sp, "turn on the lava lamp", names) == \
        sp.encode("turn on the lava lamp", out_type=str)


def test_the_lm_goes_beside_the_model_and_into_its_card(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in (LM_FILE, NAMES_FILE):
        (folder / name).unlink()
    summary = build_device_lm(folder, tiny_corpus(tmp_path / "data"))
    card = json.loads((folder / "model_card.json").read_text())
    for name in LM_FILES:  # the ARPA files and the tables the daemon reads
        assert card["sha256"][name] == sha256_of(folder / name)
        assert card["device_lm"]["bytes"][name] == (folder / name).stat().st_size
    assert summary["name_model"]["names"] == 2 and summary["ngrams"][0] > 3
    assert "bytes_total" not in card  # the model's bytes stay the model's
    Recognizer(RecognizerConfig(model_dir=folder, lm_scale=0.3))  # loads, checked


def test_recorded_speech_transcripts_join_the_lm_text(tiny_model_dir, tmp_path):
    """What people were recorded saying (real training corpora) is text the LM learns: a
    transcript sentence becomes far more likely, and each distinct sentence counts once."""
    from edge_asr.daemon.recognition.ngram_arpa import load_arpa
    from edge_asr.daemon.recognition.ngram_lm import perplexity

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = tiny_corpus(tmp_path / "data")
    sentence = "kate loves china"
    manifest = tmp_path / "people_train.jsonl"
    manifest.write_text("".join(json.dumps({"audio_filepath": f"{k}.wav", "text": text}) + "\n"
                                for k, text in enumerate([sentence, "Kate loves China!", ""])))
    sp = spm.SentencePieceProcessor(model_file=str(folder / "bpe.model"))
    pieces = [sp.encode(sentence, out_type=str)]
    build_device_lm(folder, data)
    before = perplexity(load_arpa(folder / LM_FILE), pieces)
    summary = build_device_lm(folder, data, transcripts=[manifest])
    after = perplexity(load_arpa(folder / LM_FILE), pieces)
    assert summary["transcript_sentences"] == 1  # normalised, deduplicated, empty dropped
    assert summary["transcripts"] == ["people_train.jsonl"]
    assert after < 0.5 * before


def test_general_text_joins_the_lm_but_never_an_evaluation_sentence(tiny_model_dir,
                                                                       tmp_path):
    """Plain text of general English (one sentence a line) teaches the LM how people talk
    outside the requests, less every sentence of the evaluation manifests; counting the
    domain's sentences more often gives the requests their weight back."""
    from edge_asr.daemon.recognition.ngram_arpa import load_arpa
    from edge_asr.daemon.recognition.ngram_lm import perplexity

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = tiny_corpus(tmp_path / "data")
    general, held_out = "the ducks want some bread", "mark is going to see the elephant"
    text = tmp_path / "sentences.txt"
    text.write_text(f"The ducks want some bread.\n{general}\n\n{held_out.upper()}\n")
    test_set = tmp_path / "test_people.jsonl"
    test_set.write_text(json.dumps({"audio_filepath": "a.wav", "text": held_out}) + "\n")
    sp = spm.SentencePieceProcessor(model_file=str(folder / "bpe.model"))
    score = {}
    general_lm = {"texts": [text], "exclude": [test_set], "text_source": "made here, CC0"}
    for name, kwargs in {"domain": {}, "general": general_lm,
                         "weighted": {**general_lm, "domain_repeat": 3}}.items():
        summary = build_device_lm(folder, data, **kwargs)
        lm = load_arpa(folder / LM_FILE)
        score[name] = [perplexity(lm, [sp.encode(s, out_type=str)])
                       for s in (general, held_out, "turn on the lava lamp")]
    assert summary["general_text"] == {"files": ["sentences.txt"], "sentences": 1,
                                       "excluded_manifests": ["test_people.jsonl"],
                                       "source": "made here, CC0"}
    assert summary["domain_repeat"] == 3
    assert score["general"][0] < 0.5 * score["domain"][0]  # learnt
    assert score["general"][1] > 0.9 * score["domain"][1]  # the test sentence was not
    assert score["weighted"][2] < score["general"][2]  # the requests weigh more again
    Recognizer(RecognizerConfig(model_dir=folder, lm_scale=0.3))  # loads, checked


def test_a_continuation_can_keep_its_parents_lm_unchanged(tiny_model_dir, tmp_path):
    """recipe --keep-device-lm: the parent's LM files, byte for byte, and its card's summary,
    so that the child's WER beside the parent's measures the acoustic model alone."""
    from edge_asr.models.device_lm import copy_device_lm

    child = tmp_path / "child"
    child.mkdir()
    summary = copy_device_lm(tiny_model_dir, child)
    for name in (LM_FILE, NAMES_FILE):
        assert sha256_of(child / name) == sha256_of(tiny_model_dir / name)
    parent = json.loads((tiny_model_dir / "model_card.json").read_text())["device_lm"]
    assert summary["ngrams"] == parent["ngrams"]
    assert summary["copied_from"] == str(tiny_model_dir)


def test_the_recipe_keeps_an_lm_only_from_a_model_it_continues(recipe_refusal):
    assert "--init-from" in recipe_refusal("--keep-device-lm")


def test_a_domain_counted_under_once_or_text_that_is_not_there_is_refused(tiny_model_dir,
                                                                           tmp_path, capsys):
    from edge_asr.models.device_lm import main

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = tiny_corpus(tmp_path / "data")
    with pytest.raises(ValueError, match="domain_repeat"):
        build_device_lm(folder, data, domain_repeat=0)
    for args, message in ((["--domain-repeat", "0"], "at least 1"),
                          (["--text", str(tmp_path / "missing.txt")], "no such file")):
        with pytest.raises(SystemExit):
            main(["--data", str(data), "--model", str(folder), *args])
        assert message in capsys.readouterr().err
    assert (folder / LM_FILE).read_bytes() == (tiny_model_dir / LM_FILE).read_bytes()
