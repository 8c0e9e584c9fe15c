"""The cloud link's setup faults: a missing or unreadable TLS file stops the start (exit 2)
instead of killing the link later; a token over plaintext is refused unless meant; and a
cloud that turns the device away (wrong token, failed TLS handshake) is a warning, once
per reason, that reaches the daemon's stderr."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_asr.daemon.cli import main
from edge_asr.daemon.uplink.cloud_link import TLS_FILES, CloudLink, CloudLinkConfig
from edge_asr.simulator.cloud.security import CloudSecurity

DATA = Path(__file__).parent / "data"
CLIP = str(DATA / json.loads((DATA / "manifest.jsonl").open().readline())["audio_filepath"])
LOGGER = "edge_asr.daemon.uplink.cloud_link"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory) -> Path:
    """A self-signed certificate: a root that a plaintext cloud cannot shake hands with."""
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=edge-asr test"],
                   cwd=d, check=True, capture_output=True)
    return d / "ca.pem"


def _tls_files(tmp_path: Path, missing: str) -> dict[str, str]:
    files = {name: str(tmp_path / f"{name}.pem") for name in TLS_FILES}
    for name, path in files.items():
        if name != missing:
            Path(path).write_text(PEM)
    return files


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("missing", TLS_FILES)
def test_a_missing_tls_file_is_refused_when_the_link_is_made(tmp_path, missing):
    files = _tls_files(tmp_path, missing)
    with pytest.raises(ValueError) as refused:
        CloudLink(CloudLinkConfig(address="127.0.0.1:1", **files))
    assert str(refused.value) == (f"[cloud] {missing}: cannot read {files[missing]!r}: "
                                  "No such file or directory")


def test_a_folder_or_a_file_that_is_not_pem_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"tls_root_cert: cannot read .*: Is a directory"):
        CloudLink(CloudLinkConfig(address="127.0.0.1:1", tls_root_cert=str(tmp_path)))
    (tmp_path / "ca.txt").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"tls_root_cert: '.*ca\.txt' is not a PEM file"):
        CloudLink(CloudLinkConfig(address="127.0.0.1:1", tls_root_cert=str(tmp_path / "ca.txt")))


def test_the_daemon_refuses_to_start_with_a_missing_root_certificate(tmp_path, tiny_model_dir):
    config = tmp_path / "daemon.toml"
    missing = tmp_path / "no-ca.pem"
    config.write_text(f'[cloud]\naddress = "127.0.0.1:1"\ntls_root_cert = "{missing}"\n')
    cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config", str(config),
           "--model", str(tiny_model_dir), "--source", "none", "--socket",
           str(tmp_path / "d.sock")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert (f"edge-asr: error: [cloud] tls_root_cert: cannot read '{missing}': "
            "No such file or directory") in done.stderr
    assert "serving on" not in done.stdout and "Traceback" not in done.stderr


def test_a_token_without_tls_is_refused_unless_meant(ca_pem):
    with pytest.raises(ValueError, match="token would go to 127.0.0.1:1 in plaintext"):
        CloudLink(CloudLinkConfig(address="127.0.0.1:1", token="t"))
    CloudLink(CloudLinkConfig(address="127.0.0.1:1", token="t", allow_insecure_token=True))
    CloudLink(CloudLinkConfig(address="127.0.0.1:1", token="t", tls_root_cert=str(ca_pem)))
    CloudLink(CloudLinkConfig(address="127.0.0.1:1"))  # no token: nothing to leak


def test_the_daemon_refuses_a_plaintext_token(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "daemon.toml"
    config.write_text('[cloud]\naddress = "127.0.0.1:1"\ntoken = "s3cret"\n'
                      '[source]\nkind = "none"\n')
    assert main(["daemon", "--config", str(config), "--model", str(tiny_model_dir),
                 "--socket", str(tmp_path / "d.sock")]) == 2
    err = capsys.readouterr().err
    assert "edge-asr: error: [cloud] token is set without tls_root_cert" in err
    assert "allow_insecure_token = true" in err


def test_a_refused_token_is_warned_once_however_often_the_link_retries(cloud, cloud_link,
                                                                      caplog):
    server = cloud(security=CloudSecurity(token="right"))
    address = f"127.0.0.1:{server.port}"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        link = cloud_link(address, token="wrong", allow_insecure_token=True)
        _wait_for(lambda: link.counters.refused >= 3)
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"cloud at {address} refuses this device: UNAUTHENTICATED")


def test_a_failed_tls_handshake_is_warned_once(cloud, cloud_link, caplog, ca_pem):
    server = cloud()  # plaintext: no handshake can succeed
    address = f"127.0.0.1:{server.port}"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        link = cloud_link(address, tls_root_cert=str(ca_pem))
        _wait_for(lambda: link.counters.refused >= 2)
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"cloud at {address} refuses this device: TLS handshake failed")
    assert not link.connected


def test_the_daemon_says_on_stderr_that_the_cloud_refuses_it(tmp_path, tiny_model_dir, cloud):
    server = cloud(security=CloudSecurity(token="right"))
    address = f"127.0.0.1:{server.port}"
    config = tmp_path / "daemon.toml"
    config.write_text(f'[cloud]\naddress = "{address}"\ntoken = "wrong"\n'
                      "allow_insecure_token = true\nbackoff_initial_s = 0.05\n"
                      "backoff_max_s = 0.1\n")
    cmd = [sys.executable, "-m", "edge_asr.daemon.cli", "daemon", "--config", str(config),
           "--model", str(tiny_model_dir), "--source", "files", "--files", CLIP,
           "--socket", str(tmp_path / "d.sock")]  # plays the clip in real time, then stops
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    refusals = [line for line in done.stderr.splitlines() if "refuses this device" in line]
    assert refusals == [f"cloud at {address} refuses this device: UNAUTHENTICATED: "
                        "missing or wrong bearer token (metadata 'authorization: Bearer ...')"]
