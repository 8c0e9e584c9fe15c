"""Word lattices: n-best -> DAG -> wire -> n-best (ARCHITECTURE.md, "Lattices on the wire")."""

import math
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_asr.daemon.api import proto
from edge_asr.daemon.api.proto import lattice_pb2
from edge_asr.daemon.uplink.lattice import (
    Arc,
    Lattice,
    LatticeError,
    Path,
    WordArc,
    build_lattice,
    parse,
    serialize,
    validate,
)
from edge_asr.daemon.uplink.lattice_paths import paths

VOCAB = ["turn", "on", "off", "the", "kitchen", "lights", "lamp"]


def key(path: Path) -> tuple:
    """A path at wire precision: 1 ms times, float32 scores."""
    return tuple((w.word, round(w.start * 1000), round(w.end * 1000),
                  float(np.float32(w.acoustic)), float(np.float32(w.bias))) for w in path.words)


def expected_keys(nbest: list[Path]) -> set[tuple]:
    """The paths a lattice of `nbest` holds: its non-empty hypotheses, or only the empty
    path when the best (the first) is empty or there are no others."""
    keys = {key(p) for p in nbest if p.words} if nbest and nbest[0].words else set()
    return keys or {()}


def roundtrip(nbest: list[Path], **kwargs) -> tuple[Lattice, bytes, Lattice]:
    lattice = build_lattice(nbest, "utt-1", 1, True, **kwargs)
    data = serialize(lattice)
    return lattice, data, parse(data)


# --- strategies -----------------------------------------------------------------------

@st.composite
def free_paths(draw) -> Path:
    """Any monotonic timing and any scores: exercises precision, rarely shares arcs."""
    words, t = [], draw(st.floats(0, 1))
    for _ in range(draw(st.integers(0, 10))):
        start = t + draw(st.floats(0, 0.5))
        end = start + draw(st.floats(0, 1))
        words.append(WordArc(draw(st.sampled_from(VOCAB)), start, end,
                             draw(st.floats(-1e4, 0)), draw(st.floats(0, 10))))
        t = end
    return Path(words)


@st.composite
def slotted_paths(draw) -> Path:
    """Words on a shared timeline with few score values: n-bests that share a lot."""
    words = []
    for slot in range(draw(st.integers(0, 10))):
        start = 0.3 * slot + draw(st.sampled_from([0.0, 0.01]))
        words.append(WordArc(draw(st.sampled_from(VOCAB[:3])), start, start + 0.25,
                             draw(st.sampled_from([-1.0, -2.5])),
                             draw(st.sampled_from([0.0, 1.5]))))
    return Path(words)


nbests = st.one_of(st.lists(free_paths(), min_size=1, max_size=8),
                   st.lists(slotted_paths(), min_size=1, max_size=8))


# --- properties -----------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(nbests)
def test_roundtrip_returns_exactly_the_nbest(nbest):
    _, _, parsed = roundtrip(nbest)
    back = paths(parsed, limit=1000)
    keys = [key(p) for p in back]
    assert len(keys) == len(set(keys)), "a path came back twice"
    assert set(keys) == expected_keys(nbest)
    scores = [p.score for p in back]
    assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:], strict=False)), "not best first"
    # The device's answer, the n-best's first, is marked, and only it.
    marked = [key(p) for p in back if p.device]
    assert marked == [key(nbest[0]) if nbest[0].words else ()]


@settings(max_examples=100, deadline=None)
@given(nbests)
def test_lattice_is_topological_and_compact(nbest):
    lattice, _, parsed = roundtrip(nbest)
    assert parsed == lattice
    assert all(a.src < a.dst for a in parsed.arcs)
    assert parsed.start_node == 0 and parsed.final_node == parsed.num_nodes - 1
    assert len(parsed.arcs) <= sum(len(p.words) for p in nbest)


def _arc_key(lattice: Lattice, arc: Arc) -> tuple:
    return (lattice.words[arc.word], arc.start_ms, arc.end_ms, arc.acoustic, arc.bias)


