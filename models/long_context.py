"""A manifest whose contexts are phone-book long: each utterance keeps its own contacts and
devices and gets others drawn from the whole manifest's lists, up to a size.

The evaluation sets give each utterance 20-25 contacts and 10 devices; a user's phone book
holds hundreds, and biasing behaves differently with that many partial matches about
(RESULTS.md, "Biasing").

    python -m edge_asr.models.long_context D/manifests/dev.jsonl dev_long.jsonl \\
        --contacts 400 --devices 150

Audio paths are written absolute, so the new manifest can live anywhere. A list shorter
than asked for (the manifest has too few names) is used whole.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from edge_asr.daemon.manifest import read_manifest, write_manifest


def long_contexts(contexts: list[dict[str, list[str]]], sizes: dict[str, int], seed: int = 0
                  ) -> list[dict[str, list[str]]]:
    """Each context grown to `sizes` entries per kind: its own entries, then others from
    all the contexts, drawn at random (seeded) and shuffled in with them."""
    pools = {kind: list(dict.fromkeys(n for c in contexts for n in c.get(kind, ())))
             for kind in sizes}
    rng = random.Random(seed)
    out = []
    for context in contexts:
        grown = {}
        for kind, size in sizes.items():
            own = list(dict.fromkeys(context.get(kind, ())))
            mine = set(own)
            others = [n for n in pools[kind] if n not in mine]
            names = own + rng.sample(others, max(0, min(len(others), size - len(own))))
            rng.shuffle(names)
            grown[kind] = names
        out.append(grown)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--contacts", type=int, default=400)
    p.add_argument("--devices", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    entries = read_manifest(args.manifest)
    grown = long_contexts([e.context_by_kind for e in entries],
                          {"contacts": args.contacts, "devices": args.devices}, args.seed)
    rows = []
    for entry, context in zip(entries, grown, strict=True):
        row = {"audio_filepath": str(Path(entry.audio_filepath).resolve()), "text": entry.text,
               "duration": entry.duration, "speech_start": entry.speech_start,
               "speech_end": entry.speech_end, "tags": entry.tags, **entry.extra,
               "context": context}
        rows.append({k: v for k, v in row.items() if v is not None})
    write_manifest(args.out, rows)
    sizes = [sum(len(v) for v in c.values()) for c in grown]
    print(f"{args.out}: {len(rows)} utterances, {min(sizes)}-{max(sizes)} context entries each")


if __name__ == "__main__":
    main()
