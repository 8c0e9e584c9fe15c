"""The end-pointers' settings: every threshold in seconds of audio, each one tunable on an
evaluation set and settable in the daemon's TOML (`[endpoint]`). endpoint.py reads them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

PAUSE_FROM_BLANKS = ("playback", "always", "never")


@dataclass(frozen=True)
class EndpointConfig:
    """Thresholds in seconds of audio; every one can be tuned on an evaluation set."""

    vad_frame_s: float = 0.03  # duration of one VAD flag (Vad(frame_ms=30))
    encoder_frame_s: float = 0.04  # duration of one encoder output frame (blank count unit)
    min_speech: float = 0.12  # voiced time before an utterance counts as started
    onset_max_gap: float = 0.10  # a longer gap during the onset drops it as noise
    resume_speech: float = 0.06  # voiced run that ends a silence (shorter runs are noise)
    # VAD silence before the speculative end-point: six VAD frames. On the development sets
    # (`edge-asr eval --config`, rnnt-v4-int4, learned end-of-query) 0.2 -> 0.18: speculative
    # EP50 voices 0.219 -> 0.191 s, real speakers 0.03 -> -0.02 s; resets 5.4 -> 7.2% and
    # 35.0 -> 37.0%; WER and the final end-points as they were (0.15: 0.162 s, 11.8% resets).
    spec_silence: float = 0.18
    # ... in noise (the VAD's speech level under `noisy_snr_db` above its noise floor), where
    # the gated VAD also hears the gaps between words as silence.
    spec_silence_noisy: float = 0.3
    noisy_snr_db: float = 15.0
    # ... and the final end-pointer waits this much longer there: in noise a pause inside a
    # request ("dial one six nine ... two five") is heard as silence sooner, and the words
    # before it are often misheard, so the text cannot tell that more is coming.
    final_silence_noisy_extra: float = 0.0
    # ... or, when the words look unfinished and the final end-pointer waits long, this much
    # before the final one: "dial five five five" does not speculate in the pause before
    # the next digit group, only to be reset when it comes.
    spec_lead: float = 0.2
    # ... but only this much when the words clearly stop mid-request ("call", "text"): the
    # speaker is then most often pausing before a name or a digit group, and a guess in
    # that pause is mostly taken back.
    spec_lead_unfinished: float = 0.1
    spec_blank: float = 0.08  # trailing blanks, too: the decoder has stopped emitting
    final_silence: float = 0.45  # VAD silence before the final one, text unsure (0.5)
    final_silence_min: float = 0.35  # ... when the text looks finished
    final_silence_max: float = 0.75  # ... when it looks unfinished: outlasts 700 ms pauses
    # ... plus this in noise: there the VAD hears the pause begin sooner (the noise masks
    # the last word's tail), so a 700 ms pause before a digit group or a name measures
    # longer. Words that look finished are not held (final_silence_noisy_extra holds all).
    # On dev_snr10 0 -> 0.3 s: premature cuts 1.3 -> 1.0%, resets 9.7 -> 8.7%, final EP90
    # 0.588 -> 0.603 s (RESULTS.md, "VAD and end-pointers").
    final_silence_max_noisy_extra: float = 0.3
    final_blank: float = 0.16
    silence_timeout: float = 1.5  # final after this much silence even if the decoder
    # still emits or the text looks unfinished
    max_utterance: float = 12.0  # forces a final, measured from the start of speech
    # The VAD hears music and other people's chatter as speech and may never report the
    # silence the rules above wait for. The decoder knows better, given a good model: when
    # the best path has had no new token for `blank_timeout` (longer than a pause between
    # digit groups), the request is over; sound that gave no word at all for
    # `no_words_timeout` is not a request. (sherpa-onnx's end-point rules count only such
    # decoder blanks.) Off (0) by default: rnnt-v1 sometimes goes 1-2 s without a token
    # inside speech, so on 150 test_sentences 1.0 s cut 20% of requests early, 2.0 s 2.0%
    # (1.3% off), and in the quiet-kitchen scenario 2.0 s cut 4 of 12 (`edge-asr eval
    # --config`, `edge-asr sim`).
    blank_timeout: float = 0.0
    no_words_timeout: float = 0.0
    speculative: bool = True
    # The learned end-of-query model (query_end.py), where the model folder ships one: the
    # final end-point then fires after final_silence_min once P(request over) reaches the
    # threshold, in place of the rules' wait (final_silence*, completeness); silence_timeout
    # still bounds the wait. The speculative end-pointer keeps spec_silence.
    query_end: bool = True
    query_end_threshold: float | None = None  # None: the threshold tuned with the model
    # "playback": while the device plays audio, the classifier hears the pause as the
    # longer of the VAD's silence and the decoder's trailing blanks (once the VAD has heard
    # final_silence_min): residual echo breaks the VAD's silence into pieces, while the
    # decoder, which hears no words in it, keeps counting. "always" does so without
    # playback too, where blanks outrun the silence mostly after speech the model missed:
    # it cut more real speakers' requests (RESULTS.md, "Learned end-of-query"). "never":
    # the VAD's silence alone.
    query_end_pause_from_blanks: str = "playback"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (value is None and f.name == "query_end_threshold"
                    or f.name == "query_end_pause_from_blanks"):
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"EndpointConfig.{f.name} must be a finite number >= 0, "
                                 f"got {value!r}")
        for name in ("vad_frame_s", "encoder_frame_s", "min_speech", "resume_speech",
                     "spec_silence", "spec_silence_noisy", "final_silence_min",
                     "max_utterance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EndpointConfig.{name} must be > 0")
        if not self.final_silence_min <= self.final_silence <= self.final_silence_max:
            raise ValueError("EndpointConfig needs final_silence_min <= final_silence <= "
                             f"final_silence_max, got {self.final_silence_min}, "
                             f"{self.final_silence}, {self.final_silence_max}")
        if self.silence_timeout < self.final_silence_max:
            raise ValueError("EndpointConfig.silence_timeout must be >= final_silence_max")
        if self.query_end_pause_from_blanks not in PAUSE_FROM_BLANKS:
            raise ValueError("EndpointConfig.query_end_pause_from_blanks must be one of "
                             f"{', '.join(PAUSE_FROM_BLANKS)}, got "
                             f"{self.query_end_pause_from_blanks!r}")
        if self.query_end_threshold is not None and not 0 < self.query_end_threshold < 1:
            raise ValueError("EndpointConfig.query_end_threshold must be in (0, 1)")
