"""Contextual biasing: the context graph's scores, the context's validation, and the beam
search with a context on a small random model."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_asr.daemon.manifest import write_manifest
from edge_asr.daemon.recognition.config import CONTEXT_CACHE_NODES
from edge_asr.daemon.recognition.context_graph import (
    ROOT,
    ContextBuilder,
    ContextError,
    ContextGraph,
    Phrase,
    build_context_graph,
    context_by_kind,
)
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.transducer import ModelError
from edge_asr.models.evaluate import evaluate
from edge_asr.models.export import export_onnx
from edge_asr.models.model import ModelConfig, Transducer
from edge_asr.models.tokenizer import train_tokenizer

A, B, C, D, E = 2, 3, 4, 5, 6  # token ids of a hand-made vocabulary
X = 9  # a token in no phrase


def walk(graph: ContextGraph, tokens: list[int]) -> tuple[list[float], list, object]:
    """Deltas and matched phrases of each step, and the final state."""
    state, deltas, matches = ROOT, [], []
    for t in tokens:
        delta, state, matched = graph.forward_one_step(state, t)
        deltas.append(delta)
        matches.append(matched.tokens if matched else None)
    return deltas, matches, state


def no_lm(**settings) -> RecognizerConfig:
    """The random model's recognizers decode without the device LM: over random acoustics
    the LM alone would say what is heard, and these tests are about the context."""
    return RecognizerConfig(lm_scale=0.0, **settings)


def total(graph: ContextGraph, tokens: list[int]) -> float:
    deltas, _, state = walk(graph, tokens)
    return sum(deltas) + graph.finalize(state)


# --- the graph on hand-made phrases -------------------------------------------------------

def test_full_match_keeps_its_bonus():
    g = ContextGraph([(A, B, C)], bonus=1.5)
    deltas, matches, state = walk(g, [A, B, C])
    assert deltas == [1.5, 1.5, 1.5]
    assert matches == [None, None, (A, B, C)]
    assert g.finalize(state) == 0.0
    assert total(g, [X, A, B, C, X]) == 4.5


def test_partial_match_then_divergence_gives_back_what_it_earned():
    g = ContextGraph([(A, B, C)], bonus=1.5)
    deltas, matches, state = walk(g, [A, B, X])
    assert deltas == [1.5, 1.5, -3.0]
    assert matches == [None, None, None]
    assert state == ROOT and g.finalize(state) == 0.0


def test_finalize_takes_back_an_unfinished_match():
    g = ContextGraph([(A, B, C)], bonus=1.5)
    deltas, _, state = walk(g, [X, A, B])
    assert sum(deltas) == 3.0
    assert g.finalize(state) == -3.0


def test_overlapping_phrases_through_failure_links():
    g = ContextGraph([(A, B, C), (B, C, D)], bonus=1.0)
    deltas, matches, _ = walk(g, [A, B, C, D])
    # "a b c" completes, and "b c" goes on through the failure arc into "b c d".
    assert deltas == [1.0, 1.0, 1.0, 1.0]
    assert matches == [None, None, (A, B, C), (B, C, D)]
    assert total(g, [A, B, C, D]) == 4.0
    # "a b" fails over to "b" (the start of "b c d"): only the "a" is given back.
    deltas, matches, _ = walk(g, [A, B, D])
    assert deltas == [1.0, 1.0, -2.0]
    deltas, matches, _ = walk(g, [A, B, B, C, D])
    assert deltas == [1.0, 1.0, -1.0, 1.0, 1.0] and matches[-1] == (B, C, D)


def test_failure_arc_into_another_phrase_converts_the_bonus():
    g = ContextGraph([(A, B, C, D), (B, C, E)], bonus=1.0)
    deltas, matches, _ = walk(g, [A, B, C, E])
    assert deltas == [1.0, 1.0, 1.0, 0.0]  # "a" given back, "e" earned
    assert matches[-1] == (B, C, E)
    assert total(g, [A, B, C, E]) == 3.0


def test_completed_phrase_keeps_its_bonus_when_a_longer_one_fails():
    g = ContextGraph([(A, B), (A, B, C, D)], bonus=1.0)
    assert walk(g, [A, B])[1] == [None, (A, B)]
    assert total(g, [A, B, C, X]) == 2.0  # "a b" kept, the "c" of "a b c d" given back
    assert total(g, [A, B, C, D]) == 4.0


def test_phrase_inside_a_longer_partial_match_keeps_its_bonus():
    g = ContextGraph([(B,), (A, B, C)], bonus=1.0)
    deltas, matches, _ = walk(g, [A, B, X])
    assert matches == [None, (B,), None]
    assert deltas == [1.0, 1.0, -1.0]  # only the "a" is given back


def test_phrases_follow_each_other():
    g = ContextGraph([(A, B), (C, D)], bonus=1.0)
    assert total(g, [A, B, C, D, A, B]) == 6.0


def test_per_phrase_bonus():
    g = ContextGraph([Phrase((A, B), "ab", 3.0), Phrase((C, D), "cd")], bonus=1.0)
    assert walk(g, [A, B])[0] == [3.0, 3.0]
    assert walk(g, [C, D])[0] == [1.0, 1.0]
    assert walk(g, [A, B])[1][-1] == (A, B)


def test_token_deltas_agree_with_forward_one_step():
    g = ContextGraph([(A, B, C), (B, C, D), (C,)], bonus=1.0, vocab_size=10)
    for prefix in ([], [A], [A, B], [A, B, C], [B, C], [X]):
        state = walk(g, prefix)[2]
        row = g.token_deltas(state)
        assert row.shape == (10,)
        for t in range(10):
            assert row[t] == pytest.approx(g.forward_one_step(state, t)[0])


def test_empty_graph():
    g = ContextGraph([])
    assert g.is_empty
    assert g.forward_one_step(g.root, A)[:2] == (0.0, ROOT)
    assert not ContextGraph([(A,)]).is_empty


phrase_lists = st.lists(st.lists(st.integers(2, 5), min_size=1, max_size=4), min_size=1,
                        max_size=4)


@settings(max_examples=200, deadline=None)
@given(phrase_lists, st.lists(st.integers(2, 6), max_size=14))
def test_final_bias_is_bonus_times_tokens_inside_complete_phrases(phrases, tokens):
    g = ContextGraph(phrases, bonus=1.0)
    inside = set()
    for p in phrases:
        for i in range(len(tokens) - len(p) + 1):
            if tokens[i : i + len(p)] == p:
                inside.update(range(i, i + len(p)))
    deltas, _, state = walk(g, tokens)
    assert min(np.cumsum([0.0] + deltas)) >= -1e-9  # never below zero on the way
    assert sum(deltas) + g.finalize(state) == pytest.approx(len(inside))


# --- slot paths: a contact right after a carrier word --------------------------------------

K = 7  # a carrier word's token ("call")


def test_a_contact_after_a_carrier_earns_the_slot_bonus():
    g = ContextGraph([Phrase((A, B), kind="contacts")], bonus=1.5, slots=[(K,)], slot_bonus=2.0)
    deltas, matches, state = walk(g, [K, A, B])
    assert deltas == [0.0, 2.0, 2.0]
    assert matches[-1] == (A, B)  # the contact, not carrier + contact
    assert g.finalize(state) == 0.0
    assert total(g, [X, A, B]) == 3.0  # elsewhere the plain bonus


def test_a_broken_off_slot_match_gives_back_what_it_earned():
    g = ContextGraph([Phrase((A, B, C), kind="contacts")], bonus=1.5, slots=[(K,)], slot_bonus=2.0)
    deltas, _, state = walk(g, [K, A, B, X])
    assert deltas == [0.0, 2.0, 2.0, -4.0] and state == ROOT
    assert total(g, [K, A, B]) == 0.0
    # Falling back onto the plain path mid-way: "call A A B C" says the name after "A".
    assert total(g, [K, A, A, B, C]) == pytest.approx(4.5)


def test_only_slot_phrases_get_slot_paths():
    device = Phrase((A, B))
    g = ContextGraph([device], bonus=1.5, slots=[(K,)], slot_bonus=3.0)
    assert total(g, [K, A, B]) == 3.0
    assert g.num_nodes == ContextGraph([device], bonus=1.5).num_nodes


def test_the_slot_bonus_falls_with_the_log_of_the_contact_count():
    from edge_asr.daemon.recognition.context_graph import LARGE_LIST, SHORT_LIST, slot_bonus_for

    assert slot_bonus_for(1, 3.0, 2.0, 1.5) == slot_bonus_for(SHORT_LIST, 3.0, 2.0, 1.5) == 3.0
    assert slot_bonus_for(LARGE_LIST, 3.0, 2.0, 1.5) == pytest.approx(2.0)
    # halfway in log terms: 100 contacts, between 25 and 400
    assert slot_bonus_for(100, 3.0, 2.0, 1.5) == pytest.approx(2.5)
    assert slot_bonus_for(1400, 3.0, 2.0, 1.5) == pytest.approx(1.5482, abs=1e-3)
    assert slot_bonus_for(100_000, 3.0, 2.0, 1.5) == 1.5  # never below the plain bonus


def _inside(phrase: tuple, phrases: list) -> bool:
    n = len(phrase)
    return any(q != phrase and any(q[i : i + n] == phrase for i in range(len(q) - n + 1))
               for q in phrases)


@settings(max_examples=300, deadline=None)
@given(phrase_lists, st.lists(st.sampled_from([2, 3, 4, 5, 6, K]), max_size=14))
def test_final_bias_counts_slot_tokens_at_the_slot_bonus(phrases, tokens):
    """The bias left at the end is the plain bonus for each token inside a completed phrase,
    the slot bonus where the occurrence follows the carrier. Exact when no phrase lies inside
    another; otherwise a token is valued by the path it was on when first completed, so the
    total stays between the two bonuses' counts."""
    phrases = [tuple(p) for p in phrases]
    g = ContextGraph([Phrase(p, kind="contacts") for p in phrases], bonus=1.0, slots=[(K,)],
                     slot_bonus=2.0)
    earned = [0.0] * len(tokens)
    for p in phrases:
        for i in range(len(tokens) - len(p) + 1):
            if tuple(tokens[i : i + len(p)]) == p:
                per = 2.0 if i > 0 and tokens[i - 1] == K else 1.0
                for j in range(i, i + len(p)):
                    earned[j] = max(earned[j], per)
    deltas, _, state = walk(g, tokens)
    final = sum(deltas) + g.finalize(state)
    assert min(np.cumsum([0.0] + deltas)) >= -1e-9
    if not any(_inside(p, phrases) for p in phrases):
        assert final == pytest.approx(sum(earned))
    inside = sum(1 for e in earned if e)
    assert inside - 1e-9 <= final <= 2.0 * inside + 1e-9


