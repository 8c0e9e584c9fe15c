"""What the simulated device is told: the daemon's TOML for a scenario's device profile,
and the one context the client sets for the session.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge_asr.daemon.api.proto import edge_asr_pb2
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR
from edge_asr.simulator.room import Request
from edge_asr.simulator.scenario import Scenario

MAX_CONTEXT = 1400  # what SetContext accepts


def session_context(requests: list[Request], extra: list[str]) -> edge_asr_pb2.ContextLists:
    """One context for the session: the scenario's contacts and every request's entries,
    each under the kind its manifest gave, without repeats, at most SetContext's limit."""
    by_kind: dict[str, list[str]] = {"contacts": list(extra), "devices": [], "phrases": []}
    for r in requests:
        for kind, names in r.context.items():
            by_kind[kind] += names
    seen: set[str] = set()
    room = MAX_CONTEXT
    for kind, names in by_kind.items():
        kept = [n for n in dict.fromkeys(names) if n not in seen][:room]
        seen.update(kept)
        room -= len(kept)
        by_kind[kind] = kept
    return edge_asr_pb2.ContextLists(**by_kind)


def daemon_toml(scenario: Scenario, wav: Path, socket: str, cloud: str,
                speculative: bool, reference: Path | None = None) -> str:
    """The daemon's configuration: the device profile's settings, `wav` played as its
    microphone, serving on `socket`, its cloud at `cloud` (the network emulator)."""
    dev = scenario.device
    model = dev.model or str(DEFAULT_MODEL_DIR)
    endpoint = dataclasses.replace(scenario.endpoint, speculative=speculative)
    link = dataclasses.replace(scenario.link, address=cloud)
    aec = dev.echo_cancellation and reference is not None  # nothing to cancel without one

    def table(name: str, values: dict) -> str:  # TOML has no null: None is the default
        return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()
                                       if v is not None)

    return "\n".join([
        f"vad_level_gate = {json.dumps(dev.vad_level_gate)}\n"
        f"vad_speech_model = {json.dumps(dev.vad_speech_model)}\n",
        table("recognizer", {"model_dir": model, "decoding_method": dev.decoding,
                             "beam": dev.beam, "context_beam": dev.context_beam,
                             "threads": dev.threads}),
        table("endpoint", dataclasses.asdict(endpoint)),
        # the reference (what the device played) starts with the microphone's first sample
        table("source", {"kind": "files", "files": [str(wav)], "realtime": scenario.realtime,
                         "gap_s": 0.0, "wait_for_subscriber": True,
                         "reference": str(reference) if aec else ""}),
        table("frontend", {"echo_cancellation": aec,
                           "echo_canceller": dev.echo_canceller,
                           "noise_suppression": dev.noise_suppression}),
        table("server", {"socket": socket}),
        table("cloud", dataclasses.asdict(link)),
        # without it the daemon recognises all it hears, the phrase included
        table("wake_word", dataclasses.asdict(scenario.wake_word)
              if scenario.listens_for_wake_word else {"phrase": ""}),
    ])
