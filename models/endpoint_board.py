"""The end-pointers side by side: the completeness rules and the learned end-of-query model
on the same held-out requests, whole and with a pause in the middle (models/pause_sets.py),
quiet and with music 10 dB under the talker.

Each set goes through `edge-asr eval`'s pipeline twice, `[endpoint] query_end` off and on;
the table gives premature final cuts (of all requests, and of those whose longest pause is at
most 0.7 s, what the target is stated for), end-point latency after the end of speech, resets
and WER. With `--card` the figures go into the model card's query_end entry.

    python -m edge_asr.models.endpoint_board --data DATA --model models/rnnt-v4-int4 \
        --results DATA/endpoint-board --card
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from edge_asr.daemon.api.config import DaemonConfig
from edge_asr.daemon.recognition.config import DEFAULT_MODEL_DIR
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.models.evaluate import Summary, evaluate, summarize
from edge_asr.models.pause_sets import SHORT_PAUSE_S

SETS = ("eoq_test_voices", "eoq_test_voices_pause", "eoq_test_hibari", "eoq_test_hibari_pause",
        "eoq_test_speechocean762", "eoq_test_speechocean762_pause",
        "eoq_test_voices_music10", "eoq_test_voices_music10_pause",
        "eoq_test_speechocean762_music10", "eoq_test_speechocean762_music10_pause")
MODES = ("rules", "learned")


def board(recognizer: Recognizer, manifests: Path, results: Path, sets: Sequence[str],
          reuse: bool) -> dict[str, dict[str, Summary]]:
    base = DaemonConfig()
    out: dict[str, dict[str, Summary]] = {}
    for name in sets:
        for mode in MODES:
            rows_path = results / f"{name}.{mode}.jsonl"
            if reuse and rows_path.is_file():
                with rows_path.open(encoding="utf-8") as f:
                    summary = summarize([json.loads(line) for line in f if line.strip()])
            else:
                base.endpoint = dataclasses.replace(base.endpoint, query_end=mode == "learned")
                config = base.pipeline_config(Path(recognizer.config.model_dir).name,
                                              partials=True)
                summary = evaluate(recognizer, manifests / f"{name}.jsonl", rows_path,
                                   config=config)
            out.setdefault(name, {})[mode] = summary
            print(f"{name} ({mode}): {summary.format()}", flush=True)
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(figures: dict[str, dict[str, Summary]]) -> str:
    lines = [f"| set | end-pointer | premature cuts: all / pauses <= {SHORT_PAUSE_S} s | "
             "speculative EP50 | final EP50 / EP90 | resets | WER |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, by_mode in figures.items():
        for mode, s in by_mode.items():
            short = s.premature_cuts_short_pauses
            lines.append(f"| {name} | {mode} | {100 * s.premature_cuts:.1f}% / "
                         + ("-" if short is None else f"{100 * short:.1f}%") + " | "
                         f"{_ms(s.speculative_ep50)} s | {_ms(s.final_ep50)} / "
                         f"{_ms(s.final_ep90)} s | {100 * s.resets:.1f}% | "
                         f"{100 * s.wer:.2f}% |")
    return "\n".join(lines)


def write_card(model_dir: Path, figures: dict[str, dict[str, Summary]]) -> None:
    path = model_dir / "model_card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    if "query_end" not in card:
        raise SystemExit(f"{path}: no query_end entry (train it first: make query-end)")
    card["query_end"]["test"] = {
        name: {mode: {"premature_cuts": round(s.premature_cuts, 4),
                      "premature_cuts_short_pauses": None if s.premature_cuts_short_pauses
                      is None else round(s.premature_cuts_short_pauses, 4),
                      "speculative_ep50": s.speculative_ep50, "final_ep50": s.final_ep50,
                      "final_ep90": s.final_ep90, "resets": round(s.resets, 4),
                      "wer": round(s.wer, 4), "utterances": s.utterances}
               for mode, s in by_mode.items()}
        for name, by_mode in figures.items()}
    path.write_text(json.dumps(card, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the recipe's data folder")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--results", type=Path, required=True, help="per-utterance rows go here")
    p.add_argument("--reuse", action="store_true", help="score rows already in --results")
    p.add_argument("--card", action="store_true", help="write the figures into the card")
    args = p.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    recognizer = Recognizer.from_model_dir(args.model)
    figures = board(recognizer, args.data / "manifests", args.results, args.sets, args.reuse)
    print(table(figures))
    if args.card:
        write_card(args.model, figures)


if __name__ == "__main__":
    main()
