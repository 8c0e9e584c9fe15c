"""Development sets for tuning the cloud's weights: each utterance's lattice with its reference.

One file a set, one utterance a line of JSON: {"lattice": base64 of the serialized Lattice,
"text": the normalised reference, optionally "device": what the device delivered and
"contacts": the user's list}. `edge-asr eval SET --lattices FILE` writes it
(`encode_dev_line`); `python -m edge_asr.simulator.cloud.weight_tuning` reads it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_asr.daemon.uplink.lattice import Lattice, LatticeError, parse
from edge_asr.simulator.cloud.name_classes import NO_CONTACTS, Contacts, ContextError


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class DevUtterance:
    lattice: Lattice
    reference: tuple[str, ...]
    # What the device itself delivered (its length-normalised best, which need not be the
    # lattice's best path by summed score); None: take the lattice's best path.
    device: tuple[str, ...] | None = None
    contacts: Contacts = NO_CONTACTS  # the user's contacts the utterance was heard with
    dev_set: str = ""  # the set it belongs to (its file's name): tuning weighs sets equally


class DevSetError(ValueError):
    """A dev-set line is not {"lattice": base64 Lattice, "text": reference}."""


def encode_dev_line(lattice_bytes: bytes, text: str, device: str | None = None,
                    contacts: Sequence[str] = ()) -> str:
    record: dict = {"lattice": base64.b64encode(lattice_bytes).decode("ascii"), "text": text}
    if device is not None:
        record["device"] = device
    if contacts:
        record["contacts"] = list(contacts)
    return json.dumps(record)


def load_dev_set(path: Path) -> list[DevUtterance]:
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                data = base64.b64decode(record["lattice"], validate=True)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
                raise DevSetError(f"{where}: expected {{\"lattice\": base64, \"text\": str}}: "
                                  f"{exc}") from exc
            device, contacts = record.get("device"), record.get("contacts", [])
            if not isinstance(text, str) or not isinstance(device, str | None):
                raise DevSetError(f"{where}: \"text\" or \"device\" is not a string")
            if not isinstance(contacts, list) or not all(isinstance(c, str) for c in contacts):
                raise DevSetError(f"{where}: \"contacts\" is not a list of strings")
            try:
                out.append(DevUtterance(parse(data), tuple(text.split()),
                                        None if device is None else tuple(device.split()),
                                        Contacts.of(contacts), path.stem))
            except (LatticeError, ContextError) as exc:
                raise DevSetError(f"{where}: {exc}") from exc
    if not out:
        raise DevSetError(f"{path} has no utterances")
    return out
