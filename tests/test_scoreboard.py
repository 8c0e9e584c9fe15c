"""The scoreboard: models side by side per held-out set, people first, missing sets said."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from edge_asr.models import scoreboard

CLIPS = Path(__file__).parent / "data"


def _data(tmp_path: Path) -> Path:
    """DATA/manifests/test_fsdd.jsonl of two bundled clips, each tagged with a speaker."""
    manifests = tmp_path / "manifests"
    manifests.mkdir(parents=True)
    rows = [json.loads(line) for line in (CLIPS / "manifest.jsonl").open()][:2]
    for k, row in enumerate(rows):
        shutil.copy(CLIPS / row["audio_filepath"], manifests / row["audio_filepath"])
        row["tags"] = [f"speaker:s{k}"]
    (manifests / "test_fsdd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_scoreboard_prints_each_model_per_set_and_says_what_is_missing(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    data = _data(tmp_path)
    out = tmp_path / "board.json"
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")  # --card writes into it
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    monkeypatch.setattr(sys, "argv", [
        "scoreboard", "--data", str(data), "--model", str(model), "--model",
        str(other), "--sets", "test_fsdd", "test_hibari", "--speakers",
        "--output", str(out), "--card"])
    scoreboard.main()
    printed = capsys.readouterr().out
    fsdd = next(line for line in printed.splitlines() if line.startswith("| test_fsdd |"))
    hibari = next(line for line in printed.splitlines() if line.startswith("| test_hibari |"))
    assert fsdd.count("%") == 2 and "6 real speakers" in fsdd
    assert hibari.count("missing") == 2 and "<= 12%" in hibari
    assert "test_fsdd: WER per speaker" in printed and "\ns0 " in printed
    assert "model: 2 speakers, best " in printed
    saved = json.loads(out.read_text())
    got = saved["sets"]["test_fsdd"][str(model)]
    assert got["utterances"] == 2 and 0.0 <= got["wer"]
    assert saved["sets"]["test_hibari"][str(model)] is None
    card = json.loads((model / "model_card.json").read_text())["heldout_evaluation"]
    assert set(card["sets"]) == {"test_fsdd"}  # a missing set is not recorded as measured
    assert card["sets"]["test_fsdd"]["wer"] == round(got["wer"], 4)
    assert set(card["sets"]["test_fsdd"]["wer_by_speaker"]) == {"s0", "s1"}
    # Measured again where test_fsdd is missing: its entry stays, with the date it had.
    (data / "manifests" / "test_fsdd.jsonl").rename(data / "manifests" / "test_hibari.jsonl")
    card_path = model / "model_card.json"
    old = json.loads(card_path.read_text())
    old["heldout_evaluation"]["sets"]["test_fsdd"]["date"] = "2026-01-01"
    card_path.write_text(json.dumps(old))
    scoreboard.main()
    card = json.loads(card_path.read_text())["heldout_evaluation"]["sets"]
    assert card["test_fsdd"]["date"] == "2026-01-01" and card["test_fsdd"]["wer"] == \
        round(got["wer"], 4)
    assert card["test_hibari"]["date"] != "2026-01-01" and card["test_hibari"]["utterances"] == 2


def test_people_come_first_in_the_report():
    kinds = [s.recorded for s in scoreboard.SETS]
    assert kinds == sorted(kinds, reverse=True)  # every recorded set before any synthetic
    assert scoreboard.SETS[0].target == 0.15 and scoreboard.SETS[1].target == 0.30


def test_reuse_reads_back_only_complete_results_of_the_model_as_it_is(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    data = _data(tmp_path)
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    results = tmp_path / "results"
    argv = ["scoreboard", "--data", str(data), "--model", str(model), "--sets", "test_fsdd",
            "--results", str(results), "--reuse"]
    monkeypatch.setattr(sys, "argv", argv)
    scoreboard.main()
    assert "read back" not in capsys.readouterr().out  # nothing to read back yet
    saved = results / "test_fsdd.model.jsonl"
    manifest = data / "manifests" / "test_fsdd.jsonl"
    first = scoreboard.read_back(saved, model, manifest)
    assert first is not None and first.utterances == 2
    (model / "model_card.json").touch()  # --card rewrites the card: the weights are the same
    scoreboard.main()
    assert "WER" in (printed := capsys.readouterr().out) and "read back" in printed

    rows = saved.read_text().splitlines()
    saved.write_text(rows[0] + "\n")  # one utterance lost: decode again
    assert scoreboard.read_back(saved, model, manifest) is None
    saved.write_text("\n".join(rows) + "\n")
    os.utime(model / "encoder.onnx")  # the model changed after: its old results are stale
    os.utime(saved, (0, 0))
    assert scoreboard.read_back(saved, model, manifest) is None
