"""The sentence corpus: splits, held-out names, contexts, word lists (models/corpus.py,
corpus_lexicon.py, corpus_slots.py, corpus_person_names.py)."""

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from edge_asr.daemon.text import normalize_text
from edge_asr.models.corpus import (
    CONTEXT_DEVICES_TEST_NAMES,
    CONTEXT_SIZE,
    MAX_WORDS,
    CorpusSplits,
    Utterance,
    build_corpus,
    main,
    write_corpus,
)
from edge_asr.models.corpus_lexicon import INTENTS, load_lexicon

SMALL = {"n_train": 3000, "n_dev": 100, "n_test_sentences": 120, "n_test_names": 120}


@pytest.fixture(scope="module")
def splits() -> CorpusSplits:
    return build_corpus(seed=0, **SMALL)


def _evaluation(splits: CorpusSplits) -> list[Utterance]:
    return [*splits.dev, *splits.test_sentences, *splits.test_names]


def _all(splits: CorpusSplits) -> list[Utterance]:
    return [*splits.train, *_evaluation(splits)]


def _words(names: list[str]) -> set[str]:
    return {w for name in names for w in normalize_text(name).split()}


def test_utterance_fields() -> None:
    assert [f.name for f in fields(Utterance)] == [
        "text", "intent", "entities", "pause_after", "context", "tags"]


def test_sizes(splits: CorpusSplits) -> None:
    assert len(splits.train) == SMALL["n_train"]
    assert len(splits.dev) == SMALL["n_dev"]
    assert len(splits.test_sentences) == SMALL["n_test_sentences"]
    assert len(splits.test_names) == SMALL["n_test_names"]


def test_deterministic_for_a_seed(splits: CorpusSplits) -> None:
    again = build_corpus(seed=0, **SMALL)
    assert again == splits
    other = build_corpus(seed=1, **SMALL)
    assert [u.text for u in other.train] != [u.text for u in splits.train]
    assert other.heldout_names != splits.heldout_names


def test_text_is_normalised_and_short(splits: CorpusSplits) -> None:
    for u in _all(splits):
        assert normalize_text(u.text) == u.text, u
        assert 1 <= len(u.text.split()) <= MAX_WORDS, u


def test_splits_distinct_and_disjoint(splits: CorpusSplits) -> None:
    texts = [u.text for u in _all(splits)]
    assert len(texts) == len(set(texts))


def test_heldout_name_words_never_in_train_or_dev(splits: CorpusSplits) -> None:
    heldout = _words(splits.heldout_names)
    assert heldout
    seen = {w for u in [*splits.train, *splits.dev, *splits.test_sentences] for w in u.text.split()}
    assert not heldout & seen
    assert not heldout & _words(splits.train_names)


def test_heldout_share_of_name_lists() -> None:
    lex = load_lexicon()
    splits = build_corpus(seed=3, **SMALL)
    heldout_single = [n for n in splits.heldout_names if " " not in n]
    n_first = sum(len(g) for g in lex.first_names.values())
    assert 0.12 <= len(heldout_single) / n_first <= 0.18


def test_enough_person_names(splits: CorpusSplits) -> None:
    assert len(set(splits.train_names) | set(splits.heldout_names)) >= 2000
    lex = load_lexicon()
    assert sum(len(g) for g in lex.first_names.values()) >= 500
    assert sum(len(g) for g in lex.surnames.values()) >= 500
    # many languages, not one list with a few exotic entries
    assert sum(len(g) >= 10 for g in lex.first_names.values()) >= 18
    assert sum(len(g) >= 10 for g in lex.surnames.values()) >= 18


def test_enough_devices() -> None:
    assert len(load_lexicon().device_names) >= 300


def test_every_intent_has_many_phrasings() -> None:
    lex = load_lexicon()
    for intent in INTENTS:
        assert len(lex.templates_for(intent)) >= 15, intent


def test_intent_mix(splits: CorpusSplits) -> None:
    mix = Counter(u.intent for u in splits.train)
    assert set(mix) == set(INTENTS)
    for intent in ("call", "dial"):
        assert 0.12 <= mix[intent] / len(splits.train) <= 0.2, mix


def test_politeness_variants(splits: CorpusSplits) -> None:
    firsts = Counter(u.text.split()[0] for u in splits.train)
    for opener in ("please", "hey", "could", "can", "would"):
        assert firsts[opener] > 0, opener
    assert any(u.text.endswith(" please") for u in splits.train)


def test_pauses_inside_the_utterance(splits: CorpusSplits) -> None:
    for u in _all(splits):
        n = len(u.text.split())
        assert all(0 <= i < n - 1 for i in u.pause_after), u
        assert list(u.pause_after) == sorted(set(u.pause_after))


def test_digit_strings(splits: CorpusSplits) -> None:
    digit_words = set("zero one two three four five six seven eight nine".split())
    dial = [u for u in splits.train if u.intent == "dial"]
    assert dial and all("digits" in u.tags for u in dial)
    lengths = set()
    for u in dial:
        words = u.text.split()
        run = max(_runs(words, digit_words))
        lengths.add(run)
        if run >= 6:
            assert u.pause_after, u  # long numbers are read out in groups
    assert min(lengths) == 3 and max(lengths) == 11


