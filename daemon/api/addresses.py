"""Where the client API listens: a Unix socket path (not too long, in an existing folder,
not a live daemon's) and a TCP address (loopback unless allowed otherwise), each checked
before gRPC binds it, with the reason in words when it cannot."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from pathlib import Path

import grpc

UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
SOCKET_MODE = 0o660


class ServeError(RuntimeError):
    """The server cannot listen where it was asked to, in words."""


def bind(server: grpc.Server, address: str) -> int:
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ServeError(f"cannot listen on {address}: {e}") from e
    if port == 0 and not address.startswith("unix:"):
        raise ServeError(f"cannot listen on {address} (is the port in use?)")
    return port


def check_unix_path(spec: str) -> str:
    path = spec.removeprefix("unix:")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ServeError(f"Unix socket path {path!r} is longer than {UNIX_PATH_MAX} bytes; "
                         "choose a shorter one")
    folder = Path(path).parent
    if not folder.is_dir():
        raise ServeError(f"cannot create the Unix socket {path}: folder {folder} does not exist")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISSOCK(mode):
        raise ServeError(f"{path} exists and is not a socket; refusing to replace it")
    if _socket_is_live(path):
        raise ServeError(f"another process is already serving on {path}")
    return path  # a stale socket of a daemon that died: gRPC replaces it


def _socket_is_live(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise ServeError(f"cannot check whether {path} is in use: {e}") from e
    return True


def check_tcp(address: str, allow_remote: bool) -> str:
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ServeError(f"TCP address {address!r} is not HOST:PORT (e.g. 127.0.0.1:0)")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not allow_remote and not _is_loopback(bare):
        raise ServeError(f"refusing to listen on {host}: not a loopback address; the client "
                         "API is local to the device (pass allow_remote=True to override)")
    return address


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost could resolve anywhere