# --- building from display forms ----------------------------------------------------------

SENTENCES = [
    "call zoe o'brien now", "turn on the lava lamp", "play some music please",
    "set a timer for ten minutes", "call ananya krishnamurthy", "what is the weather like today",
    "turn off grandma's heater", "quick brown fox jumps over the lazy dog",
    "xochitl and zbigniew visit oluwaseun", "siobhan and nguyen went home",
] * 12  # sentencepiece wants more than 100 sentences
VOCAB = 48


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Path:
    return train_tokenizer(SENTENCES, tmp_path_factory.mktemp("bpe"), vocab_size=VOCAB)


@pytest.fixture(scope="module")
def sp(bpe) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(bpe))


def test_entries_are_normalised_then_encoded(sp, bpe):
    g = build_context_graph(["Zoë O'Brien", "the Lava-Lamp"], bpe, bonus=2.0)
    assert [p.tokens for p in g.phrases] == [tuple(sp.encode("zoe o'brien")),
                                              tuple(sp.encode("the lava lamp"))]
    assert [p.text for p in g.phrases] == ["Zoë O'Brien", "the Lava-Lamp"]
    assert g.vocab_size == VOCAB
    deltas, matches, _ = walk(g, list(g.phrases[0].tokens))
    assert deltas == [2.0] * len(deltas) and matches[-1] == g.phrases[0].tokens


