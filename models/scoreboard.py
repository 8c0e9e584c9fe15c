"""Models side by side on the sets that say how they hear people, each against its target.

    python -m edge_asr.models.scoreboard --data DATA --model models/rnnt-v4-int4 \
        --model models/rnnt-v3-int4 [--output scoreboard.json] [--speakers]

Every set goes through `edge-asr eval`'s own pipeline (models/evaluate.py: streaming
features, beam search with the device LM, end-pointers, the manifest's biasing context), one
model after the other, and the table prints WER per set with each model in a column, the
recorded-speech sets first: people the model never heard, then an engine no training used,
then the synthetic sets of earlier models for regressions. A set missing from DATA/manifests
is reported as missing, not skipped in silence. With --speakers, WER per speaker of each
recorded set follows. With --reuse, a set whose per-utterance results in --results are
complete and newer than the model's files is read back instead of decoded again.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.models.evaluate import Summary, evaluate, summarize


@dataclass(frozen=True)
class HeldOutSet:
    name: str
    what: str
    target: float | None = None  # WER the shipped model must reach, if one is set
    recorded: bool = False  # real people (per-speaker figures make sense)


# The order the README reports them in: people first.
SETS = (
    HeldOutSet("test_speechocean762", "real speakers (125, L2 English), never trained on",
               0.15, True),
    HeldOutSet("test_speechocean762_babble10", "the same in babble of other speakers, 10 dB",
               0.30, True),
    HeldOutSet("test_speech_commands_test_v002", "real speakers (24), command words", None,
               True),
    HeldOutSet("test_fsdd", "Free Spoken Digit Dataset: 6 real speakers dialling digits",
               None, True),
    HeldOutSet("test_hibari", "hibari-tts: a synthesis engine no training set used", 0.12),
    HeldOutSet("test_kal_festival", "festival kal_diphone (reserved voice)"),
    HeldOutSet("test_voices", "v1 set: held-out synthetic voices, clean"),
    HeldOutSet("test_sentences", "v1 set: training voices, held-out sentences"),
    HeldOutSet("test_names", "v1 set: held-out voices, held-out names"),
    HeldOutSet("test_snr10", "v1 set: held-out voices at 10 dB SNR"),
    HeldOutSet("test_band8k", "v1 set: held-out voices band-limited to 8 kHz"),
)


def score(model: Path, manifest: Path, results: Path | None, threads: int) -> Summary:
    recognizer = Recognizer(RecognizerConfig(model_dir=model, threads=threads))
    return evaluate(recognizer, manifest, results)


def read_back(results: Path, model: Path, manifest: Path) -> Summary | None:
    """The summary of `results` when they score all of `manifest` with `model` as it is now
    (written after its files last changed; its card changes with every scoreboard --card)
    or None when they must be decoded again."""
    if not results.is_file():
        return None
    newest_model_file = max(f.stat().st_mtime for f in model.iterdir()
                            if f.is_file() and f.name != "model_card.json")
    if results.stat().st_mtime < newest_model_file:
        return None
    with results.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    wanted = [str(e.audio_filepath) for e in read_manifest(manifest)]
    if sorted(r["audio_filepath"] for r in rows) != sorted(wanted):
        return None
    return summarize(rows)


def speakers_of(summary: Summary) -> dict[str, float]:
    return {tag.removeprefix("speaker:"): wer for tag, wer in summary.wer_by_tag.items()
            if tag.startswith("speaker:")}


def table(sets: list[HeldOutSet], models: list[Path],
          scores: dict[str, dict[str, Summary | None]]) -> str:
    head = "| set | what | " + " | ".join(m.name for m in models) + " | target |"
    lines = [head, "|" + "---|" * (len(models) + 3)]
    for s in sets:
        cells = []
        for m in models:
            got = scores[s.name].get(str(m))
            cells.append("missing" if got is None else f"{100 * got.wer:.2f}%")
        target = f"<= {100 * s.target:.0f}%" if s.target is not None else ""
        lines.append(f"| {s.name} | {s.what} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def speaker_table(s: HeldOutSet, models: list[Path],
                  scores: dict[str, dict[str, Summary | None]]) -> str:
    per_model = {str(m): speakers_of(scores[s.name][str(m)]) for m in models
                 if scores[s.name].get(str(m)) is not None}
    speakers = sorted({spk for by in per_model.values() for spk in by})
    lines = [f"{s.name}: WER per speaker"]
    for m in models:
        wers = sorted(per_model.get(str(m), {}).values())
        if wers:
            lines.append(f"  {m.name}: {len(wers)} speakers, best {100 * wers[0]:.1f}%, "
                         f"median {100 * float(np.median(wers)):.1f}%, worst "
                         f"{100 * wers[-1]:.1f}%")
    lines.append("speaker  " + "  ".join(f"{m.name:>18}" for m in models))
    for spk in speakers:
        lines.append(f"{spk:<8} " + "  ".join(
            f"{100 * per_model[str(m)][spk]:>17.1f}%" if spk in per_model.get(str(m), {})
            else f"{'':>18}" for m in models))
    return "\n".join(lines)


def record_in_card(model: Path, sets: list[HeldOutSet],
                   scores: dict[str, dict[str, Summary | None]]) -> None:
    """The model's WER per set into its card, with the command that measured it and the
    date. A set not measured this time (not in the data folder) keeps its earlier entry
    and that entry's date."""
    path = model / "model_card.json"
    card = json.loads(path.read_text())
    earlier = card.get("heldout_evaluation", {})
    today = time.strftime("%Y-%m-%d")
    measured = {name: {"date": earlier.get("date"), **entry}
                for name, entry in earlier.get("sets", {}).items()}
    for s in sets:
        got = scores[s.name].get(str(model))
        if got is not None:
            measured[s.name] = {"what": s.what, "wer": round(got.wer, 4),
                                "utterances": got.utterances, "target": s.target,
                                "date": today}
            if s.recorded:
                measured[s.name]["wer_by_speaker"] = {
                    spk: round(w, 4) for spk, w in speakers_of(got).items()}
    card["heldout_evaluation"] = {
        "command": "python -m edge_asr.models.scoreboard --data DATA --model MODEL",
        "pipeline": "edge-asr eval defaults: modified beam search with the device LM, the "
                    "manifest's context",
        "sets": measured, "date": today}
    path.write_text(json.dumps(card, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="a model folder; give it once per model to compare")
    p.add_argument("--sets", nargs="*", default=[s.name for s in SETS],
                   help="set names (default: all, people first)")
    p.add_argument("--results", type=Path, default=None,
                   help="folder for each model's per-utterance results (SET.MODEL.jsonl)")
    p.add_argument("--reuse", action="store_true",
                   help="read back complete results in --results that are newer than the "
                        "model instead of decoding the set again")
    p.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--speakers", action="store_true", help="WER per speaker of recorded sets")
    p.add_argument("--card", action="store_true",
                   help="also record each model's figures in its model_card.json "
                        "(\"heldout_evaluation\")")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    known = {s.name: s for s in SETS}
    sets = [known.get(n, HeldOutSet(n, "")) for n in args.sets]
    scores: dict[str, dict[str, Summary | None]] = {}
    started = time.monotonic()
    for s in sets:
        manifest = args.data / "manifests" / f"{s.name}.jsonl"
        scores[s.name] = {}
        for model in args.model:
            if not manifest.exists():
                scores[s.name][str(model)] = None
                continue
            results = None
            if args.results:
                args.results.mkdir(parents=True, exist_ok=True)
                results = args.results / f"{s.name}.{model.name}.jsonl"
            got = read_back(results, model, manifest) if args.reuse and results else None
            how = "read back"
            if got is None:
                got = score(model, manifest, results, args.threads)
                how = f"{time.monotonic() - started:.0f} s"
            scores[s.name][str(model)] = got
            print(f"{s.name:<34} {model.name:<22} WER {100 * got.wer:6.2f}%  "
                  f"({got.utterances} utterances, {how})", flush=True)
    print()
    print(table(sets, args.model, scores))
    if args.speakers:
        for s in sets:
            if s.recorded and any(scores[s.name].values()):
                print()
                print(speaker_table(s, args.model, scores))
    if args.card:
        for model in args.model:
            record_in_card(model, sets, scores)
    if args.output:
        args.output.write_text(json.dumps({
            "models": [str(m) for m in args.model],
            "sets": {name: {m: (asdict(got) if got else None) for m, got in by.items()}
                     for name, by in scores.items()},
            "date": time.strftime("%Y-%m-%d"),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
