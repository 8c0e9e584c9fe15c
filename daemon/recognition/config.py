"""What a recognizer is configured with and what it answers: `RecognizerConfig` (model
folder, search, biasing, device LM; each default with the measurement that chose it), the
end-point rules of `Recognizer.is_endpoint`, and `Result`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_asr.daemon.recognition.context_graph import DEFAULT_BONUS
from edge_asr.daemon.recognition.name_rescue import CONTACT_CARRIERS

Context = Sequence[str] | Mapping[str, Sequence[str]]
CONTEXT_CACHE_SIZE = 8  # graphs kept per recognizer; a device has one user, eval a few lists
# ... and at most this many trie nodes in all (about 330 bytes each): the cache stays near
# 10 MB however large the lists clients send (one graph at the API's limits is 27,000)
CONTEXT_CACHE_NODES = 30_000

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# What the daemon, transcribe, eval and `make run` load: model v4 with 4-bit weights. Its
# fp32 source (SOURCE_MODEL_DIR) is what training, export checks and sherpa-onnx read.
DEFAULT_MODEL_DIR = MODELS_DIR / "rnnt-v4-int4"
SOURCE_MODEL_DIR = MODELS_DIR / "rnnt-v4"


@dataclass
class RecognizerConfig:
    model_dir: str | Path = DEFAULT_MODEL_DIR
    decoding_method: str = "modified_beam_search"  # or "greedy_search"
    # As wide as the biased beam below: without lists, on the development sets (`edge-asr
    # eval SET --no-context --beam B`, rnnt-v4-int4) beam 4 / 8 / 16: dev_voices 16.93 /
    # 14.15 / 12.83% WER, dev_snr10 16.45 / - / 14.20%, speechocean762_dev 73.69 / 72.55 /
    # 71.80% (its lattices' oracle 70.58 / 63.84 / 59.89%), the same in 10 dB babble
    # (models/pause_sets.py --noise babble:10) 84.38 / 84.91 / 83.40%, for RTF 0.0079 ->
    # 0.0105.
    beam: int = 16
    # Beam width while a biasing context is set (at least `beam`; 0: just `beam`). Boosted
    # partial matches of names take beam slots from the paths the audio supports; a wider
    # beam keeps both. On dev (rnnt-v1, bonus 1.5) 8 instead of 4 took WER with the context
    # from 12.58 to 10.76% and name recall from 61.5 to 67.7%. With rnnt-v2-int4, 16
    # instead of 8: dev_voices 10.54 -> 9.22%, dev_names 13.59 -> 9.71% (recall 78.2 ->
    # 86.1%), for 1.12x the pipeline's CPU (RESULTS.md, "Biasing").
    context_beam: int = 16
    # Of those, the slots kept for what the model itself scores best, bonus aside.
    context_own_slots: int = 1
    # Best hypothesis by log-prob per token rather than in total (see search.py).
    length_norm: bool = True
    threads: int = 1  # onnxruntime intra-op threads: one leaves the other core to the device
    # Log-prob bonus per token of a context phrase, anywhere. `edge-asr eval SET
    # --context-bonus B` on the dev sets, each also with its contexts grown to 400 contacts
    # and 150 devices (models/long_context.py), B = 1.5 -> 0.75: name-free WER dev 6.81 ->
    # 6.57%, long 7.41 -> 6.98% (7.23% without the context); dev_snr10 11.23 -> 10.99%, long
    # 12.09 -> 11.21% (11.40%); recall dev_names 86.1 -> 88.1%, long 60.2 -> 64.4%; dev
    # recall 91.7% both, long 83.8% both. 1.0 and 1.25 raised long dev_snr10's name-free
    # WER above no context ("the playroom lights" -> "the playroom blinds"); 0.5 lost
    # device recall. The table is in RESULTS.md ("Biasing").
    context_bonus: float = DEFAULT_BONUS
    # ... and per token of a contact said right after a carrier word (`slot_words`), when
    # larger: shallow fusion gated by the grammar's name slots (context_graph.py). Contacts
    # only, so only a context given by kind has any. `edge-asr eval`, rnnt-v1@f39b01c,
    # off -> 2.0: dev_names (held-out names) recall 77.2 -> 80.2%, WER 11.17 -> 10.36%; dev
    # WER 7.74 -> 7.87%, dev_snr10 12.85 -> 12.98%; WER without names unchanged on both.
    # 2.5 and 3.0 put a name-free dev utterance wrong ("put lettuce" -> "put let song":
    # boosted partial matches after "let", "phone", ... crowd the beam) until
    # `context_fallback` undid such garbling; with it, this and rescue_slot_bonus were
    # tuned together (RESULTS.md, "Biasing"): 3.0 and 4.0 took dev_names recall from
    # 80.2 to 86.1% and left the name-free WER of dev and dev_snr10 as it was; 3.5 or a
    # rescue bonus of 5.0 raised it. That is for lists of up to 25 contacts (the sets'):
    context_slot_bonus: float = 3.0
    # ... and this for 400 contacts, falling with the log of the count between and beyond,
    # never below context_bonus (context_graph.slot_bonus_for). On dev given 400 contacts
    # and 150 devices each (models/long_context.py), 3.0 / 2.0 at 400: name recall 84.8 /
    # 83.8%, WER 9.16 / 8.94%, name-free WER 7.79 / 7.41% (7.23% with no context).
    context_slot_bonus_large: float = 2.0
    # Second pass at end-points while a context is set (name_rescue.py): context names the
    # beam lost, put back when the transducer confirms them. Candidates are spans within
    # this normalised edit distance (spelling or sound key) of a name, at most this many.
    # 0.5 since the device LM (0.4 before): its n-best is more fluent and so further from
    # a name the beam lost (dev_names 7.77 -> 7.12% WER, recall 83.2 -> 86.1%; RESULTS.md).
    name_rescue: bool = True
    rescue_distance: float = 0.5
    rescue_candidates: int = 24
    # Hypotheses of the n-best whose spans are proposed (each judged against the best). On
    # dev 1 / 2 / 4: name recall 80.2 / 84.4 / 85.4%, WER 9.25 / 8.94 / 8.80%, name-free
    # WER unchanged (7.67%); CPU per audio second 0.026 / 0.033 / 0.030 (noisy).
    rescue_nbest: int = 4
    # A phrase put in right after a word that introduces a contact ("call _", "text _",
    # "messages from _") is judged with this bonus per token (name_rescue.SlotBonus);
    # 0 judges it as anywhere else. On dev_names name recall 53.5 -> 76.2% (at 3.0).
    rescue_slot_bonus: float = 4.0
    # The words that introduce a contact, for both slot bonuses.
    slot_words: tuple[str, ...] = CONTACT_CARRIERS
    # A context that completes no phrase has no claim on the utterance, yet its boosted
    # partial matches have steered the beam ("yogurt" -> "yogort", "take conditioner off"
    # -> "hey can you shut off" beside "the air conditioning"). So a plain beam (no
    # context, as wide as the biased one) runs beside it, and at an end-point where the
    # best hypothesis, rescue included, says no context phrase as whole words (nor a word of
    # a contact that the plain beam did not hear), the plain beam's n-best stands in.
    # `edge-asr eval` (rnnt-v1 of 2026-11-29), fallback off ->
    # on: dev WER 8.23 -> 8.09%, name-free 6.94 -> 6.81% (7.12% without the context);
    # dev_snr10 11.69 -> 11.61%, name-free 11.17 -> 11.23% (11.23%); dev_names 12.78 ->
    # 12.30%, recall 80.2% both. A plain beam of `beam` (4) instead lost what the wider
    # beam finds: dev name-free 7.43%.
    context_fallback: bool = True
    # Weight of the device LM (token_lm.py: the model folder's lm.arpa.gz, an n-gram over
    # its pieces with people's names as a class) in the beam search; 0 decodes without it.
    # Greedy search never uses it. With the LM alone the beam drops words (each costs LM
    # log-prob), so a reward per token emitted goes with it (search.py). `edge-asr eval`
    # with the context, rnnt-v1 of 2026-11-29, (scale, bonus) = (0, 0) -> (0.3, 1.0):
    # dev_voices 10.05 -> 7.11%, dev 5.51 -> 2.98%, dev_snr10 9.34 -> 7.38%, dev with 400
    # contacts 6.45 -> 3.78%; dev_names (held-out names) 7.61 -> 7.77%, name recall 89.1 ->
    # 83.2%. The grid and what the name class changed are in RESULTS.md.
    lm_scale: float = 0.3
    token_bonus: float = 1.0
    # An utterance whose n-best gives "no words" at least this share of its acoustic
    # probability (hypotheses.no_words_share) is sound the VAD took for speech: music after
    # a request, a door. Its words ("yes", "no", "go") are guesses beside nothing and are
    # dropped, lattice too; 1.0 keeps them. Real speech scores about 0 (`python
    # bench/no_words.py`, development sets): 0.000 at most on the voices' requests, 1 of 210
    # utterances of real speakers at or above 0.2 (a one-word fragment), 40 one- and
    # two-word answers clean and in music 10 dB at most 0.098; what music after a request
    # made, median 0.784, 92-100% at or above 0.2 (RESULTS.md, "Words heard in music").
    no_words_share: float = 0.2

    @property
    def beam_with_context(self) -> int:
        """The beam searched while a (non-empty) biasing context is set."""
        return max(self.beam, self.context_beam)


@dataclass(frozen=True)
class EndpointRule:
    """An end-point once the best hypothesis has ended in `min_trailing_silence` seconds
    of blanks (`must_contain_nonsilence`: and has said something), or the utterance has
    lasted `min_utterance_length` seconds (0: no such limit)."""

    must_contain_nonsilence: bool
    min_trailing_silence: float
    min_utterance_length: float = 0.0

    def fires(self, said_something: bool, trailing_s: float, utterance_s: float) -> bool:
        if self.must_contain_nonsilence and not said_something:
            return False
        if self.min_utterance_length > 0 and utterance_s >= self.min_utterance_length:
            return True
        return self.min_trailing_silence > 0 and trailing_s >= self.min_trailing_silence


# sherpa-onnx's defaults (its OnlineRecognizer's rule1/2/3): 2.4 s of nothing, 1.2 s after
# speech, or 20 s of utterance.
DEFAULT_ENDPOINT_RULES = (EndpointRule(False, 2.4), EndpointRule(True, 1.2),
                          EndpointRule(False, 0.0, 20.0))


@dataclass
class Result:
    text: str
    tokens: list[int]
    timestamps: list[float]  # seconds from the start of the stream, one per token
    nbest: list[str] = field(default_factory=list)
    nbest_log_probs: list[float] = field(default_factory=list)  # acoustic
    nbest_bias: list[float] = field(default_factory=list)  # context bonus kept by each
