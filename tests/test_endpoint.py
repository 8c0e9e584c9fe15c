"""The end-pointers' decision logic on synthetic timelines, the VAD wrapper and the
completeness rules. No model and no audio files: speech flags per 10 ms frame, trailing
blank counts and best texts are made up to order."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_asr.daemon.endpointing.completeness import looks_complete
from edge_asr.daemon.endpointing.endpoint import (
    Endpointer,
    EndpointEvent,
    EndReason,
    EventKind,
    Phase,
)
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.frontend.vad import SpeechSmoother, Vad

FRAME_S = 0.01
CONFIG = EndpointConfig(vad_frame_s=FRAME_S)
LETTERS = {
    EventKind.SPEECH_STARTED: "S", EventKind.SPECULATIVE_ENDPOINT: "P",
    EventKind.CONFIRMED: "C", EventKind.RESET: "R", EventKind.FINAL_ENDPOINT: "F",
}


# ---------------------------------------------------------------- timeline driver

@dataclass(frozen=True)
class Segment:
    """`frames` VAD frames of speech or silence; the best path reads `text` once the
    segment has been decoded (None: the text does not change)."""

    frames: int
    speech: bool
    text: str | None = None


def speech(seconds: float, text: str | None = None) -> Segment:
    return Segment(round(seconds / FRAME_S), True, text)


def silence(seconds: float, text: str | None = None) -> Segment:
    return Segment(round(seconds / FRAME_S), False, text)


@dataclass
class Run:
    events: list[EndpointEvent]
    endpointer: Endpointer

    @property
    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def first(self, kind: EventKind) -> EndpointEvent:
        return next(e for e in self.events if e.kind is kind)


def simulate(segments: list[Segment], config: EndpointConfig = CONFIG,
             chunk_frames: int | list[int] = 4, blank_lag_s: float = 0.04,
             blanks: str = "follow", finish: bool = True, snr_db: float | None = None,
             end_probability=None, query_end_threshold: float | None = None,
             playback: bool = False) -> Run:
    """Feed a timeline in decoder-sized calls.

    blanks="follow": the best path's trailing blanks follow the silence, `blank_lag_s`
    late (the model emits its last token after the audio); "none": unknown;
    "never": the decoder keeps emitting; "words": they follow the last speech that gave
    text, so sound without text (echo, music) does not stop them.
    end_probability(text, silence_s, blank_s): a stand-in for the learned end-of-query
    model, used with `query_end_threshold`.
    """
    flags: list[bool] = []
    worded: list[bool] = []
    texts: list[str] = []
    text = ""
    for seg in segments:
        for i in range(seg.frames):
            flags.append(seg.speech)
            worded.append(seg.speech and seg.text is not None)
            if seg.text is not None and i == seg.frames - 1:
                text = seg.text
            texts.append(text)
    sizes = chunk_frames if isinstance(chunk_frames, list) else [chunk_frames]
    ep = Endpointer(config, query_end_threshold=query_end_threshold)
    events: list[EndpointEvent] = []
    pos, k = 0, 0
    while pos < len(flags):
        size = max(1, sizes[k % len(sizes)])
        k += 1
        end = min(len(flags), pos + size)
        said = texts[end - 1]
        learned = None if end_probability is None else (
            lambda silence_s, blank_s, said=said: end_probability(said, silence_s, blank_s))
        events += ep.update(round(end * FRAME_S, 9), flags[pos:end],
                            _blanks(worded if blanks == "words" else flags, end, blank_lag_s,
                                    blanks), said,
                            snr_db=snr_db, end_probability=learned, playback=playback)
        pos = end
    if finish:
        events += ep.finish(round(len(flags) * FRAME_S, 9), texts[-1] if texts else "")
    return Run(events, ep)


def _blanks(flags: list[bool], end: int, lag_s: float, mode: str) -> int | None:
    if mode == "none":
        return None
    if mode == "never":
        return 0
    silent = 0
    while silent < end and not flags[end - 1 - silent]:
        silent += 1
    return max(0, math.floor((silent * FRAME_S - lag_s) / CONFIG.encoder_frame_s + 1e-9))


def grammar(events: list[EndpointEvent]) -> list[str]:
    """Each utterance's events as letters, e.g. ["SPC", "SPRF"]."""
    out: list[str] = []
    for e in events:
        if e.utterance == len(out):
            out.append("")
        assert e.utterance == len(out) - 1, "utterances must come one after the other"
        out[-1] += LETTERS[e.kind]
    return out


def no_events_between(run: Run, start: float, end: float, *kinds: EventKind) -> bool:
    return not [e for e in run.events if e.kind in kinds and start <= e.time <= end]


# ---------------------------------------------------------------- end-pointer scenarios

@pytest.mark.parametrize("chunk_frames", [4, 8, 16])
def test_normal_utterance_speculates_then_confirms(chunk_frames: int) -> None:
    text = "turn on the kitchen lights"
    run = simulate([silence(0.3), speech(1.5, text), silence(1.5)], chunk_frames=chunk_frames)
    chunk_s = chunk_frames * FRAME_S
    assert run.kinds == [EventKind.SPEECH_STARTED, EventKind.SPECULATIVE_ENDPOINT,
                         EventKind.CONFIRMED]
    started, spec, confirmed = run.events
    assert 0.3 + CONFIG.min_speech <= started.time <= 0.3 + CONFIG.min_speech + chunk_s
    speech_end = 1.8
    assert CONFIG.spec_silence - 1e-9 <= spec.time - speech_end <= CONFIG.spec_silence + chunk_s
    threshold = run.endpointer.final_silence_for(text)
    assert CONFIG.final_silence_min <= threshold <= CONFIG.final_silence
    assert threshold <= confirmed.time - speech_end <= threshold + chunk_s
    assert (spec.revision, confirmed.revision) == (1, 1)
    assert spec.text == confirmed.text == text
    assert confirmed.reason is EndReason.SILENCE
    timing = confirmed.timing
    assert timing is not None and not timing.reset
    assert timing.speech_start == pytest.approx(0.3)
    assert timing.speech_end == pytest.approx(speech_end)
    assert timing.speculative_at == spec.time and timing.final_at == confirmed.time
    assert run.endpointer.phase is Phase.IDLE


