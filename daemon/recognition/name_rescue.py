"""Second pass of contextual biasing: context names the beam search lost, put back when the
transducer itself confirms them.

Shallow fusion only helps a name whose tokens stay in the beam; a name the model has never
heard is often spelled by sound instead ("terranek" for Taraneh, "kamalaxi" for Camila
Aksoy), and its own tokens fall out of the beam early. At an end-point this pass:

1. proposes candidates: a hypothesis of the n-best with one span of 1 to n+1 words (n:
   the phrase's words) replaced by a context phrase whose spelling, or whose rough sound
   key (`sound_key`), is within `max_distance` (normalised Levenshtein) of the span;
2. scores each candidate, and the best hypothesis, by the transducer's full-sum
   log-likelihood over the utterance's encoder frames (the RNN-T forward algorithm, the
   quantity the model was trained on), so the audio decides, not the spelling;
3. keeps the best candidate if its log-likelihood plus the context bonus for the phrase's
   tokens (the bonus shallow fusion would have given) beats the best hypothesis'.

A contact spelled within a letter or two of a name that was said but is not in the context
("yasaman gregory" for "yasaman grigoriev") is taken for it, as shallow fusion would.

`edge-asr eval` on dev (rnnt-v1, 30 names per context; against --no-name-rescue; spans
of the 4 best): name recall 75.0 -> 85.4%, WER 9.43 -> 8.80%, WER of the utterances
without a context name 7.67% both; 0.01-0.016 CPU seconds per audio second. Larger
bonuses (1.75 per token and up, tried offline) began to change utterances without names.
The idea is the contextual spelling correction of Wang et al. (2022, "Towards contextual
spelling correction for customization of end-to-end speech recognition systems"), with
the transducer's own likelihood as the judge instead of a second network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from edge_asr.daemon.recognition.context_graph import ROOT
from edge_asr.daemon.recognition.search import Hypothesis
from edge_asr.daemon.recognition.transducer import TransducerModel
from edge_asr.daemon.uplink.lattice import Path

# Consonants that sound alike under the TTS voices' letter-to-sound rules, one class each
# (Soundex's grouping, with s/x/z apart from k/g); vowels, h, w and y are one class "a".
_CLASSES = {**dict.fromkeys("bpfv", "p"), **dict.fromkeys("cgjkq", "k"),
            **dict.fromkeys("sxz", "s"), **dict.fromkeys("dt", "t"), "l": "l",
            **dict.fromkeys("mn", "n"), "r": "r", **dict.fromkeys("aeiouyhw", "a")}


# Number words: a span that holds one, with another inside it or right beside it, is part
# of a number, not a name ("so call one one eight seven" became "so call walid saleh", "to
# ninety five percent" "to mohammed habib percent", "dial seven nine" "dial sven nine": the
# slot bonus after a carrier word outweighed the digits' likelihood).
_NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty "
    "seventy eighty ninety hundred thousand".split())


def _in_number(words: Sequence[str], i: int, j: int) -> bool:
    """Whether words[i:j] is (part of) a number: a number word in it with another in it or
    beside it, or right before two number words (the number's first word, misheard:
    "phone yang four seven zero")."""
    def number(k: int) -> bool:
        return 0 <= k < len(words) and words[k] in _NUMBER_WORDS

    inside = sum(number(k) for k in range(i, j))
    if inside and inside + number(i - 1) + number(j) >= 2:
        return True
    return number(j) and number(j + 1)


def sound_key(text: str) -> str:
    """A rough key of how a spelling sounds: "camila aksoy" and "kamalaxi" both give
    "kanalaksa". Spaces and apostrophes are ignored; repeated classes collapse."""
    t = re.sub(r"[^a-z]", "", text.lower())
    t = t.replace("ph", "f").replace("x", "ks")
    t = re.sub(r"c(?=[eiy])", "s", t)  # soft c
    t = re.sub(r"(?<=[^aeiou])h", "", t)  # th, sh, kh, gh: the consonant alone
    out: list[str] = []
    for ch in t:
        cls = _CLASSES.get(ch)
        if cls and (not out or out[-1] != cls):
            out.append(cls)
    return "".join(out)


def _distances(heard: Sequence[str], meant: Sequence[str]) -> np.ndarray:
    """(heard, meant) normalised edit distances of the spellings or of the sound keys,
    whichever is less; in C (rapidfuzz)."""
    spelled = cdist(heard, meant, scorer=Levenshtein.normalized_distance)
    sounded = cdist([sound_key(h) for h in heard], [sound_key(m) for m in meant],
                    scorer=Levenshtein.normalized_distance)
    return np.minimum(spelled, sounded)


def _difference(span: Sequence[str], phrase: Sequence[str]
                ) -> tuple[list[str], list[str]]:
    """Span and phrase without the words they share at the start and at the end."""
    a, b = list(span), list(phrase)
    while a and b and a[0] == b[0]:
        a, b = a[1:], b[1:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    return a, b


def _occurrences(sequence: Sequence, part: Sequence) -> list[int]:
    """Start indices of `part` inside `sequence` (words or tokens)."""
    n, part = len(part), list(part)
    return [i for i in range(len(sequence) - n + 1) if list(sequence[i:i + n]) == part]


def _said_positions(words: Sequence[str], phrases: Sequence[Sequence[str]]) -> set[int]:
    """Positions of `words` inside a whole-word occurrence of one of `phrases`."""
    return {i + j for phrase in phrases for i in _occurrences(words, phrase)
            for j in range(len(phrase))}


@dataclass(frozen=True)
class Candidate:
    words: tuple[str, ...]  # the whole hypothesis with the span replaced
    phrase: int  # index into the phrase list
    distance: float
    start: int = 0  # index in `words` of the phrase's first word


def propose(words: Sequence[str], phrases: Sequence[str], max_distance: float,
            limit: int) -> list[Candidate]:
    """Hypotheses with one span replaced by a phrase that is spelled or sounds close to it,
    closest first, at most `limit`. Phrases already in the hypothesis are not proposed."""
    if not words or not phrases:
        return []
    padded = f" {' '.join(words)} "
    todo = [(k, p.split()) for k, p in enumerate(phrases) if f" {p} " not in padded]
    if not todo:
        return []
    # Words inside a phrase the hypothesis already says are never overwritten: "start the
    # sauna heater" must not become "start the sunroof heater".
    said = _said_positions(words, [p.split() for p in phrases if f" {p} " in padded])
    longest = max(len(w) for _, w in todo) + 1
    spans = [(i, j) for i in range(len(words))
             for j in range(i + 1, min(len(words), i + longest) + 1)]
    joined = ["".join(words[i:j]) for i, j in spans]
    targets = ["".join(w) for _, w in todo]
    distance = _distances(joined, targets)
    out = []
    for s, p in zip(*np.nonzero(distance <= max_distance), strict=True):
        (i, j), (k, phrase_words) = spans[s], todo[p]
        if j - i > len(phrase_words) + 1 or said.intersection(range(i, j)):
            continue
        if _in_number(words, i, j):
            continue  # the grammar takes a number after "call", "dial", "to" as well
        # Words the span and the phrase share at either end prove nothing ("bathroom
        # curtains" is not "blackout curtains"): the rest must be close on its own.
        heard, meant = _difference(words[i:j], phrase_words)
        if len(meant) < len(phrase_words) and \
                _distances(["".join(heard)], ["".join(meant)])[0, 0] > max_distance:
            continue
        replaced = tuple(words[:i]) + tuple(phrase_words) + tuple(words[j:])
        out.append(Candidate(replaced, k, float(distance[s, p]), i))
    out.sort(key=lambda c: c.distance)
    return out[:limit]


@dataclass
class Alignment:
    tokens: tuple[int, ...]
    log_prob: float  # full sum over alignments
    frames: list[int]  # encoder frame of each token on the best (Viterbi) alignment
    cumulative: list[float]  # Viterbi log-prob just after each token
    # Per token position u (0..U), over all frames: column u depends on tokens[:u] only,
    # so an alignment of tokens with the same start reuses them (`align(..., reuse=)`).
    down: list[np.ndarray] = field(repr=False)  # running sum of blank log-probs
    emit: list[np.ndarray] = field(repr=False)  # log-prob of emitting token u (u < U)
    total: list[np.ndarray] = field(repr=False)  # forward (log-sum) column
    best: list[np.ndarray] = field(repr=False)  # Viterbi (max) column
    last_blank: float = 0.0  # log-prob of the closing blank (last frame, all tokens out)


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# Rows per joiner call in align: a long utterance times a long name is thousands of rows,
# and the runtime keeps the memory of its largest call (bench/daemon.py's contexts).
JOINER_ROWS = 512


def _blank_and_next(model: TransducerModel, encoder_out: np.ndarray, dec: np.ndarray,
                    next_tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Log-probs of blank and of each column's next token, (T, U) float64 both, for every
    frame against every decoder output, from the joiner in blocks of frames."""
    t_len, n = encoder_out.shape[0], len(dec)
    blank = np.empty((t_len, n), np.float64)
    nxt = np.empty((t_len, n), np.float64)
    cols = np.arange(n)
    step = max(1, JOINER_ROWS // n)
    for t0 in range(0, t_len, step):
        enc = encoder_out[t0:t0 + step]
        logits = model.run_joiner(np.repeat(enc, n, axis=0), np.tile(dec, (len(enc), 1)))
        # Only blank and the next token are needed from each row's log-softmax.
        peak = logits.max(axis=1, keepdims=True)
        norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        logits = (logits - norm[:, None]).reshape(len(enc), n, -1)
        blank[t0:t0 + len(enc)] = logits[:, :, model.info.blank_id]
        nxt[t0:t0 + len(enc)] = logits[:, cols, next_tokens]
    return blank, nxt


def align(model: TransducerModel, encoder_out: np.ndarray, tokens: Sequence[int],
          reuse: Alignment | None = None) -> Alignment:
    """RNN-T log-likelihood of `tokens` given the encoder frames (T, J), and its best path.

    The forward recursion alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u],
    alpha[t, u-1] + emit[t, u-1]) is solved for all t of one u at once: with B the running
    sum of blank log-probs down a column, alpha[:, u] = B + logcumsumexp(e - B).

    With `reuse` (an alignment of a sequence that differs in one span), the joiner runs
    only where the decoder's context differs: the columns before the span are taken over
    whole, and the joiner outputs of the tokens after it (once the decoder's context has
    left the span) are shifted over. A candidate pays for its span plus `context_size`.
    """
    tokens = tuple(int(t) for t in tokens)
    u_len = len(tokens) + 1
    k = model.info.context_size
    shared = suffix = 0
    if reuse is not None:
        shared = _common(tokens, reuse.tokens)
        suffix = _common(tokens[::-1], reuse.tokens[::-1])
        suffix = min(suffix, len(tokens) - shared, len(reuse.tokens) - shared)
    # Positions whose decoder context lies in the common suffix: the same joiner outputs as
    # `reuse` has at the position `shift` further on.
    reused_from = len(tokens) - suffix + k if reuse is not None else u_len
    shift = len(reuse.tokens) - len(tokens) if reuse is not None else 0
    new = range(shared, min(reused_from, u_len))
    history = [-1] * (k - 1) + [model.info.blank_id] + list(tokens)
    contexts = np.array([history[u:u + k] for u in new], np.int64)
    t_len = encoder_out.shape[0]
    down: list[np.ndarray] = list(reuse.down[:shared]) if reuse else []
    emit: list[np.ndarray] = list(reuse.emit[:shared]) if reuse else []
    if len(new):
        blank, next_token = _blank_and_next(model, encoder_out, model.run_decoder(contexts),
                                            [tokens[u] if u < len(tokens) else model.info.blank_id
                                             for u in new])
        for i, u in enumerate(new):
            down.append(np.concatenate([[0.0], np.cumsum(blank[:-1, i])]))
            if u < len(tokens):
                emit.append(next_token[:, i])
    # The closing blank (last frame, all tokens out) is position U's, new or taken over.
    last_blank = float(blank[-1, -1]) if new and new[-1] == len(tokens) else reuse.last_blank
    for u in range(len(down), u_len):
        down.append(reuse.down[u + shift])
        if u < len(tokens):
            emit.append(reuse.emit[u + shift])
    total: list[np.ndarray] = list(reuse.total[:shared]) if reuse else []
    best: list[np.ndarray] = list(reuse.best[:shared]) if reuse else []
    for u in range(len(total), u_len):
        if u == 0:
            total.append(down[0].copy())
            best.append(down[0].copy())
            continue
        e_sum, e_max = total[u - 1] + emit[u - 1], best[u - 1] + emit[u - 1]
        total.append(down[u] + np.logaddexp.accumulate(e_sum - down[u]))
        best.append(down[u] + np.maximum.accumulate(e_max - down[u]))
    frames, cumulative = [0] * len(tokens), [0.0] * len(tokens)
    t = t_len - 1
    for u in range(len(tokens), 0, -1):  # back through the Viterbi choices
        entry = best[u - 1][: t + 1] + emit[u - 1][: t + 1]
        s = int(np.argmax(entry - down[u][: t + 1]))
        frames[u - 1], cumulative[u - 1] = s, float(entry[s])
        t = s
    log_prob = float(total[-1][-1] + last_blank)
    return Alignment(tokens, log_prob, frames, cumulative, down, emit, total, best, last_blank)


@dataclass(frozen=True)
class ContextPhrase:
    text: str  # normalised words, as the model spells them
    tokens: tuple[int, ...]
    bonus: float  # per token
    # May fill a name slot (SlotBonus): a contact, or any entry of a context without kinds.
    slot: bool = True


# The words that introduce a contact in the domain's call and message intents ("call _",
# "text _", "messages from _", "did _ call"): where the assistant's grammar puts a name.
CONTACT_CARRIERS = ("back", "call", "dial", "did", "from", "get", "give", "let", "message",
                    "phone", "ring", "send", "tell", "text", "to", "with")


@dataclass(frozen=True)
class SlotBonus:
    """A larger bonus for a context phrase said where the domain expects a name: right after
    a carrier word. Biasing gated by such prefixes is how production assistants keep names
    from leaking into other requests (Zhao et al. 2019, "Shallow-fusion end-to-end
    contextual biasing": phrases are only boosted after "call", "text", ...).

    On dev_names (held-out names, training voices) a name the beam lost was 1.6 to 6 nats
    per token less likely than what the beam heard (the rescue's candidates, logged), beyond
    the 1.5 shallow fusion gives. `edge-asr eval --config` with a per-token bonus after a
    carrier of 1.5 / 2.5 / 3.0 / 3.5 / 4.0: name recall 53.5 / 72.3 / 76.2 / 79.2 / 82.2%;
    on dev the first utterance without a name changed at 4.0, so the default
    (RecognizerConfig.rescue_slot_bonus) is 3.0, with a margin.
    """
    words: frozenset[str]
    bonus: float  # per token, in place of the phrase's own when larger

    def per_token(self, words: Sequence[str], start: int, phrase: ContextPhrase) -> float:
        """The bonus per token of `phrase` said at words[start:]."""
        if phrase.slot and start > 0 and words[start - 1] in self.words:
            return max(phrase.bonus, self.bonus)
        return phrase.bonus


NO_SLOTS = SlotBonus(frozenset(), 0.0)


def whole_word_bias(paths: Sequence[Path], phrases: Sequence[ContextPhrase],
                    slots: SlotBonus = NO_SLOTS) -> list[Path]:
    """The paths with the context bonus booked only for phrases they hold as whole words.

    The beam search keeps a phrase's bonus once its tokens are complete, even when the
    word goes on ("ramesh lebedevri" holds the bonus of "ramesh lebedev"); a lattice path
    that does not say the phrase should not carry its bonus to the cloud, where it would
    outweigh the path that does. Each occurrence earns bonus x tokens on its last word, the
    slot bonus where a carrier word comes before it (as the rescue judged it).
    """
    by_first = _by_first_word(phrases)
    out = []
    for path in paths:
        earned = _earned([w.word for w in path.words], by_first, slots)
        out.append(Path([replace(w, bias=b) for w, b in zip(path.words, earned, strict=True)]))
    return out


def _by_first_word(phrases: Sequence[ContextPhrase]
                   ) -> dict[str, list[tuple[list[str], ContextPhrase]]]:
    by_first: dict[str, list[tuple[list[str], ContextPhrase]]] = {}
    for phrase in phrases:
        words = phrase.text.split()
        by_first.setdefault(words[0], []).append((words, phrase))
    return by_first


def _earned(words: Sequence[str], by_first: dict[str, list[tuple[list[str], ContextPhrase]]],
            slots: SlotBonus) -> list[float]:
    """The bonus each word earns: bonus x tokens of every phrase said as whole words, on the
    phrase's last word, the slot bonus where a carrier word comes before it."""
    earned = [0.0] * len(words)
    for i, word in enumerate(words):
        for phrase_words, phrase in by_first.get(word, ()):
            n = len(phrase_words)
            if list(words[i:i + n]) == phrase_words:
                earned[i + n - 1] += slots.per_token(words, i, phrase) * len(phrase.tokens)
    return earned


def _last_token_of(phrase: Sequence[int], tokens: Sequence[int]) -> int:
    """Index in `tokens` of the last token of the phrase's first occurrence (else the end)."""
    starts = _occurrences(tokens, phrase)
    return starts[0] + len(phrase) - 1 if starts else len(tokens) - 1


def rescue(model: TransducerModel, encoder_out: np.ndarray, hyp: Hypothesis,
           phrases: Sequence[ContextPhrase], encode: Callable[[str], list[int]],
           max_distance: float = 0.4, max_candidates: int = 24,
           others: Sequence[Hypothesis] = (), slots: SlotBonus = NO_SLOTS
           ) -> tuple[Hypothesis, ContextPhrase] | None:
    """A hypothesis with a context phrase the audio supports in place of a misheard span,
    and that phrase; or None. Candidates come from `hyp` and then from `others` (more of
    the n-best); each is judged against `hyp`, with the slot bonus where a carrier word
    comes before the phrase. `encode` spells a text with the model's sentencepiece units;
    a candidate costs a joiner call over frames x span tokens."""
    texts = [phrase.text for phrase in phrases]
    pool: dict[tuple[str, ...], tuple[Candidate, Hypothesis]] = {}
    for source in (hyp, *others):
        words = model.detokenize(list(source.tokens)).split()
        for cand in propose(words, texts, max_distance, max_candidates):
            pool.setdefault(cand.words, (cand, source))
    if not pool or encoder_out.shape[0] == 0:
        return None
    chosen = sorted(pool.values(), key=lambda item: item[0].distance)[:max_candidates]
    aligned = {hyp.tokens: align(model, encoder_out, hyp.tokens)}
    base = aligned[hyp.tokens]
    # Both sides are judged with the bonus of every phrase they say: a candidate from a
    # shorter path of the n-best that holds a phrase the best already says ("is the disco
    # ball" against "is the disco ball on") must win on the audio alone, not by a bonus
    # only one side is given.
    by_first = _by_first_word(phrases)
    base_bonus = sum(_earned(model.detokenize(list(hyp.tokens)).split(), by_first, slots))
    best: tuple[float, list[int], Alignment, ContextPhrase, float] | None = None
    for cand, source in chosen:
        phrase = phrases[cand.phrase]
        tokens = list(encode(" ".join(cand.words)))
        if source.tokens not in aligned:
            aligned[source.tokens] = align(model, encoder_out, source.tokens, reuse=base)
        found = align(model, encoder_out, tokens, reuse=aligned[source.tokens])
        # What shallow fusion gives a completed phrase, or the slot's. (Counting only the
        # tokens the span lacked, "spa" of "the spa" for "the spain", lost recall on dev:
        # 80.2 -> 79.2%.)
        bonus = slots.per_token(cand.words, cand.start, phrase) * len(phrase.tokens)
        gain = found.log_prob + sum(_earned(cand.words, by_first, slots)) - \
            (base.log_prob + base_bonus)
        if gain > 0 and (best is None or gain > best[0]):
            best = (gain, tokens, found, phrase, bonus)
    if best is None:
        return None
    _, tokens, found, phrase, bonus = best
    # The bonus is booked where shallow fusion would have completed the phrase.
    done = _last_token_of(phrase.tokens, tokens)
    # The LM's part (0 here) is filled in by the search that leads with it (lead_with).
    trace = tuple((lp, bonus if i >= done else 0.0, 0.0) for i, lp in enumerate(found.cumulative))
    trace = trace[:-1] + ((found.log_prob, bonus, 0.0),)
    return Hypothesis(tuple(tokens), found.log_prob, tuple(found.frames), None, ROOT, bonus,
                      trace), phrase
