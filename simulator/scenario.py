"""Scenario files: the world a simulated device lives in, as TOML.

    name = "quiet kitchen"
    realtime = true                 # pace the microphone in real time (false: as fast as possible)
    compare_speculation = true      # run twice, with and without the speculative end-pointer

    [utterances]                    # simulator/room.py UtteranceSource
    manifest = "../../tests/data/manifest.jsonl"
    [room]                          # RoomConfig: rt60, gap_s, noise beds
    rt60 = 0.3
    noise = [{ kind = "kitchen", snr_db = 25 }]
    [room.playback]                 # Playback: what the device's own loudspeaker plays
    kind = "music"
    [[room.other_speech]]           # simulator/talkers.py OtherSpeech: speech not addressed
    label = "tv"                    # to the device (a TV, other people), from elsewhere in
    sentences = ["..."]             # the room, at a set level below the requests
    [wake_word]                     # the daemon's WakeWordConfig; with a phrase the talker
    phrase = "hey marvin"           # says it before each request (utterances.wake_pause_s)
    [network]                       # simulator/netem.py NetworkConfig
    latency_ms = 30
    [cloud]                         # CloudSim
    nlu_cost_ms = 150
    [device]                        # DeviceProfile: beams, VAD level gate, threads, cores,
                                    # a music player's load, echo cancellation, noise
                                    # suppression, whether it listens for the wake word
    [endpoint]                      # daemon EndpointConfig overrides
    [link]                          # daemon CloudLinkConfig overrides

Every table and key is checked: an unknown key is an error naming it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edge_asr.daemon.api.config import DaemonConfig, config_from_dict
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.frontend.cleanup import FrontEndConfig
from edge_asr.daemon.recognition.recognizer import RecognizerConfig
from edge_asr.daemon.uplink.cloud_link import CloudLinkConfig
from edge_asr.daemon.wakeword.spotter import WakeWordConfig
from edge_asr.simulator.netem import NetworkConfig
from edge_asr.simulator.room import NoiseBed, RoomConfig, UtteranceSource

BUNDLED = Path(__file__).parent / "scenarios"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CloudSim:
    lm: str = ""  # cloud LM folder; "" = the repository's models/cloud-lm
    nlu_cost_ms: float = 0.0  # downstream work per result (intent, fulfilment); a RESET cancels it
    slow_ms: float = 0.0  # extra delay before every answer: an overloaded cloud


@dataclass(frozen=True)
class DeviceProfile:
    model: str = ""  # acoustic model folder; "" = the shipped one
    decoding: str = "modified_beam_search"
    beam: int = RecognizerConfig.beam
    context_beam: int = RecognizerConfig.context_beam  # beam while the context is set
    vad_level_gate: float = DaemonConfig.vad_level_gate  # daemon/frontend/vad.py; 0 turns it off
    vad_speech_model: bool = DaemonConfig.vad_speech_model  # daemon/frontend/speech_gate.py
    threads: int = 1  # onnxruntime intra-op threads
    cores: list[int] = field(default_factory=list)  # pin the daemon here; [] = any core
    music_load: float = 0.0  # share of the daemon's first core a music player takes
    # The daemon's [frontend]: cancel the device's own playback (room.playback), suppress
    # noise ("off", "webrtc", "rnnoise", "webrtc-noise-gain")
    echo_cancellation: bool = False
    echo_canceller: str = FrontEndConfig.echo_canceller
    noise_suppression: str = "off"
    # Listen for the scenario's wake phrase. False: the talker still says it, and the daemon
    # recognises everything it hears (what the wake word saves, on the same audio).
    wake_word: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.music_load <= 1.0:
            raise ValueError(f"device.music_load must be in [0, 1], got {self.music_load!r}")
        if self.music_load and not self.cores:
            raise ValueError("device.music_load needs device.cores: the player shares the "
                             "daemon's core")
        FrontEndConfig(echo_cancellation=self.echo_cancellation,  # checks the names
                       echo_canceller=self.echo_canceller,
                       noise_suppression=self.noise_suppression)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    realtime: bool = True
    seed: int = 0
    compare_speculation: bool = False
    utterances: UtteranceSource = field(default_factory=UtteranceSource)
    room: RoomConfig = field(default_factory=RoomConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    cloud: CloudSim = field(default_factory=CloudSim)
    device: DeviceProfile = field(default_factory=DeviceProfile)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    link: CloudLinkConfig = field(default_factory=CloudLinkConfig)
    wake_word: WakeWordConfig = field(default_factory=WakeWordConfig)  # said and listened for
    base: Path = Path(".")  # the scenario file's folder: relative paths start here

    @property
    def listens_for_wake_word(self) -> bool:
        """Whether the daemon waits for the phrase (the room says it whenever one is set)."""
        return self.wake_word.enabled and self.device.wake_word


def bundled_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUNDLED.glob("*.toml"))}


def resolve(name_or_path: str | Path) -> Path:
    """A bundled scenario by name ("quiet_kitchen") or any scenario file by path."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = bundled_scenarios()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    raise FileNotFoundError(f"no scenario {str(name_or_path)!r}: give a TOML file or one of "
                            f"{', '.join(bundled)}")


def load_scenario(name_or_path: str | Path) -> Scenario:
    path = resolve(name_or_path)
    with open(path, "rb") as f:
        data = tomllib.load(f)
    room = data.get("room", {})
    if "noise" in room:  # a list of tables, which config_from_dict leaves as dicts
        room["noise"] = [config_from_dict(NoiseBed, bed, f"{path}: room.noise")
                         for bed in room["noise"]]
    data.setdefault("name", path.stem)
    return config_from_dict(Scenario, {**data, "base": path.parent.resolve()}, str(path))
