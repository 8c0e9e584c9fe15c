"""`edge-asr sim`: list the bundled scenarios, or run one and write its report.

    edge-asr sim list
    edge-asr sim run quiet_kitchen [--out DIR] [--fast] [--limit N] [--no-compare]
                                   [--[no-]echo-cancellation] [--noise-suppression M]
                                   [--[no-]wake-word] [--[no-]vad-speech-model]
    edge-asr sim table sim-reports/*        # the figures of several reports side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

# The simulator's modules (matplotlib among them) load only when `sim` runs, so that the
# `edge-asr` command, and the daemon's start, do not pay for them.


def add_parser(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("sim", help="play scenarios against a real daemon and cloud")
    simsub = sim.add_subparsers(dest="sim_command", required=True)
    ls = simsub.add_parser("list", help="the bundled scenarios")
    ls.set_defaults(func=cmd_list)
    run = simsub.add_parser("run", help="play a scenario and write its report")
    run.add_argument("scenario", help="a bundled scenario's name or a TOML file")
    run.add_argument("--out", type=Path, help="report folder (default: sim-reports/NAME)")
    run.add_argument("--fast", action="store_true",
                     help="play as fast as possible instead of the scenario's pacing")
    run.add_argument("--limit", type=int, help="play only the first N requests")
    run.add_argument("--no-compare", action="store_true",
                     help="run with speculation only, even if the scenario compares")
    run.add_argument("--echo-cancellation", action=argparse.BooleanOptionalAction,
                     default=None, help="override the scenario's device.echo_cancellation")
    run.add_argument("--echo-canceller",
                     help="override the scenario's device.echo_canceller (kalman, speex+webrtc, "
                          "speex, webrtc)")
    run.add_argument("--noise-suppression",
                     help="override the scenario's device.noise_suppression (off, webrtc, "
                          "rnnoise, webrtc-noise-gain)")
    run.add_argument("--wake-word", action=argparse.BooleanOptionalAction, default=None,
                     help="override the scenario's device.wake_word: --no-wake-word plays "
                          "the same room (the phrase still said) to a daemon that recognises "
                          "everything")
    run.add_argument("--vad-speech-model", action=argparse.BooleanOptionalAction,
                     default=None, help="override the scenario's device.vad_speech_model "
                                        "(Silero's network beside webrtcvad)")
    run.set_defaults(func=cmd_run)
    table = simsub.add_parser("table", help="one Markdown table of several runs' summaries")
    table.add_argument("reports", nargs="+", type=Path, help="report folders (summary.json)")
    table.set_defaults(func=cmd_table)


def cmd_list(args: argparse.Namespace) -> int:
    from edge_asr.simulator.scenario import bundled_scenarios, load_scenario

    for name, path in bundled_scenarios().items():
        scenario = load_scenario(path)
        first = scenario.description.strip().splitlines()[0] if scenario.description else ""
        print(f"{name:<16} {first}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        from edge_asr.simulator.report import figure_values, write_report
    except ImportError as e:  # matplotlib is an extra: the daemon itself never needs it
        raise ValueError(f"edge-asr sim needs the 'sim' extra (pip install 'edge-asr[sim]'):"
                         f" {e}") from e
    from edge_asr.simulator.runner import run_scenario
    from edge_asr.simulator.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    changes = {}
    if args.fast:
        changes["realtime"] = False
    if args.limit:
        changes["utterances"] = dataclasses.replace(scenario.utterances, limit=args.limit)
    if args.no_compare:
        changes["compare_speculation"] = False
    device = {k: v for k, v in (("echo_cancellation", args.echo_cancellation),
                                ("echo_canceller", args.echo_canceller),
                                ("noise_suppression", args.noise_suppression),
                                ("wake_word", args.wake_word),
                                ("vad_speech_model", args.vad_speech_model)) if v is not None}
    if args.wake_word and not scenario.wake_word.enabled:
        raise ValueError(f"{args.scenario}: --wake-word needs the scenario's "
                         "[wake_word] phrase")
    if device:
        changes["device"] = dataclasses.replace(scenario.device, **device)
    scenario = dataclasses.replace(scenario, **changes)
    out = args.out or Path("sim-reports") / Path(str(args.scenario)).stem
    started = time.monotonic()
    runs = run_scenario(scenario, out)
    report = write_report(runs, scenario.description, out)
    with open(out / "summary.json", "w") as f:
        json.dump({("speculation_on" if r.speculative else "speculation_off"): r.summary
                   for r in runs}, f, indent=2)
    for run in runs:
        print(f"\n{'speculation on' if run.speculative else 'speculation off'}:")
        for label, value in figure_values(run):
            print(f"  {label:<40} {value}")
    print(f"\nreport: {report} ({time.monotonic() - started:.0f} s)")
    lost = sum(r.summary["lost"] for r in runs)
    return 1 if lost else 0


_TABLE = [  # (column, summary key, format)
    ("WER device / delivered", ("wer", "delivered_wer"), "{:.1%}"),
    ("spec. EP50", ("speculative_ep50",), "{:.2f} s"),
    ("final EP50 / EP90", ("final_ep50", "final_ep90"), "{:.2f} s"),
    ("perceived p50", ("perceived_p50",), "{:.2f} s"),
    ("premature", ("premature_cuts",), "{:.0%}"),
    ("resets", ("resets",), "{:.0%}"),
    ("rescored / on-device", ("rescored_results", "on_device_finals"), "{}"),
    ("lost", ("lost",), "{}"),
    ("merged", ("merged",), "{}"),
    ("RTF", ("rtf",), "{:.3f}"),
    # with a wake word / speech not addressed to the device (n/a where there is none)
    ("woken", ("woken",), "{:.0%}"),
    ("false wakes / h", ("false_wakes_per_hour",), "{:.1f}"),
    ("other speech sent (utt. / lattices)", ("non_addressed_sent", "non_addressed_lattices"),
     "{}"),
]


def cmd_table(args: argparse.Namespace) -> int:
    print("| scenario | run | " + " | ".join(c for c, _, _ in _TABLE) + " |")
    print("|---|---|" + "---|" * len(_TABLE))
    for folder in args.reports:
        with open(folder / "summary.json") as f:
            runs = json.load(f)
        for run, summary in runs.items():
            cells = [" / ".join("n/a" if summary.get(k) is None else fmt.format(summary[k])
                                for k in keys) for _, keys, fmt in _TABLE]
            print(f"| {folder.name} | {run.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return 0
