"""The `edge-asr` command: clear errors for bad input, every documented key in eval output."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.capture.audio import AudioFormatError, read_audio, to_model_rate
from edge_asr.daemon.cli import main

EVAL_KEYS = {"audio_filepath", "text", "hypothesis", "nbest", "rescored", "speculative_endpoint",
             "final_endpoint", "reset", "lattice_bytes", "cpu_seconds", "duration"}


def test_unsupported_sample_rate_is_refused(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(11025, np.float32), 11025)
    with pytest.raises(AudioFormatError, match="unsupported sample rate 11025"):
        read_audio(path)


def test_nan_samples_are_refused():
    with pytest.raises(AudioFormatError, match="NaN"):
        to_model_rate(np.array([0.0, np.nan], np.float32), 16000)


def test_out_of_range_float_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.full(1600, 3.0, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioFormatError, match=r"loud\.wav: float samples must lie in \[-1, 1\]"):
        read_audio(path)


def test_full_scale_float_is_accepted():
    full = np.array([-1.0, 1.0, 0.5, 1.0005], np.float32)  # within the headroom
    assert np.array_equal(to_model_rate(full, 16000), full)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_supported_rates_are_resampled_to_16k(rate):
    out = to_model_rate(np.zeros(rate, np.float32), rate)
    assert abs(out.size - 16000) <= 1 and out.dtype == np.float32


def test_not_audio_gives_clear_error_and_exit_code(tmp_path, capsys, tiny_model_dir):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    assert main(["transcribe", str(bad), "--model", str(tiny_model_dir)]) == 2
    assert "cannot read audio" in capsys.readouterr().err


def test_missing_model_gives_clear_error(tmp_path, capsys):
    clip = tmp_path / "a.wav"
    sf.write(clip, np.zeros(1600, np.float32), 16000)
    assert main(["transcribe", str(clip), "--model", str(tmp_path / "nowhere")]) == 2
    assert "missing encoder.onnx" in capsys.readouterr().err


def test_corrupt_model_file_is_caught_by_the_card_sha256(tmp_path, capsys, tiny_model_dir):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    clip = tmp_path / "a.wav"
    sf.write(clip, np.zeros(1600, np.float32), 16000)
    assert main(["transcribe", str(clip), "--model", str(model)]) == 0  # intact: loads
    data = bytearray((model / "joiner.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / "joiner.onnx").write_bytes(bytes(data))
    assert main(["transcribe", str(clip), "--model", str(model)]) == 2
    assert "sha256 does not match" in capsys.readouterr().err


def test_eval_writes_every_design_key_and_keeps_going_past_bad_files(tmp_path, capsys,
                                                                     tiny_model_dir):
    data = Path(__file__).parent / "data"
    rows = [json.loads(line) for line in (data / "manifest.jsonl").open()][:2]
    for row in rows:
        row["audio_filepath"] = str(data / row["audio_filepath"])
    rows.append({"audio_filepath": str(tmp_path / "gone.wav"), "text": "call mom"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    assert main(["eval", str(manifest), "--output", str(out), "--model", str(tiny_model_dir),
                 "--decoding", "greedy_search"]) == 0
    lines = [json.loads(line) for line in out.open()]
    assert len(lines) == 2  # the missing file is reported, not scored, and eval goes on
    for line in lines:
        assert EVAL_KEYS <= line.keys()
        assert line["duration"] > 0 and line["cpu_seconds"] > 0
    assert [line["voice"] for line in lines] == [r["voice"] for r in rows[:2]]
    printed = capsys.readouterr().out
    assert "gone.wav" in printed and "unreadable 1" in printed


def test_eval_scores_a_daemon_config_and_a_limited_subset(tmp_path, tiny_model_dir):
    """`--config` evaluates the end-pointer a daemon with that TOML file would run: a
    maximum utterance shorter than the clip cuts it, which the defaults do not."""
    data = Path(__file__).parent / "data"
    rows = [json.loads(line) for line in (data / "manifest.jsonl").open()]
    row = max(rows, key=lambda r: r["duration"])
    row["audio_filepath"] = str(data / row["audio_filepath"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    config = tmp_path / "daemon.toml"
    config.write_text("[endpoint]\nmax_utterance = 0.5\n")

    def finals(*extra: str) -> list[dict]:
        out = tmp_path / "r.jsonl"
        assert main(["eval", str(manifest), "--output", str(out), "--model",
                     str(tiny_model_dir), "--decoding", "greedy_search", "--limit", "1",
                     *extra]) == 0
        return [json.loads(line) for line in out.open()]

    default, short = finals(), finals("--config", str(config))
    assert len(default) == len(short) == 1  # --limit 1 of the two rows
    # The 0.5 s limit ends the utterance before the speaker does; the defaults wait for them.
    assert short[0]["final_endpoint"] is not None
    assert short[0]["final_endpoint"] < row["speech_end"]
    assert default[0]["final_endpoint"] is None or default[0]["final_endpoint"] >= row["speech_end"]


def test_eval_refuses_a_bad_config_clearly(tmp_path, capsys, tiny_model_dir):
    config = tmp_path / "daemon.toml"
    config.write_text("[endpoint]\nspec_silense = 0.2\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "x.wav", "text": "hi"}\n')
    assert main(["eval", str(manifest), "--model", str(tiny_model_dir),
                 "--config", str(config)]) == 2
    assert "spec_silense" in capsys.readouterr().err


def test_decoding_flags_reach_the_recognizer(tiny_model_dir, tmp_path):
    from edge_asr.daemon.api.config import load_config
    from edge_asr.daemon.cli import _recognizer, build_parser

    args = build_parser().parse_args(["eval", "m.jsonl", "--output", "r.jsonl", "--model",
                                      str(tiny_model_dir), "--context-bonus", "0.75",
                                      "--no-length-norm", "--beam", "6", "--context-beam", "10"])
    config = _recognizer(args, load_config(None)).config
    assert (config.context_bonus, config.length_norm, config.beam, config.context_beam) == (
        0.75, False, 6, 10)
    defaults = build_parser().parse_args(["eval", "m.jsonl", "--output", "r.jsonl", "--model",
                                          str(tiny_model_dir)])
    assert _recognizer(defaults, load_config(None)).config.length_norm is True
    # The [recognizer] table of --config counts too; a flag given overrides it.
    toml = tmp_path / "daemon.toml"
    toml.write_text('[recognizer]\nrescue_slot_bonus = 0.0\nbeam = 3\ncontext_beam = 5\n')
    args = build_parser().parse_args(["eval", "m.jsonl", "--model", str(tiny_model_dir),
                                      "--config", str(toml), "--beam", "2"])
    config = _recognizer(args, load_config(toml)).config
    assert (config.rescue_slot_bonus, config.beam, config.context_beam) == (0.0, 2, 5)
    assert str(config.model_dir) == str(tiny_model_dir)


def test_the_readme_daemon_configuration_loads_and_states_the_defaults(tmp_path):
    """The daemon TOML shown in the README is a valid configuration, and the recognizer
    values it shows are the defaults (so the README cannot drift from the code)."""
    import dataclasses
    import re
    import tomllib

    from edge_asr.daemon.api.config import load_config
    from edge_asr.daemon.recognition.recognizer import RecognizerConfig

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S)
                 if "[recognizer]" in b)
    toml = tmp_path / "daemon.toml"
    toml.write_text(block)
    shown = tomllib.loads(block)["recognizer"]
    config = load_config(toml).recognizer
    defaults = dataclasses.asdict(RecognizerConfig())
    for key, value in shown.items():
        want = defaults[key]
        if key == "model_dir":  # relative to the checkout in the README
            value, want = Path(value).name, Path(want).name
        assert value == (list(want) if isinstance(want, tuple) else want), key
    assert config.beam == shown["beam"]


def test_transcribe_sends_contacts_and_devices_by_kind(monkeypatch, capsys, shipped_model_dir):
    """--contacts / --devices give the context by kind (contacts earn the slot bonus);
    --context alone stays a flat list; a bad entry is a clear error, exit code 2."""
    from edge_asr.daemon.pipeline import Pipeline

    given = []
    original = Pipeline.set_context
    monkeypatch.setattr(Pipeline, "set_context",
                        lambda self, context: given.append(context) or original(self, context))
    clip = str(Path(__file__).parent / "data" / "clip00.flac")
    model = ["--model", str(shipped_model_dir)]
    assert main(["transcribe", clip, *model, "--contacts", "Siobhan Murphy",
                 "--devices", "the lava lamp", "--context", "road trip"]) == 0
    assert main(["transcribe", clip, *model, "--context", "Siobhan Murphy"]) == 0
    assert given == [{"contacts": ["Siobhan Murphy"], "devices": ["the lava lamp"],
                      "phrases": ["road trip"]}, ["Siobhan Murphy"]]
    capsys.readouterr()
    assert main(["transcribe", clip, *model, "--contacts", "?!"]) == 2
    assert "contacts[0] '?!' is empty after normalisation" in capsys.readouterr().err
