"""Two models on the same recorded set, speaker by speaker: is the difference real?

    python -m edge_asr.models.compare_speakers BEFORE.jsonl AFTER.jsonl

Each file is the `--output` of `edge-asr eval` on the same manifest (a row per utterance,
with its `speaker:` tag). A set's WER moves with a few speakers who say many words; what
a change does for people is better read per speaker: how many speakers it helps and hurts,
and the mean change of a speaker's WER with a bootstrap 95% interval over speakers (a
speaker is the unit that was drawn, so it is what is resampled).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.models.evaluate import summarize
from edge_asr.models.scoreboard import speakers_of


@dataclass
class SpeakerComparison:
    speakers: int
    better: int
    worse: int
    mean_change: float  # of a speaker's WER, after - before (negative: better)
    interval: tuple[float, float]  # bootstrap 95% of mean_change

    def format(self) -> str:
        lo, hi = self.interval
        return (f"{self.speakers} speakers: {self.better} better, {self.worse} worse, "
                f"{self.speakers - self.better - self.worse} the same; mean change of a "
                f"speaker's WER {100 * self.mean_change:+.2f} points (95% interval "
                f"{100 * lo:+.2f} to {100 * hi:+.2f})")


def wer_by_speaker(rows_file: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in rows_file.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    for row in rows:
        if not any(t.startswith("speaker:") for t in row.get("tags", [])):
            raise ValueError(f"{rows_file}: a row without a speaker: tag ({row.get('text')!r})")
    return speakers_of(summarize(rows))


def compare(before: dict[str, float], after: dict[str, float], resamples: int = 2000,
            seed: int = 0) -> SpeakerComparison:
    if set(before) != set(after):
        raise ValueError(f"the two files have other speakers "
                         f"({len(set(before) ^ set(after))} not in both): not the same set")
    change = np.array([after[s] - before[s] for s in sorted(before)])
    rng = np.random.default_rng(seed)
    means = change[rng.integers(0, len(change), (resamples, len(change)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return SpeakerComparison(len(change), int((change < 0).sum()), int((change > 0).sum()),
                             float(change.mean()), (float(lo), float(hi)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path, help="edge-asr eval --output of the first model")
    p.add_argument("after", type=Path, help="the same set through the second model")
    args = p.parse_args()
    print(compare(wer_by_speaker(args.before), wer_by_speaker(args.after)).format())


if __name__ == "__main__":
    main()
