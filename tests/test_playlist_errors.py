"""Bad files in the daemon's playlist: refused at start with each one named, skipped with a
warning when they go bad while it plays; a recognition worker that fails ends the daemon
with a non-zero exit status."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.api.config import DaemonConfig, ServerConfig, SourceConfig
from edge_asr.daemon.api.service import Daemon, run_daemon
from edge_asr.daemon.capture.sources import AudioSourceError, FileSource, PlaylistSource
from edge_asr.daemon.recognition.recognizer import RecognizerConfig

DATA = Path(__file__).parent / "data"
GOOD = sorted(DATA.glob("*.flac"))[:2]


def write_tone(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> None:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def bad_files(folder: Path) -> dict[Path, str]:
    """Files the daemon cannot play, each with the reason it should give."""
    text, empty, directory = folder / "notes.wav", folder / "empty.flac", folder / "clips"
    text.write_text("not audio at all\n")
    empty.write_bytes(b"")
    directory.mkdir()
    odd_rate, nan = folder / "odd.wav", folder / "nan.wav"
    write_tone(odd_rate, 0.1, rate=11025)
    samples = np.zeros(1600, np.float32)
    samples[10] = np.nan
    sf.write(str(nan), samples, 16000, subtype="FLOAT")
    truncated = folder / "truncated.flac"
    truncated.write_bytes(GOOD[0].read_bytes()[:2000])
    return {folder / "missing.wav": "no such file", text: "Format not recognised",
            empty: "the file is empty", directory: "is a directory",
            odd_rate: "unsupported sample rate 11025", nan: "NaN",
            truncated: "cannot read audio"}


def test_daemon_refuses_a_playlist_with_bad_files_before_listening(tmp_path, tiny_model_dir):
    bad = bad_files(tmp_path)
    socket = tmp_path / "d.sock"
    cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--model", str(tiny_model_dir),
           "--source", "files", "--files", str(GOOD[0]), *map(str, bad), str(GOOD[1]),
           "--no-realtime", "--local-only", "--print-events", "--socket", str(socket)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"edge-asr: error: {len(bad)} of the {len(bad) + 2} files")
    lines = proc.stderr.splitlines()
    for path, reason in bad.items():
        assert any(line.strip().startswith(f"{path}: ") and reason in line for line in lines), \
            (path, reason, proc.stderr)
    assert not any(str(good) in proc.stderr for good in GOOD)
    assert "serving on" not in proc.stdout and not socket.exists()  # never listened
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("spoil", ["delete", "overwrite with text"])
def test_playlist_skips_a_file_spoilt_after_the_start_and_plays_on(tmp_path, capsys, spoil):
    first, second, third = (tmp_path / f"{n}.wav" for n in ("first", "second", "third"))
    write_tone(first, 0.2, freq=440.0)
    write_tone(second, 0.3, freq=550.0)
    write_tone(third, 0.4, freq=660.0)
    playlist = PlaylistSource([first, second, third], realtime=False, gap_s=0.0)
    if spoil == "delete":
        second.unlink()
    else:
        second.write_text("not audio any more\n")

    played = list(playlist.pieces())

    expected = [*FileSource(first).pieces(), *FileSource(third).pieces()]
    assert len(played) == len(expected)
    for got, want in zip(played, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    err = capsys.readouterr().err
    assert f"warning: skipping {second}: " in err
    assert ("no such file" if spoil == "delete" else "Format not recognised") in err


def test_looping_playlist_warns_once_about_a_missing_file_and_again_once_it_is_back(
        tmp_path, capsys):
    kept, lost = tmp_path / "kept.wav", tmp_path / "lost.wav"
    write_tone(kept, 0.1)
    write_tone(lost, 0.2, freq=880.0)
    playlist = PlaylistSource([kept, lost], realtime=False, gap_s=0.0, loop=True)
    lost.unlink()
    per_pass = len(list(FileSource(kept).pieces()))
    it = playlist.pieces()
    three_passes = [next(it) for _ in range(3 * per_pass)]
    assert len(three_passes) == 3 * per_pass
    assert capsys.readouterr().err.count("skipping") == 1  # not once per pass

    write_tone(lost, 0.2, freq=880.0)
    next(it)  # plays again ...
    lost.unlink()
    [next(it) for _ in range(3 * per_pass)]
    assert capsys.readouterr().err.count(f"skipping {lost}: no such file") == 1  # ... is news
    playlist.close()


def test_looping_playlist_whose_files_all_went_bad_stops_with_an_error(tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    write_tone(clip, 0.1)
    playlist = PlaylistSource([clip], realtime=False, gap_s=0.0, loop=True)
    clip.unlink()
    outcome: list[BaseException | None] = []

    def play() -> None:
        try:
            list(playlist.pieces())
            outcome.append(None)
        except AudioSourceError as e:
            outcome.append(e)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    player.join(10)
    playlist.close()  # ends an endless loop of warnings, should there be one
    assert outcome and isinstance(outcome[0], AudioSourceError), outcome
    assert "none of the playlist's files can be read" in str(outcome[0])
    assert f"skipping {clip}: no such file" in capsys.readouterr().err


class FailingSource:
    """A source whose reading fails after a little audio, as a broken device would."""

    def pieces(self):
        yield np.zeros(320, np.float32)
        raise RuntimeError("the capture device went away")

    def close(self) -> None:
        pass


def test_a_failing_recognition_worker_stops_the_daemon_with_status_1(
        tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(Daemon, "open_source", lambda self: FailingSource())
    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=tiny_model_dir),
                          source=SourceConfig(kind="files"),
                          server=ServerConfig(socket=str(tmp_path / "d.sock")),
                          local_only=True, shutdown_grace_s=0.5)
    assert run_daemon(config) == 1
    out, err = capsys.readouterr()
    assert "recognition stopped: the capture device went away" in err
    assert "edge-asr daemon stopped after an error" in out
    assert not (tmp_path / "d.sock").exists()  # the server was shut down
