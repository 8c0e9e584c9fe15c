"""Who can reach the daemon, and what it reaches, checked on real daemon processes and the
shipped systemd unit. What other suites already check is not repeated here:

- the socket's mode at serve() level, the private 0700 folder without XDG_RUNTIME_DIR, and
  the token check of every EdgeAsr method: tests/test_server.py, tests/test_api_access.py;
- no message to the cloud can carry audio: tests/test_cloud.py
  (test_no_client_message_can_carry_audio) and tests/test_lattice.py
  (test_no_field_can_carry_audio).

Here: a running daemon's socket is 0660 and owned by the user and group it runs as (and, as
root, other users get in only through that group); its TCP listener is loopback only and
wants the token; a non-loopback address is refused unless allowed, and still wants the token
then; a local-only daemon given a cloud address connects to nothing; the systemd unit's
hardening, checked by systemd-analyze where it exists.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edge_asr.daemon.api import addresses
from edge_asr.daemon.api.client import bearer_channel
from edge_asr.daemon.api.config import DaemonConfig, ServerConfig, SourceConfig
from edge_asr.daemon.api.proto import edge_asr_pb2 as pb
from edge_asr.daemon.api.proto import edge_asr_pb2_grpc as pb_grpc
from edge_asr.daemon.api.server import serve
from edge_asr.daemon.api.service import Daemon
from edge_asr.daemon.cli import main
from edge_asr.daemon.recognition.recognizer import RecognizerConfig

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "edge-asr.service"
SYSUSERS = ROOT / "deploy" / "edge-asr.sysusers.conf"
# Two short clips looped in real time: an utterance every 4-5 s, little CPU.
CLIPS = [ROOT / "tests" / "data" / "clip03.flac", ROOT / "tests" / "data" / "clip04.flac"]
TOKEN = "security-test-token"
TCP_LISTEN, TCP_ESTABLISHED = "0A", "01"


# -- helpers -------------------------------------------------------------------------------

class CountingListener:
    """A TCP port that accepts and counts every connection: a cloud that only watches."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()


def start_daemon(*args: str, **popen: object) -> tuple[subprocess.Popen, str]:
    """`edge-asr daemon ARGS` in its own process; (process, the line saying where it
    serves). Keyword arguments go to Popen (user, group, env)."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_asr.daemon.cli", "daemon", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)
    printed = []
    while not printed or "serving on" not in printed[-1]:
        line = proc.stdout.readline()
        assert line, f"the daemon exited first, after printing {printed}"
        printed.append(line.strip())
    return proc, printed[-1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def inet_sockets(pid: int) -> list[tuple[str, str, ipaddress._BaseAddress, int]]:
    """(protocol, TCP state, local address, local port) of every IPv4/IPv6 socket that
    process `pid` holds, from /proc: what it listens on and what it connected to."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in held:
                host, port = _proc_address(fields[1])
                found.append((proto, fields[3], host, port))
    return found