@settings(max_examples=100, deadline=None)
@given(nbests)
def test_prefixes_are_shared(nbest):
    lattice, _, _ = roundtrip(nbest)
    # Paths whose first words carry equal data share one arc out of the start (one that
    # ends a one-word path is kept apart: the final node has no arcs out).
    firsts = {(key(p)[0], len(p.words) == 1) for p in nbest if p.words} \
        if nbest[0].words else set()
    out_of_start = [a for a in lattice.arcs if a.src == 0]
    assert len(out_of_start) == len(firsts)
    # The same holds at every node: no two arcs out of a node are interchangeable.
    seen = set()
    for arc in lattice.arcs:
        identity = (arc.src, _arc_key(lattice, arc), arc.dst == lattice.final_node)
        assert identity not in seen
        seen.add(identity)


@settings(max_examples=100, deadline=None)
@given(nbests)
def test_suffixes_are_shared(nbest):
    lattice, _, _ = roundtrip(nbest)
    # Minimal: no two nodes have the same outgoing (arc data, destination) set.
    out: dict[int, set] = {n: set() for n in range(lattice.num_nodes)}
    for arc in lattice.arcs:
        out[arc.src].add((_arc_key(lattice, arc), arc.dst))
    signatures = [frozenset(s) for s in out.values()]
    assert len(signatures) == len(set(signatures))


# --- examples -------------------------------------------------------------------------

def sentence(text: str, acoustic: list[float] | None = None, bias: list[float] | None = None,
             step: float = 0.4) -> Path:
    words = text.split()
    acoustic = acoustic or [-1.0] * len(words)
    bias = bias or [0.0] * len(words)
    return Path([WordArc(w, i * step, i * step + 0.3, a, b)
                 for i, (w, a, b) in enumerate(zip(words, acoustic, bias, strict=True))])


def test_shared_prefix_and_suffix_merge():
    nbest = [sentence("turn on the lights"), sentence("turn off the lights")]
    lattice = build_lattice(nbest, "u", 1, False)
    assert (lattice.num_nodes, len(lattice.arcs)) == (5, 5)
    assert sorted(lattice.words) == ["lights", "off", "on", "the", "turn"]


def test_different_scores_keep_separate_arcs():
    nbest = [sentence("turn on", [-1.0, -1.0]), sentence("turn off", [-2.0, -1.0])]
    lattice = build_lattice(nbest, "u", 1, False)
    assert len(lattice.arcs) == 4  # the two "turn" arcs differ in score: not merged
    assert {key(p) for p in paths(lattice)} == {key(p) for p in nbest}


def test_path_that_is_a_prefix_of_another():
    nbest = [sentence("turn on"), sentence("turn on the lights")]
    lattice = build_lattice(nbest, "u", 1, False)
    assert {key(p) for p in paths(lattice)} == {key(p) for p in nbest}


def test_best_first_order_and_limit():
    nbest = [sentence("turn on", [-3.0, -1.0]), sentence("turn off", [-1.0, -1.0]),
             sentence("the lamp", [-1.0, -0.5], [0.0, 2.0])]
    lattice = build_lattice(nbest, "u", 2, False)
    assert [p.text for p in paths(lattice)] == ["the lamp", "turn off", "turn on"]
    assert [p.text for p in paths(lattice, limit=1)] == ["the lamp"]
    assert paths(lattice, limit=0) == []
    best = paths(lattice)[0]
    assert (best.acoustic, best.bias, best.score) == (-1.5, 2.0, 0.5)


@pytest.mark.parametrize("nbest", [[], [Path([])], [Path([]), Path([])]])
def test_empty_nbest_is_one_node(nbest):
    lattice, data, parsed = roundtrip(nbest)
    assert (parsed.num_nodes, parsed.arcs, parsed.words) == (1, [], [])
    assert [p.words for p in paths(parsed)] == [[]]


def test_an_empty_hypothesis_below_the_best_is_dropped():
    lattice = build_lattice([sentence("lights"), Path([])], "u", 1, False)
    assert [p.text for p in paths(lattice)] == ["lights"]


def test_an_empty_best_hypothesis_makes_the_empty_lattice():
    """The device heard nothing: the cloud must not get the n-best's "hey" to rescore."""
    lattice, data, parsed = roundtrip([Path([]), sentence("hey"), sentence("uh")])
    assert (parsed.num_nodes, parsed.arcs) == (1, [])
    assert [p.words for p in paths(parsed)] == [[]]


