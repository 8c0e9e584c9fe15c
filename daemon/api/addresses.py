"""Where the client API listens, and what TCP callers must show: a Unix socket path (not
too long, in an existing folder, not a live daemon's), a TCP address (loopback unless
allowed otherwise) and the bearer token TCP clients send, each checked before use, with
the reason in words when it cannot be used.

The defaults live in a per-user folder: $XDG_RUNTIME_DIR (private to its user by the
XDG spec), else /tmp/edge-asr-UID, made mode 0700. A folder in /tmp that another user
made first, or may write, is refused: they could put their own socket there."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import socket
import stat
import tempfile
from pathlib import Path

import grpc

UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
SOCKET_MODE = 0o660
FOLDER_MODE = 0o700
SHARED_TMP = "/tmp"  # where the per-user folder goes without XDG_RUNTIME_DIR


class ServeError(RuntimeError):
    """The server cannot listen where it was asked to, in words."""


# -- the per-user folder ------------------------------------------------------------------

def user_folder() -> Path:
    """$XDG_RUNTIME_DIR, else SHARED_TMP/edge-asr-UID (see ensure_user_folder)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) if runtime else Path(SHARED_TMP) / f"edge-asr-{os.getuid()}"


def default_socket() -> str:
    return str(user_folder() / "edge-asr.sock")


def default_token_file() -> str:
    return str(user_folder() / "edge-asr.token")


def ensure_user_folder() -> Path:
    """The per-user folder, made (mode 0700) when it is the /tmp one and missing; ServeError
    unless it is this user's own and nobody else may write in it."""
    folder = user_folder()
    if not os.environ.get("XDG_RUNTIME_DIR"):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=FOLDER_MODE)
    check_private(folder)
    return folder


def check_private(folder: Path) -> None:
    """ServeError unless `folder` is a real folder of this user that no one else may write."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        raise ServeError(f"folder {folder} does not exist") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ServeError(f"{folder} is not a folder (a link or a file); refusing to use it, "
                         "since another user may have put it there")
    if info.st_uid != os.getuid():
        raise ServeError(f"{folder} belongs to user id {info.st_uid}, not to this user "
                         f"({os.getuid()}); refusing to use it, since whoever owns it controls "
                         "the socket in it. Remove it, set XDG_RUNTIME_DIR, or pass --socket")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ServeError(f"{folder} may be written by other users (mode "
                         f"{stat.S_IMODE(info.st_mode):o}); refusing to use it, since they "
                         f"could replace the socket in it. Make it private: chmod 700 {folder}")


# -- the TCP token ------------------------------------------------------------------------

def read_token(path: str) -> str:
    """The bearer token in `path`; ServeError naming the file when it cannot be used."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ServeError(f"cannot read the TCP token file {path}: "
                         f"{getattr(e, 'strerror', None) or e}") from e
    if not token:
        raise ServeError(f"the TCP token file {path} is empty")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ServeError(f"the TCP token file {path} holds characters a gRPC header cannot "
                         "carry; use printable ASCII without spaces")
    return token


def write_new_token(path: str) -> str:
    """A fresh random token, written to `path` readable by its owner only (mode 0600)."""
    token = secrets.token_urlsafe(32)
    # mkstemp makes a new 0600 file (never through a link); the rename then swaps it in whole.
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=".edge-asr-token-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return token


# -- the addresses ------------------------------------------------------------------------

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
    if folder == user_folder():  # the default place: trusted only while it is private
        ensure_user_folder()
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