def test_speculative_leads_final_by_about_200_ms_for_unsure_text() -> None:
    run = simulate([silence(0.2), speech(1.0, "foo bar baz"), silence(1.5)], chunk_frames=2)
    spec = run.first(EventKind.SPECULATIVE_ENDPOINT)
    confirmed = run.first(EventKind.CONFIRMED)
    assert looks_complete("foo bar baz") == pytest.approx(0.7)
    assert 0.1 <= confirmed.time - spec.time <= 0.25


def _feed_sound(ep: Endpointer, seconds: float, start: float, text: str,
                last_token_at: float | None, step: float = 0.04) -> list[EndpointEvent]:
    """Feed `seconds` in which the VAD hears sound throughout (music, chatter); the decoder's
    last token came at `last_token_at` (None: none yet in this utterance)."""
    events: list[EndpointEvent] = []
    t = start
    while t < start + seconds - 1e-9:
        t = round(t + step, 9)
        since = t - (last_token_at if last_token_at is not None else 0.0)
        events += ep.update(t, [True] * round(step / FRAME_S),
                            max(0, math.floor(since / CONFIG.encoder_frame_s)), text)
    return events


def test_words_then_endless_sound_end_on_the_decoders_blanks() -> None:
    """Music under the request: the VAD never reports silence, yet the request ends
    `blank_timeout` after its last word."""
    config = EndpointConfig(vad_frame_s=FRAME_S, blank_timeout=1.0)
    ep = Endpointer(config)
    events = _feed_sound(ep, 1.0, 0.0, "", None)
    events += _feed_sound(ep, 3.0, 1.0, "play some jazz", last_token_at=1.2)
    assert [e.kind for e in events][:3] == [EventKind.SPEECH_STARTED,
                                            EventKind.SPECULATIVE_ENDPOINT,
                                            EventKind.CONFIRMED]
    confirmed = next(e for e in events if e.kind is EventKind.CONFIRMED)
    assert confirmed.reason is EndReason.BLANK_TIMEOUT
    assert config.blank_timeout <= confirmed.time - 1.2 <= config.blank_timeout + 0.05


def test_sound_without_words_ends_as_an_empty_utterance_not_at_max_length() -> None:
    config = EndpointConfig(vad_frame_s=FRAME_S, no_words_timeout=3.0)
    events = _feed_sound(Endpointer(config), 5.0, 0.0, "", None)
    confirmed = next(e for e in events if e.kind is EventKind.CONFIRMED)
    assert confirmed.reason is EndReason.NO_WORDS and confirmed.text == ""
    assert confirmed.time <= config.no_words_timeout + 0.1
    disabled = Endpointer(CONFIG)  # the default: both rules off
    assert not [e for e in _feed_sound(disabled, 5.0, 0.0, "call", 0.5)
                if e.kind is EventKind.CONFIRMED]


def test_no_speculation_before_the_first_word() -> None:
    """Sound that gave no word yet (in noise: most often a false start) gets no speculative
    end-point, which would only earn a RESET when the request begins; the final end-point
    still closes it. With words, the same silence speculates."""
    wordless = simulate([silence(0.3), speech(0.6), silence(1.0), speech(0.6, "call mom"),
                         silence(1.0)])
    assert grammar(wordless.events) == ["SPC", "SPC"]
    first_spec = wordless.first(EventKind.SPECULATIVE_ENDPOINT)
    first_final = wordless.first(EventKind.CONFIRMED)
    assert first_spec.time == first_final.time and first_spec.text == ""
    worded = simulate([silence(0.3), speech(0.6, "call mom"), silence(1.0)])
    spec = worded.first(EventKind.SPECULATIVE_ENDPOINT)
    assert spec.time < worded.first(EventKind.CONFIRMED).time
    assert spec.time - 0.9 == pytest.approx(CONFIG.spec_silence, abs=0.045)


def test_without_speculation_both_decisions_come_at_the_final_end_point() -> None:
    """`speculative = false` (a device without the early end-pointer, which the simulator
    compares against): the lattice leaves only when the final end-pointer fires."""
    text = "turn on the kitchen lights"
    config = EndpointConfig(vad_frame_s=FRAME_S, speculative=False)
    run = simulate([silence(0.3), speech(1.5, text), silence(1.5)], config=config)
    assert run.kinds == [EventKind.SPEECH_STARTED, EventKind.SPECULATIVE_ENDPOINT,
                         EventKind.CONFIRMED]
    spec, confirmed = run.events[1:]
    assert spec.time == confirmed.time
    assert confirmed.time - 1.8 >= run.endpointer.final_silence_for(text)
    resumed = simulate([speech(1.0, "call"), silence(0.4), speech(0.8, "call mom"),
                        silence(1.5)], config=config)
    assert EventKind.RESET not in resumed.kinds  # nothing early to take back


@pytest.mark.parametrize("chunk_frames", [4, 8, 16])
@pytest.mark.parametrize("pause_s", [0.6, 0.7])
def test_pause_between_digit_groups_is_not_cut(chunk_frames: int, pause_s: float) -> None:
    first, full = "dial five five five", "dial five five five zero one nine two"
    # spec_lead off: the speculative end-pointer guesses at spec_silence whatever the words.
    run = simulate([silence(0.3), speech(1.0, first), silence(pause_s),
                    speech(0.9, full), silence(1.5)], chunk_frames=chunk_frames,
                   config=dataclasses.replace(CONFIG, spec_lead=1.0, spec_lead_unfinished=1.0))
    pause_start, pause_end = 1.3, 1.3 + pause_s
    assert run.kinds == [EventKind.SPEECH_STARTED, EventKind.SPECULATIVE_ENDPOINT,
                         EventKind.RESET, EventKind.FINAL_ENDPOINT]
    spec, reset, final = run.events[1:]
    assert pause_start < spec.time < pause_end  # the aggressive one may guess wrong ...
    assert no_events_between(run, pause_start, pause_end, EventKind.CONFIRMED,
                             EventKind.FINAL_ENDPOINT)  # ... the final one must not cut
    assert pause_end <= reset.time <= pause_end + CONFIG.resume_speech + chunk_frames * FRAME_S
    assert final.time > pause_end + 0.9
    assert final.text == full and final.revision == 2 and final.reason is EndReason.SILENCE
    assert final.timing is not None and final.timing.reset
    assert final.timing.reset_at == reset.time


