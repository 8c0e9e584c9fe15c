"""The simulator's wake word and speech not addressed to the device: the scenario keys, the
room saying the phrase before each request and a TV (or a second person) talking, and the
figures the report draws from the events: requests woken, false wakes, other speech sent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_asr.daemon.cli import main as cli_main
from edge_asr.models.augment import SAMPLE_RATE, active_rms
from edge_asr.simulator.addressed import addressed_figures, mark_wakes, non_addressed
from edge_asr.simulator.received_events import ReceivedEvent, Utterance, group_utterances
from edge_asr.simulator.room import Request, RoomConfig, UtteranceSource, render_session
from edge_asr.simulator.scenario import bundled_scenarios, load_scenario
from edge_asr.simulator.scoring import match, score_request
from edge_asr.simulator.talkers import OtherSpeech, Spoken

MANIFEST = Path(__file__).parent / "data" / "manifest.jsonl"
TV = ('[[room.other_speech]]\nlabel = "tv"\nvoices = ["flite-slt"]\n'
      'sentences = ["the news at six", "rain later tonight"]\n')


def _scenario(tmp_path: Path, body: str, limit: int = 2) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(f'name = "test"\n{body}\n[utterances]\nmanifest = "{MANIFEST}"\n'
                    f"limit = {limit}\n")
    return path


# ------------------------------------------------------------------ scenario keys


def test_the_new_bundled_scenarios_load_with_a_wake_word_and_other_speech():
    assert {"tv_household", "second_talker"} <= set(bundled_scenarios())
    tv = load_scenario("tv_household")
    assert tv.wake_word.phrase == "hey marvin" and tv.listens_for_wake_word
    assert [o.label for o in tv.room.other_speech] == ["tv"]
    assert tv.room.other_speech[0].placement == "continuous"
    second = load_scenario("second_talker")
    (other,) = second.room.other_speech
    assert other.placement == "over_requests" and other.sir_db == [0.0, 6.0]


def test_wake_word_and_other_speech_keys_are_read(tmp_path):
    s = load_scenario(_scenario(tmp_path, '[wake_word]\nphrase = "hey marvin"\n'
                                          "threshold = 0.2\n[device]\nwake_word = false\n"
                                          "[room]\n" + TV))
    assert s.wake_word.phrase == "hey marvin" and s.wake_word.threshold == 0.2
    assert not s.listens_for_wake_word  # said in the room, not listened for
    (tv,) = s.room.other_speech
    assert tv.sentences == ["the news at six", "rain later tonight"] and tv.sir_db == [6.0, 6.0]
    assert not load_scenario(_scenario(tmp_path, "")).wake_word.enabled


@pytest.mark.parametrize("body, error", [
    ('[wake_word]\nphrase = "hey marvin"\nthreshold = 2.0', r"wake_word.threshold.*\[0, 1\]"),
    ('[wake_word]\nphrase = "hey marvin"\nphrse = "x"', r"unknown setting.*wake_word.phrse"),
    ("[wake_word]\nphrase = 3", r"wake_word.phrase must be"),
    ("[device]\nwake_word = 1", r"device.wake_word must be"),
    ('[room]\n[[room.other_speech]]\nlabel = "tv"\nsentence = ["hi"]',
     r"unknown setting.*room.other_speech\[0\].sentence"),
    ('[room]\n[[room.other_speech]]\nlabel = "tv"', r"'tv'.*sentences .* or a manifest"),
    ('[room]\n[[room.other_speech]]\nlabel = "tv"\nsentences = ["hi"]\nmanifest = "m.jsonl"',
     r"exactly one"),
    ('[room]\n[[room.other_speech]]\nlabel = "tv"\nsentences = ["hi"]\nplacement = "behind"',
     r"placement must be one of continuous, over_requests"),
    ('[room]\n[[room.other_speech]]\nlabel = "tv"\nsentences = ["hi"]\nsir_db = [6.0, 0.0]',
     r"sir_db must be \[min, max\]"),
    ('[room]\n[[room.other_speech]]\nlabel = "request"\nsentences = ["hi"]',
     r"must name the source and not be request or phrase"),
    ('[room]\n[[room.other_speech]]\nlabel = "tv"\nsentences = ["hi"]\nvoices = ["sam-x"]',
     r"unknown voice 'sam-x'"),
    ("[room]\n" + TV + TV, r"each source needs its own label"),
])
def test_bad_wake_word_and_other_speech_keys_are_errors_that_name_them(tmp_path, body, error):
    with pytest.raises(ValueError, match=error):
        load_scenario(_scenario(tmp_path, body))


def test_a_bad_wake_pause_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "t"\n[utterances]\nmanifest = "{MANIFEST}"\n'
                    "wake_pause_s = [0.5, 0.1]\n")
    with pytest.raises(ValueError, match=r"utterances.wake_pause_s must be \[min, max\]"):
        load_scenario(path)


def test_the_daemon_listens_for_the_phrase_only_when_the_device_does(tmp_path):
    from edge_asr.daemon.api.config import load_config
    from edge_asr.simulator.daemon_config import daemon_toml

    toml = tmp_path / "daemon.toml"
    for device, phrase in (("", "hey marvin"), ("[device]\nwake_word = false\n", "")):
        scenario = load_scenario(_scenario(
            tmp_path, f'[wake_word]\nphrase = "hey marvin"\nawake_s = 4.0\n{device}'))
        toml.write_text(daemon_toml(scenario, tmp_path / "a.wav", "sock", "127.0.0.1:1", True))
        config = load_config(toml)
        assert config.wake_word.phrase == phrase
    assert load_config(toml).wake_word.awake_s == 5.0  # the daemon's own default when off


def test_sim_refuses_wake_word_for_a_scenario_without_a_phrase(tmp_path, capsys):
    path = _scenario(tmp_path, "realtime = false", limit=1)
    assert cli_main(["sim", "run", str(path), "--wake-word", "--out", str(tmp_path / "r")]) == 2
    assert "[wake_word] phrase" in capsys.readouterr().err


# ------------------------------------------------------------------ the room


def test_the_talker_says_the_phrase_then_pauses_then_the_request():
    src = UtteranceSource(manifest=str(MANIFEST), limit=3, wake_pause_s=[0.1, 0.5])
    plain = render_session(src, RoomConfig(), MANIFEST.parent, seed=4)
    woken = render_session(src, RoomConfig(), MANIFEST.parent, seed=4, wake_phrase="hey marvin")
    rows = woken.timeline()
    assert [r["kind"] for r in rows] == ["phrase", "request"] * 3
    for r, before in zip(woken.requests, plain.requests, strict=True):
        assert r.phrase == "hey marvin" and r.said == f"hey marvin {r.text}"
        assert 0.3 < r.phrase_end - r.phrase_start < 1.5  # two words
        assert 0.1 <= r.speech_start - r.phrase_end <= 0.5 + 1e-3  # the pause asked for
        assert r.speech_end - r.speech_start == pytest.approx(
            before.speech_end - before.speech_start)  # the request itself is unchanged
        phrase = woken.samples[int(r.phrase_start * SAMPLE_RATE):int(r.phrase_end * SAMPLE_RATE)]
        request = woken.samples[int(r.speech_start * SAMPLE_RATE):
                                int(r.speech_end * SAMPLE_RATE)]
        # said as loud as the request (within a few dB), not a whisper nor a shout
        assert abs(20 * np.log10(active_rms(phrase) / active_rms(request))) < 4.0
    assert woken.requests[0].phrase_start == pytest.approx(plain.requests[0].speech_start)
    assert not woken.others


def test_a_tv_talks_all_session_from_elsewhere_at_the_level_asked_for():
    src = UtteranceSource(manifest=str(MANIFEST), limit=2)
    tv = OtherSpeech(label="tv", sentences=["the news at six", "rain later tonight"],
                     voices=["flite-slt", "flite-awb"], sir_db=[10.0, 10.0], gap_s=[0.5, 1.0])
    quiet = render_session(src, RoomConfig(gap_s=[2.0, 2.0]), MANIFEST.parent, seed=1)
    loud = render_session(src, RoomConfig(gap_s=[2.0, 2.0], other_speech=[tv]),
                          MANIFEST.parent, seed=1)
    # the TV draws from its own generator: the requests are where they were without it
    assert [(r.speech_start, r.speech_end) for r in loud.requests] == [
        (r.speech_start, r.speech_end) for r in quiet.requests]
    others = [row for row in loud.timeline() if row["kind"] == "tv"]
    assert len(others) == len(loud.others) >= 4 and all(r["request"] is None for r in others)
    assert {o.text for o in loud.others} == set(tv.sentences)
    assert {o.source for o in loud.others} == {"flite-slt", "flite-awb"}
    assert all(0 <= o.speech_start < o.speech_end <= loud.duration for o in loud.others)
    gaps = [b.speech_start - a.speech_end for a, b in
            zip(loud.others[:-1], loud.others[1:], strict=True)]
    assert min(gaps) >= 0.5 - 1e-6  # one sentence after another, never two at once
    assert sum(o.speech_end - o.speech_start for o in loud.others) > 0.4 * loud.duration
    track = loud.samples - quiet.samples
    level = np.median([active_rms(c) for c in _request_audio(quiet)])
    sir = 20 * np.log10(level / active_rms(track))
    assert 7.0 < sir < 13.0


def _request_audio(session):
    return [session.samples[int(r.speech_start * SAMPLE_RATE):int(r.speech_end * SAMPLE_RATE)]
            for r in session.requests]


def test_a_second_talker_starts_with_each_request():
    src = UtteranceSource(manifest=str(MANIFEST), limit=3)
    other = OtherSpeech(label="second talker", sentences=["did you buy milk"],
                        voices=["flite-slt"], placement="over_requests", sir_db=[0.0, 6.0])
    session = render_session(src, RoomConfig(other_speech=[other]), MANIFEST.parent,
                             wake_phrase="hey marvin")
    assert len(session.others) == 3
    for r, o in zip(session.requests, session.others, strict=True):
        assert o.label == "second talker" and o.text == "did you buy milk"
        assert o.speech_start == pytest.approx(r.speech_start)  # after the phrase, not on it
    kinds = [row["kind"] for row in session.timeline()]
    assert kinds.count("second talker") == 3 and kinds.count("phrase") == 3


# ------------------------------------------------------------------ the figures


def _event(kind, uid, t, start=None, lattice=0, text="", score=0.0):
    return ReceivedEvent(kind, uid, t, t + 100.0, text=text, lattice_bytes=lattice,
                         speech_start=start, score=score)


def _utterance(uid, start, end, text):
    return [_event("SPEECH_STARTED", uid, start, start),
            _event("SPECULATIVE_ENDPOINT", uid, end - 0.2, lattice=300, text=text),
            _event("FINAL_ENDPOINT", uid, end, lattice=350, text=text),
            _event("RESCORED", uid, end, text=text)]


def _requests():
    return [Request(0, "lights on", 2.0, 3.0, [], {}, "", "hey marvin", 1.0, 1.6),
            Request(1, "play jazz", 11.0, 12.0, [], {}, "", "hey marvin", 10.0, 10.6),
            Request(2, "stop", 21.0, 21.5, [], {}, "", "hey marvin", 20.0, 20.6)]


def test_false_wakes_and_woken_requests_are_counted_from_the_events():
    requests = _requests()
    others = [Spoken("tv", "the news at six", 5.0, 7.0, "flite-slt"),
              Spoken("tv", "hey martin where are my keys", 14.0, 16.0, "flite-awb"),
              Spoken("tv", "rain later tonight", 20.5, 22.0, "flite-slt")]
    events = (
        [_event("WAKE_WORD", "mic-wake-1", 1.7, 1.1, score=0.6)] + _utterance("a", 1.8, 3.2,
                                                                              "lights on")
        # request 1: the phrase was missed, nothing recognised
        + [_event("WAKE_WORD", "mic-wake-2", 14.9, 14.2, score=0.2)]  # the TV's near miss
        + _utterance("b", 15.0, 16.2, "where are my keys")  # ... recognised and sent
        + _utterance("c", 5.1, 7.1, "the news")  # TV speech (a daemon without a wake word)
        # request 2: phrase heard, then the TV talked over it and nothing came of it
        + [_event("WAKE_WORD", "mic-wake-3", 20.7, 20.05, score=0.4)]
        + [_event("WAKE_WORD", "mic-wake-4", 40.0, None, score=0.3)]  # room noise, late
        + [_event("AUDIO_OVERRUN", "", 30.0, None)])  # a notice about the source
    utterances = group_utterances(events)
    assert [u.id for u in utterances] == ["a", "c", "b"]  # WAKE_WORD, notices: none
    m = match(requests, utterances)
    rows = [score_request(r, m.owned[r.index], m.covering[r.index], None) for r in requests]
    wakes = [e for e in events if e.kind == "WAKE_WORD"]
    mark_wakes(rows, requests, wakes)
    assert [r["woken"] for r in rows] == [True, False, False]
    assert [r["wake_score"] for r in rows] == [0.6, None, 0.4]
    assert rows[2]["wake_time"] == 20.7 and rows[2]["utterances"] == 0
    found = non_addressed(m.spurious, others)
    assert [(o["utterance_id"], o["labels"], o["lattices"]) for o in found] == [
        ("c", ["tv"], 2), ("b", ["tv"], 2)]
    assert found[1]["heard"] == ["hey martin where are my keys"]
    figures = addressed_figures(rows, requests, wakes, found, duration=60.0, wake_word=True,
                                has_others=True)
    assert figures == {"woken": round(1 / 3, 4), "wake_words": 4, "false_wakes": 2,
                       "false_wakes_per_hour": 120.0, "non_addressed_utterances": 2,
                       "non_addressed_sent": 2, "non_addressed_lattices": 4,
                       "non_addressed_bytes": 1300}
    # without a wake word there is nothing to wake: only the other speech's figures
    assert set(addressed_figures(rows, requests, [], found, 60.0, False, True)) == {
        "non_addressed_utterances", "non_addressed_sent", "non_addressed_lattices",
        "non_addressed_bytes"}
    assert addressed_figures(rows, requests, [], [], 60.0, False, False) == {}


def test_noise_overlapping_no_speech_is_not_counted_as_other_speech():
    others = [Spoken("tv", "the news", 5.0, 7.0, "flite-slt")]
    noise = Utterance("n", _utterance("n", 30.0, 31.0, "uh"))
    assert non_addressed([noise], others) == []


def test_without_a_wake_word_the_phrase_is_part_of_what_the_device_should_hear():
    (r, *_) = _requests()
    # a daemon without the wake word hears "hey marvin" as one utterance, the request as
    # another: both are the request's, whose span starts at the phrase
    said = [Utterance("p", _utterance("p", 1.0, 1.7, "hey marvin")),
            Utterance("q", _utterance("q", 2.0, 3.1, "lights on"))]
    m = match([r], said)
    assert not m.spurious
    row = score_request(r, m.owned[0], m.covering[0], None, phrase_in_reference=True)
    assert row["text"] == "hey marvin lights on" == row["hypothesis"]
    assert score_request(r, m.owned[0], m.covering[0], None)["text"] == "lights on"


def test_the_report_and_the_table_show_the_wake_figures_only_where_they_apply(tmp_path,
                                                                              capsys):
    from edge_asr.simulator.report import addressed_section, figures_table
    from edge_asr.simulator.runner import RunResult

    summary = {"utterances": 3, "woken": 0.5, "false_wakes": 1, "false_wakes_per_hour": 60.0,
               "non_addressed_utterances": 2, "non_addressed_sent": 0,
               "non_addressed_lattices": 0, "non_addressed_bytes": 0}
    run = RunResult("tv", True, False, 60.0, [], summary, [], {}, 0, "hey marvin", [])
    table = figures_table([run])
    assert "| requests woken (phrase heard, request recognised) | 50.0% |" in table
    assert "| false wakes / per hour of audio | 1 / 60 |" in table
    assert "| other speech: utterances / sent to the cloud / lattices | 2 / 0 / 0 |" in table
    assert "hey marvin" in "\n".join(addressed_section(run))
    old = RunResult("kitchen", True, False, 60.0, [], {"utterances": 3}, [], {}, 0)
    assert "woken" not in figures_table([old]) and addressed_section(old) == []
    for name, s in (("tv", summary), ("kitchen", {"wer": 0.1})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"speculation_on": s}))
    assert cli_main(["sim", "table", str(tmp_path / "tv"), str(tmp_path / "kitchen")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    tv, kitchen = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    col = {name: header.index(name) for name in ("woken", "false wakes / h",
                                                 "other speech sent (utt. / lattices)")}
    assert [tv[i] for i in col.values()] == ["50%", "60.0", "0 / 0"]
    assert [kitchen[i] for i in col.values()] == ["n/a", "n/a", "n/a / n/a"]


# ------------------------------------------------------------------ end to end


def test_a_wake_word_scenario_plays_against_the_daemon(tmp_path):
    """Two requests, each after "hey marvin", in a quiet room: the daemon was started with
    the wake word, and every WAKE_WORD it sent lies at a request's phrase."""
    from edge_asr.simulator.runner import run_scenario

    # a TV far off and seldom talking: the phrase never comes straight after its speech
    tv = TV + "sir_db = [25.0, 25.0]\ngap_s = [4.0, 5.0]\n"
    scenario = load_scenario(_scenario(tmp_path, 'realtime = false\n[wake_word]\n'
                                                 'phrase = "hey marvin"\n[room]\n' + tv))
    (run,) = run_scenario(scenario, tmp_path / "out", log=lambda *_: None)
    assert run.daemon_exit == 0 and run.wake_word == "hey marvin"
    assert any(e.kind == "WAKE_WORD" for e in run.events)
    assert run.summary["false_wakes"] == 0 and run.summary["woken"] >= 0.5
    assert run.summary["lost"] == 0
    woken = [r for r in run.rows if r["woken"]]
    assert all(r["phrase_start"] - 0.5 <= r["wake_time"] <= r["speech_end"] for r in woken)
    assert all(not r["hypothesis"].startswith("hey marvin") for r in woken)
    timeline = [json.loads(line) for line in open(tmp_path / "out" / "timeline.jsonl")]
    assert {row["kind"] for row in timeline} == {"phrase", "request", "tv"}
    assert (tmp_path / "out" / "results-non-addressed.jsonl").exists()