def test_header_fields_survive():
    _, _, parsed = roundtrip([sentence("on")], model_version="rnnt-v1")
    assert (parsed.utterance_id, parsed.revision, parsed.speculative, parsed.model_version) == (
        "utt-1", 1, True, "rnnt-v1")


def test_four_best_of_six_words_is_well_under_a_kilobyte():
    # Realistic: shared prefix from the beam, one word in doubt, suffix scores differ.
    base = "turn on the kitchen lights please".split()
    alternatives = ["kitchen", "chicken", "kitten", "kitchens"]
    nbest = [sentence(" ".join(base[:3] + [alt] + base[4:]),
                      [-0.2, -0.1, -0.05, -0.5 - i, -0.3 - 0.01 * i, -0.2], step=0.45)
             for i, alt in enumerate(alternatives)]
    _, data, _ = roundtrip(nbest, model_version="rnnt-v1")
    assert len(data) < 600
    # Worst case: four entirely different hypotheses, nothing shared.
    worst = [sentence(" ".join(f"w{i}{j}" for j in range(6)),
                      [-1.0 - 0.1 * j for j in range(6)], [0.5] * 6, step=0.45)
             for i in range(4)]
    _, data, _ = roundtrip(worst, model_version="rnnt-v1")
    assert len(data) < 1024


def test_no_field_can_carry_audio():
    for message in (lattice_pb2.Lattice.DESCRIPTOR, lattice_pb2.Arc.DESCRIPTOR):
        for f in message.fields:
            assert f.type != f.TYPE_BYTES, f.name
            assert not (f.is_repeated and f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE)), f.name


# --- bad input ------------------------------------------------------------------------

def wire(words=("on", "off"), arcs=((0, 1, 0, 0, 100), (1, 2, 1, 100, 200)), num_nodes=3,
         acoustic=-1.0, bias=0.0, **fields) -> bytes:
    """A hand-made message: arcs are (src, dst, word, start_ms, end_ms)."""
    message = lattice_pb2.Lattice(utterance_id="u", revision=1, words=list(words),
                                  num_nodes=num_nodes, final_node=max(num_nodes - 1, 0))
    for src, dst, word, start, end in arcs:
        message.arcs.add(src=src, dst=dst, word=word, start_ms=start, end_ms=end,
                         acoustic=acoustic, bias=bias)
    for name, value in fields.items():
        setattr(message, name, value)
    return message.SerializeToString()


def test_handmade_message_is_valid():
    assert [p.text for p in paths(parse(wire()))] == ["on off"]


def marked(*device: bool, arcs=((0, 1, 0, 0, 100), (1, 3, 1, 100, 200), (0, 2, 1, 0, 100),
                                (2, 3, 0, 100, 200))) -> bytes:
    """A lattice of "on off" and "off on"; `device` marks arcs as the device's answer."""
    message = lattice_pb2.Lattice()
    message.ParseFromString(wire(arcs=arcs, num_nodes=4))
    for arc, flag in zip(message.arcs, device, strict=False):
        arc.device = flag
    return message.SerializeToString()


def test_the_marked_device_answer_is_read_back_as_such():
    found = {p.text: p.device for p in paths(parse(marked(False, False, True, True)))}
    assert found == {"on off": False, "off on": True}
    assert not any(p.device for p in paths(parse(marked())))  # a device before the field


@pytest.mark.parametrize(("flags", "message"), [
    ((True, False, True, False), "a second arc of the device's answer leaves node 0"),
    ((True, False, False, False), "not one path from the start node to the final node"),
    ((False, True, False, False), "not one path from the start node to the final node"),
    ((True, True, False, True), "not one path"),
])
def test_a_device_answer_that_is_not_one_whole_path_is_rejected(flags, message):
    with pytest.raises(LatticeError, match=message):
        parse(marked(*flags))


