"""The Kneser-Ney n-gram LM: proper distributions, ARPA round trip, incremental scoring."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import numpy as np
import pytest

from edge_asr.daemon.recognition.backoff_tables import BackoffTables, TableBuilder
from edge_asr.daemon.recognition.ngram_arpa import load_arpa, load_arpa_tables, save_arpa
from edge_asr.daemon.recognition.ngram_lm import BOS, EOS, UNK, LmFormatError, NgramLM, perplexity
from edge_asr.models.ngram_train import (
    FALLBACK_DISCOUNTS,
    NgramOptions,
    _modified_kn_discounts,
    build_vocab,
    train_ngram,
)

SENTENCES = [s.split() for s in [
    "turn on the kitchen lights", "turn off the kitchen lights", "turn on the bedroom lights",
    "turn off the fan", "turn on the fan in the bedroom", "switch the kitchen lights off",
    "call mom", "call mom on her mobile", "call dad at work", "call diego on his mobile",
    "text diego that i'm running late", "text mom that i'm on my way",
    "set a timer for ten minutes", "set a timer for five minutes", "cancel the pasta timer",
    "play some jazz in the kitchen", "play some rock in the bedroom", "next song", "pause",
    "what's the weather tomorrow", "what's the weather in denver", "what time is it",
    "add milk to my shopping list", "add eggs to my shopping list", "lock the front door",
    "dial five five five one two one two", "dial five five five zero one nine two",
    "dim the hallway lamp to thirty percent", "set the thermostat to seventy two degrees",
    "stop", "never mind", "yes", "no",
]]


@pytest.fixture(scope="module")
def lm() -> NgramLM:
    # min_count=2 makes the words seen once <unk>, so <unk> has contexts of its own.
    return train_ngram(SENTENCES, NgramOptions(order=3, min_count=2))


PRUNED = NgramOptions(order=4, min_count=2, cutoffs=(2,))  # 3- and 4-grams seen once are cut


@pytest.fixture(scope="module")
def pruned() -> NgramLM:
    return train_ngram(SENTENCES, PRUNED)


@pytest.fixture(params=["full", "pruned"])
def any_lm(request, lm, pruned) -> NgramLM:
    return lm if request.param == "full" else pruned


def _context_sum(lm: NgramLM, context: tuple[str, ...]) -> float:
    state = tuple(lm.index[w] if w in lm.index else lm.unk for w in context)
    return sum(math.exp(lm.score_id(state, i)[0]) for i in lm.predictable_ids())


CONTEXTS = [(BOS,), (), ("turn",), ("turn", "on"), (BOS, "call"), ("the", "kitchen"),
            ("kitchen", "lights"), (UNK,), (UNK, UNK), ("never", "heard"), ("call", UNK),
            (BOS, "turn"), ("five", "five")]


# Three-word histories for the 4-gram model, with followers kept, cut, or both.
CONTEXTS_4 = [("turn", "on", "the"), (BOS, "set", "a"), ("five", "five", "five"),
              ("call", "dad", "at"), ("the", "kitchen", "lights"), ("in", "the", "kitchen")]


@pytest.mark.parametrize("context", CONTEXTS, ids=" ".join)
def test_every_context_is_a_distribution_over_vocabulary_end_and_unk(any_lm, context):
    assert _context_sum(any_lm, context) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("context", CONTEXTS_4, ids=" ".join)
def test_every_long_context_of_a_pruned_model_is_a_distribution(pruned, context):
    assert _context_sum(pruned, context) == pytest.approx(1.0, abs=1e-9)


def _stored_ngrams(lm: NgramLM) -> list[tuple[int, ...]]:
    return [tuple(lm.ids_of_key(key, n)) for n in range(1, lm.order + 1)
            for key in lm.logprobs[n]]


def test_cutoffs_drop_rarely_seen_ngrams_and_keep_the_model_closed(pruned):
    full = train_ngram(SENTENCES, NgramOptions(order=4, min_count=2))
    assert pruned.num_ngrams()[:2] == full.num_ngrams()[:2]
    assert all(p < f for p, f in zip(pruned.num_ngrams()[2:], full.num_ngrams()[2:],
                                     strict=True))
    seen: Counter[tuple[int, ...]] = Counter()
    for sentence in SENTENCES:
        ids = [pruned.bos, *map(pruned.word_id, sentence), pruned.eos]
        for n in (3, 4):
            seen.update(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
    stored = set(_stored_ngrams(pruned))
    for gram in stored:
        if len(gram) >= 3:
            assert seen[gram] >= 2, [pruned.vocab[i] for i in gram]
        if len(gram) >= 2:  # its context and its back-off n-gram are there too
            assert gram[:-1] in stored or gram[:-1] == (pruned.bos,)
            assert gram[1:] in stored
    # a trigram seen once scores as the back-off, a trigram seen twice keeps its own
    cut = tuple(map(pruned.word_id, ["call", "dad", "at"]))
    kept = tuple(map(pruned.word_id, ["dial", "five", "five"]))
    assert cut not in stored and seen[cut] == 1
    assert kept in stored and seen[kept] == 2


def test_cutoffs_must_not_decrease_with_the_order():
    assert [NgramOptions(cutoffs=(1, 2)).cutoff(n) for n in range(1, 6)] == [1, 1, 1, 2, 2]
    assert NgramOptions().cutoff(4) == 1
    with pytest.raises(LmFormatError, match="cutoffs"):
        NgramOptions(cutoffs=(3, 2))
    with pytest.raises(LmFormatError, match="cutoffs"):
        NgramOptions(cutoffs=(0,))


def test_vocabulary_has_specials_and_drops_rare_words(lm):
    assert lm.vocab[:3] == [BOS, EOS, UNK]
    assert "denver" not in lm.index  # seen once, below min_count
    assert "kitchen" in lm.index
    assert lm.score(lm.begin_state(), "zanzibar")[0] == lm.score(lm.begin_state(), UNK)[0]
    assert BOS not in [lm.vocab[i] for i in lm.predictable_ids()]


def test_in_domain_sentence_scores_better_than_shuffled(lm):
    rng = random.Random(0)
    for text in ["turn on the kitchen lights", "call diego on his mobile",
                 "set a timer for five minutes", "turn off the bedroom lights"]:
        words = text.split()
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        assert lm.sentence_logprob(words) > lm.sentence_logprob(shuffled) + 2.0


def test_held_out_combination_beats_its_shuffle():
    lm = train_ngram(SENTENCES, NgramOptions(order=4))
    held_out = "turn off the bedroom lights".split()  # not a training sentence
    assert held_out not in SENTENCES
    assert lm.sentence_logprob(held_out) > lm.sentence_logprob(held_out[::-1]) + 5.0
    assert perplexity(lm, [held_out]) < perplexity(lm, [held_out[::-1]])


def test_incremental_scoring_matches_whole_sentence_and_keeps_states_short(lm):
    words = "call mom on her mobile please".split()
    state, total = lm.begin_state(), 0.0
    for word in words:
        logprob, state = lm.score(state, word)
        assert len(state) <= lm.order - 1
        total += logprob
    total += lm.end_score(state)
    assert total == pytest.approx(lm.sentence_logprob(words), abs=1e-12)
    assert sum(lm.word_logprobs(words)) == pytest.approx(total, abs=1e-12)


@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_round_trip_keeps_every_probability(any_lm, tmp_path, name):
    lm = any_lm
    path = tmp_path / name
    save_arpa(lm, path)
    loaded = load_arpa(path)
    assert loaded.vocab == lm.vocab and loaded.order == lm.order
    assert loaded.num_ngrams() == lm.num_ngrams()
    for sentence in [*SENTENCES[:10], "zanzibar turn lights the".split()]:
        assert loaded.sentence_logprob(sentence) == pytest.approx(
            lm.sentence_logprob(sentence), abs=1e-5)
    for context in CONTEXTS:
        assert _context_sum(loaded, context) == pytest.approx(1.0, abs=1e-5)


def test_arpa_file_looks_like_arpa(lm, tmp_path):
    save_arpa(lm, tmp_path / "lm.arpa")
    text = (tmp_path / "lm.arpa").read_text()
    assert text.lstrip().startswith("\\data\\")
    assert "ngram 3=" in text and "\\3-grams:" in text and text.rstrip().endswith("\\end\\")
    assert f"-99.0\t{BOS}\t" in text


def _add_bigram(text: str) -> str:
    """A bigram over a word that is not a unigram, with the header count kept right."""
    count = int(text.split("ngram 2=")[1].split()[0])
    text = text.replace(f"ngram 2={count}", f"ngram 2={count + 1}")
    return text.replace("\\2-grams:\n", "\\2-grams:\n-0.5\tnowhere word\n")


@pytest.mark.parametrize("damage,message", [
    (lambda t: t.replace("\\end\\", ""), "no .end. line"),
    (lambda t: t.replace("ngram 2=", "ngram 2=1"), "header says"),
    (lambda t: t.replace("\tkitchen\t", "\tkitchen\tx\t", 1), "not an ARPA"),
    (_add_bigram, "not a unigram"),
    (lambda t: re.sub(r"ngram 3=\d+\n", "", t), "declares no 3-grams"),
    (lambda t: t.replace("\\2-grams:\n", "\\2-grams:\n\\oops\n"), "not an ARPA line"),
])
@pytest.mark.parametrize("load", [load_arpa, load_arpa_tables], ids=["dicts", "tables"])
def test_malformed_arpa_is_refused_with_a_reason(lm, tmp_path, damage, message, load):
    save_arpa(lm, tmp_path / "good.arpa")
    (tmp_path / "bad.arpa").write_text(damage((tmp_path / "good.arpa").read_text()))
    with pytest.raises(LmFormatError, match=message):
        load(tmp_path / "bad.arpa")


@pytest.mark.parametrize("load", [load_arpa, load_arpa_tables], ids=["dicts", "tables"])
def test_missing_arpa_file_is_a_clear_error(tmp_path, load):
    with pytest.raises(LmFormatError, match="cannot read"):
        load(tmp_path / "missing.arpa")


def test_modified_kneser_ney_discounts_follow_count_of_counts():
    counts = [1] * 100 + [2] * 40 + [3] * 20 + [4] * 10
    y = 100 / (100 + 2 * 40)
    expected = (1 - 2 * y * 40 / 100, 2 - 3 * y * 20 / 40, 3 - 4 * y * 10 / 20)
    assert _modified_kn_discounts(counts) == pytest.approx(expected)
    assert _modified_kn_discounts([1, 1, 2]) == FALLBACK_DISCOUNTS  # no n3, n4


def test_training_input_errors():
    with pytest.raises(LmFormatError, match="no words"):
        train_ngram([[], []])
    with pytest.raises(LmFormatError, match="order"):
        train_ngram(SENTENCES, NgramOptions(order=0))
    assert build_vocab([["a", "b", "a"]], min_count=2) == [BOS, EOS, UNK, "a"]


def _tables_logprob(tables: BackoffTables, context: tuple[int, ...], word: int) -> float:
    """ln p(word | context) from the tables alone, backing off as the model does."""
    penalty = 0.0
    while True:
        found = tables.find(context)
        if found is not None and word in found[0]:
            return penalty + float(found[1][list(found[0]).index(word)])
        penalty += found[2] if found is not None else 0.0
        context = context[1:]


@pytest.mark.parametrize("source", ["memory", "arpa"])
def test_the_devices_tables_store_every_ngram_once_with_the_models_scores(any_lm, source,
                                                                         tmp_path):
    """The flat tables the device keeps (from the model in memory or read from its ARPA
    file) list every stored n-gram once, after its context, at its ln p, and back off
    to the same score for any other word."""
    if source == "memory":
        tables = BackoffTables.of(any_lm)
    else:
        save_arpa(any_lm, tmp_path / "lm.arpa.gz")
        tables = load_arpa_tables(tmp_path / "lm.arpa.gz")
    assert tables.vocab == any_lm.vocab and tables.num_ngrams() == any_lm.num_ngrams()
    listed = []
    for ngram in _stored_ngrams(any_lm):
        words, logprobs, _ = tables.find(ngram[:-1])
        (at,) = [i for i, w in enumerate(words) if w == ngram[-1]]
        assert logprobs[at] == pytest.approx(any_lm.score_id(ngram[:-1], ngram[-1])[0],
                                             abs=1e-5)
        listed.append(ngram)
    assert len(set(listed)) == len(listed) == sum(tables.num_ngrams())
    for context in CONTEXTS:
        ids = tuple(any_lm.word_id(w) for w in context)
        found = tables.find(ids)
        assert (found[2] if found is not None else 0.0) == pytest.approx(any_lm.backoff(ids),
                                                                         abs=1e-5)
        for word in any_lm.predictable_ids():
            assert _tables_logprob(tables, ids, word) == pytest.approx(
                any_lm.score_id(ids, word)[0], abs=1e-5)


def test_tables_refuse_a_vocabulary_their_keys_cannot_hold():
    words = [BOS, EOS, UNK] + [f"w{i}" for i in range(70_000)]
    with pytest.raises(LmFormatError, match="64-bit"):
        TableBuilder(words, order=5)


def test_saved_tables_load_as_they_were_and_a_damaged_file_is_refused(pruned, tmp_path):
    tables = BackoffTables.of(pruned)
    tables.save(tmp_path / "lm.tables.npz", "ab" * 32)
    loaded = BackoffTables.load(tmp_path / "lm.tables.npz")
    assert loaded.vocab == tables.vocab and loaded.order == tables.order
    assert loaded.source_sha256 == "ab" * 32 and loaded.nbytes() == tables.nbytes()
    for ngram in _stored_ngrams(pruned):
        for a, b in zip(loaded.find(ngram[:-1]), tables.find(ngram[:-1]), strict=True):
            assert np.array_equal(a, b)
    data = (tmp_path / "lm.tables.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(LmFormatError, match="cannot read LM tables"):
        BackoffTables.load(tmp_path / "cut.npz")