def _proc_address(text: str) -> tuple[ipaddress._BaseAddress, int]:
    """/proc/net/tcp's "0100007F:1F90": the address as 32-bit words in host order."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    # gRPC listens on IPv6 sockets, 127.0.0.1 as ::ffff:127.0.0.1, which Python before 3.13
    # does not call loopback
    return getattr(address, "ipv4_mapped", None) or address, int(port, 16)


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values, in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path}: not a setting: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# -- a running daemon: local-only, with a cloud address, the Unix socket and loopback TCP ----

@pytest.fixture(scope="module")
def cloud_watcher() -> Iterator[CountingListener]:
    listener = CountingListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def running(tiny_model_dir, cloud_watcher) -> Iterator[dict]:
    folder = Path(tempfile.mkdtemp(prefix="ea-sec-"))  # short: socket paths are limited
    toml = folder / "daemon.toml"
    toml.write_text('[source]\nkind = "files"\nloop = true\nrealtime = true\n'
                    f"files = {json.dumps([str(c) for c in CLIPS])}\n")
    (folder / "token").write_text(TOKEN + "\n")
    socket_path = str(folder / "api.sock")
    proc, where = start_daemon("--config", str(toml), "--model", str(tiny_model_dir),
                               "--socket", socket_path, "--local-only",
                               "--cloud", f"127.0.0.1:{cloud_watcher.port}",
                               "--tcp", "127.0.0.1:0", "--tcp-token-file",
                               str(folder / "token"))
    try:
        yield {"proc": proc, "socket": socket_path, "tcp": where.split(", ")[-1].split()[0]}
    finally:
        stop(proc)
        shutil.rmtree(folder)


def test_a_local_only_daemon_with_a_cloud_address_connects_to_nothing(running,
                                                                      cloud_watcher):
    closed = []
    with grpc.insecure_channel(f"unix:{running['socket']}") as channel:
        for event in pb_grpc.EdgeAsrStub(channel).Subscribe(pb.SubscribeRequest(),
                                                             timeout=60):
            if event.type == pb.ON_DEVICE_FINAL:
                closed.append(event.reason)
            if len(closed) == 3:
                break
    assert closed == ["local-only"] * 3  # utterances happened, each closed on the device
    assert cloud_watcher.accepted == 0
    api_port = int(running["tcp"].rsplit(":", 1)[1])
    # Beyond the watched address: no connection of the daemon's own (its local port is not
    # the API's, whose accepted connections are clients'), and no UDP (a DNS query).
    outbound = [s for s in inet_sockets(running["proc"].pid)
                if s[1] != TCP_LISTEN and s[3] != api_port]
    assert outbound == []


def test_the_socket_of_a_running_daemon_is_0660_and_its_own(running):
    info = os.stat(running["socket"])
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


def test_a_running_daemon_listens_on_loopback_only_and_wants_its_token(running):
    listening = [s for s in inet_sockets(running["proc"].pid) if s[1] == TCP_LISTEN]
    assert listening and all(host.is_loopback for _, _, host, _ in listening), listening
    with grpc.insecure_channel(running["tcp"]) as channel:
        stub = pb_grpc.EdgeAsrStub(channel)
        for metadata in (None, [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as err:
                next(stub.Subscribe(pb.SubscribeRequest(), timeout=10, metadata=metadata))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with bearer_channel(running["tcp"], TOKEN) as channel:
        assert pb_grpc.EdgeAsrStub(channel).GetStatus(pb.GetStatusRequest(),
                                                      timeout=10).source == "files"


# -- non-loopback TCP ----------------------------------------------------------------------

@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0"])
def test_the_daemon_refuses_a_non_loopback_tcp_address(address, tiny_model_dir, tmp_path,
                                                       capsys):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    folder = tempfile.mkdtemp(prefix="ea-sec-")
    try:
        assert main(["daemon", "--source", "none", "--model", str(tiny_model_dir),
                     "--socket", f"{folder}/api.sock", "--tcp", address,
                     "--tcp-token-file", str(token)]) == 2
    finally:
        shutil.rmtree(folder)
    assert "not a loopback address" in capsys.readouterr().err


def _own_address() -> str:
    """This machine's address on its default route, or loopback without one (no packet is
    sent: connecting a UDP socket only picks the route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_tcp_beyond_loopback_when_allowed_still_wants_the_token(tiny_model_dir):
    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=tiny_model_dir),
                          source=SourceConfig(kind="none"), local_only=True,
                          server=ServerConfig(socket=""))
    served = serve(Daemon(config), None, "0.0.0.0:0", allow_remote=True, tcp_token=TOKEN)
    target = f"{_own_address()}:{served.port}"
    try:
        with grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.EdgeAsrStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with bearer_channel(target, TOKEN) as channel:
            assert pb_grpc.EdgeAsrStub(channel).GetStatus(pb.GetStatusRequest(),
                                                          timeout=10).source == "none"
    finally:
        served.server.servicer.core.bus.close()
        served.server.stop(0).wait(10)


# -- another user and group (root only) ------------------------------------------------------

DAEMON_UID, DAEMON_GID = 65534, 64901  # nobody, and a group nobody else has
CLIENT_UID, OTHER_GID = 65533, 64902


def _runs_as(python: str, uid: int) -> bool:
    """Whether user `uid` may run `python` (a pyenv interpreter under /root may not be)."""
    try:
        return subprocess.run([python, "-c", "0"], user=uid, group=OTHER_GID, extra_groups=[],
                              capture_output=True, timeout=60).returncode == 0
    except PermissionError:
        return False