def test_unfinished_words_speculate_only_spec_lead_before_the_final() -> None:
    """"dial five five five" then a 0.45 s pause before the next digit group: no
    speculative end-point, so no RESET; when the speaker has stopped, it comes
    `spec_lead_unfinished` before the final one (words this unfinished). Finished words
    speculate at `spec_silence`."""
    first, full = "dial five five five", "dial five five five zero one nine two"
    paused = simulate([silence(0.3), speech(1.0, first), silence(0.45), speech(0.9, full),
                       silence(1.5)])
    assert grammar(paused.events) == ["SPC"]
    stopped = simulate([silence(0.3), speech(1.0, first), silence(1.5)])
    spec, final = stopped.first(EventKind.SPECULATIVE_ENDPOINT), stopped.first(EventKind.CONFIRMED)
    assert stopped.endpointer.final_silence_for(first) == pytest.approx(CONFIG.final_silence_max)
    lead = CONFIG.final_silence_max - CONFIG.spec_lead_unfinished
    assert lead > CONFIG.spec_silence
    assert spec.time - 1.3 == pytest.approx(lead, abs=0.045)
    assert final.time - spec.time == pytest.approx(CONFIG.spec_lead_unfinished, abs=0.045)
    # Words that only probably go on ("set a timer" ... "for ten minutes") keep the full
    # spec_lead before their shorter wait.
    likely = simulate([silence(0.3), speech(1.0, "set a timer"), silence(1.5)])
    assert CONFIG.final_silence < likely.endpointer.final_silence_for("set a timer") \
        < CONFIG.final_silence_max
    spec, final = likely.first(EventKind.SPECULATIVE_ENDPOINT), likely.first(EventKind.CONFIRMED)
    assert final.time - spec.time == pytest.approx(CONFIG.spec_lead, abs=0.045)


def test_in_noise_the_speculative_end_point_waits_for_a_longer_silence() -> None:
    """At a low speech-to-noise estimate the gated VAD hears gaps between words as silence:
    a 0.25 s gap speculates in a quiet room, not in noise; after the request the noisy
    speculative end-point comes at spec_silence_noisy."""
    words = [silence(0.3), speech(0.8, "turn the lights"), silence(0.25),
             speech(0.5, "turn the lights off"), silence(1.5)]
    assert grammar(simulate(words, snr_db=35.0).events) == ["SPRF"]
    noisy = simulate(words, snr_db=8.0)
    assert grammar(noisy.events) == ["SPC"]
    spec = noisy.first(EventKind.SPECULATIVE_ENDPOINT)
    assert spec.time - 1.85 == pytest.approx(CONFIG.spec_silence_noisy, abs=0.045)
    assert grammar(simulate(words).events) == ["SPRF"]  # unknown: as in a quiet room


def test_in_noise_the_final_end_point_can_be_told_to_wait_longer() -> None:
    """final_silence_noisy_extra (off by default) holds the final end-point in noise only:
    a 0.5 s pause after words that look finished cuts at 8 dB by default, and is bridged
    with 0.3 s extra; a quiet room decides exactly as before."""
    words = [silence(0.3), speech(0.8, "turn on the lights"), silence(0.5),
             speech(0.6, "turn on the lights in the hall"), silence(2.0)]
    assert simulate(words, snr_db=8.0).first(EventKind.CONFIRMED).time < 1.6  # in the pause
    patient = dataclasses.replace(CONFIG, final_silence_noisy_extra=0.3)
    noisy = simulate(words, config=patient, snr_db=8.0)
    assert no_events_between(noisy, 1.1, 1.6, EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT)
    end = noisy.events[-1]
    assert end.text == "turn on the lights in the hall"
    wait = noisy.endpointer.final_silence_for(end.text) + 0.3
    assert end.time - 2.2 == pytest.approx(wait, abs=0.045)
    quiet = simulate(words, config=patient, snr_db=35.0)
    plain = simulate(words, snr_db=35.0)
    assert [(e.kind, e.time) for e in quiet.events] == [(e.kind, e.time) for e in plain.events]


def test_in_noise_unfinished_words_wait_longer() -> None:
    """In noise the VAD hears a pause begin early, so "dial one six nine" then 0.85 s of
    pause measures longer than 700 ms; final_silence_max_noisy_extra bridges it. Words that look
    finished end as soon as before, and a quiet room decides exactly as before."""
    words = [silence(0.3), speech(0.8, "dial one six nine"), silence(0.85),
             speech(0.8, "dial one six nine two five one zero"), silence(2.0)]
    impatient = dataclasses.replace(CONFIG, final_silence_max_noisy_extra=0.0)
    assert simulate(words, config=impatient, snr_db=8.0).first(EventKind.CONFIRMED).time < 1.95
    patient = CONFIG  # the default holds 0.3 s longer
    noisy = simulate(words, config=patient, snr_db=8.0)
    assert no_events_between(noisy, 1.1, 1.95, EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT)
    assert noisy.events[-1].text == "dial one six nine two five one zero"
    ep = noisy.endpointer
    assert ep.final_silence_for("dial one six nine", noisy=True) == pytest.approx(
        CONFIG.final_silence_max + 0.3)
    assert ep.final_silence_for("dial one six nine") == CONFIG.final_silence_max
    finished = "turn the fan off please"
    assert ep.final_silence_for(finished, noisy=True) == ep.final_silence_for(finished)
    quiet = simulate(words, config=patient, snr_db=35.0)
    plain = simulate(words, config=impatient, snr_db=35.0)
    assert [(e.kind, e.time) for e in quiet.events] == [(e.kind, e.time) for e in plain.events]


