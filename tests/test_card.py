"""The model card's context column, measured again when the biasing defaults change."""

import json
import sys
from pathlib import Path

import pytest

from edge_asr.models.card import main, remeasure_context, training_data_summary

DATA = Path(__file__).parent / "data"


def test_context_column_is_measured_again_and_the_rest_kept(tiny_model_dir, tmp_path):
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()]
    (tmp_path / "manifests").mkdir()
    for name, picked in (("test_names", rows[:2]), ("test_sentences", rows[2:3]),
                         ("test_voices", rows[3:4])):
        with (tmp_path / "manifests" / f"{name}.jsonl").open("w") as f:
            for row in picked:
                f.write(json.dumps({**row, "audio_filepath": str(DATA / row["audio_filepath"])})
                        + "\n")
    model = tmp_path / "model"
    model.mkdir()
    for path in tiny_model_dir.iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    greedy = {"wer": 0.5, "utterances": 2}
    stale = {"wer": 0.9, "name_recall": 0.0}
    card = json.loads((model / "model_card.json").read_text())
    card["evaluation"] = {"sets": {
        "test_names": {"greedy_search": greedy, "modified_beam_search+context": stale},
        "test_sentences": {"greedy_search": greedy},
        "test_voices": {"greedy_search": greedy}}}
    (model / "model_card.json").write_text(json.dumps(card))

    sets = remeasure_context(model, tmp_path, workers=1)["evaluation"]["sets"]
    assert json.loads((model / "model_card.json").read_text())["evaluation"]["sets"] == sets
    # Every set on the card: with the user's lists set is how the device runs.
    for name, n in (("test_names", 2), ("test_sentences", 1), ("test_voices", 1)):
        assert sets[name]["greedy_search"] == greedy  # only the context column is redone
        measured = sets[name]["modified_beam_search+context"]
        assert measured != stale and measured["utterances"] == n
        results = tmp_path / "results" / "model" / f"{name}.modified_beam_search+context.jsonl"
        assert all(json.loads(line)["context_used"] for line in results.read_text().splitlines())


def test_every_column_is_measured_again_on_request(tiny_model_dir, tmp_path):
    row = json.loads((DATA / "manifest.jsonl").read_text().splitlines()[0])
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "test_voices.jsonl").write_text(
        json.dumps({**row, "audio_filepath": str(DATA / row["audio_filepath"])}) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    for path in tiny_model_dir.iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    stale = {"wer": 0.5, "utterances": 7}
    card = json.loads((model / "model_card.json").read_text())
    card["evaluation"] = {"sets": {"test_voices": {"greedy_search": stale,
                                                   "modified_beam_search": stale}}}
    (model / "model_card.json").write_text(json.dumps(card))
    evaluation = remeasure_context(model, tmp_path, workers=1, every_column=True)["evaluation"]
    by = evaluation["sets"]["test_voices"]
    assert set(by) == {"greedy_search", "modified_beam_search", "modified_beam_search+context"}
    assert all(figures["utterances"] == 1 for figures in by.values())
    assert evaluation["measured"] == evaluation["context_measured"]


def test_training_data_counts_every_set_the_run_trained_on(tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()

    def write(name, voices):
        manifests.joinpath(f"{name}.jsonl").write_text("".join(
            json.dumps({"text": "hi", "voice": v, "duration": 1800.0}) + "\n" for v in voices))

    write("train", ["espeak-en-us+m1", "flite-slt"])
    write("train_voices2", ["festival-cmu_us_slt_arctic_hts", "espeak-en-us+m1"])
    both = training_data_summary(tmp_path, {"extra_train": ["train_voices2"],
                                            "dev_set": "dev_voices"})
    synthetic = {"utterances": 2, "hours": 1.0, "kind": "synthetic", "repeats_per_epoch": 1}
    assert both["train"] == synthetic
    assert both["train_voices2"] == synthetic
    assert both["training_voices"] == 3 and both["dev_set"] == "dev_voices"
    assert both["engines"].startswith("espeak-ng, festival, flite,")
    assert both["hours"] == {"recorded": 0.0, "synthetic": 2.0}
    alone = training_data_summary(tmp_path, {})  # a run before --extra-train existed
    assert "train_voices2" not in alone and alone["training_voices"] == 2
    assert alone["dev_set"] == "dev"


def test_training_data_tells_recorded_from_synthetic_hours(tmp_path):
    """A model card must say how much of its training was people: recorded sets (written by
    real_speech.py, which names the corpus) are counted apart, once however often heard."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    manifests.joinpath("train.jsonl").write_text(
        json.dumps({"text": "hi", "voice": "flite-slt", "duration": 3600.0}) + "\n")
    manifests.joinpath("so_train.jsonl").write_text("".join(
        json.dumps({"text": "hi", "corpus": "so", "speaker": s, "duration": 900.0}) + "\n"
        for s in ("a", "b", "b")))
    manifests.joinpath("speechocean762_train.jsonl").write_text(json.dumps(
        {"text": "hi", "corpus": "speechocean762", "speaker": "0001", "duration": 36.0}) + "\n")
    summary = training_data_summary(tmp_path, {"extra_train": ["so_train"] * 3
                                               + ["speechocean762_train"]})
    assert summary["so_train"] == {"utterances": 3, "hours": 0.75, "kind": "recorded",
                                   "repeats_per_epoch": 3, "speakers": 2,
                                   "source": "so: a corpus given with --real",
                                   "licence": "as its owner states"}
    # A corpus the project knows is named with where it comes from and its licence.
    known = summary["speechocean762_train"]
    assert "OpenSLR 101" in known["source"] and "commercial" in known["licence"]
    assert summary["hours"] == {"recorded": 0.76, "synthetic": 1.0}
    assert summary["training_voices"] == 1


def test_every_column_without_data_is_refused(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["card", str(tiny_model_dir), "--every-column"])
    with pytest.raises(SystemExit) as refused:
        main()
    assert refused.value.code == 2
    assert "--every-column goes with --context DATA" in capsys.readouterr().err


def test_a_compressed_models_card_prints(tmp_path, monkeypatch, capsys):
    # Cards written by models/quantize.py name no machine; printing one must not fail.
    card = {"parameters": 10, "bytes_total": 20, "bytes_in_memory_loaded": 2**20,
            "evaluation": {"sets": {"test_voices": {"greedy_search": {"wer": 0.25}}}}}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setattr(sys, "argv", ["card", str(tmp_path)])
    main()
    out = capsys.readouterr().out
    assert "| 25.00% |" in out and "bytes on disk 20" in out