def _connects(python: str, path: str, gid: int) -> str:
    """Whether a process of CLIENT_UID in group `gid` alone may connect to `path`."""
    code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\n    print('connected')\n"
            "except OSError as e:\n    print(e.strerror)\n")
    return subprocess.run([python, "-c", code, path], user=CLIENT_UID, group=gid,
                          extra_groups=[], capture_output=True, text=True,
                          timeout=30).stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="running as other users and groups needs root")
def test_only_the_daemons_group_may_use_its_socket(tiny_model_dir):
    # The client needs only the standard library: the system's Python will do.
    client = next((p for p in (sys.executable, shutil.which("python3", path=os.defpath))
                   if p and _runs_as(p, CLIENT_UID)), None)
    if client is None:
        pytest.skip("no Python interpreter that another user may run")
    # The daemon runs as DAEMON_UID where its interpreter lets it, else as root; in the
    # group DAEMON_GID either way, as systemd's User= and Group= would start it.
    user = DAEMON_UID if _runs_as(sys.executable, DAEMON_UID) else os.geteuid()
    folder = Path(tempfile.mkdtemp(prefix="ea-sec-"))
    try:
        model = folder / "model"  # the test's model lives in a folder only root may read
        shutil.copytree(tiny_model_dir, model)
        for path in (folder, model, *model.iterdir()):
            os.chown(path, user, DAEMON_GID)
        folder.chmod(0o755)  # anyone may look in: the socket's own mode must keep them out
        socket_path = str(folder / "api.sock")
        proc, _ = start_daemon("--source", "none", "--model", str(model), "--socket",
                               socket_path, user=user, group=DAEMON_GID, extra_groups=[],
                               env={**os.environ, "HOME": str(folder)})
        try:
            info = os.stat(socket_path)
            assert (info.st_uid, info.st_gid) == (user, DAEMON_GID)
            assert stat.S_IMODE(info.st_mode) == 0o660
            assert _connects(client, socket_path, DAEMON_GID) == "connected"
            assert _connects(client, socket_path, OTHER_GID) == "Permission denied"
        finally:
            stop(proc)
    finally:
        shutil.rmtree(folder)


# -- the systemd unit ----------------------------------------------------------------------

def test_the_unit_runs_hardened_as_its_own_user_with_the_microphones_group():
    service = unit_settings(UNIT)["Service"]
    one = {key: values[-1] for key, values in service.items()}  # the last one counts
    assert one["User"] == "edge-asr" and one["Group"] == "edge-asr"
    assert "DynamicUser" not in one  # its transient group could not admit any client
    assert "audio" in one["SupplementaryGroups"].split()  # ALSA's /dev/snd is root:audio
    for key, wanted in [("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                        ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                        ("RestrictSUIDSGID", "yes"), ("CapabilityBoundingSet", "")]:
        assert one.get(key) == wanted, key
    assert one.get("PrivateDevices", "no") == "no"  # it would hide the microphone


def test_the_units_socket_lands_in_its_runtime_directory(monkeypatch):
    """With PrivateTmp the daemon's /tmp fallback would be invisible to clients: the unit
    must point XDG_RUNTIME_DIR at the runtime directory systemd makes for it."""
    service = unit_settings(UNIT)["Service"]
    runtime = f"/run/{service['RuntimeDirectory'][-1]}"
    assert service["RuntimeDirectoryMode"][-1] == "0750"  # only the group reaches the socket
    env = dict(item.split("=", 1) for value in service.get("Environment", [])
               for item in value.split())
    monkeypatch.setenv("XDG_RUNTIME_DIR", env["XDG_RUNTIME_DIR"])
    assert addresses.default_socket() == f"{runtime}/edge-asr.sock"
    assert addresses.default_token_file() == f"{runtime}/edge-asr.token"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # verify also checks that ExecStart's program exists: point it at this checkout's.
    program = shutil.which("edge-asr", path=str(Path(sys.executable).parent)) or \
        shutil.which("true")
    text = UNIT.read_text().replace("/opt/edge-asr/.venv/bin/edge-asr", program)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=120)
    said = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not said, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_makes_the_units_user_without_a_login(tmp_path):
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)], check=True,
                   capture_output=True, timeout=60)
    users = {line.split(":")[0]: line.split(":") for line in
             (tmp_path / "etc" / "passwd").read_text().splitlines()}
    assert users["edge-asr"][6] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert "edge-asr:" in (tmp_path / "etc" / "group").read_text()
