"""Two models compared speaker by speaker (models/compare_speakers.py)."""

import json

import pytest

from edge_asr.models.compare_speakers import compare, wer_by_speaker

# A row as `edge-asr eval --output` writes it, less the audio path.
EVAL_ROW = {"text": "one two three four", "nbest": [], "rescored": None, "answer_waits": [],
            "answers_missed": 0, "speculative_endpoint": None, "final_endpoint": None,
            "reset": False, "false_starts": 0, "lattice_bytes": 100, "oracle_errors": 0,
            "utterances": 1, "cpu_seconds": 0.1, "duration": 2.0, "speech_end": None,
            "voice": None, "context_used": False, "context_names": [],
            "context_names_recognized": []}


def rows(path, hyps):
    path.write_text("".join(json.dumps({**EVAL_ROW, "hypothesis": h,
                                        "tags": ["speechocean762", f"speaker:{s}"]}) + "\n"
                            for s, h in hyps))
    return path


def test_speakers_helped_and_hurt_are_counted_with_an_interval(tmp_path):
    before = wer_by_speaker(rows(tmp_path / "a.jsonl", [
        ("a", "one two"), ("a", "one two three four"),  # 2 of 8 words wrong: 25%
        ("b", "one two three four"), ("c", "four")]))
    after = wer_by_speaker(rows(tmp_path / "b.jsonl", [
        ("a", "one two three four"), ("a", "one two three four"),
        ("b", "one two three"), ("c", "four")]))
    assert before == {"a": 0.25, "b": 0.0, "c": 0.75}
    result = compare(before, after)
    assert (result.speakers, result.better, result.worse) == (3, 1, 1)
    assert result.mean_change == pytest.approx((-0.25 + 0.25 + 0.0) / 3)
    assert result.interval[0] <= result.mean_change <= result.interval[1]
    assert "1 better, 1 worse, 1 the same" in result.format()


def test_files_of_other_sets_are_refused(tmp_path):
    a = wer_by_speaker(rows(tmp_path / "a.jsonl", [("a", "one")]))
    b = wer_by_speaker(rows(tmp_path / "b.jsonl", [("b", "one")]))
    with pytest.raises(ValueError, match="other speakers"):
        compare(a, b)
    (tmp_path / "c.jsonl").write_text(json.dumps({**EVAL_ROW, "hypothesis": "one",
                                                  "tags": []}) + "\n")
    with pytest.raises(ValueError, match="without a speaker"):
        wer_by_speaker(tmp_path / "c.jsonl")
