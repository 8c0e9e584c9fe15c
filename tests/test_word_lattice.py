"""The recombined word lattice (daemon/uplink/word_lattice.py) and its oracle."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_asr.daemon.uplink.lattice import (
    LatticeError,
    Path,
    WordArc,
    build_lattice,
    parse,
    serialize,
)
from edge_asr.daemon.uplink.lattice_oracle import concatenate, oracle_errors
from edge_asr.daemon.uplink.lattice_paths import paths
from edge_asr.daemon.uplink.word_lattice import (
    LatticeOptions,
    best_through_arcs,
    build_word_lattice,
    byte_budget,
)
from edge_asr.simulator.cloud.dev_set import word_errors

WIDE = LatticeOptions(beam=1e6, bytes_per_second=1e9)


def path(*words: tuple[str, float, float, float]) -> Path:
    return Path([WordArc(w, start, end, acoustic) for w, start, end, acoustic in words])


# Two hypotheses with a word boundary at 0.4 s and 0.8 s in common, and a third whose
# "joan" ends elsewhere (0.9 s): it shares no boundary after its first word.
NBEST = [
    path(("call", 0.1, 0.4, -1.0), ("john", 0.4, 0.8, -2.0), ("now", 0.8, 1.2, -1.0)),
    path(("call", 0.1, 0.4, -1.5), ("jon", 0.4, 0.8, -1.5), ("no", 0.8, 1.2, -2.5)),
    path(("fall", 0.1, 0.4, -3.0), ("joan", 0.4, 0.9, -2.0), ("now", 0.9, 1.2, -1.0)),
]


def texts(lattice, limit: int = 1000) -> dict[str, float]:
    return {p.text: p.score for p in paths(lattice, limit)}


def test_every_hypothesis_is_a_path_and_paths_cross_at_shared_boundaries():
    lattice = build_word_lattice(NBEST, "u", 1, False, options=WIDE)
    found = texts(lattice)
    for hyp in NBEST:
        assert hyp.text in found
    # Crossing at 0.4 s and 0.8 s: "call jon now" is made of the first two hypotheses.
    assert found["call jon now"] == pytest.approx(-1.0 - 1.5 - 1.0)
    assert "fall jon no" in found  # "fall" ends at 0.4 s where "jon" starts
    # "joan" ends at 0.9 s: "no", which starts at 0.8 s, may not follow it.
    assert "fall joan no" not in found and "call joan now" in found
    # {call, fall} x ({john, jon} x {now, no} through 0.8 s, or "joan now" through 0.9 s)
    assert len(found) == 2 * (2 * 2 + 1)


def test_equal_arcs_keep_the_best_scores():
    lattice = build_word_lattice(NBEST, "u", 1, False, options=WIDE)
    calls = [a for a in lattice.arcs if lattice.words[a.word] == "call"]
    assert len(calls) == 1 and calls[0].acoustic == -1.0
    assert paths(lattice, 1)[0].text == "call jon now"  # the recombined best


def test_wire_round_trip_keeps_the_lattice():
    lattice = build_word_lattice(NBEST, "u", 2, False, "m", options=WIDE)
    back = parse(serialize(lattice))
    assert texts(back) == texts(lattice)
    assert back.revision == 2 and back.model_version == "m"


def test_pruning_drops_paths_beyond_the_beam_and_keeps_the_best():
    lattice = build_word_lattice(NBEST, "u", 1, False,
                                 options=LatticeOptions(beam=1.0, bytes_per_second=1e9))
    scores = texts(lattice)
    best = max(scores.values())
    assert "call jon now" in scores
    assert all(score >= best - 1.0 for score in scores.values())
    assert "fall joan now" not in scores  # -6.0, two and a half nats below the best
    assert all(t >= best - 1.0 - 1e-6 for t in best_through_arcs(lattice))


def test_the_devices_own_choice_survives_the_beam_and_the_budget():
    # The device ranks by score per token: a name of four pieces ("pilar") leads its beam
    # although its summed score is far below a short word's ("pell").
    chosen = Path([WordArc("call", 0.1, 0.4, -1.0, tokens=1),
                   WordArc("pilar", 0.4, 0.9, -9.0, tokens=4)])
    short = Path([WordArc("call", 0.1, 0.4, -1.0, tokens=1),
                  WordArc("pell", 0.4, 0.9, -2.0, tokens=1)])
    # the same "pilar" goes on to "now" in another hypothesis: the same word and times
    # out of the same node, into another
    longer = Path([*chosen.words, WordArc("now", 0.9, 1.2, -0.5, tokens=1)])
    for options in (LatticeOptions(beam=1.0, bytes_per_second=1e9),
                    LatticeOptions(bytes_per_second=1, min_bytes=0)):
        for nbest in ([chosen, short], [chosen, short, longer]):
            lattice = build_word_lattice(nbest, "u", 1, False, options=options)
            parse(serialize(lattice))  # connected: every node on a start -> final path
            assert "call pilar" in texts(lattice) and "call pell" in texts(lattice)
            assert {p.text: p.tokens for p in paths(lattice)}["call pilar"] == 5
            # and the cloud is told which path it is
            assert [p.text for p in paths(parse(serialize(lattice))) if p.device] == [
                "call pilar"]


def random_nbest(rng: random.Random, n: int, words: int) -> list[Path]:
    vocabulary = ["play", "jazz", "in", "the", "kitchen", "lights", "off", "on", "kitten"]
    out = []
    for _ in range(n):
        cuts = sorted(rng.sample(range(1, 40), words - 1))
        bounds = [0, *cuts, 40]
        out.append(path(*((rng.choice(vocabulary), 0.08 * a, 0.08 * b, -rng.random() * 3)
                          for a, b in itertools.pairwise(bounds))))
    return out


def test_the_byte_budget_holds_and_the_best_path_survives_it():
    rng = random.Random(3)
    # best first, as a beam ranks them (no token counts: the sum and the per-token
    # ranking agree)
    nbest = sorted(random_nbest(rng, 40, 6), key=lambda p: -p.score)
    unpruned = build_word_lattice(nbest, "u", 1, False, options=WIDE)
    options = LatticeOptions(beam=1e6, bytes_per_second=150, min_bytes=0)
    lattice = build_word_lattice(nbest, "u", 1, False, options=options)
    assert len(serialize(lattice)) <= byte_budget(unpruned, options) < len(serialize(unpruned))
    assert paths(lattice, 1)[0].text == paths(unpruned, 1)[0].text
    tiny = build_word_lattice(nbest, "u", 1, False,
                              options=LatticeOptions(bytes_per_second=1, min_bytes=0))
    # over any budget, the best path and the device's own answer (the first) are still sent
    best = paths(unpruned, 1)[0]
    assert {best.text, nbest[0].text} <= set(texts(tiny))
    assert len(tiny.arcs) <= len(best.words) + len(nbest[0].words)


def test_without_recombination_the_lattice_is_the_nbest():
    lattice = build_word_lattice(NBEST, "u", 1, False,
                                 options=LatticeOptions(recombine=False))
    assert lattice == build_lattice(NBEST, "u", 1, False)
    assert set(texts(lattice)) == {p.text for p in NBEST}


def test_an_empty_best_hypothesis_is_the_empty_lattice():
    lattice = build_word_lattice([Path([]), NBEST[0]], "u", 1, True)
    assert lattice.num_nodes == 1 and not lattice.arcs
    assert build_word_lattice([], "u", 1, True).num_nodes == 1


def test_words_that_take_no_time_do_not_loop():
    # Greedy search may emit two words on one frame: start == end for the first.
    nbest = [path(("a", 0.4, 0.4, -1.0), ("b", 0.4, 0.8, -1.0)),
             path(("a", 0.4, 0.4, -1.0), ("c", 0.4, 0.8, -2.0))]
    lattice = build_word_lattice(nbest, "u", 1, False, options=WIDE)
    assert set(texts(lattice)) == {"a b", "a c"}


def test_times_that_go_backwards_are_refused():
    with pytest.raises(LatticeError, match="backwards"):
        build_word_lattice([path(("a", 0.5, 0.9, -1.0), ("b", 0.3, 1.0, -1.0))], "u", 1,
                           False)


@pytest.mark.parametrize("seed", range(6))
def test_the_oracle_is_the_best_path_by_brute_force(seed):
    rng = random.Random(seed)
    lattice = build_word_lattice(random_nbest(rng, 5, 4), "u", 1, False, options=WIDE)
    reference = rng.choice(["play jazz in the kitchen", "lights off", "on", ""]).split()
    every = paths(lattice, 100_000)
    assert oracle_errors(lattice, reference) == min(
        word_errors(reference, [w.word for w in p.words]) for p in every)


def test_the_oracle_of_nothing_heard_deletes_every_word():
    empty = build_word_lattice([Path([])], "u", 1, False)
    assert oracle_errors(empty, ["turn", "off"]) == 2


def test_concatenated_lattices_read_one_after_the_other():
    first = build_word_lattice(NBEST[:2], "u1", 1, False, options=WIDE)
    second = build_word_lattice([path(("please", 0.1, 0.5, -1.0))], "u2", 1, False)
    joined = concatenate([first, second])
    assert oracle_errors(joined, "call jon now please".split()) == 0
    assert oracle_errors(joined, "call jon now".split()) == 1


def test_the_daemons_config_sets_the_lattice(tmp_path):
    from edge_asr.daemon.api.config import load_config

    path = tmp_path / "daemon.toml"
    path.write_text("[lattice]\nbeam = 3.0\nrecombine = false\n")
    config = load_config(path)
    assert config.lattice == LatticeOptions(beam=3.0, recombine=False)
    assert config.pipeline_config("m").lattice == config.lattice
    path.write_text("[lattice]\nbeam = -1.0\n")
    with pytest.raises(ValueError, match="beam"):
        load_config(path)