def test_duplicates_merge_silently(sp):
    g = build_context_graph(["Zoë O'Brien", "zoe o'brien", "ZOE O\u2019BRIEN", "Ziggy"], sp)
    assert [p.text for p in g.phrases] == ["Zoë O'Brien", "Ziggy"]


def test_empty_context_builds_an_empty_graph(sp):
    assert build_context_graph([], sp).is_empty
    assert build_context_graph({"contacts": []}, sp).is_empty


@pytest.mark.parametrize("entries, message", [
    (["Ziggy", 42], "entry 1 42 is not a string"),
    (["Ziggy", "?!"], "entry 1 '?!' is empty after normalisation"),
    (["x" * 101], "longer than 100 characters"),
    ([" ".join(["word"] * 13)], "longer than 12 words"),
    (["Ziggy"] * 1401, "1401 entries, at most 1400"),
    ("Ziggy", "must be a list of strings, not str"),
    ({"contacts": "Ziggy"}, "'contacts' must be a list of strings"),
    ({"friends": ["Ziggy"]}, "unknown context kind(s) 'friends'"),
    ({"devices": ["the lava lamp", None]}, "devices[1] None is not a string"),
    ({"contacts": ["Ziggy"] * 1001}, "1001 contacts, at most 1000"),
    ({"devices": ["Ziggy"] * 201}, "201 devices, at most 200"),
    ({"phrases": ["Ziggy"] * 201}, "201 phrases, at most 200"),
])
def test_bad_contexts_are_named(sp, entries, message):
    with pytest.raises(ContextError) as err:
        build_context_graph(entries, sp)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_only_contacts_fill_the_carriers_slots(sp):
    builder = ContextBuilder(sp, bonus=1.5, slot_words=["call"], slot_bonus=2.5)
    call, name = sp.encode("call"), sp.encode("ziggy")
    by_kind = builder.build({"contacts": ["Ziggy"], "devices": ["the lava lamp"]})
    assert total(by_kind, call + name) == pytest.approx(2.5 * len(name))
    lamp = sp.encode("the lava lamp")
    assert total(by_kind, call + lamp) == pytest.approx(1.5 * len(lamp))
    # A flat list says nothing of kinds: every entry is judged the same, everywhere.
    flat = builder.build(["Ziggy", "the lava lamp"])
    assert total(flat, call + name) == pytest.approx(1.5 * len(name))
    # A name given as a device and as a contact is a contact.
    both = builder.build({"contacts": ["Ziggy"], "devices": ["ziggy"]})
    assert [p.slot for p in both.phrases] == [True]
    # A slot bonus no larger than the plain one adds no paths.
    plain = ContextBuilder(sp, bonus=1.5, slot_words=["call"], slot_bonus=1.5)
    assert plain.build({"contacts": ["Ziggy"]}).num_nodes == len(name) + 1