@pytest.mark.parametrize("chunk_frames", [4, 16])
def test_pause_before_a_name_is_not_cut(chunk_frames: int) -> None:
    run = simulate([silence(0.4), speech(0.4, "call"), silence(0.7),
                    speech(0.6, "call siobhan"), silence(1.5)], chunk_frames=chunk_frames)
    assert no_events_between(run, 0.8, 1.5, EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT)
    # The speculative end-pointer may guess 0.1 s before the final's 0.75 s (spec_lead_
    # unfinished), inside a 0.7 s pause when decisions come often enough; then it is reset.
    assert grammar(run.events) in (["SPRF"], ["SPC"])
    assert run.events[-1].text == "call siobhan"
    assert run.endpointer.final_silence_for("call") == CONFIG.final_silence_max


def test_changed_best_path_at_the_final_decision_resets() -> None:
    run = simulate([silence(0.3), speech(1.2, "turn on the kitchen light"),
                    silence(0.3, "turn on the kitchen lights"), silence(1.2)])
    assert run.kinds == [EventKind.SPEECH_STARTED, EventKind.SPECULATIVE_ENDPOINT,
                         EventKind.RESET, EventKind.FINAL_ENDPOINT]
    spec, reset, final = run.events[1:]
    assert spec.text == "turn on the kitchen light"
    assert reset.time == final.time  # decided together, at the final end-point
    assert final.text == "turn on the kitchen lights" and final.revision == 2


def test_best_path_that_changes_back_before_the_final_is_confirmed() -> None:
    text = "play some jazz in the kitchen"
    run = simulate([silence(0.3), speech(1.5, text), silence(0.26, "play some jazz in the"),
                    silence(0.06, text), silence(1.0)], chunk_frames=2)
    assert grammar(run.events) == ["SPC"]


def test_max_utterance_forces_a_final_and_speech_goes_on_as_a_new_utterance() -> None:
    config = EndpointConfig(vad_frame_s=FRAME_S, max_utterance=3.0)
    run = simulate([silence(0.5), speech(5.0, "blah blah"), silence(1.5)], config=config)
    assert grammar(run.events) == ["SPC", "SPC"]
    first_end = run.events[2]
    assert first_end.reason is EndReason.MAX_UTTERANCE
    assert 3.5 <= first_end.time <= 3.5 + 0.04
    assert run.events[1].time == first_end.time  # speculative and confirmed together
    assert run.events[3].time > first_end.time  # the rest of the speech, a second one


def test_max_utterance_after_a_reset_gives_the_final_endpoint() -> None:
    config = EndpointConfig(vad_frame_s=FRAME_S, max_utterance=4.0, spec_lead=1.0,
                            spec_lead_unfinished=1.0)
    run = simulate([silence(0.5), speech(1.0, "call"), silence(0.4), speech(4.0, "call x")],
                   config=config, finish=False)
    assert grammar(run.events) == ["SPRF", "S"]  # the speech after the cut starts anew
    final = run.first(EventKind.FINAL_ENDPOINT)
    assert final.reason is EndReason.MAX_UTTERANCE
    assert final.time == pytest.approx(0.5 + config.max_utterance, abs=0.041)


@pytest.mark.parametrize("blip_s", [0.03, 0.06, 0.09, 0.11])
def test_noise_blips_shorter_than_min_speech_start_nothing(blip_s: float) -> None:
    timeline = [silence(0.3)]
    for _ in range(8):
        timeline += [speech(blip_s), silence(0.25)]
    run = simulate(timeline, chunk_frames=[1, 3, 7])
    assert run.events == []


def test_short_gaps_inside_the_onset_are_bridged() -> None:
    run = simulate([silence(0.2), speech(0.06), silence(0.05), speech(0.06), silence(1.0)])
    assert grammar(run.events) == ["SPC"]
    assert run.events[0].timing is None
    assert run.endpointer.timing is not None
    assert run.endpointer.timing.speech_start == pytest.approx(0.2)


def test_a_noise_frame_in_the_trailing_silence_does_not_reset() -> None:
    run = simulate([silence(0.3), speech(1.0, "lock the front door"), silence(0.3),
                    speech(0.03), silence(1.0)])
    assert grammar(run.events) == ["SPC"]


def test_blanks_hold_the_end_pointers_until_the_silence_timeout() -> None:
    run = simulate([silence(0.3), speech(1.0, "what's the weather"), silence(2.0)],
                   blanks="never")
    assert grammar(run.events) == ["SPC"]
    spec, confirmed = run.events[1:]
    assert spec.time == confirmed.time
    assert confirmed.reason is EndReason.SILENCE_TIMEOUT
    assert confirmed.time - 1.3 == pytest.approx(CONFIG.silence_timeout, abs=0.05)


def test_unknown_blanks_go_by_the_vad_alone() -> None:
    run = simulate([silence(0.3), speech(1.0, "what's the weather"), silence(1.0)],
                   blanks="none")
    spec = run.first(EventKind.SPECULATIVE_ENDPOINT)
    assert spec.time - 1.3 == pytest.approx(CONFIG.spec_silence, abs=0.045)


def test_finish_closes_an_open_utterance_and_drops_an_onset() -> None:
    run = simulate([silence(0.3), speech(1.0, "set a timer for")])
    assert grammar(run.events) == ["SPC"]
    assert run.events[-1].reason is EndReason.END_OF_INPUT
    run = simulate([silence(0.3), speech(0.05)])
    assert run.events == [] and run.endpointer.phase is Phase.IDLE


def test_finished_text_ends_sooner_and_unfinished_text_later() -> None:
    ep = Endpointer(CONFIG)
    assert ep.final_silence_for("turn the fan off please") == CONFIG.final_silence_min
    assert ep.final_silence_for("dial five five five") == CONFIG.final_silence_max
    assert ep.final_silence_for("") == CONFIG.final_silence
    neutral = Endpointer(CONFIG, completeness=lambda text: 0.5)
    assert neutral.final_silence_for("call") == CONFIG.final_silence


