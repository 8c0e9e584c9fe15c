"""Word lattices for the device -> cloud link (ARCHITECTURE.md, "Lattices on the wire"):
the types, the wire form and its checks, and the exact n-best lattice. What the daemon
sends by default, the beam recombined at word ends and pruned, is built by word_lattice.py
on these types; lattice_paths.py reads the best paths back.

The exact n-best lattice (`build_lattice`) merges the beam search's n-best into a DAG: a
trie from the start shares word prefixes, and merging equivalent states from the end
(minimising the acyclic automaton) shares word suffixes. The wire form is
`protos/lattice.proto`: interned words, times in milliseconds, scores as float32, nothing
that could carry audio.

Merge rule (correctness over compactness): two arcs are merged only when everything the
wire carries about them is equal: the word, start and end in whole milliseconds, and the
acoustic, bias and device-LM scores as float32. Paths that share a word but not its timing
or scores keep separate arcs, so every input path comes back from `lattice_paths.paths()`
with its own words, times and scores, and no path that was not in the n-best is ever
created.

An empty hypothesis cannot be a path of a lattice with arcs (there are no epsilon arcs).
The device's best hypothesis (the n-best's first) must be in its lattice, so when that is
empty the lattice is the one-node lattice (start == final, no arcs) whose single path is
empty, and the alternatives are left out: noise after a request, heard as nothing, had
become "hey" in the cloud, which found only the n-best's "hey" to rescore (test_snr10,
`edge-asr eval --cloud`: 71 clips heard as several utterances, 20.2% WER on the device and
26.9% delivered). An empty hypothesis lower in the n-best is dropped.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from edge_asr.daemon.api.proto import lattice_pb2

MAX_UINT32 = 2**32 - 1
DEFAULT_MAX_BYTES = 256 * 1024


class LatticeError(ValueError):
    """A lattice (or the n-best it is built from) breaks the wire contract."""


@dataclass(frozen=True)
class WordArc:
    """One word of a hypothesis; times in seconds from the start of the utterance."""

    word: str
    start: float
    end: float
    acoustic: float
    bias: float = 0.0
    # What the device LM added for the word: its scaled log-prob plus the per-token reward
    # (search.py's lm_score; 0 without a device LM).
    lm: float = 0.0
    # The model's tokens (word pieces) the word was spelled with; 0: not known. The device
    # ranks hypotheses by score per token, so a word of many pieces is not worth less.
    tokens: int = 0
    # On the device's own answer (set by the lattice builders from the n-best's first).
    device: bool = False


@dataclass
class Path:
    """One hypothesis: its words in order."""

    words: list[WordArc] = field(default_factory=list)

    @property
    def acoustic(self) -> float:
        return sum(w.acoustic for w in self.words)

    @property
    def bias(self) -> float:
        return sum(w.bias for w in self.words)

    @property
    def lm(self) -> float:
        return sum(w.lm for w in self.words)

    @property
    def tokens(self) -> int:
        return sum(w.tokens for w in self.words)

    @property
    def device(self) -> bool:
        """The device's own answer: every word on it (the empty path of an empty lattice,
        which is the device hearing nothing, is too)."""
        return all(w.device for w in self.words)

    @property
    def score(self) -> float:
        """What paths() ranks by: the device's score (acoustic log-probability, biasing
        bonus and device LM), without its division by the path's length."""
        return self.acoustic + self.bias + self.lm

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


@dataclass(frozen=True)
class Arc:
    """A lattice arc as on the wire: word is an index into Lattice.words."""

    src: int
    dst: int
    word: int
    acoustic: float
    bias: float
    start_ms: int
    end_ms: int
    lm: float = 0.0
    tokens: int = 0  # word pieces (WordArc.tokens); 0: not known
    device: bool = False  # on the device's own answer (WordArc.device)

    @property
    def score(self) -> float:
        return self.acoustic + self.bias + self.lm


@dataclass
class Lattice:
    """A word lattice; nodes are 0 .. num_nodes-1, topologically numbered."""

    utterance_id: str
    revision: int
    speculative: bool
    words: list[str]
    arcs: list[Arc]
    num_nodes: int
    model_version: str = ""

    @property
    def start_node(self) -> int:
        return 0

    @property
    def final_node(self) -> int:
        return self.num_nodes - 1


