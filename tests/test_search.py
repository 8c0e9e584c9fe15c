"""Which hypothesis the beam search calls best."""

from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR
from edge_asr.daemon.recognition.search import Hypothesis, ModifiedBeamSearch
from edge_asr.daemon.recognition.transducer import TransducerModel


def test_best_hypothesis_is_chosen_by_log_prob_per_token(tiny_model_dir):
    model = TransducerModel(tiny_model_dir)
    short = Hypothesis(tokens=(5,), log_prob=-3.0)  # -3 / (1 + 2 context slots) = -1.0
    long = Hypothesis(tokens=(5, 6, 7, 8, 9), log_prob=-3.5)  # -3.5 / 7 = -0.5
    normed = ModifiedBeamSearch(model, beam=4)
    normed.hyps = [short, long]  # the beam's own order: by total score
    assert normed.nbest[0] is long
    assert normed.hyps[0] is short  # the beam itself is not re-ranked
    raw = ModifiedBeamSearch(model, beam=4, length_norm=False)
    raw.hyps = [short, long]
    assert raw.nbest[0] is short


def test_paths_holding_the_same_bonus_are_ranked_by_the_audio_alone(tiny_model_dir):
    """The bonus is not divided by each path's own length: "dial grandad on" must not beat
    "dial grandad on their home phone" by holding the same bonus over fewer tokens."""
    model = TransducerModel(tiny_model_dir)
    short = Hypothesis(tokens=(5,), log_prob=-3.0, bias=6.0)  # -1.0 a token
    long = Hypothesis(tokens=(5, 6, 7, 8, 9), log_prob=-3.5, bias=6.0)  # -0.5 a token
    search = ModifiedBeamSearch(model, beam=4)
    search.hyps = [short, long]
    assert search.nbest[0] is long
    # A bonus only one path holds still counts: the name the context asked for wins.
    plain = Hypothesis(tokens=(5, 6, 7), log_prob=-2.0)
    named = Hypothesis(tokens=(5, 6, 8), log_prob=-2.6, bias=3.0)
    search.hyps = [plain, named]
    assert search.nbest[0] is named


class _ScriptedModel:
    """A stand-in transducer whose joiner reads the frame's script, whatever the context:
    frame kind 0 says token 1 clearly and tokens 2 and 7 weakly; kind 1 says blank."""

    def __init__(self) -> None:
        from edge_asr.daemon.recognition.transducer import ModelInfo

        self.info = ModelInfo(num_encoder_layers=1, chunk_frames=23, chunk_shift=16,
                              rnn_hidden_size=4, d_model=4, vocab_size=8, context_size=2)
        self.tokens = ["<blk>", "a", "b", "c", "d", "e", "f", "g"]

    def run_decoder(self, ctx: np.ndarray) -> np.ndarray:
        return np.zeros((len(ctx), 2), np.float32)

    def run_joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        probs = np.full((len(enc), 8), 0.001)
        first = enc[:, 0] > 0.5
        probs[first, 1], probs[first, 0] = 0.84, 0.005
        probs[first, 2] = probs[first, 7] = 0.075
        probs[~first, 0] = 0.99
        return np.log(probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def test_boosted_partial_matches_cannot_push_the_models_own_best_path_out_of_the_beam():
    """Two phrases' first tokens, boosted, outrank what the audio says; neither phrase is
    completed. The beam keeps the model's own best path, which wins once the bonuses of
    the unfinished matches are given back (without it, "b" or "g" would be the result)."""
    from edge_asr.daemon.recognition.context_graph import ContextGraph

    frames = np.array([[1.0, 0.0]] + [[0.0, 1.0]] * 5, np.float32)
    graph = ContextGraph([[2, 3], [7, 3]], bonus=3.0, vocab_size=8)
    search = ModifiedBeamSearch(_ScriptedModel(), beam=2, context_graph=graph)
    search.step(frames)
    search.finalize()
    assert search.nbest[0].tokens == (1,)
    assert {h.tokens for h in search.hyps} & {(2,), (7,)}  # a boosted path had its slot
    plain = ModifiedBeamSearch(_ScriptedModel(), beam=2)
    plain.step(frames)
    assert plain.nbest[0].tokens == (1,)


def test_stand_ins_replace_the_nbest_until_the_next_frame():
    """The recognizer's plain search stands in for a biased beam that won no phrase; a
    rescued hypothesis only goes first. Either holds for the frames decoded so far."""
    frames = np.array([[1.0, 0.0]] + [[0.0, 1.0]] * 2, np.float32)
    search = ModifiedBeamSearch(_ScriptedModel(), beam=2)
    search.step(frames)
    own = [h.tokens for h in search.nbest]
    other = [Hypothesis(tokens=(4,)), Hypothesis(tokens=(5, 6))]
    search.stand_in(other)
    assert [h.tokens for h in search.nbest] == [(4,), (5, 6)]
    search.lead_with(other[1])  # a leader goes first, the beam's own follow
    assert [h.tokens for h in search.nbest] == [(5, 6), *own]
    search.stand_in(other)
    search.step(frames[1:2])  # a frame later the beam speaks for itself again
    assert [h.tokens for h in search.nbest][0] == own[0]


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model_card.json").is_file(),
                    reason="needs the shipped model")
def test_with_every_slot_kept_for_the_model_a_context_only_reranks_the_beam():
    """context_own_slots = beam: the beam holds what the model alone would hold (the same
    hypotheses as a search without the context); the context only orders them."""
    from edge_asr.daemon.capture.audio import read_audio
    from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig

    audio = read_audio(Path(__file__).parent / "data" / "clip07.flac")
    context = ["Yasaman Grigoriev", "Yasmin Gray", "the mudroom door", "the yard lights"]

    def beam(config: RecognizerConfig, ctx) -> set[tuple[int, ...]]:
        recognizer = Recognizer(config)
        stream = recognizer.create_stream(context=ctx)
        stream.accept_waveform(16000, audio)
        stream.input_finished()
        recognizer.decode(stream)
        return {h.tokens for h in stream.search.hyps}

    plain = beam(RecognizerConfig(beam=8, name_rescue=False), None)
    wide = 8  # the context beam, as wide as the plain one
    assert beam(RecognizerConfig(beam=wide, context_beam=wide, context_own_slots=wide,
                                 name_rescue=False), context) == plain
    assert beam(RecognizerConfig(beam=wide, context_beam=wide, context_own_slots=1,
                                 name_rescue=False), context) != plain


@pytest.mark.parametrize("bad", [{"beam": 0}, {"context_beam": -1}, {"context_own_slots": -1}])
def test_beam_settings_out_of_range_are_refused_by_name(bad):
    from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        Recognizer(RecognizerConfig(**bad))
