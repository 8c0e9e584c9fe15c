"""Two models compared speaker by speaker (models/compare_speakers.py)."""

import json

import pytest

from edge_asr.models.compare_speakers import compare, wer_by_speaker


def rows(path, hyps):
    path.write_text("".join(json.dumps({"text": "one two three four", "hypothesis": h,
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
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "one", "hypothesis": "one",
                                                  "tags": []}) + "\n")
    with pytest.raises(ValueError, match="without a speaker"):
        wer_by_speaker(tmp_path / "c.jsonl")
