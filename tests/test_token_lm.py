"""The device LM: its scores, its name class, its place in the beam search, bad files."""

import json
import shutil

import numpy as np
import pytest

from edge_asr.daemon.recognition.backoff_tables import BackoffTables
from edge_asr.daemon.recognition.ngram_arpa import load_arpa, save_arpa
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.search import ModifiedBeamSearch
from edge_asr.daemon.recognition.token_lm import (
    CONTACT,
    LM_FILE,
    NAMES_FILE,
    TABLES_FILE,
    TokenLM,
)
from edge_asr.daemon.recognition.transducer import ModelError, sha256_of
from edge_asr.models.ngram_train import NgramOptions, train_ngram

PIECES = ["<blk>", "<unk>", "▁call", "▁now", "▁turn", "▁on", "▁the", "▁lamp",
          "▁a", "n", "▁b", "o"]


def _words_lm(order: int = 3):
    sentences = [["▁call", CONTACT, "▁now"]] * 6 + [["▁turn", "▁on", "▁the", "▁lamp"]] * 4
    return train_ngram(sentences, NgramOptions(order=order))


def _names_lm():
    return train_ngram([["▁a", "n", "n"], ["▁b", "o", "b"]] * 3, NgramOptions(order=2))


def _chain(lm: TokenLM, tokens: list[int]) -> tuple[float, object]:
    state, total = lm.start(), 0.0
    for t in tokens:
        total += float(lm.token_logprobs(state)[t])
        state = lm.advance(state, t)
    return total + lm.end_logprob(state), state


def test_token_scores_are_the_ngram_models_own():
    """The whole-vocabulary vectors (back-off by arrays) give what the n-gram model gives
    word by word, for seen n-grams and backed-off ones alike."""
    sentences = [["▁turn", "▁on", "▁the", "▁lamp"], ["▁turn", "▁the", "▁lamp", "▁on"],
                 ["▁call", "▁a", "n", "▁now"]] * 3
    ngram = train_ngram(sentences, NgramOptions(order=3))
    lm = TokenLM(ngram, PIECES)
    for words in (["▁turn", "▁on", "▁the", "▁lamp"], ["▁lamp", "▁call", "▁on", "n"]):
        total, _ = _chain(lm, [PIECES.index(w) for w in words])
        assert total == pytest.approx(ngram.sentence_logprob(words), abs=1e-4)


def test_a_name_is_spelled_by_the_name_model_between_the_words():
    """After "call", a name's pieces are the class <contact> spelled by the name model:
    the state is inside a name until a word follows, and the score is the class's."""
    words, names = _words_lm(), _names_lm()
    lm = TokenLM(words, PIECES, names)
    said = [PIECES.index(p) for p in ["▁call", "▁b", "o", "▁now"]]
    state = lm.start()
    inside = []
    for t in said:
        state = lm.advance(state, t)
        inside.append(state[1] is not None)
    assert inside == [False, True, True, False]
    # Past the name, the word model's context holds the class, not the name's pieces.
    assert words.vocab[state[0][-2]] == CONTACT
    total, _ = _chain(lm, said)
    by_class = (words.sentence_logprob(["▁call", CONTACT, "▁now"])
                + names.sentence_logprob(["▁b", "o"]))
    # The score sums both ways of spelling each token: the class's, and (small here) the
    # word model's own for pieces it cannot place (its <unk>).
    assert by_class - 1e-4 <= total < by_class + 0.5


def test_a_name_never_seen_costs_what_its_pieces_cost_not_a_back_off_to_nowhere():
    """Held-out names are spelled from pieces the name model knows; "▁a o" is no training
    name, and costs no more than the name model says, far less than as words."""
    lm = TokenLM(_words_lm(), PIECES, _names_lm())
    heldout = [PIECES.index(p) for p in ["▁call", "▁a", "o", "▁now"]]
    total, _ = _chain(lm, heldout)
    without_class = TokenLM(train_ngram([["▁call", "▁now"]] * 6 + [["▁turn", "▁on"]] * 4,
                                        NgramOptions(order=3)), PIECES)
    total_without, _ = _chain(without_class, heldout)
    assert total > total_without + 2.0


