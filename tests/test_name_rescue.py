"""The second pass of contextual biasing (daemon/recognition/name_rescue.py): which spans it
proposes to replace, that its score is the transducer's likelihood, and that it puts back a name the
audio supports, and only such a name, through to the pipeline's events."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.driver import run_pipeline
from edge_asr.daemon.pipeline import EventType, Pipeline
from edge_asr.daemon.recognition import name_rescue
from edge_asr.daemon.recognition.name_rescue import (
    ContextPhrase,
    SlotBonus,
    align,
    propose,
    rescue,
    sound_key,
)
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.search import Hypothesis, log_softmax
from edge_asr.daemon.recognition.transducer import TransducerModel
from edge_asr.daemon.uplink.lattice_paths import paths

DATA = Path(__file__).parent / "data"
CLIP = DATA / "clip07.flac"  # "get yasaman grigoriev on the phone"
NAME = "yasaman grigoriev"

needs_shipped = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model_card.json").is_file(),
                                   reason="needs the shipped model")


def test_sound_key_hears_spellings_alike_and_words_apart():
    assert sound_key("camila aksoy") == sound_key("kamalaxi")
    assert sound_key("philip") == sound_key("filip")
    assert sound_key("cecil") == sound_key("sesil")
    assert sound_key("bathroom") != sound_key("blackout")


def test_a_misheard_span_is_proposed_to_be_replaced_by_the_close_name():
    words = "when did terranek call".split()
    got = propose(words, ["william lewis", "taraneh", "the spa"], 0.4, 10)
    assert got and got[0].words == ("when", "did", "taraneh", "call")
    assert all(c.phrase == 1 for c in got)  # nothing sounds like the other two


def test_names_already_heard_and_words_shared_with_a_phrase_propose_nothing():
    assert propose("call taraneh now".split(), ["taraneh"], 0.4, 10) == []
    # A phrase that is said is not overwritten by another that sounds like part of it.
    assert propose("start the sauna heater".split(), ["the sauna heater", "the sunroof"],
                   0.4, 10) == []
    # "curtains" is in both; "bathroom" is far from "blackout" on its own.
    assert propose("open the bathroom curtains".split(), ["the blackout curtains"], 0.4,
                   10) == []


def test_a_number_is_never_replaced_by_a_name_however_alike_they_sound():
    """ "call" takes a number as well as a name: a number word with another in the span
    or beside it is part of a number."""
    words = "so call one one eight seven on speaker".split()
    assert propose(words, ["won won ate"], 0.4, 10) == []
    assert propose("dial seven nine three".split(), ["sven"], 0.4, 10) == []
    assert propose("set the volume to ninety five percent".split(), ["nina tyfive"], 0.4,
                   10) == []
    assert propose("phone yang four seven zero".split(), ["yan"], 0.4, 10) == []
    # One number word alone may still be a misheard name.
    found = propose("so call one mate on speaker".split(), ["won mate"], 0.4, 10)
    assert found and found[0].words == tuple("so call won mate on speaker".split())


def test_a_span_is_at_most_one_word_longer_than_the_phrase_and_the_limit_holds():
    words = "call ta ra neh now".split()
    assert all(len(c.words) >= len(words) - 1 for c in propose(words, ["taraneh"], 0.6, 50))
    assert len(propose("a b c d e".split(), ["q r", "s t", "u w", "m n"], 1.0, 3)) == 3


def _brute_force_log_prob(model: TransducerModel, enc: np.ndarray, tokens: list[int]) -> float:
    """logsumexp over every RNN-T alignment: each token goes out at some frame (frames
    non-decreasing), each frame ends with a blank."""
    k = model.info.context_size
    history = [-1] * (k - 1) + [model.info.blank_id] + tokens
    dec = model.run_decoder(np.array([history[u:u + k] for u in range(len(tokens) + 1)],
                                     np.int64))
    logp = np.stack([log_softmax(model.run_joiner(np.repeat(enc[t:t + 1], len(dec), 0), dec))
                     for t in range(len(enc))])  # (T, U+1, V)
    scores = []
    for frames in itertools.combinations_with_replacement(range(len(enc)), len(tokens)):
        total, u = 0.0, 0
        for t in range(len(enc)):
            while u < len(tokens) and frames[u] == t:
                total += logp[t, u, tokens[u]]
                u += 1
            total += logp[t, u, model.info.blank_id]
        scores.append(total)
    return float(np.logaddexp.reduce(scores))


def _joiner_dim(model: TransducerModel) -> int:
    return model.joiner.get_inputs()[0].shape[1]


def test_the_score_is_the_transducer_forward_sum(tiny_model_dir):
    model = TransducerModel(tiny_model_dir)
    rng = np.random.default_rng(0)
    enc = rng.standard_normal((4, _joiner_dim(model))).astype(np.float32)
    for tokens in ([], [5], [3, 9, 3]):
        got = align(model, enc, tokens)
        assert got.log_prob == pytest.approx(_brute_force_log_prob(model, enc, tokens),
                                             abs=1e-4)
        assert list(got.frames) == sorted(got.frames) and len(got.frames) == len(tokens)


def test_a_candidate_aligned_on_the_hypothesis_columns_scores_as_if_aligned_alone(
        tiny_model_dir):
    model = TransducerModel(tiny_model_dir)
    rng = np.random.default_rng(1)
    enc = rng.standard_normal((30, _joiner_dim(model))).astype(np.float32)
    for _ in range(20):
        base = [int(t) for t in rng.integers(1, 20, rng.integers(0, 10))]
        i = int(rng.integers(0, len(base) + 1))
        j = int(rng.integers(i, len(base) + 1))
        cand = base[:i] + [int(t) for t in rng.integers(1, 20, rng.integers(0, 4))] + base[j:]
        alone = align(model, enc, cand)
        reused = align(model, enc, cand, reuse=align(model, enc, base))
        assert reused.log_prob == pytest.approx(alone.log_prob, abs=1e-4), (base, cand)
        assert reused.frames == alone.frames


def test_the_joiner_in_blocks_of_frames_scores_as_in_one_call(tiny_model_dir, monkeypatch):
    """align bounds the joiner's rows per call (the runtime keeps its largest call's
    memory); the blocks must not change a score or a frame."""
    model = TransducerModel(tiny_model_dir)
    rng = np.random.default_rng(2)
    enc = rng.standard_normal((37, _joiner_dim(model))).astype(np.float32)
    tokens = [int(t) for t in rng.integers(1, 20, 9)]
    monkeypatch.setattr(name_rescue, "JOINER_ROWS", 10**6)
    whole = align(model, enc, tokens)
    for rows in (1, 7, 64):  # one frame a call, blocks not dividing T, a few frames a call
        monkeypatch.setattr(name_rescue, "JOINER_ROWS", rows)
        got = align(model, enc, tokens)
        assert got.log_prob == pytest.approx(whole.log_prob, abs=1e-5)
        assert got.frames == whole.frames


@pytest.fixture(scope="module")
def heard():
    """The shipped model on the clip, with a context: its encoder frames and spelling."""
    recognizer = Recognizer(RecognizerConfig(name_rescue=False))
    stream = recognizer.create_stream(context=["Yasaman Grigoriev", "the mudroom door"])
    stream.accept_waveform(16000, read_audio(CLIP))
    stream.input_finished()
    recognizer.decode(stream)
    sp = recognizer._builder().sp

    def phrases(*names: str) -> list[ContextPhrase]:
        return [ContextPhrase(n, tuple(sp.encode(n)), 1.5) for n in names]

    return recognizer, stream, sp, phrases


@needs_shipped
def test_a_name_the_audio_supports_is_put_back(heard):
    recognizer, stream, sp, phrases = heard
    garbled = Hypothesis(tuple(sp.encode("get yasmin grigori on the phone")))
    found = rescue(recognizer.model, stream.search.encoder_out, garbled,
                   phrases(NAME, "the mudroom door"), sp.encode)
    assert found is not None
    hyp, phrase = found
    assert recognizer.model.detokenize(list(hyp.tokens)) == f"get {NAME} on the phone"
    assert phrase.text == NAME and hyp.bias == pytest.approx(1.5 * len(phrase.tokens))
    assert list(hyp.timestamps) == sorted(hyp.timestamps)
    assert hyp.timestamps[-1] < stream.search.encoder_out.shape[0]


@needs_shipped
def test_a_name_the_audio_does_not_support_is_not_put_in(heard):
    recognizer, stream, sp, phrases = heard
    right = Hypothesis(tuple(sp.encode(f"get {NAME} on the phone")))
    # Contacts that sound a little like what was said, but are not what was said. (One
    # spelled within a letter or two of it, "yasaman gregory", is taken for it, as shallow
    # fusion would take it: see the module's docstring.)
    for other in ("yasmin gray", "jasmine grigg", "samantha grey", "yasuo gris"):
        assert rescue(recognizer.model, stream.search.encoder_out, right,
                      phrases(other, "the mudroom door"), sp.encode) is None, other
    garbled = Hypothesis(tuple(sp.encode("get yasmin grigori on the phone")))
    assert rescue(recognizer.model, stream.search.encoder_out, garbled,
                  phrases("the mudroom door"), sp.encode) is None


@needs_shipped
def test_the_rescued_hypothesis_leads_the_nbest_until_the_next_frame(heard):
    recognizer, stream, sp, _ = heard
    search = stream.search
    garbled = Hypothesis(tuple(sp.encode("get yasmin grigori on the phone")))
    own = search.hyps
    search.hyps = [garbled]
    try:
        Recognizer(RecognizerConfig()).rescue_names(stream)
        assert recognizer.result(stream).text == f"get {NAME} on the phone"
        assert search.ranked[0] is garbled  # what the end-pointer compares stays the beam's
        search.frame_offset += 1  # another frame decoded: the beam speaks again
        assert recognizer.result(stream).text == "get yasmin grigori on the phone"
    finally:
        search.hyps, search.frame_offset = own, search.frame_offset - 1
        search.lead_with(None)


@needs_shipped
def test_the_events_carry_the_rescued_text_and_the_beam_still_confirms(monkeypatch):
    """Events of an utterance whose rescue changes the text: the speculative end-point and
    its lattice carry the rescued text, and CONFIRMED still follows (the end-pointer
    compares the beam's own best texts, which did not change)."""
    recognizer = Recognizer(RecognizerConfig())
    row = next(json.loads(x) for x in (DATA / "manifest.jsonl").open()
               if x and json.loads(x)["audio_filepath"] == CLIP.name)
    sp = recognizer._builder().sp
    target = tuple(sp.encode(f"get {NAME} on the phone and more"))
    calls = []

    def rescue_for_test(model, encoder_out, hyp, phrases, encode, *args):
        calls.append(hyp.tokens)
        return Hypothesis(target, hyp.log_prob, tuple(range(len(target))),
                          trace=tuple((hyp.log_prob, 0.0, 0.0) for _ in target)), phrases[0]

    monkeypatch.setattr("edge_asr.daemon.recognition.recognizer.rescue", rescue_for_test)
    pipeline = Pipeline(recognizer)
    pipeline.set_context(row["context"])
    events = run_pipeline(pipeline, read_audio(CLIP))
    types = [e.type for e in events if e.type is not EventType.PARTIAL]
    assert types == [EventType.SPEECH_STARTED, EventType.SPECULATIVE_ENDPOINT,
                     EventType.CONFIRMED]
    spec = next(e for e in events if e.type is EventType.SPECULATIVE_ENDPOINT)
    done = next(e for e in events if e.type is EventType.CONFIRMED)
    wanted = f"get {NAME} on the phone and more"
    assert spec.text == done.text == wanted
    assert spec.nbest[0][0] == wanted
    assert wanted in [" ".join(w.word for w in p.words) for p in paths(spec.lattice, 100)]
    assert calls  # and without a context there is nothing to rescue:
    calls.clear()
    run_pipeline(Pipeline(recognizer), read_audio(CLIP))
    assert calls == []


def test_a_lattice_path_keeps_the_bonus_only_of_phrases_it_says_as_whole_words():
    from edge_asr.daemon.recognition.name_rescue import whole_word_bias
    from edge_asr.daemon.uplink.lattice import Path as LatticePath
    from edge_asr.daemon.uplink.lattice import WordArc

    def path(text: str) -> LatticePath:  # as the beam left it: the bonus on every word
        return LatticePath([WordArc(w, i, i + 1, -1.0, 2.0)
                            for i, w in enumerate(text.split())])

    phrases = [ContextPhrase("ramesh lebedev", (7, 8, 9), 1.5),
               ContextPhrase("the spa", (3, 4), 1.5)]
    said, went_on, twice = whole_word_bias(
        [path("read from ramesh lebedev and the spa"), path("read from ramesh lebedevri"),
         path("the spa the spa")], phrases)
    assert [w.bias for w in said.words] == [0, 0, 0, 4.5, 0, 0, 3.0]
    assert said.acoustic == -7.0  # only the bias is rebooked
    # The phrase's tokens were all emitted, but the word went on: no bonus.
    assert went_on.bias == 0.0
    assert twice.bias == 6.0


@needs_shipped
def test_a_name_close_only_to_a_lower_hypothesis_of_the_nbest_is_found_too(heard):
    recognizer, stream, sp, phrases = heard
    best = Hypothesis(tuple(sp.encode("get jasmine on the phone")))
    second = Hypothesis(tuple(sp.encode("get yasmin grigori on the phone")))
    context = phrases(NAME, "the mudroom door")
    enc = stream.search.encoder_out
    assert rescue(recognizer.model, enc, best, context, sp.encode) is None
    found = rescue(recognizer.model, enc, best, context, sp.encode, others=[second])
    assert found is not None
    assert recognizer.model.detokenize(list(found[0].tokens)) == f"get {NAME} on the phone"


@needs_shipped
def test_a_shorter_path_holding_a_name_the_best_already_says_is_not_taken(heard):
    """Both sides are judged with the bonus of the phrases they say: a lower path of the
    n-best that lost the last word must not win by a bonus the best holds too."""
    recognizer, stream, sp, _ = heard
    enc = stream.search.encoder_out
    best = Hypothesis(tuple(sp.encode(f"get {NAME} on the phone")))
    shorter = Hypothesis(tuple(sp.encode("get yasmin grigori on the")))
    tokens = tuple(sp.encode(NAME))
    deficit = align(recognizer.model, enc, best.tokens).log_prob - \
        align(recognizer.model, enc, sp.encode(f"get {NAME} on the")).log_prob
    assert deficit > 0
    # A bonus larger than what dropping "phone" costs: given to the candidate alone, the
    # candidate would win.
    name = ContextPhrase(NAME, tokens, deficit / len(tokens) + 1.0)
    assert rescue(recognizer.model, enc, best, [name], sp.encode, others=[shorter]) is None


def test_the_slot_bonus_counts_only_right_after_a_carrier_word():
    slots = SlotBonus(frozenset({"call", "from"}), 3.0)
    name = ContextPhrase("taraneh", (5, 6), 1.5)
    assert slots.per_token("call taraneh now".split(), 1, name) == 3.0
    assert slots.per_token("messages from taraneh".split(), 2, name) == 3.0
    assert slots.per_token("taraneh called".split(), 0, name) == 1.5  # nothing before it
    assert slots.per_token("is taraneh home".split(), 1, name) == 1.5
    # A phrase whose own bonus is larger keeps it.
    assert slots.per_token("call taraneh".split(), 1, ContextPhrase("taraneh", (5,), 4.0)) == 4.0
    # A device is no name the grammar expects after "call".
    heater = ContextPhrase("grandma's heater", (7, 8), 1.5, slot=False)
    assert slots.per_token("call grandma's heater".split(), 1, heater) == 1.5


@needs_shipped
def test_the_rescue_gives_the_slot_bonus_to_contacts_and_to_lists_without_kinds():
    recognizer = Recognizer(RecognizerConfig())
    by_kind = recognizer.create_stream({"contacts": ["Taraneh"], "devices": ["the spa"],
                                        "phrases": ["road trip"]})
    assert {p.text: p.slot for p in recognizer.context_phrases(by_kind)} == {
        "taraneh": True, "the spa": False, "road trip": False}
    flat = recognizer.create_stream(["Taraneh", "the spa"])
    assert all(p.slot for p in recognizer.context_phrases(flat))


@needs_shipped
def test_a_name_after_a_carrier_word_is_judged_with_the_slot_bonus(heard):
    """The same candidate, the same audio: put in with a slot bonus that covers its
    deficit when the word before it ("get") is a carrier, left out when it is not."""
    recognizer, stream, sp, phrases = heard
    enc = stream.search.encoder_out
    right = Hypothesis(tuple(sp.encode(f"get {NAME} on the phone")))
    other = phrases("samantha grey")
    assert rescue(recognizer.model, enc, right, other, sp.encode) is None
    wrong = sp.encode("get samantha grey on the phone")
    deficit = align(recognizer.model, enc, right.tokens).log_prob - \
        align(recognizer.model, enc, wrong).log_prob
    assert deficit > 1.5 * len(other[0].tokens)
    covering = deficit / len(other[0].tokens) + 0.5
    found = rescue(recognizer.model, enc, right, other, sp.encode,
                   slots=SlotBonus(frozenset({"get"}), covering))
    assert found is not None
    assert recognizer.model.detokenize(list(found[0].tokens)) == "get samantha grey on the phone"
    assert found[0].bias == pytest.approx(covering * len(other[0].tokens))
    assert rescue(recognizer.model, enc, right, other, sp.encode,
                  slots=SlotBonus(frozenset({"call"}), covering)) is None


def test_a_lattice_path_books_the_slot_bonus_after_a_carrier_word():
    from edge_asr.daemon.recognition.name_rescue import whole_word_bias
    from edge_asr.daemon.uplink.lattice import Path as LatticePath
    from edge_asr.daemon.uplink.lattice import WordArc

    def path(text: str) -> LatticePath:
        return LatticePath([WordArc(w, i, i + 1, -1.0, 0.0) for i, w in enumerate(text.split())])

    phrases = [ContextPhrase("ramesh lebedev", (7, 8, 9), 1.5)]
    slots = SlotBonus(frozenset({"call"}), 3.0)
    after, alone = whole_word_bias([path("call ramesh lebedev"), path("ramesh lebedev called")],
                                   phrases, slots)
    assert after.bias == 9.0 and alone.bias == 4.5


@pytest.mark.parametrize("bad", [{"rescue_distance": 1.5}, {"rescue_distance": -0.1},
                                 {"rescue_candidates": -1}, {"rescue_nbest": 0},
                                 {"rescue_slot_bonus": -1.0}, {"context_slot_bonus": -0.5},
                                 {"context_slot_bonus_large": -0.1}, {"slot_words": "call"},
                                 {"slot_words": ["call", ""]}])
def test_rescue_settings_out_of_range_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Recognizer(RecognizerConfig(**bad))