@given(st.floats(0, 1), st.floats(0, 1))
def test_final_threshold_falls_as_completeness_rises(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    ep_lo, ep_hi = (Endpointer(CONFIG, completeness=lambda text, s=s: s) for s in (lo, hi))
    assert ep_hi.final_silence_for("x") <= ep_lo.final_silence_for("x")
    assert CONFIG.final_silence_min <= ep_hi.final_silence_for("x") <= CONFIG.final_silence_max


def test_bad_inputs_are_refused() -> None:
    ep = Endpointer(CONFIG)
    ep.update(1.0, [False] * 10, 0, "")
    with pytest.raises(ValueError, match="never go back"):
        ep.update(0.5, [], 0, "")
    with pytest.raises(ValueError, match="trailing_blanks"):
        ep.update(1.1, [False] * 10, -1, "")
    with pytest.raises(ValueError, match="finite"):
        ep.update(math.nan, [], 0, "")
    with pytest.raises(ValueError, match="final_silence_min <= final_silence"):
        EndpointConfig(final_silence=0.2, final_silence_min=0.3)
    with pytest.raises(ValueError, match="silence_timeout"):
        EndpointConfig(silence_timeout=0.5)
    with pytest.raises(ValueError, match="final_silence_max_noisy_extra"):
        EndpointConfig(final_silence_max_noisy_extra=-0.1)
    with pytest.raises(ValueError, match="spec_silence"):
        EndpointConfig(spec_silence=-0.1)


# ---------------------------------------------------------------- ordering invariant

_TEXTS = ["", "call", "call mom", "dial five five five", "turn the lights on", "stop"]


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[Segment], list[int], str, EndpointConfig]:
    segments = draw(st.lists(
        st.builds(Segment, st.integers(1, 80), st.booleans(),
                  st.one_of(st.none(), st.sampled_from(_TEXTS))),
        min_size=1, max_size=14))
    chunks = draw(st.lists(st.integers(1, 16), min_size=1, max_size=5))
    blanks = draw(st.sampled_from(["follow", "none", "never"]))
    config = EndpointConfig(
        vad_frame_s=FRAME_S,
        spec_silence=draw(st.sampled_from([0.05, 0.22, 0.4])),
        final_silence_min=0.3, final_silence=0.45, final_silence_max=1.0,
        max_utterance=draw(st.sampled_from([2.5, 12.0])),
    )
    return segments, chunks, blanks, config


@settings(max_examples=150, deadline=None)
@given(timelines())
def test_events_always_follow_the_grammar(case: tuple) -> None:
    segments, chunks, blanks, config = case
    run = simulate(segments, config=config, chunk_frames=chunks, blanks=blanks, finish=True)
    times = [e.time for e in run.events]
    assert times == sorted(times)
    for letters in grammar(run.events):
        # One speculative per utterance, then exactly one of CONFIRMED or RESET+FINAL.
        assert re.fullmatch(r"SP(C|RF)", letters), letters
    for e in run.events:
        expected = {EventKind.SPEECH_STARTED: None, EventKind.SPECULATIVE_ENDPOINT: 1,
                    EventKind.CONFIRMED: 1, EventKind.RESET: 1, EventKind.FINAL_ENDPOINT: 2}
        assert e.revision == expected[e.kind]
        if e.kind in (EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT):
            t = e.timing
            assert t is not None and t.final_at == e.time
            assert t.speech_start <= t.started_at <= t.speculative_at <= t.final_at
            assert (e.kind is EventKind.FINAL_ENDPOINT) == t.reset
    assert run.endpointer.phase is Phase.IDLE  # every utterance that started has ended


@settings(max_examples=60, deadline=None)
@given(timelines())
def test_an_unfinished_stream_is_a_prefix_of_the_grammar(case: tuple) -> None:
    segments, chunks, blanks, config = case
    run = simulate(segments, config=config, chunk_frames=chunks, blanks=blanks, finish=False)
    utterances = grammar(run.events)
    for letters in utterances[:-1]:
        assert re.fullmatch(r"SP(C|RF)", letters), letters
    if utterances:
        assert re.fullmatch(r"S(P(C|R(F)?)?)?", utterances[-1]), utterances[-1]


# ---------------------------------------------------------------- VAD

