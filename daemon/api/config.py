"""The daemon's configuration: a TOML file (`--config`) whose tables mirror `DaemonConfig`,
overridden by command-line flags."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from edge_asr.daemon.api.addresses import default_socket
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.frontend.cleanup import FrontEndConfig
from edge_asr.daemon.pipeline import PipelineConfig
from edge_asr.daemon.recognition.recognizer import RecognizerConfig
from edge_asr.daemon.uplink.cloud_link import CloudLinkConfig
from edge_asr.daemon.uplink.word_lattice import LatticeOptions
from edge_asr.daemon.wakeword.spotter import WakeWordConfig


@dataclass
class SourceConfig:
    kind: str = "microphone"  # "microphone", "files" or "none" (clients push audio)
    device: str = ""  # microphone name (substring) or index; "" = the default input
    files: list[str] = field(default_factory=list)
    realtime: bool = True  # pace files as a microphone would
    loop: bool = False
    gap_s: float = 1.5  # silence between files
    wait_for_subscriber: bool = False  # start playing once a client listens (demos, tests)
    # Audio the capture buffer holds while recognition falls behind (a starved CPU); older
    # audio is then lost, counted and told to subscribers (AUDIO_OVERRUN)
    ring_seconds: float = 2.0
    # What the device's loudspeaker plays, in step with the source from its start: the echo
    # canceller's reference ([frontend] echo_cancellation). "" = none.
    reference: str = ""


# What a client's request message may weigh: room for a Recognize chunk, and a bound.
MESSAGE_BYTES_RANGE = (1024, 64 << 20)


@dataclass
class ServerConfig:
    socket: str = field(default_factory=default_socket)  # "" disables the Unix socket
    tcp: str = ""  # e.g. "127.0.0.1:50051"; loopback only
    # Bearer token TCP clients must send; "" = a random one, written 0600 beside the socket
    tcp_token_file: str = ""
    max_message_bytes: int = 1 << 20
    # A pushed stream (Recognize) that sends nothing for this long is ended, its slot freed
    idle_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        low, high = MESSAGE_BYTES_RANGE
        if not low <= self.max_message_bytes <= high:  # <= 0 would lift gRPC's limit
            raise ValueError(f"ServerConfig.max_message_bytes must be between {low} and "
                             f"{high} (64 MiB), got {self.max_message_bytes}")
        if not self.idle_timeout_s > 0:  # also refuses NaN
            raise ValueError(f"ServerConfig.idle_timeout_s must be > 0, "
                             f"got {self.idle_timeout_s}")


@dataclass
class DaemonConfig:
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    cloud: CloudLinkConfig = field(default_factory=CloudLinkConfig)
    local_only: bool = False  # nothing leaves the device, even with a cloud address
    vad_mode: int = 2
    vad_noise_gate_db: float = 3.0  # a speech frame must be this far above the noise floor
    vad_level_gate: float = PipelineConfig.vad_level_gate  # ... and this share of the way
    # up to the speech level
    vad_speech_model: bool = PipelineConfig.vad_speech_model  # ... and speech to Silero's net
    partials: bool = True
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    shutdown_grace_s: float = 3.0
    print_events: bool = False
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)  # echo, noise
    # [wake_word]: with a phrase, the daemon's own source is recognised only after it
    # (pushed audio, whose client asked for recognition, never waits for it)
    wake_word: WakeWordConfig = field(default_factory=WakeWordConfig)
    # [lattice]: how the beam becomes what the cloud receives (daemon/uplink/word_lattice.py)
    lattice: LatticeOptions = field(default_factory=LatticeOptions)

    def pipeline_config(self, model_version: str, partials: bool | None = None,
                        wake: bool = False) -> PipelineConfig:
        """What every pipeline of this daemon (and `transcribe`/`eval` given its TOML) runs
        with; `partials` overrides the configured setting; `wake` applies the wake word."""
        return PipelineConfig(endpoint=self.endpoint, vad_mode=self.vad_mode,
                              vad_noise_gate_db=self.vad_noise_gate_db,
                              vad_level_gate=self.vad_level_gate,
                              vad_speech_model=self.vad_speech_model,
                              partials=self.partials if partials is None else partials,
                              model_version=model_version,
                              wake_word=self.wake_word if wake else WakeWordConfig(),
                              lattice=self.lattice)


def config_from_dict(cls: type, values: Any, where: str, *, key: str = "") -> Any:
    """A dataclass from a TOML table; nested tables fill nested dataclasses. An unknown key,
    a missing one or a value of the wrong type is a ValueError naming `where` (the file)
    and the dotted key: a typo must not silently leave a default in force, nor a wrong type
    fail later with a traceback."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: {key or 'the configuration'} must be a table, "
                         f"got {_shown(values)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) "
                         f"{', '.join(_dotted(key, n) for n in sorted(unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    missing = [n for n, f in known.items() if n not in values and _required(f)]
    if missing:
        raise ValueError(f"{where}: {', '.join(_dotted(key, n) for n in missing)} "
                         "must be given")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _typed(hints[name], value, where, _dotted(key, name))
              for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # the dataclass's own range checks
        raise ValueError(f"{where}: [{key}] {e}" if key else f"{where}: {e}") from e


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