# --- building -------------------------------------------------------------------------

# An arc's identity for merging: (word, start_ms, end_ms, acoustic, bias, lm as float32,
# tokens).
_Label = tuple[str, int, int, float, float, float, int]
# A trie symbol: the label plus whether it ends its path. Keeping the flag apart stops a
# path that is a prefix of another from ending on a node that still has arcs out.
_Symbol = tuple[_Label, bool]
_Signature = frozenset[tuple[_Symbol, int]]


def wire_float32(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise LatticeError(f"{what} is {value}; scores must be finite")
    try:
        narrowed = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        narrowed = math.inf
    if not math.isfinite(narrowed):
        raise LatticeError(f"{what} is {value}, beyond float32 range")
    return narrowed


def wire_milliseconds(seconds: float, what: str) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise LatticeError(f"{what} is {seconds}; times must be finite and >= 0")
    ms = round(seconds * 1000)
    if ms > MAX_UINT32:
        raise LatticeError(f"{what} is {seconds} s, beyond the uint32 millisecond range")
    return ms


def _labels(path: Path, index: int) -> tuple[_Label, ...]:
    """The path at wire precision, checked: finite scores, times that never go back."""
    labels: list[_Label] = []
    previous_end = 0
    for position, arc in enumerate(path.words):
        where = f"path {index} word {position} ({arc.word!r})"
        start = wire_milliseconds(arc.start, f"{where} start")
        end = wire_milliseconds(arc.end, f"{where} end")
        if end < start or start < previous_end:
            raise LatticeError(f"{where}: times go backwards ({start} ms .. {end} ms after "
                               f"a word ending at {previous_end} ms)")
        labels.append((arc.word, start, end, wire_float32(arc.acoustic, f"{where} acoustic"),
                       wire_float32(arc.bias, f"{where} bias"),
                       wire_float32(arc.lm, f"{where} lm"), arc.tokens))
        previous_end = end
    return tuple(labels)


def _trie(sequences: Iterable[tuple[_Label, ...]]) -> list[dict[_Symbol, int]]:
    """Prefix tree of the paths; a child's id is always larger than its parent's."""
    children: list[dict[_Symbol, int]] = [{}]
    for labels in sequences:
        node = 0
        for position, label in enumerate(labels):
            symbol = (label, position == len(labels) - 1)
            child = children[node].get(symbol)
            if child is None:
                child = len(children)
                children.append({})
                children[node][symbol] = child
            node = child
    return children


def _minimise(children: list[dict[_Symbol, int]]) -> tuple[int, dict[int, _Signature]]:
    """Merges trie nodes with equal futures; returns (root state, state -> outgoing arcs).

    Children are visited before parents (reverse id order), so a node's signature (its
    outgoing symbols and the states they reach) is final when it is looked up. The trie
    is deterministic, so equal signatures mean equal sets of suffixes.
    """
    state_of = [0] * len(children)
    states: dict[_Signature, int] = {}
    for node in reversed(range(len(children))):
        signature = frozenset((sym, state_of[child]) for sym, child in children[node].items())
        state_of[node] = states.setdefault(signature, len(states))
    return state_of[0], {state: signature for signature, state in states.items()}


def _topological_numbers(root: int, out: dict[int, _Signature]) -> dict[int, int]:
    """Kahn's order from the root; the root comes first and the only sink (final) last."""
    indegree = dict.fromkeys(out, 0)
    for signature in out.values():
        for _, dst in signature:
            indegree[dst] += 1
    ready, numbers = deque([root]), {}
    while ready:
        state = ready.popleft()
        numbers[state] = len(numbers)
        for _, dst in sorted(out[state], key=_arc_order):
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    return numbers


def _arc_order(item: tuple[_Symbol, int]) -> tuple:
    (label, is_last), dst = item
    return (label[1], label[0], label[2], -label[3] - label[4] - label[5], is_last, dst)


def build_lattice(paths: Sequence[Path], utterance_id: str, revision: int, speculative: bool,
                  model_version: str = "") -> Lattice:
    """Merges an n-best (best first) into a lattice whose paths are exactly the n-best's
    (see the module doc for an empty hypothesis)."""
    sequences = {_labels(path, index): None for index, path in enumerate(paths)}
    if paths and not paths[0].words:  # the best is "nothing heard": so is the lattice
        sequences = {}
    nonempty = [labels for labels in sequences if labels]
    root, out = _minimise(_trie(nonempty))
    numbers = _topological_numbers(root, out)
    # The device's answer, the n-best's first, as (state, symbol) steps: the automaton is
    # deterministic, so its route through the merged lattice is unique.
    route, state = set(), root
    for position, label in enumerate(nonempty[0] if nonempty else ()):
        symbol = (label, position == len(nonempty[0]) - 1)
        route.add((state, symbol))
        state = dict(out[state])[symbol]
    words: dict[str, int] = {}
    arcs: list[Arc] = []
    for state in sorted(numbers, key=numbers.__getitem__):
        for symbol, dst in sorted(out[state], key=_arc_order):
            word, start, end, acoustic, bias, lm, tokens = symbol[0]
            arcs.append(Arc(numbers[state], numbers[dst], words.setdefault(word, len(words)),
                            acoustic, bias, start, end, lm, tokens,
                            (state, symbol) in route))
    lattice = Lattice(utterance_id, revision, speculative, list(words), arcs, len(numbers),
                      model_version)
    validate(lattice)
    return lattice


# --- validation -----------------------------------------------------------------------

def _check_header(lattice: Lattice) -> None:
    if not 0 <= lattice.revision <= MAX_UINT32:
        raise LatticeError(f"revision {lattice.revision} is outside uint32")
    if lattice.num_nodes < 1:
        raise LatticeError(f"num_nodes is {lattice.num_nodes}; a lattice has at least one node")
    # Every node but the start needs an arc into it; checked before any per-node array is
    # allocated, so a forged num_nodes cannot make the receiver allocate gigabytes.
    if lattice.num_nodes > len(lattice.arcs) + 1:
        raise LatticeError(f"num_nodes is {lattice.num_nodes} but there are only "
                           f"{len(lattice.arcs)} arcs: some node is unreachable")


def _check_arc(index: int, arc: Arc, num_words: int, num_nodes: int) -> None:
    if not 0 <= arc.word < num_words:
        raise LatticeError(f"arc {index}: word index {arc.word} out of range "
                           f"(the word table has {num_words})")
    for name, node in (("src", arc.src), ("dst", arc.dst)):
        if not 0 <= node < num_nodes:
            raise LatticeError(f"arc {index}: {name} node {node} out of range "
                               f"(num_nodes is {num_nodes})")
    if arc.src >= arc.dst:
        raise LatticeError(f"arc {index}: src {arc.src} >= dst {arc.dst}; "
                           "nodes must be topologically numbered")
    if not 0 <= arc.start_ms <= arc.end_ms <= MAX_UINT32:
        raise LatticeError(f"arc {index}: times go backwards or out of range "
                           f"({arc.start_ms} ms .. {arc.end_ms} ms)")
    if not 0 <= arc.tokens <= MAX_UINT32:
        raise LatticeError(f"arc {index}: tokens {arc.tokens} is outside uint32")
    for name, value in (("acoustic", arc.acoustic), ("bias", arc.bias), ("lm", arc.lm)):
        if not math.isfinite(value):
            raise LatticeError(f"arc {index}: {name} score is {value}; scores must be finite")


def _check_times_at_nodes(lattice: Lattice) -> None:
    """A word may not start before any word that can precede it on a path has ended."""
    latest_end = [0] * lattice.num_nodes
    for arc in lattice.arcs:
        latest_end[arc.dst] = max(latest_end[arc.dst], arc.end_ms)
    for index, arc in enumerate(lattice.arcs):
        if arc.start_ms < latest_end[arc.src]:
            raise LatticeError(f"arc {index}: times go backwards at node {arc.src} (word starts "
                               f"at {arc.start_ms} ms, a word into the node ends at "
                               f"{latest_end[arc.src]} ms)")


def _check_connected(lattice: Lattice) -> None:
    """Every node lies on some start -> final path (no dead ends, no orphans)."""
    by_src = sorted(lattice.arcs, key=lambda a: a.src)
    forward = [False] * lattice.num_nodes
    forward[0] = True
    for arc in by_src:  # topological numbering: one pass in src order suffices
        forward[arc.dst] = forward[arc.dst] or forward[arc.src]
    backward = [False] * lattice.num_nodes
    backward[-1] = True
    for arc in reversed(sorted(lattice.arcs, key=lambda a: a.dst)):
        backward[arc.src] = backward[arc.src] or backward[arc.dst]
    for node in range(lattice.num_nodes):
        if not forward[node]:
            raise LatticeError(f"node {node} is not reachable from the start node")
        if not backward[node]:
            raise LatticeError(f"node {node} cannot reach the final node")


def _check_device_path(lattice: Lattice) -> None:
    """The arcs marked as the device's answer, if any, are one start -> final path."""
    marked = {}
    for index, arc in enumerate(lattice.arcs):
        if arc.device:
            if arc.src in marked:
                raise LatticeError(f"arc {index}: a second arc of the device's answer leaves "
                                   f"node {arc.src}")
            marked[arc.src] = arc
    node, steps = 0, 0
    while node in marked and steps < len(marked):
        node, steps = marked[node].dst, steps + 1
    if marked and (node != lattice.final_node or steps != len(marked)):
        raise LatticeError("the arcs marked as the device's answer are not one path from "
                           "the start node to the final node")


def validate(lattice: Lattice) -> None:
    """Raises LatticeError unless the lattice meets the wire contract."""
    _check_header(lattice)
    for index, arc in enumerate(lattice.arcs):
        _check_arc(index, arc, len(lattice.words), lattice.num_nodes)
    _check_times_at_nodes(lattice)
    _check_connected(lattice)
    _check_device_path(lattice)


# --- wire form ------------------------------------------------------------------------

def to_proto(lattice: Lattice) -> lattice_pb2.Lattice:
    message = lattice_pb2.Lattice(
        utterance_id=lattice.utterance_id, revision=lattice.revision,
        speculative=lattice.speculative, words=lattice.words, num_nodes=lattice.num_nodes,
        start_node=lattice.start_node, final_node=lattice.final_node,
        model_version=lattice.model_version)
    for arc in lattice.arcs:
        message.arcs.add(src=arc.src, dst=arc.dst, word=arc.word, acoustic=arc.acoustic,
                         bias=arc.bias, start_ms=arc.start_ms, end_ms=arc.end_ms, lm=arc.lm,
                         tokens=arc.tokens, device=arc.device)
    return message


def from_proto(message: lattice_pb2.Lattice) -> Lattice:
    """Converts without the graph checks (parse() runs them); checks the node fields."""
    if message.start_node != 0:
        raise LatticeError(f"start_node is {message.start_node}; it must be 0")
    if message.final_node != max(message.num_nodes, 1) - 1:
        raise LatticeError(f"final_node is {message.final_node}; it must be num_nodes-1 "
                           f"({message.num_nodes - 1})")
    arcs = [Arc(a.src, a.dst, a.word, a.acoustic, a.bias, a.start_ms, a.end_ms, a.lm,
                a.tokens, a.device) for a in message.arcs]
    return Lattice(message.utterance_id, message.revision, message.speculative,
                   list(message.words), arcs, message.num_nodes, message.model_version)


def serialize(lattice: Lattice) -> bytes:
    """Wire bytes; validates first so the device never sends what a receiver would reject."""
    validate(lattice)
    return to_proto(lattice).SerializeToString()


def parse(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Lattice:
    """Decodes and validates untrusted wire bytes; raises LatticeError on anything wrong."""
    if len(data) > max_bytes:
        raise LatticeError(f"lattice is {len(data)} bytes, more than the {max_bytes} allowed")
    message = lattice_pb2.Lattice()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise LatticeError(f"not a Lattice message: {exc}") from exc
    lattice = from_proto(message)
    validate(lattice)
    return lattice