def test_a_longer_contact_list_gets_a_smaller_slot_bonus(sp):
    builder = ContextBuilder(sp, bonus=1.5, slot_words=["call"], slot_bonus=3.0,
                             slot_bonus_large=2.0)
    names = [f"name {chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(400)]
    call, first = sp.encode("call"), sp.encode(names[0])
    short = builder.build({"contacts": names[:25], "devices": ["the lava lamp"] * 3})
    assert total(short, call + first) == pytest.approx(3.0 * len(first))
    long = builder.build({"contacts": names, "devices": ["the lava lamp"]})
    assert total(long, call + first) == pytest.approx(2.0 * len(first))
    # devices do not count: only contacts fill the slots
    assert builder.build({"contacts": names[:25], "devices": names[25:200]}).slot_bonus == 3.0
    # so long a list that the slot bonus falls to the plain one: no slot paths at all
    huge = ContextBuilder(sp, bonus=1.5, slot_words=["call"], slot_bonus=3.0,
                          slot_bonus_large=1.5).build({"contacts": names})
    assert huge.num_nodes == builder.build(names).num_nodes


def test_limits_allow_a_full_context(sp):
    names = [f"name {chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(1000)]
    g = build_context_graph({"contacts": names, "devices": ["the lava lamp"] * 200,
                             "phrases": ["Ziggy"] * 200}, sp)
    assert len(g.phrases) == 26 * 26 + 2  # the contacts repeat after 676 names
    build_context_graph(["Ziggy"] * 1400, sp)


# --- the beam search with a context, on a small random model ------------------------------

PHRASE = "quick brown fox"


@pytest.fixture(scope="module")
def model_dir(bpe, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, rnn_hidden_size=48, decoder_dim=32,
                      joiner_dim=32, subsampling_channels=8)
    out = tmp_path_factory.mktemp("model")
    export_onnx(Transducer(cfg).eval(), bpe.parent / "tokens.txt", out)
    assert (out / "bpe.model").is_file()  # the export carries it beside tokens.txt
    return out


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    # Noise with a syllable-rate envelope: the VAD's noise gate (daemon/frontend/vad.py) would
    # rightly call steady noise silence, and the pipeline would then decode nothing.
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 2) / 16000
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (rng.standard_normal(t.size) * 0.1 * envelope).astype(np.float32)


def decode(recognizer: Recognizer, audio: np.ndarray, context=None):
    stream = recognizer.create_stream(context=context)
    stream.accept_waveform(16000, audio[:16000])
    recognizer.decode(stream)
    stream.accept_waveform(16000, audio[16000:])
    stream.input_finished()
    recognizer.decode(stream)
    recognizer.decode(stream)  # a second call finalizes nothing twice
    return recognizer.result(stream)


def occurrences(tokens: list[int], phrase: list[int]) -> int:
    return sum(tokens[i : i + len(phrase)] == phrase for i in range(len(tokens)))


def test_context_boosts_a_phrase_the_model_scores_low(model_dir, audio, sp):
    # beam 4 with and without the context, so that the two searches compare like for like
    rec = Recognizer(no_lm(model_dir=model_dir, beam=4, context_bonus=1.5, context_beam=0))
    phrase = sp.encode(PHRASE)
    plain = decode(rec, audio)
    assert plain.nbest_bias == [0.0] * len(plain.nbest)
    boosted = decode(rec, audio, context=[PHRASE, "Ziggy"])
    assert occurrences(plain.tokens, phrase) == 0
    assert occurrences(boosted.tokens, phrase) >= 1
    # The kept bonus is exactly the bonus of the phrase tokens it contains, once final.
    assert boosted.nbest_bias[0] == pytest.approx(
        1.5 * len(phrase) * occurrences(boosted.tokens, phrase))
    # Ranked by acoustic log-prob plus bias; the acoustic part alone is lower than without.
    assert boosted.nbest_log_probs[0] <= plain.nbest_log_probs[0]
    scores = [lp + b for lp, b in zip(boosted.nbest_log_probs, boosted.nbest_bias, strict=True)]
    assert scores == sorted(scores, reverse=True)


def test_empty_context_decodes_exactly_as_none(model_dir, audio):
    rec = Recognizer(no_lm(model_dir=model_dir))
    plain = decode(rec, audio)
    for context in ([], {"contacts": [], "devices": []}):
        same = decode(rec, audio, context=context)
        assert (same.tokens, same.nbest, same.nbest_log_probs) == (
            plain.tokens, plain.nbest, plain.nbest_log_probs)


def test_a_context_widens_the_beam_to_context_beam(model_dir, sp):
    rec = Recognizer(no_lm(model_dir=model_dir, beam=4, context_beam=8))
    graph = rec.context_graph([PHRASE])
    assert rec.new_search(graph).beam == 8
    assert rec.new_search(None).beam == 4
    assert rec.new_search(rec.context_graph([])).beam == 4  # an empty context is none
    # context_beam is a floor, never a cap; 0 turns it off
    assert Recognizer(no_lm(model_dir=model_dir, beam=12, context_beam=8),
                      model=rec.model).new_search(graph).beam == 12
    assert Recognizer(no_lm(model_dir=model_dir, beam=4, context_beam=0),
                      model=rec.model).new_search(graph).beam == 4
    with pytest.raises(ValueError, match="context_beam"):
        Recognizer(no_lm(model_dir=model_dir, context_beam=-1), model=rec.model)


def test_greedy_search_ignores_the_context(model_dir, audio):
    rec = Recognizer(no_lm(model_dir=model_dir, decoding_method="greedy_search"))
    assert decode(rec, audio, context=[PHRASE]).tokens == decode(rec, audio).tokens
    with pytest.raises(ContextError):  # its shape is still checked
        rec.create_stream(context=[3])


def test_graphs_are_cached_by_content(model_dir):
    rec = Recognizer(no_lm(model_dir=model_dir))
    first = rec.context_graph(["Ziggy", PHRASE])
    assert rec.context_graph(["Ziggy", PHRASE]) is first
    assert rec.context_graph([PHRASE, "Ziggy"]) is not first
    with pytest.raises(ContextError, match="empty after normalisation"):
        rec.create_stream(context=["..."])


def _names(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out = []
    for _ in range(n):
        word = "".join(rng.choice(letters, length - 1))
        out.append(f"{word[: length // 2]} {word[length // 2:]}")
    return out


def test_a_context_is_bounded_in_characters_not_only_entries(model_dir):
    rec = Recognizer(no_lm(model_dir=model_dir))
    with pytest.raises(ContextError, match="characters in all, at most 16000"):
        rec.create_stream(context={"contacts": _names(1000, 100, 0)})
    rec.create_stream(context={"contacts": _names(1000, 16, 0)})  # a large real address book


def test_the_graph_cache_is_bounded_by_its_size(model_dir):
    """Clients sending ever new large lists must not grow the daemon's memory without bound:
    the cache evicts by total trie nodes, not only by count."""
    rec = Recognizer(no_lm(model_dir=model_dir))
    for seed in range(6):
        rec.context_graph({"contacts": _names(1000, 16, seed)})
    assert 1 <= len(rec._contexts) < 6
    assert sum(g.num_nodes for g in rec._contexts.values()) <= CONTEXT_CACHE_NODES


def test_missing_bpe_model_is_a_model_error(model_dir, tmp_path):
    for path in model_dir.iterdir():
        if path.name != "bpe.model":
            shutil.copy(path, tmp_path / path.name)
    rec = Recognizer(no_lm(model_dir=tmp_path))
    rec.create_stream()  # without a context it is not needed
    with pytest.raises(ModelError, match="no bpe.model"):
        rec.create_stream(context=["Ziggy"])


def test_eval_uses_the_manifest_context_unless_told_not_to(model_dir, audio, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", audio, 16000, subtype="FLOAT")
    write_manifest(tmp_path / "m.jsonl", [
        {"audio_filepath": "a.wav", "text": PHRASE, "context": [PHRASE]},
        {"audio_filepath": "a.wav", "text": PHRASE},
        {"audio_filepath": "a.wav", "text": PHRASE, "context": ["!!!"]},
        {"audio_filepath": "a.wav", "text": PHRASE, "context": {"contacts": [PHRASE]}},
    ])
    # An untrained model: only a strong bonus makes the context audible in its output.
    rec = Recognizer(no_lm(model_dir=model_dir, context_bonus=1.5))
    for use_context in (True, False):
        out = tmp_path / f"out-{use_context}.jsonl"
        summary = evaluate(rec, tmp_path / "m.jsonl", out, use_context=use_context)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        if use_context:  # the unusable context is reported and its utterance skipped
            assert summary.errors == 1 and "empty after normalisation" in capsys.readouterr().out
            assert [r["context_used"] for r in rows] == [True, False, True]
            assert PHRASE in rows[0]["hypothesis"] and PHRASE not in rows[1]["hypothesis"]
            assert PHRASE in rows[2]["hypothesis"]  # a context by kind, as SetContext's
        else:
            assert summary.errors == 0
            assert [r["context_used"] for r in rows] == [False] * 4
            assert all(PHRASE not in r["hypothesis"] for r in rows)
        assert rows[-1]["context_names"] == [PHRASE]


def test_context_by_kind_reads_a_flat_list_as_contacts():
    assert context_by_kind(["Ingrid Olsen", "Kitchen Lamp"]) == {
        "contacts": ["Ingrid Olsen", "Kitchen Lamp"]}
    by_kind = {"contacts": ("Ingrid Olsen",), "devices": ["Kitchen Lamp"]}
    assert context_by_kind(by_kind) == {"contacts": ["Ingrid Olsen"],
                                        "devices": ["Kitchen Lamp"]}
    assert context_by_kind([]) == {} and context_by_kind(None) == {}
