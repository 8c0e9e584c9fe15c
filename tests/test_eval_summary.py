"""The summary `edge-asr eval` prints: WER, context-name recall and what the cloud delivered."""

from edge_asr.models.evaluate import summarize


def _row(text, hypothesis, names=(), recognized=(), rescored=None):
    return {"text": text, "hypothesis": hypothesis, "rescored": rescored, "tags": ["clean"],
            "duration": 2.0, "cpu_seconds": 0.05, "speech_end": 1.5,
            "speculative_endpoint": 1.7, "final_endpoint": 1.9, "reset": False,
            "lattice_bytes": 300, "context_names": list(names),
            "context_names_recognized": list(recognized)}


def test_names_recalled_on_the_device_and_in_what_the_cloud_delivered():
    rows = [
        # the device heard the name; the cloud's rescoring lost it
        _row("call ana lima", "call ana lima", ["ana lima"], ["ana lima"],
             rescored="call anna lima"),
        # the device missed it; the cloud found it
        _row("text bo chen hi", "text bo chan hi", ["bo chen"], [],
             rescored="text bo chen hi"),
        # no cloud answer: the device's words are what the user gets
        _row("ring zoe", "ring zoe", ["zoe"], ["zoe"]),
        _row("lights on", "lights of"),  # no name
    ]
    s = summarize(rows)
    assert s.names_spoken == 3 and s.name_recall == 2 / 3
    assert s.delivered_name_recall == 2 / 3  # ana lima lost, bo chen found, zoe kept
    assert s.wer_without_names == 0.5 and s.rescored == 2
    assert "context name recall 66.7% -> delivered 66.7%" in s.format()
    rows[0]["rescored"] = "call ana lima"
    assert summarize(rows).delivered_name_recall == 1.0


def test_without_a_cloud_nothing_is_delivered():
    s = summarize([_row("call ana", "call ana", ["ana"], ["ana"])])
    assert s.delivered_wer is None and s.delivered_name_recall is None
    assert "delivered" not in s.format()


def test_wer_per_voice_shows_which_speaker_is_heard_worst():
    rows = [{**_row("lights on", "lights on"), "voice": "espeak-en-us+f3"},
            {**_row("lights off", "lights of"), "voice": "flite-rms"},
            {**_row("play jazz", "play jazz"), "voice": "flite-rms"},
            _row("call mom", "call tom")]  # a manifest row that names no voice
    s = summarize(rows)
    assert s.wer_by_voice == {"espeak-en-us+f3": 0.0, "flite-rms": 0.25}
    assert s.count_by_voice == {"espeak-en-us+f3": 1, "flite-rms": 2}
    assert "voice flite-rms" in s.format() and "25.00%" in s.format()


def test_a_set_of_many_voices_prints_only_the_worst():
    rows = [{**_row("lights on", "lights on" if i else "lights of"), "voice": f"v{i:02d}"}
            for i in range(20)]
    printed = summarize(rows).format()
    assert "20 voices; the 8 heard worst:" in printed
    assert "voice v00" in printed  # the one with an error
    assert sum(line.strip().startswith("voice ") for line in printed.splitlines()) == 8


def test_the_lattice_oracle_is_reported_beside_the_one_best():
    rows = [{**_row("lights on", "lights of"), "oracle_errors": 0},
            {**_row("turn the fan off", "turn fan off"), "oracle_errors": 1}]
    s = summarize(rows)
    assert s.wer == 2 / 6 and s.oracle_wer == 1 / 6
    assert "oracle WER 16.67% (1-best 33.33%)" in s.format()
    # rows written before the oracle was recorded: no oracle rather than a wrong one
    assert summarize([_row("lights on", "lights of")]).oracle_wer is None


def test_cloud_answers_inside_the_deadline_and_their_wait():
    rows = [{**_row("lights on", "lights on", rescored="lights on"), "answer_waits": [0.02],
             "answers_missed": 0},
            {**_row("lights off", "lights of", rescored="lights off"), "answer_waits": [0.2],
             "answers_missed": 0},
            # the cloud answered neither utterance of a request cut in two
            {**_row("play jazz", "play jazz"), "answer_waits": [], "answers_missed": 2},
            {**_row("call mom", "call mom", rescored="call mom"), "answer_waits": [0.0],
             "answers_missed": 0}]
    s = summarize(rows)
    assert s.answered_in_time == 3 / 5
    assert s.answer_wait_p50 == 0.02 and 0.18 < s.answer_wait_p99 <= 0.2
    assert "60.0% inside the deadline" in s.format()
    # without a cloud there is nothing to wait for
    assert summarize([_row("lights on", "lights on")]).answered_in_time is None


def test_a_cloud_that_never_answers_is_reported_not_hidden():
    s = summarize([{**_row("lights on", "lights on"), "answer_waits": [], "answers_missed": 1}])
    assert s.answered_in_time == 0.0 and s.answer_wait_p50 is None
    assert "0.0% inside the deadline" in s.format()


def test_premature_cuts_are_also_counted_where_the_speaker_paused_at_most_0_7_s():
    """The end-of-query target is stated for pauses up to 0.7 s: sets of pause_sets say
    how long each request's longest pause is, and the summary counts their cuts apart."""
    cut = {"final_endpoint": 1.0}  # before speech_end (1.5 s)
    rows = [{**_row("a b", "a b"), "longest_pause_s": 0.5},
            {**_row("a b", "a"), "longest_pause_s": 0.6, **cut},
            {**_row("a b", "a"), "longest_pause_s": 1.2, **cut},
            {**_row("a b", "a b"), "longest_pause_s": 1.4}]
    s = summarize(rows)
    assert s.premature_cuts == 0.5
    assert s.premature_cuts_short_pauses == 0.5 and s.short_pause_utterances == 2
    assert "premature cuts 50.0% (50.0% of the 2 with pauses up to 0.7 s)" in s.format()
    rows[1]["longest_pause_s"] = 0.9
    assert summarize(rows).premature_cuts_short_pauses == 0.0
    # A set that does not say how long its pauses are has no such figure.
    plain = summarize([_row("a b", "a b")])
    assert plain.premature_cuts_short_pauses is None and "pauses up to" not in plain.format()
