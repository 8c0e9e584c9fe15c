"""`edge-asr sim`: scenarios played against a real daemon and a real cloud process, through
the network emulator, and the reports they produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_asr.daemon.cli import main as cli_main
from edge_asr.simulator.report import write_report
from edge_asr.simulator.runner import run_scenario
from edge_asr.simulator.scenario import bundled_scenarios, load_scenario

MANIFEST = Path(__file__).parent / "data" / "manifest.jsonl"


def _scenario(tmp_path: Path, body: str, limit: int = 3) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(f'name = "test"\n{body}\n[utterances]\nmanifest = "{MANIFEST}"\n'
                    f"limit = {limit}\n")
    return path


def test_bundled_scenarios_all_load():
    names = set(bundled_scenarios())
    assert {"quiet_kitchen", "noisy_party", "music_playing", "flaky_wifi", "offline"} <= names
    for name in names:
        assert load_scenario(name).description


def test_unknown_keys_and_bad_values_are_errors_that_name_them(tmp_path):
    with pytest.raises(ValueError, match="latency"):
        load_scenario(_scenario(tmp_path, "[network]\nlatnecy_ms = 3"))
    with pytest.raises(ValueError, match="room.noise"):
        load_scenario(_scenario(tmp_path, '[room]\nnoise = [{ kind = "traffic", snr_db = 5 }]'))
    with pytest.raises(FileNotFoundError, match="quiet_kitchen"):
        load_scenario("no_such_scenario")


def test_a_manifest_context_of_an_unknown_kind_is_an_error_that_names_it(tmp_path):
    from edge_asr.daemon.manifest import write_manifest
    from edge_asr.simulator.room import UtteranceSource, _manifest_clips

    write_manifest(tmp_path / "m.jsonl", [{"audio_filepath": str(MANIFEST.parent / "clip00.flac"),
                                           "text": "call ana", "context": {"people": ["Ana"]}}])
    with pytest.raises(ValueError, match="m.jsonl: .*clip00.flac: unknown context kind.*people"):
        _manifest_clips(UtteranceSource(manifest="m.jsonl"), tmp_path)


def test_device_settings_of_a_scenario_reach_the_daemons_configuration(tmp_path):
    from edge_asr.daemon.api.config import load_config
    from edge_asr.simulator.daemon_config import daemon_toml

    scenario = load_scenario(_scenario(tmp_path, "[device]\nvad_level_gate = 0.0\n"
                                                 "vad_speech_model = true\n"
                                                 "context_beam = 0\nbeam = 6\n"))
    toml = tmp_path / "daemon.toml"
    toml.write_text(daemon_toml(scenario, tmp_path / "a.wav", "sock", "127.0.0.1:1", True))
    config = load_config(toml)
    assert (config.vad_level_gate, config.vad_speech_model, config.recognizer.context_beam,
            config.recognizer.beam) == (0.0, True, 0, 6)
    default = load_scenario(_scenario(tmp_path, ""))
    toml.write_text(daemon_toml(default, tmp_path / "a.wav", "sock", "127.0.0.1:1", True))
    assert (load_config(toml).vad_level_gate, load_config(toml).vad_speech_model) == (0.4, False)


def test_accelerated_scenario_reports_every_request(tmp_path):
    scenario = load_scenario(_scenario(tmp_path, "realtime = false\n[room]\nrt60 = 0.2\n"
                                       'noise = [{ kind = "kitchen", snr_db = 30 }]'))
    runs = run_scenario(scenario, tmp_path / "out", log=lambda *_: None)
    report = write_report(runs, "test", tmp_path / "out")
    (run,) = runs
    assert run.daemon_exit == 0
    assert len(run.rows) == 3
    assert run.summary["lost"] == 0 and run.summary["missed"] == 0
    assert all(r["result_kinds"] and set(r["result_kinds"]) == {"RESCORED"} for r in run.rows)
    assert all(r["hypothesis"] for r in run.rows)
    assert run.summary["final_ep50"] is not None and run.summary["rtf"] > 0
    text = report.read_text()
    for row in run.rows:
        assert row["text"] in text
    for png in ("latency_cdf.png", "timeline.png", "bytes.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000


def test_offline_every_request_gets_the_devices_own_result(tmp_path):
    scenario = load_scenario(_scenario(
        tmp_path, "realtime = false\n[network]\noutages = [[0.0, 100000.0]]\n"
                  'outage_mode = "reset"', limit=2))
    (run,) = run_scenario(scenario, tmp_path / "out", log=lambda *_: None)
    assert run.summary["lost"] == 0
    kinds = [k for r in run.rows for k in r["result_kinds"]]
    assert kinds and set(kinds) == {"ON_DEVICE_FINAL"}
    assert all(r["delivered"] == r["hypothesis"] for r in run.rows)
    assert run.network["refused"] >= 1 and run.network["bytes_up"] == 0


def test_an_outage_mid_session_drives_on_device_final_for_the_requests_inside_it(tmp_path):
    # real time, so that the outage (from 8 s on) falls after request 0 and on request 1
    scenario = load_scenario(_scenario(
        tmp_path, "realtime = true\n[room]\ngap_s = [1.5, 1.5]\n"
                  "[network]\noutages = [[8.0, 100000.0]]", limit=2))
    (run,) = run_scenario(scenario, tmp_path / "out", log=lambda *_: None)
    first, second = run.rows
    assert second["speech_start"] > 8.0 > first["speech_end"] + 1.0
    assert set(first["result_kinds"]) == {"RESCORED"}
    assert set(second["result_kinds"]) == {"ON_DEVICE_FINAL"}
    assert run.summary["lost"] == 0
    assert first["perceived_latency"] is not None and first["perceived_latency"] > 0


def test_sim_command_writes_the_report(tmp_path, capsys):
    path = _scenario(tmp_path, "realtime = false", limit=1)
    assert cli_main(["sim", "run", str(path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "lost requests" in out and (tmp_path / "rep" / "report.md").exists()
    assert (tmp_path / "rep" / "summary.json").exists()


def _utt(uid: str, start: float, end: float, text: str, result: str = "RESCORED"):
    from edge_asr.simulator.received_events import ReceivedEvent, Utterance

    events = [ReceivedEvent("SPEECH_STARTED", uid, start, 0.0, speech_start=start),
              ReceivedEvent("SPECULATIVE_ENDPOINT", uid, end - 0.2, 0.0, text=text),
              ReceivedEvent("CONFIRMED", uid, end, 0.0, text=text),
              ReceivedEvent(result, uid, end, 0.1, text=text)]
    return Utterance(uid, events)


def test_the_session_context_keeps_the_kinds_the_manifest_gave(monkeypatch):
    from edge_asr.simulator import daemon_config
    from edge_asr.simulator.room import Request

    reqs = [Request(0, "dim the desk lamp", 1.0, 2.0, [], {"devices": ["the desk lamp"],
                                                           "contacts": ["ana"]}, ""),
            # no "the ...", no "'s": once guessed a contact; the manifest says device
            Request(1, "turn on hallway", 3.0, 4.0, [], {"devices": ["hallway"]}, ""),
            Request(2, "call ana", 5.0, 6.0, [], {"contacts": ["ana", "bo"]}, "")]
    ctx = daemon_config.session_context(reqs, ["zoe", "ana"])
    assert list(ctx.contacts) == ["zoe", "ana", "bo"]  # the scenario's first, no repeats
    assert list(ctx.devices) == ["the desk lamp", "hallway"] and not ctx.phrases
    monkeypatch.setattr(daemon_config, "MAX_CONTEXT", 4)  # SetContext's limit over all kinds
    ctx = daemon_config.session_context(reqs, ["zoe", "ana"])
    assert list(ctx.contacts) == ["zoe", "ana", "bo"] and list(ctx.devices) == ["the desk lamp"]


def test_matching_counts_merged_split_and_spurious_utterances():
    from edge_asr.simulator.room import Request
    from edge_asr.simulator.scoring import match, score_request

    reqs = [Request(i, t, s, e, [], {}, "") for i, (t, s, e) in enumerate(
        [("call mom", 1.0, 2.0), ("lights on", 4.0, 5.0), ("stop", 8.0, 8.5),
         ("play jazz", 12.0, 13.0)])]
    utts = [_utt("a", 1.0, 2.4, "call mom"),
            _utt("b", 3.9, 8.9, "lights on stop"),  # babble: one utterance over two requests
            _utt("c", 10.2, 10.6, "uh"),  # noise between requests
            _utt("d", 12.0, 12.4, "play"), _utt("e", 12.6, 13.4, "jazz")]  # cut in two
    m = match(reqs, utts)
    rows = [score_request(r, m.owned[r.index], m.covering[r.index], None) for r in reqs]
    assert [u.id for u in m.spurious] == ["c"]
    assert rows[0]["hypothesis"] == "call mom" and not rows[0]["merged"]
    assert rows[1]["hypothesis"] == "lights on stop"
    # "stop" was heard, merged into b: no words of its own, b's end-point and result
    assert rows[2]["merged"] and not rows[2]["missed"] and rows[2]["hypothesis"] == ""
    assert rows[2]["final_endpoint"] == 8.9 and rows[2]["result_kinds"] == ["RESCORED"]
    # the cut request: both pieces' words, the first final decision (before its speech end)
    assert rows[3]["hypothesis"] == "play jazz" and rows[3]["utterances"] == 2
    assert rows[3]["final_endpoint"] == 12.4 < rows[3]["speech_end"]
    assert not any(r["lost"] for r in rows)


def test_a_cloud_that_cannot_start_is_a_clear_error_not_a_hang(tmp_path):
    import time

    from edge_asr.daemon.api.client import start_cloud

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start"):
        start_cloud(tmp_path / "no-such-lm", timeout=60)
    assert time.monotonic() - started < 30  # it exited: no waiting out the timeout


def test_sim_without_matplotlib_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.delitem(sys.modules, "edge_asr.simulator.report", raising=False)
    path = _scenario(tmp_path, "realtime = false", limit=1)
    assert cli_main(["sim", "run", str(path), "--out", str(tmp_path / "rep")]) == 2
    assert "edge-asr[sim]" in capsys.readouterr().err


def test_a_started_child_never_blocks_on_its_unread_output():
    """After the start line, a child's stdout is drained: one that prints a megabyte (far
    more than a pipe holds) still runs to its end."""
    import subprocess
    import sys

    from edge_asr.daemon.api.client import wait_for_line

    child = subprocess.Popen(
        [sys.executable, "-c", "print('x: serving on 127.0.0.1:1', flush=True); "
                               "import sys; sys.stdout.write('y' * 1_000_000); print('end')"],
        stdout=subprocess.PIPE, bufsize=0)
    assert wait_for_line(child, "serving on", 30) == "x: serving on 127.0.0.1:1"
    assert child.wait(timeout=30) == 0
    quiet = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE, bufsize=0)
    assert wait_for_line(quiet, "serving on", 30) is None  # exited without the line
