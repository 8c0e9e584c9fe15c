"""Which hypothesis the beam search calls best."""

from edge_asr.daemon.search import Hypothesis, ModifiedBeamSearch
from edge_asr.daemon.transducer import TransducerModel


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
