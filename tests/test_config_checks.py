"""A bad daemon configuration is refused at start, in words that name the file, the key and
what it wants: wrong types, tables given as values, unreadable files, broken TOML, and server
limits out of range."""

import subprocess
import sys
from pathlib import Path

import pytest

from edge_asr.daemon.api.config import ServerConfig, config_from_dict, load_config
from edge_asr.simulator.room import RoomConfig

# (TOML text, what the error must say after "daemon.toml: ")
BAD_VALUES = [
    ('[recognizer]\nbeam = "four"\n',
     "recognizer.beam must be an integer, got 'four' (str)"),
    ("[recognizer]\nbeam = 4.0\n", "recognizer.beam must be an integer, got 4.0 (float)"),
    ("vad_mode = true\n", "vad_mode must be an integer, got True (bool)"),
    ("recognizer = 5\n", "recognizer must be a table, got 5 (int)"),
    ('[endpoint]\nspec_silence = "0.2"\n', "endpoint.spec_silence must be a number, got '0.2'"),
    ("[endpoint]\nspeculative = 1\n", "endpoint.speculative must be a boolean, got 1 (int)"),
    ('[source]\nfiles = "a.wav"\n', "source.files must be a list of strings, got 'a.wav'"),
    ('[recognizer]\nslot_words = ["call", 3]\n', "recognizer.slot_words must be a list of "
                                                 "strings"),
    ("[recognizer]\nmodel_dir = 4\n", "recognizer.model_dir must be a string, got 4 (int)"),
    ('metrics_port = "9464"\n', "metrics_port must be an integer, got '9464' (str)"),
    ("[cloud]\naddress = { host = \"x\" }\n", "cloud.address must be a string, got a table"),
    ("[server]\nmax_message_bytes = -1\n", "max_message_bytes must be between 1024 and "
                                           "67108864 (64 MiB), got -1"),
    ("[server]\nmax_message_bytes = 1023\n", "max_message_bytes must be between"),
    ("[server]\nmax_message_bytes = 67108865\n", "max_message_bytes must be between"),
    ("[server]\nidle_timeout_s = 0\n", "idle_timeout_s must be > 0, got 0.0"),
    ("[server]\nidle_timeout_s = nan\n", "idle_timeout_s must be > 0, got nan"),
]


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "says"), BAD_VALUES,
                         ids=[says.split(" must")[0] for _, says in BAD_VALUES])
def test_a_wrong_value_names_the_file_the_key_and_the_type(tmp_path, text, says):
    path = _toml(tmp_path, text)
    with pytest.raises(ValueError) as refused:
        load_config(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and says in message


def test_the_right_types_load_and_ints_count_as_numbers(tmp_path):
    config = load_config(_toml(tmp_path, (
        'vad_level_gate = 1\nmetrics_port = 0\n[recognizer]\nslot_words = ["call", "ring"]\n'
        'model_dir = "m"\n[server]\nmax_message_bytes = 1024\nidle_timeout_s = 5\n'
        "[source]\ngap_s = 2\n")))
    assert config.vad_level_gate == 1.0 and isinstance(config.vad_level_gate, float)
    assert config.recognizer.slot_words == ("call", "ring")  # the declared tuple
    assert (config.metrics_port, config.recognizer.model_dir) == (0, "m")
    assert (config.server.max_message_bytes, config.server.idle_timeout_s) == (1024, 5.0)
    assert load_config(_toml(tmp_path, "[server]\nmax_message_bytes = 67108864\n"))


def test_server_limits_are_checked_however_the_config_is_made():
    with pytest.raises(ValueError, match="max_message_bytes must be between 1024"):
        ServerConfig(max_message_bytes=0)
    with pytest.raises(ValueError, match="idle_timeout_s must be > 0"):
        ServerConfig(idle_timeout_s=-1.0)


def test_an_unknown_key_is_named_with_its_table(tmp_path):
    path = _toml(tmp_path, "[recognizer]\nbeem = 4\n")
    with pytest.raises(ValueError, match=r"daemon\.toml: unknown setting\(s\) recognizer\.beem;"):
        load_config(path)


def test_a_missing_required_key_and_a_list_of_tables_are_checked():
    with pytest.raises(ValueError, match=r"scene\.toml: room\.noise\[0\]\.snr_db must be given"):
        config_from_dict(RoomConfig, {"noise": [{"kind": "kitchen"}]}, "scene.toml",
                         key="room")
    with pytest.raises(ValueError, match=r"room\.noise\[0\]\.snr_db must be a number"):
        config_from_dict(RoomConfig, {"noise": [{"kind": "kitchen", "snr_db": "loud"}]},
                         "scene.toml", key="room")
    room = config_from_dict(RoomConfig, {"noise": [{"kind": "kitchen", "snr_db": 20}],
                                         "gap_s": [1, 2]}, "scene.toml", key="room")
    assert room.noise[0].snr_db == 20.0 and room.gap_s == [1.0, 2.0]


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: d, "cannot read the configuration: Is a directory"),
    (lambda d: d / "nowhere.toml", "cannot read the configuration: No such file or directory"),
    (lambda d: _write(d / "broken.toml", b"beam = [\n"), "not a valid TOML file: "),
    (lambda d: _write(d / "latin1.toml", b'device = "caf\xe9"\n'), "not a valid TOML file: "),
], ids=["folder", "missing", "broken", "not-utf8"])
def test_an_unreadable_or_broken_file_is_named_with_the_reason(tmp_path, make, says):
    path = make(tmp_path)
    with pytest.raises(ValueError) as refused:
        load_config(path)
    assert str(refused.value).startswith(f"{path}: {says}")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _daemon(config: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config", str(config),
           "--source", "none", "--socket", "", "--local-only"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("text", "says"), [
    ('[recognizer]\nbeam = "four"\n', "recognizer.beam must be an integer, got 'four' (str)"),
    ("recognizer = 5\n", "recognizer must be a table, got 5 (int)"),
    ("[server]\nmax_message_bytes = -1\n", "[server] ServerConfig.max_message_bytes must be "
                                           "between 1024 and 67108864 (64 MiB), got -1"),
], ids=["beam", "recognizer", "max_message_bytes"])
def test_the_daemon_refuses_a_bad_config_with_exit_code_2(tmp_path, text, says):
    path = _toml(tmp_path, text)
    done = _daemon(path)
    assert done.returncode == 2, done.stderr
    assert f"edge-asr: error: {path}: {says}" in done.stderr
    assert "Traceback" not in done.stderr and "serving on" not in done.stdout


def test_the_daemon_refuses_a_directory_as_its_config(tmp_path):
    done = _daemon(tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"edge-asr: error: {tmp_path}: cannot read the configuration: Is a directory" \
        in done.stderr
    assert "Traceback" not in done.stderr