def _voiced(seconds: float, sr: int = 16000) -> np.ndarray:
    """A harmonic-rich 140 Hz buzz with a syllable-rate envelope: webrtcvad calls it speech."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25))
    x = x * 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("mode, frame_ms", [(4, 30), (-1, 30), (2, 25), (2, 0), (True, 30)])
def test_vad_refuses_bad_settings(mode: int, frame_ms: int) -> None:
    with pytest.raises(ValueError, match="mode|frame_ms"):
        Vad(mode, frame_ms)


def test_vad_flags_speech_not_silence_and_buffers_any_piece_size() -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), _voiced(0.5), np.zeros(8000, np.float32)])
    whole = Vad(2, 30).process(audio)
    assert len(whole) == audio.size // 480
    assert not any(whole[:15]) and sum(whole[18:30]) >= 10 and not any(whole[-10:])
    vad = Vad(2, 30)
    pieces: list[bool] = []
    for piece in np.array_split(audio, [7, 500, 501, 2000, 9999, 13000, 20000]):
        pieces += vad.process(piece)
    assert pieces == whole
    assert vad.time_s == pytest.approx(len(whole) * 0.03)
    assert vad.pending_samples == audio.size % 480
    vad.reset()
    assert vad.time_s == 0 and vad.pending_samples == 0


def _drone(seconds: float, dbfs: float, f0: float = 110.0) -> np.ndarray:
    """A steady harmonic hum (a fridge, a projector fan): webrtcvad calls it speech."""
    t = np.arange(int(seconds * 16000)) / 16000
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 20))
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def test_noise_gate_hears_the_silence_in_a_hum_and_keeps_the_speech() -> None:
    """webrtcvad calls a steady hum speech, so without the gate no end-point would come in
    such a room; with it, frames near the tracked noise floor are silence."""
    audio = _drone(4.0, -35.0)
    audio[32000:40000] += _voiced(0.5)  # 2.0-2.5 s, about 14 dB above the hum
    raw = Vad(2, 30).process(audio)
    gated_vad = Vad(2, 30, noise_gate_db=3.0)
    gated = gated_vad.process(audio)
    assert all(raw)  # the premise: plain webrtcvad hears the hum as speech throughout
    assert not any(gated[:66]) and not any(gated[85:])
    assert sum(gated[67:83]) >= 10  # the voiced stretch is still speech
    assert gated_vad.noise_floor_db == pytest.approx(-35.0, abs=1.0)
    # A hum that gets louder is followed (the floor creeps up), then gated again.
    vad = Vad(2, 30, noise_gate_db=3.0)
    vad.process(_drone(2.0, -50.0))
    louder = vad.process(_drone(8.0, -38.0, f0=130.0))
    assert sum(louder[:20]) >= 15 and not any(louder[-50:])
    # Clean audio: the voiced stretch is kept; webrtcvad's own hangover after it is not.
    quiet = (np.random.default_rng(0).standard_normal(8000) * 10 ** (-70 / 20)).astype(np.float32)
    clean = np.concatenate([quiet, _voiced(0.5), quiet])
    plain, gated = Vad(2, 30).process(clean), Vad(2, 30, noise_gate_db=3.0).process(clean)
    assert sum(gated[17:33]) >= 0.8 * sum(plain[17:33]) and not any(gated[34:])


def _wobbly_hum(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    """Music-like noise: a hum whose level jumps by 2.5 dB (one standard deviation) every
    60 ms, so that a minimum-tracking floor sits well below most of its frames."""
    x = _drone(seconds, dbfs, f0=98.0)
    gains = 10 ** (np.random.default_rng(seed).normal(0, 2.5, int(seconds / 0.06) + 1) / 20)
    return (x * np.repeat(gains, 960)[: x.size]).astype(np.float32)


def _longest_silence_s(flags: list[bool]) -> float:
    best = run = 0
    for flag in flags:
        run = 0 if flag else run + 1
        best = max(best, run)
    return best * 0.03


def test_level_gate_hears_the_silence_after_speech_in_moving_noise() -> None:
    """At 10 dB SNR in music-like noise the floor gate alone leaves no 0.35 s of silence
    after a request, so no end-point fires; the level gate does, and keeps the speech."""
    audio = _wobbly_hum(5.0, -32.0, seed=1)
    audio[16000:48000] += _voiced(2.0) * 10 ** (-2 / 20)  # 1-3 s, about 10 dB above
    floor_only = Vad(2, 30, noise_gate_db=3.0).process(audio)
    vad = Vad(2, 30, noise_gate_db=3.0, level_gate=0.4)
    both = vad.process(audio)
    after = slice(101, 135)  # the first second after the speech
    assert _longest_silence_s(floor_only[after]) < 0.35  # the premise
    assert _longest_silence_s(both[after]) >= 0.75
    assert sum(both[34:100]) >= 0.9 * sum(floor_only[34:100])  # the speech stays speech
    assert vad.speech_level_db is not None and vad.speech_level_db > vad.noise_floor_db


def test_digital_silence_leaves_the_noise_floor_where_the_room_put_it() -> None:
    """A second of zeros between requests (a paused stream, a playlist's gap) must not drag
    the floor to -120 dB: it would take half a minute to climb back, and the room tone
    after the next request would pass as speech, so its end-point would come late."""
    room = _wobbly_hum(2.0, -45.0, seed=2)
    vad = Vad(2, 30, noise_gate_db=3.0, level_gate=0.4)
    vad.process(room[:16000])
    floor = vad.noise_floor_db
    assert vad.process(np.zeros(16000, np.float32)) == [False] * 33
    assert vad.noise_floor_db == pytest.approx(floor, abs=0.5)
    vad.process(room[16000:])
    assert vad.noise_floor_db > -60


def test_vad_estimates_the_speech_to_noise_ratio() -> None:
    quiet = (np.random.default_rng(0).standard_normal(16000) * 10 ** (-60 / 20)).astype(
        np.float32)
    clean = Vad(2, 30, noise_gate_db=3.0)
    assert clean.snr_db is None
    clean.process(np.concatenate([quiet, _voiced(1.0), quiet]))
    noisy = Vad(2, 30, noise_gate_db=3.0, level_gate=0.4)
    audio = _wobbly_hum(5.0, -32.0, seed=1)
    audio[16000:48000] += _voiced(2.0) * 10 ** (-2 / 20)
    noisy.process(audio)
    assert clean.snr_db > 25 and noisy.snr_db < 15
    ungated = Vad(2, 30)
    ungated.process(audio)
    assert ungated.snr_db is None  # no gate, no estimate


def test_level_gate_lets_a_quieter_talker_through_after_a_while() -> None:
    """The level sinks toward the floor while nothing passes, so a talker 14 dB quieter than
    the last one (5 dB above a hum) is not gated out for good."""
    audio = _drone(14.0, -40.0)
    audio[16000:32000] += _voiced(1.0)  # 1-2 s, loud
    audio[192000:208000] += _voiced(1.0) * 10 ** (-14 / 20)  # 12-13 s, soft
    vad = Vad(2, 30, noise_gate_db=3.0, level_gate=0.4)
    loud = vad.process(audio[:40000])
    loud_level = vad.speech_level_db
    vad.process(audio[40000:192000])  # 9.5 s of hum alone
    assert sum(loud[33:66]) >= 25
    assert vad.speech_level_db <= loud_level - 8
    assert sum(vad.process(audio[192000:208000])) >= 18


@pytest.mark.parametrize("kwargs", [{"level_gate": 1.0}, {"level_gate": -0.1},
                                    {"level_gate": float("nan")},
                                    {"level_decay_db_per_s": -1.0}])
def test_vad_refuses_a_bad_level_gate(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="level"):
        Vad(2, 30, noise_gate_db=3.0, **kwargs)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_vad_refuses_a_bad_noise_gate(value: float) -> None:
    with pytest.raises(ValueError, match="noise_gate_db"):
        Vad(2, 30, noise_gate_db=value)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_vad_frame_sizes(frame_ms: int) -> None:
    vad = Vad(1, frame_ms)
    assert len(vad.process(np.zeros(16000, np.float32))) == 1000 // frame_ms
    assert len(vad.process(np.zeros(16000, np.int16))) == 1000 // frame_ms


def test_vad_refuses_bad_audio() -> None:
    vad = Vad()
    with pytest.raises(ValueError, match="NaN"):
        vad.process(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="1-D"):
        vad.process(np.zeros((2, 480), np.float32))
    with pytest.raises(ValueError, match="float32"):
        vad.process(np.zeros(480, np.int32))
    assert vad.process(np.full(480, 5.0, np.float32)) in ([True], [False])  # clipped


def test_smoother_ignores_blips_opens_on_n_of_m_and_adds_no_end_delay() -> None:
    s = SpeechSmoother(onset_frames=3, onset_window=5, hangover_frames=4)
    assert s.process([True, False, False, True, False, False, False, True]) == [False] * 8
    # The window spans calls: with the last True above, the third frame makes 3 of 5.
    assert s.process([True, False, True, True]) == [False, False, True, True]
    assert s.in_speech
    # Inside the region raw flags pass through: silence is reported at once.
    assert s.process([False, True, False, False, False]) == [False, True, False, False, False]
    assert s.in_speech
    assert s.process([False]) == [False] and not s.in_speech  # hangover over
    assert s.process([True]) == [False]  # a lone frame no longer counts
    with pytest.raises(ValueError):
        SpeechSmoother(onset_frames=6, onset_window=5)


# ---------------------------------------------------------------- completeness

UNFINISHED = [
    "call", "please call", "could you call", "call mom on", "call ananya krishnamurthy on her",
    "i need to call", "video call", "text", "text diego that", "send a text to diego saying",
    "send a message to", "let ana know", "tell", "message", "put me through to",
    "dial", "dial five five five", "call five five five", "dial five five five one two three",
    "dial one five five five", "dial one five five five one two three", "dial five",
    "dial the number", "call this number", "dial extension", "dial extension one two",
    "punch in five five five", "dial out to five five five", "the number is",
    "call this number five seven five three", "the number is seven three three five",
    "punch in four four three nine",
    "turn on", "turn off", "switch on", "turn", "turn the", "turn the lights off in the",
    "lights on in", "set the", "set the temperature to", "dim the lights to", "put on",
    "put on some", "warm up", "cross off", "take milk off",
    "set a timer for", "set a timer for twelve", "set a timer", "set a ten minute",
    "wake me up", "wake me up at six thirty a", "remind me", "remind me in",
    "add", "add oat milk to my", "add eggs and", "add oat milk to the",
    "play some", "play my", "play the latest from", "play music by",
    "what's", "what's the", "what's on", "what's on my", "what's the weather tomorrow in",
    "what time", "what time is", "how much time", "how much", "will it", "is it going to",
    "do i have anything on", "what's my next", "what can you", "did i",
    "hey", "could you", "can you please", "um", "call um", "i want", "it's too", "make it",
]
FINISHED = [
    "call mom", "call ananya krishnamurthy on her mobile", "call mom on her cell phone",
    "give mom a call", "call mom back", "text diego that i'm running late",
    "dial nine one one", "dial five five five zero one nine two",
    "dial five five five one two three four five six seven", "dial extension four four five",
    "the number is five five five zero one nine two",
    "turn the lights on", "turn on the kitchen lights", "switch the fan off", "lights off",
    "turn it up", "turn the volume down", "volume up", "lock up",
    "set the thermostat to seventy two degrees", "dim the hallway lamp to thirty percent",
    "set the volume to four", "set a timer for twelve minutes", "set a ten minute timer",
    "wake me up at six thirty a m", "remind me in a minute", "cancel the pasta timer",
    "add oat milk to my shopping list", "put eggs on the list", "what's on my to do list",
    "play some jazz in the kitchen", "play my road trip playlist", "next song", "pause",
    "what's the weather", "what's the weather tomorrow in denver", "what time is it",
    "how much time is left", "what's on my calendar on friday", "is the garage door closed",
    "is the garage door open", "who is this", "did diego text me", "when did mom call",
    "stop", "cancel", "never mind", "yes", "no thank you", "repeat that", "forget it",
    "could you turn the lights off please", "hey lock the front door", "dial nine one one for me",
    "make it warmer", "i'm cold", "is the fan still on",
]


@pytest.mark.parametrize("text", UNFINISHED)
def test_unfinished_requests_score_low(text: str) -> None:
    assert looks_complete(text) <= 0.25


@pytest.mark.parametrize("text", FINISHED)
def test_finished_requests_score_high(text: str) -> None:
    assert looks_complete(text) >= 0.7


@pytest.mark.parametrize("text", ["", "okay", "siobhan", "dial one eight hundred",
                                  "my code is four four three nine"])
def test_unsure_requests_score_in_the_middle(text: str) -> None:
    assert 0.3 <= looks_complete(text) <= 0.6


def test_clear_cases_sit_at_the_ends_of_the_scale() -> None:
    assert looks_complete("call") == pytest.approx(0.1)
    assert looks_complete("set a timer for ten minutes") == pytest.approx(0.9)
    assert looks_complete("") == pytest.approx(0.5)


@given(st.lists(st.sampled_from(
    "call dial turn on off the a my to five one nine minutes please what's it up list mom "
    "timer for set that is m p siobhan".split()), max_size=8))
def test_completeness_is_a_score_in_unit_range(words: list[str]) -> None:
    score = looks_complete(" ".join(words))
    assert 0.0 <= score <= 1.0


# ---------------------------------------------------------------- learned end-of-query

def _over_when_finished(text: str, silence_s: float, blank_s: float) -> float:
    """A stand-in classifier: the request is over only once its room is named."""
    return 0.95 if text.endswith("kitchen") else 0.05


@pytest.mark.parametrize("chunk_frames", [4, 16])
def test_learned_end_of_query_waits_through_a_pause_it_calls_unfinished(
        chunk_frames: int) -> None:
    """"play some jazz ... in the kitchen" with 0.7 s between: the rules would end at 0.45 s
    of silence (the words look finished to them); the classifier says not yet."""
    first, full = "play some jazz", "play some jazz in the kitchen"
    assert looks_complete(first) >= 0.5  # what the rules alone would be misled by
    run = simulate([silence(0.3), speech(1.0, first), silence(0.7), speech(0.8, full),
                    silence(1.5)], chunk_frames=chunk_frames,
                   end_probability=_over_when_finished, query_end_threshold=0.5)
    pause_start, pause_end = 1.3, 2.0
    assert no_events_between(run, pause_start, pause_end, EventKind.CONFIRMED,
                             EventKind.FINAL_ENDPOINT)
    spec = run.first(EventKind.SPECULATIVE_ENDPOINT)
    assert pause_start + CONFIG.spec_silence <= spec.time < pause_end  # still aggressive
    final = run.first(EventKind.FINAL_ENDPOINT)
    assert final.text == full and final.revision == 2 and final.timing.reset
    speech_end = 2.8
    assert speech_end + CONFIG.final_silence_min <= final.time
    assert final.time <= speech_end + CONFIG.final_silence_min + (chunk_frames + 1) * FRAME_S
    rules = simulate([silence(0.3), speech(1.0, first), silence(0.7), speech(0.8, full),
                      silence(1.5)], chunk_frames=chunk_frames)
    assert grammar(rules.events)[0] == "SPC"  # the rules cut it in two: the case it fixes


def test_learned_end_of_query_ends_a_finished_request_after_the_shortest_wait() -> None:
    run = simulate([silence(0.3), speech(1.2, "turn on the lights in the kitchen"),
                    silence(1.5)], end_probability=_over_when_finished,
                   query_end_threshold=0.5)
    assert grammar(run.events) == ["SPC"]
    final = run.first(EventKind.CONFIRMED)
    assert 1.5 + CONFIG.final_silence_min <= final.time <= 1.5 + CONFIG.final_silence_min + 0.05


def test_learned_end_of_query_is_asked_with_the_growing_silence() -> None:
    """A classifier sure only after 0.6 s of silence ends there, not at final_silence_min."""
    run = simulate([silence(0.3), speech(1.0, "what time is it"), silence(1.5)],
                   end_probability=lambda text, s, b: 0.9 if s >= 0.6 else 0.2,
                   query_end_threshold=0.5)
    final = run.first(EventKind.CONFIRMED)
    assert 1.3 + 0.6 <= final.time <= 1.3 + 0.6 + 0.05


def test_learned_end_of_query_never_sure_ends_at_the_silence_timeout() -> None:
    run = simulate([silence(0.3), speech(1.0, "call"), silence(2.0)],
                   end_probability=lambda text, s, b: 0.01, query_end_threshold=0.5)
    final = run.first(EventKind.CONFIRMED)
    assert final.reason is EndReason.SILENCE_TIMEOUT
    assert final.time == pytest.approx(1.3 + CONFIG.silence_timeout, abs=0.05)


def test_learned_end_of_query_hears_the_pause_in_the_decoders_blanks() -> None:
    """While the device plays, residual echo breaks the VAD's silence into 0.5 s pieces; the
    decoder, which hears no words in it, keeps counting blanks, and the classifier is asked
    with that pause."""
    echo = [silence(0.5), speech(0.1)] * 6
    segments = [silence(0.3), speech(1.2, "what time is it"), *echo, silence(2.0)]

    def sure_after_a_second(text: str, s: float, b: float) -> float:
        return 0.9 if s >= 1.0 else 0.1

    def end_of(run: Run) -> float:
        return next(e.time for e in run.events
                    if e.kind in (EventKind.CONFIRMED, EventKind.FINAL_ENDPOINT))

    run = simulate(segments, blanks="words", end_probability=sure_after_a_second,
                   query_end_threshold=0.5, playback=True)
    assert 1.5 + 1.0 <= end_of(run) <= 1.5 + 1.2  # in the second piece of silence
    for config, playback in ((CONFIG, False),  # nothing plays: the VAD's silence alone
                             (dataclasses.replace(CONFIG, query_end_pause_from_blanks="never"),
                              True)):
        vad_only = simulate(segments, config, blanks="words", query_end_threshold=0.5,
                            end_probability=sure_after_a_second, playback=playback)
        assert end_of(vad_only) >= 1.5 + 3.6  # only once the sound stops
    always = simulate(segments, dataclasses.replace(CONFIG, query_end_pause_from_blanks="always"),
                      blanks="words", end_probability=sure_after_a_second,
                      query_end_threshold=0.5)
    assert end_of(always) == pytest.approx(end_of(run))


def test_the_pause_setting_is_checked_in_words() -> None:
    with pytest.raises(ValueError, match="playback, always, never, got 'sometimes'"):
        EndpointConfig(query_end_pause_from_blanks="sometimes")


def test_without_the_classifier_in_a_call_the_rules_decide() -> None:
    """No open recognizer stream (a wake-word spotter's stretch): the rules' wait."""
    learned = simulate([silence(0.3), speech(1.0, "play some jazz"), silence(1.5)],
                       query_end_threshold=0.5)
    rules = simulate([silence(0.3), speech(1.0, "play some jazz"), silence(1.5)])
    assert [(e.kind, e.time) for e in learned.events] == [(e.kind, e.time) for e in rules.events]


def test_query_end_threshold_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="query_end_threshold"):
        EndpointConfig(query_end_threshold=1.5)
    with pytest.raises(ValueError, match="query_end_threshold"):
        Endpointer(CONFIG, query_end_threshold=0.0)