class _WrongType(Exception):
    """A value does not fit the type a setting is declared with."""


def _typed(tp: Any, value: Any, where: str, key: str) -> Any:
    """`value` checked against the field type `tp` (ints widened to float)."""
    try:
        return _convert(tp, value, where, key)
    except _WrongType:
        raise ValueError(f"{where}: {key} must be {_describe(tp)}, got {_shown(value)}") \
            from None


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(args, value, where, key)
    if origin in (list, tuple):
        return _convert_sequence(origin, args, value, where, key)
    if origin is dict:
        return _checked(value, isinstance(value, dict))
    if tp is Any:
        return value
    if tp is bool:
        return _checked(value, isinstance(value, bool))
    if tp is int:  # bool is an int to Python, never to a user
        return _checked(value, isinstance(value, int) and not isinstance(value, bool))
    if tp is float:
        return float(_checked(value, isinstance(value, (int, float))
                              and not isinstance(value, bool)))
    if tp is str:
        return _checked(value, isinstance(value, str))
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return tp(_checked(value, isinstance(value, (str, PurePath))))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return config_from_dict(tp, _checked(value, isinstance(value, dict)), where, key=key)
    if isinstance(tp, type):
        return _checked(value, isinstance(value, tp))
    return value  # a type this check does not know: the dataclass has the last word


def _checked(value: Any, fits: bool) -> Any:
    if not fits:
        raise _WrongType
    return value


def _convert_union(args: tuple, value: Any, where: str, key: str) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, where, key)
        except _WrongType:
            continue
    raise _WrongType


def _convert_sequence(origin: type, args: tuple, value: Any, where: str, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _WrongType
    if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
        items = [_convert(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    elif args:  # a fixed-length tuple
        if len(value) != len(args):
            raise _WrongType
        items = [_convert(a, v, where, f"{key}[{i}]") for i, (a, v) in
                 enumerate(zip(args, value, strict=True))]
    else:
        items = list(value)
    return tuple(items) if origin is tuple else items


_SINGULAR = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any, plural: bool = False) -> str:
    """The type a setting wants, in words: "an integer", "a list of strings"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        words = dict.fromkeys(_describe(a, plural) for a in args if a is not type(None))
        return " or ".join(words)
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        what = f"of {_describe(inner[0], True)}" if len(set(inner)) == 1 else ""
        return f"{'lists' if plural else 'a list'} {what}".strip()
    if origin is dict or dataclasses.is_dataclass(tp):
        return "tables" if plural else "a table"
    if isinstance(tp, type) and issubclass(tp, PurePath):  # TOML writes a path as a string
        return "strings" if plural else "a string"
    if tp in _SINGULAR:
        return _PLURAL[tp] if plural else _SINGULAR[tp]
    return getattr(tp, "__name__", str(tp))


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    return f"{value!r} ({type(value).__name__})"


def load_config(path: str | Path | None) -> DaemonConfig:
    """DaemonConfig from a TOML file (tables: recognizer, endpoint, source, server, cloud);
    a file that cannot be read or parsed is a ValueError naming it and why."""
    if path is None:
        return DaemonConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the configuration: "
                         f"{e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid TOML file: {e}") from e
    return config_from_dict(DaemonConfig, data, str(path))
