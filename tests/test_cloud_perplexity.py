"""`python -m edge_asr.simulator.cloud.perplexity`: how well a cloud LM knows a set's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_asr.simulator.cloud.perplexity import main, perplexity


def _manifest(path, texts):
    path.write_text("".join(json.dumps({"audio": "x.wav", "text": t}) + "\n" for t in texts))
    return path


def test_text_the_lm_knows_scores_lower_than_text_it_does_not(tiny_cloud_lm):
    known = perplexity(tiny_cloud_lm, [s.split() for s in ["turn off the fan"]])
    unknown = perplexity(tiny_cloud_lm, [s.split() for s in ["the fan turn off please"]])
    assert known.unknown == 0.0 and known.words == 5
    assert unknown.unknown == pytest.approx(1 / 6)  # "please"; </s> counts as a word
    assert known.ngram < unknown.ngram
    assert known.neural is None and known.interpolated == pytest.approx(known.ngram)


def test_no_sentences_is_an_error_not_a_number(tiny_cloud_lm):
    with pytest.raises(ValueError, match="no sentences"):
        perplexity(tiny_cloud_lm, [])


def test_the_command_prints_each_set_and_names_a_missing_lm(tmp_path, capsys):
    manifest = _manifest(tmp_path / "set.jsonl", ["turn on the lights"])
    assert main(["--lm", str(tmp_path / "nowhere"), str(manifest)]) == 2
    assert "no cloud LM folder" in capsys.readouterr().err
    shipped = Path(__file__).parents[1] / "models" / "cloud-lm"
    assert main(["--lm", str(shipped), str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "set.jsonl: 1 sentences, 5 words, unknown 0.0%" in out