MALFORMED = [
    (wire(words=("x" * 300,)), "more than the 256 allowed"),
    (b"\x0a\xff\xff", "not a Lattice message"),
    (wire(arcs=((0, 1, 0, 0, 100), (1, 2, 2, 100, 200))), "word index 2 out of range"),
    (wire(arcs=((0, 1, 0, 0, 100), (1, 3, 1, 100, 200))), "dst node 3 out of range"),
    (wire(arcs=((0, 1, 0, 0, 100), (1, 1, 1, 100, 200))), "src 1 >= dst 1"),
    (wire(arcs=((0, 2, 0, 0, 100), (2, 1, 1, 100, 200)), num_nodes=3), "src 2 >= dst 1"),
    (wire(arcs=((0, 1, 0, 0, 100), (1, 2, 1, 200, 150))), "times go backwards"),
    (wire(arcs=((0, 1, 0, 0, 100), (1, 2, 1, 50, 200))), "times go backwards at node 1"),
    (wire(arcs=((0, 2, 0, 0, 100), (1, 2, 1, 100, 200))), "node 1 is not reachable"),
    (wire(arcs=((0, 1, 0, 0, 100), (0, 2, 1, 100, 200))), "node 1 cannot reach the final"),
    (wire(acoustic=math.nan), "acoustic score is nan"),
    (wire(bias=math.inf), "bias score is inf"),
    (wire(acoustic=-math.inf), "acoustic score is -inf"),
    (wire(start_node=1), "start_node is 1"),
    (wire(final_node=1), "final_node is 1"),
    (wire(arcs=(), num_nodes=0), "at least one node"),
    (wire(num_nodes=4_000_000_000, final_node=3_999_999_999), "only 2 arcs"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_lattices_are_rejected(data, message):
    with pytest.raises(LatticeError, match=message):
        parse(data, max_bytes=256)


@pytest.mark.parametrize(("path", "message"), [
    (Path([WordArc("on", 0.5, 0.4, -1.0)]), "times go backwards"),
    (Path([WordArc("on", 0.0, 0.4, -1.0), WordArc("off", 0.3, 0.6, -1.0)]),
     "times go backwards"),
    (Path([WordArc("on", -0.1, 0.4, -1.0)]), "times must be finite and >= 0"),
    (Path([WordArc("on", 0.0, 0.4, math.nan)]), "acoustic is nan"),
    (Path([WordArc("on", 0.0, 0.4, -1.0, math.inf)]), "bias is inf"),
    (Path([WordArc("on", 0.0, 0.4, -1e300)]), "beyond float32 range"),
])
def test_bad_nbest_is_rejected(path, message):
    with pytest.raises(LatticeError, match=message):
        build_lattice([path], "u", 1, False)


def test_serialize_refuses_an_invalid_lattice():
    lattice = Lattice("u", 1, False, ["on"], [Arc(0, 1, 3, -1.0, 0.0, 0, 10)], 2)
    with pytest.raises(LatticeError, match="word index 3"):
        serialize(lattice)
    with pytest.raises(LatticeError):
        validate(Lattice("u", -1, False, [], [], 1))


# --- generated code -------------------------------------------------------------------

def test_protos_that_import_each_other_generate_a_package(tmp_path, monkeypatch):
    protos = tmp_path / "protos"
    protos.mkdir()
    (protos / "lattice.proto").write_text(proto.PROTO_DIR.joinpath("lattice.proto").read_text())
    (protos / "probe.proto").write_text(
        'syntax = "proto3";\npackage edge_asr.v1;\nimport "lattice.proto";\n'
        "message Probe { Lattice lattice = 1; }\n"
        "service ProbeService { rpc Echo (Probe) returns (Probe); }\n")
    out = tmp_path / "probe_pkg"
    proto.generate(protos, out)
    assert not proto.is_stale(protos, out)
    assert "from . import lattice_pb2 as lattice__pb2" in (out / "probe_pb2.py").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from probe_pkg import probe_pb2, probe_pb2_grpc
        assert probe_pb2.Probe(lattice={"num_nodes": 1}).lattice.num_nodes == 1
        assert hasattr(probe_pb2_grpc, "ProbeServiceStub")
    finally:
        for name in [m for m in sys.modules if m.startswith("probe_pkg")]:
            del sys.modules[name]
    # Editing the .proto (a newer mtime) makes the generated modules stale.
    future = (out / "lattice_pb2.py").stat().st_mtime + 10
    os.utime(protos / "lattice.proto", (future, future))
    assert proto.is_stale(protos, out)