class _SayingModel:
    """A stand-in transducer: frame value k > 0 says token k clearly (0.9), with token 2 as
    an alternative (0.05) and blank (0.01); frame value 0 says blank."""

    def __init__(self, tokens: list[str]) -> None:
        from edge_asr.daemon.recognition.transducer import ModelInfo

        self.tokens = tokens
        self.info = ModelInfo(num_encoder_layers=1, chunk_frames=23, chunk_shift=16,
                              rnn_hidden_size=4, d_model=4, vocab_size=len(tokens),
                              context_size=2)

    def run_decoder(self, ctx: np.ndarray) -> np.ndarray:
        return np.zeros((len(ctx), 2), np.float32)

    def run_joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        probs = np.full((len(enc), len(self.tokens)), 1e-4)
        for row, k in enumerate(enc[:, 0].astype(int)):
            probs[row, k] = 0.9
            if k:
                probs[row, 2] += 0.05
                probs[row, 0] = 0.01
        return np.log(probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def _frames(tokens: list[int]) -> np.ndarray:
    seq = [v for t in tokens for v in (t, 0)]
    return np.array([[v, 0.0] for v in seq + [0, 0]], np.float32)


def test_the_lm_turns_the_beam_to_what_the_domain_says_and_log_prob_stays_acoustic():
    """The audio leans to "▁lamp" (0.9 against 0.05), the LM knows only "turn on the
    lamp"... with "▁call" said: at scale 0 the audio wins, at a large scale the LM; the
    log-prob kept for the lattice is the acoustic one either way."""
    model = _SayingModel(PIECES)
    ngram = train_ngram([["▁turn", "▁on", "▁the", "▁call"]] * 5, NgramOptions(order=3))
    lm = TokenLM(ngram, PIECES)
    said = [PIECES.index(p) for p in ["▁turn", "▁on", "▁the", "▁lamp"]]
    plain = ModifiedBeamSearch(model, beam=4)
    plain.step(_frames(said))
    plain.finalize()
    assert plain.nbest[0].tokens == tuple(said)
    fused = ModifiedBeamSearch(model, beam=4, lm=lm, lm_scale=2.0)
    fused.step(_frames(said))
    fused.finalize()
    best = fused.nbest[0]
    assert best.tokens == tuple(said[:3]) + (PIECES.index("▁call"),)
    frames = _frames(said)
    logp = model.run_joiner(frames, np.zeros((len(frames), 2), np.float32))
    path = list(best.tokens) + [0] * (len(frames) - len(said))  # one token per speech frame
    order = [path[i // 2] if i % 2 == 0 and i < 2 * len(said) else 0 for i in range(len(frames))]
    acoustic = float(sum(logp[i, t] for i, t in enumerate(order)))
    assert best.log_prob == pytest.approx(acoustic, abs=0.01)
    assert best.lm_score < 0


def test_the_token_bonus_keeps_the_lm_from_deleting_words():
    """Every LM log-prob is a cost: a large scale alone drops the words the LM finds
    unlikely; the bonus per token puts them back. (Ranked by total score, as the beam
    prunes, which is where words are lost; the n-best's score per token hides it here.)"""
    model = _SayingModel(PIECES)
    ngram = train_ngram([["▁turn", "▁on"]] * 5 + [["▁turn", "▁on", "▁the", "▁lamp"]],
                        NgramOptions(order=3))
    lm = TokenLM(ngram, PIECES)
    said = [PIECES.index(p) for p in ["▁turn", "▁on", "▁the", "▁lamp"]]
    results = {}
    for bonus in (0.0, 3.0):
        search = ModifiedBeamSearch(model, beam=4, length_norm=False, lm=lm, lm_scale=6.0,
                                    token_bonus=bonus)
        search.step(_frames(said))
        search.finalize()
        results[bonus] = search.nbest[0].tokens
    assert len(results[0.0]) < len(said)
    assert results[3.0] == tuple(said)


def _call_a_listed_name(token_bonus: float = 0.0):
    """"call b o" said, with "b o" the user's context phrase; (search, said, lm)."""
    from edge_asr.daemon.recognition.context_graph import ContextGraph

    lm = TokenLM(_words_lm(), PIECES, _names_lm())
    name = [PIECES.index(p) for p in ["▁b", "o"]]
    said = [PIECES.index("▁call"), *name]
    graph = ContextGraph([name], bonus=1.0, vocab_size=len(PIECES))
    search = ModifiedBeamSearch(_SayingModel(PIECES), beam=4, context_graph=graph, lm=lm,
                                lm_scale=1.0, token_bonus=token_bonus)
    search.step(_frames(said))
    return search, said, lm


def test_a_context_phrase_pays_the_lm_for_its_first_piece_only():
    search, said, lm = _call_a_listed_name()
    best = next(h for h in search.hyps if h.tokens == tuple(said))
    state, first = lm.start(), 0.0
    for t in said[:2]:
        first += float(lm.token_logprobs(state)[t])
        state = lm.advance(state, t)
    assert best.lm_score == pytest.approx(first, abs=1e-4)
    assert best.lm_costs[-1] == 0.0


def _copy(model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    return folder


def test_the_lattice_carries_the_device_lms_score_beside_the_acoustic_one():
    from edge_asr.daemon.recognition.hypotheses import hypothesis_path
    from edge_asr.daemon.uplink.lattice import build_lattice, parse, serialize
    from edge_asr.daemon.uplink.lattice_paths import paths

    model = _SayingModel(PIECES)
    lm = TokenLM(_words_lm(), PIECES, _names_lm())
    said = [PIECES.index(p) for p in ["▁turn", "▁on", "▁the", "▁lamp"]]
    search = ModifiedBeamSearch(model, beam=4, lm=lm, lm_scale=0.5, token_bonus=1.0)
    search.step(_frames(said))
    search.finalize()
    best = search.nbest[0]
    path = hypothesis_path(best, PIECES, 0.04)
    assert [w.word for w in path.words] == ["turn", "on", "the", "lamp"]
    assert path.lm == pytest.approx(best.lm_score, abs=1e-4)  # </s> included
    assert path.acoustic == pytest.approx(best.log_prob, abs=1e-4)
    assert len({round(w.lm, 3) for w in path.words}) > 1  # split per word, not lumped
    [back] = paths(parse(serialize(build_lattice([path], "u", 1, True))), limit=1)
    assert [w.lm for w in back.words] == pytest.approx([w.lm for w in path.words], abs=1e-5)


def test_a_rescued_hypothesis_gets_the_lm_score_the_beam_would_have_given_it():
    from dataclasses import replace

    search, said, lm = _call_a_listed_name(token_bonus=0.5)
    search.finalize()
    own = next(h for h in search.hyps if h.tokens == tuple(said))
    # As the name rescue hands it over: acoustic and bias traced, no LM score.
    found = replace(own, trace=tuple((lp, bias, 0.0) for lp, bias, _ in own.trace),
                    lm_score=0.0, lm_costs=(), lm_state=lm.start())
    search.lead_with(found)
    led = search.nbest[0]
    assert led.tokens == tuple(said)
    assert led.lm_score == pytest.approx(own.lm_score, abs=1e-6)  # refund and </s> too
    assert [t[2] for t in led.trace] == pytest.approx([t[2] for t in own.trace], abs=1e-6)
    assert [t[:2] for t in led.trace] == [t[:2] for t in own.trace]


def test_a_model_folder_without_its_lm_is_refused_by_name_unless_the_lm_is_off(
        tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    for name in (LM_FILE, NAMES_FILE):
        (folder / name).unlink()
    card = json.loads((folder / "model_card.json").read_text())
    for name in (LM_FILE, NAMES_FILE):
        card["sha256"].pop(name)
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no lm.arpa.gz.*lm_scale = 0"):
        Recognizer(RecognizerConfig(model_dir=folder, lm_scale=0.3))
    Recognizer(RecognizerConfig(model_dir=folder, lm_scale=0.0))  # decodes without
    Recognizer(RecognizerConfig(model_dir=folder, decoding_method="greedy_search"))


def test_an_lm_folder_changed_in_any_of_its_files_is_loaded_again(tiny_model_dir, tmp_path):
    # Loaded LMs are shared within a process; one whose name model went away (the word
    # model untouched) must not be served from that cache.
    folder = _copy(tiny_model_dir, tmp_path)
    recognizer = Recognizer(RecognizerConfig(model_dir=folder))
    first = recognizer.lm
    pieces = [t for t in recognizer.model.tokens if t.startswith("▁") and len(t) > 1][:2]
    save_arpa(train_ngram([pieces] * 3, NgramOptions(order=2)), folder / NAMES_FILE)
    card = json.loads((folder / "model_card.json").read_text())
    card["sha256"].pop(NAMES_FILE)
    (folder / "model_card.json").write_text(json.dumps(card))
    again = Recognizer(RecognizerConfig(model_dir=folder)).lm
    assert again is not first
    assert len(again.names.ngram.vocab) < len(first.names.ngram.vocab)
    assert Recognizer(RecognizerConfig(model_dir=tiny_model_dir)).lm is \
        Recognizer(RecognizerConfig(model_dir=tiny_model_dir)).lm  # unchanged: shared


def test_a_corrupt_or_foreign_lm_is_refused_by_name(tiny_model_dir, tmp_path):
    folder = _copy(tiny_model_dir, tmp_path)
    (folder / LM_FILE).write_bytes(b"not an arpa file")
    with pytest.raises(ModelError, match="sha256"):  # the card knows the file
        Recognizer(RecognizerConfig(model_dir=folder))
    card = json.loads((folder / "model_card.json").read_text())
    card["sha256"].pop(LM_FILE)
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a device LM"):
        Recognizer(RecognizerConfig(model_dir=folder))
    # Another model's pieces: an LM over words this model does not have.
    save_arpa(train_ngram([["zebra", CONTACT, "yak"], ["quux"]] * 3, NgramOptions(order=2)),
              folder / LM_FILE)
    with pytest.raises(ModelError, match="another model"):
        Recognizer(RecognizerConfig(model_dir=folder))


@pytest.mark.parametrize("bad", [{"lm_scale": -0.1}, {"lm_scale": float("nan")},
                                 {"token_bonus": float("inf")}])
def test_lm_settings_out_of_range_are_refused(bad, tiny_model_dir):
    with pytest.raises(ValueError, match="lm_scale"):
        Recognizer(RecognizerConfig(model_dir=tiny_model_dir, **bad))


def test_the_daemon_reads_the_lms_saved_tables_only_while_they_stand_for_its_arpa_file(
        tiny_model_dir, tmp_path):
    """lm.tables.npz (the recipe's, for a fast start) is what the daemon reads while it was
    made from the folder's lm.arpa.gz; tables left from another LM are not used."""
    folder = _copy(tiny_model_dir, tmp_path)
    tokens = Recognizer(RecognizerConfig(model_dir=folder, lm_scale=0)).model.tokens
    arpa, names = load_arpa(folder / LM_FILE), load_arpa(folder / NAMES_FILE)
    pieces = [t for t in tokens if t.startswith("▁") and len(t) > 1][:3]
    other = train_ngram([pieces, [pieces[0], CONTACT]] * 5, NgramOptions(order=2))
    said = [tokens.index(p) for p in pieces]
    from_arpa = _chain(TokenLM(arpa, tokens, names), said)[0]
    from_other = _chain(TokenLM(other, tokens, names), said)[0]
    assert from_other != pytest.approx(from_arpa, abs=1e-2)
    BackoffTables.of(other).save(folder / TABLES_FILE, sha256_of(folder / LM_FILE))
    assert _chain(TokenLM.load(folder, tokens), said)[0] == pytest.approx(from_other)
    BackoffTables.of(other).save(folder / TABLES_FILE, "0" * 64)  # made from another file
    assert _chain(TokenLM.load(folder, tokens), said)[0] == pytest.approx(from_arpa)