def _runs(words: list[str], vocab: set[str]) -> list[int]:
    runs, current = [0], 0
    for w in words:
        current = current + 1 if w in vocab else 0
        runs.append(current)
    return runs


def test_contact_pause_and_entities(splits: CorpusSplits) -> None:
    contacts = [u for u in splits.train if "contact" in u.tags]
    assert contacts
    for u in contacts:
        name = normalize_text(u.entities[0]).split()
        words = u.text.split()
        starts = [i for i in range(len(words)) if words[i:i + len(name)] == name]
        assert starts, u
        assert any(i - 1 in u.pause_after for i in starts if i > 0), u


def test_device_entities(splits: CorpusSplits) -> None:
    devices = {p.display for p in load_lexicon().device_names}
    with_devices = [u for u in splits.train if "device" in u.tags]
    assert with_devices
    for u in with_devices:
        assert u.entities and all(e in devices for e in u.entities), u
        assert normalize_text(u.entities[0]) in u.text


def test_train_has_no_context(splits: CorpusSplits) -> None:
    assert all(u.context == () for u in splits.train)


def test_test_names_use_heldout_names_in_context(splits: CorpusSplits) -> None:
    heldout = set(splits.heldout_names)
    for u in splits.test_names:
        assert u.intent == "call"
        assert len(u.entities) == 1 and u.entities[0] in heldout, u
        assert normalize_text(u.entities[0]) in u.text
        assert u.entities[0] in u.context
        assert len(u.context) == CONTEXT_SIZE == len(set(u.context))
        assert "heldout_name" in u.tags


def test_test_sentence_contexts(splits: CorpusSplits) -> None:
    heldout = set(splits.heldout_names)
    for u in [*splits.dev, *splits.test_sentences]:
        assert len(u.context) == CONTEXT_SIZE == len(set(u.context))
        assert all(e in u.context for e in u.entities), u
        assert heldout & set(u.context)
    without = [u for u in splits.test_sentences if not u.entities]
    assert len(without) > len(splits.test_sentences) // 3


def test_thirty_thousand_distinct_train_sentences_reachable() -> None:
    splits = build_corpus(seed=7, n_train=30_000, n_dev=10, n_test_sentences=10, n_test_names=10)
    assert len({u.text for u in splits.train}) == 30_000


def test_write_corpus(tmp_path: Path, splits: CorpusSplits) -> None:
    write_corpus(splits, tmp_path)
    for name in ("train", "dev", "test_sentences", "test_names"):
        rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").open(encoding="utf-8")]
        assert len(rows) == len(getattr(splits, name))
        assert Utterance(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in rows[0].items()}) == getattr(splits, name)[0]
    names = (tmp_path / "names_heldout.txt").read_text(encoding="utf-8").splitlines()
    assert names == splits.heldout_names
    assert (tmp_path / "names_train.txt").read_text(encoding="utf-8").splitlines() == \
        splits.train_names


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path), "--seed", "2", "--n-train", "200", "--n-dev", "10",
          "--n-test-sentences", "10", "--n-test-names", "10"])
    assert "train: 200 utterances" in capsys.readouterr().out
    assert len((tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 200


def test_same_output_across_processes(tmp_path: Path) -> None:
    # Sets of names must never decide an order: string hashing differs per process.
    args = ["--n-train", "300", "--n-dev", "10", "--n-test-sentences", "10",
            "--n-test-names", "10"]
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run([sys.executable, "-m", "edge_asr.models.corpus", "--out", str(out), *args],
                       check=True, capture_output=True, env={**os.environ,
                                                             "PYTHONHASHSEED": hash_seed})
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]


def test_manifest_contexts_come_by_kind(splits: CorpusSplits, tmp_path: Path) -> None:
    """The evaluation manifests give a context as a device would send it: devices apart
    from contacts (only contacts earn the slot bonus), every entry kept exactly once."""
    from edge_asr.daemon.manifest import read_manifest, write_manifest
    from edge_asr.models.prepare import context_by_kind, split_contexts

    heldout = set(splits.heldout_names)
    for u in splits.test_names[:50]:
        kinds = context_by_kind(u.context)
        assert sorted(kinds["contacts"] + kinds["devices"]) == sorted(u.context)
        assert u.entities[0] in kinds["contacts"]
        assert heldout >= set(kinds["contacts"])
        assert len(kinds["devices"]) == CONTEXT_DEVICES_TEST_NAMES
    # A cache written before: its flat lists are split in place, once; the rest stays.
    manifest = tmp_path / "m.jsonl"
    u = splits.dev[0]
    write_manifest(manifest, [
        {"audio_filepath": "a.wav", "text": u.text, "context": list(u.context), "voice": "v"},
        {"audio_filepath": "b.wav", "text": "stop"}])
    assert split_contexts(manifest) and not split_contexts(manifest)
    entries = read_manifest(manifest)
    assert entries[0].context == context_by_kind(u.context)
    assert sorted(entries[0].context_names) == sorted(u.context)
    assert entries[0].extra == {"voice": "v"} and entries[1].context == []
