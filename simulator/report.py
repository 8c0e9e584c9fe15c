"""A scenario's report: Markdown with PNG plots (matplotlib, no display needed).

- end-point latency CDFs: speculative, final, and the result as the client got it;
- a timeline of each request's events, in seconds from the end of its speech;
- bytes sent per request;
- the table of figures that matter, and with speculation compared on and off, the
  user-perceived latency it saves;
- with a wake word or speech not addressed to the device (a TV): requests woken, false
  wakes, and what the device recognised and sent of the speech nobody addressed to it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the simulator runs on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edge_asr.simulator.received_events import group_utterances, wall_offset  # noqa: E402
from edge_asr.simulator.runner import RunResult  # noqa: E402

_MARKERS = {  # event kind -> (marker, colour) on the timeline
    "WAKE_WORD": ("^", "tab:olive"),
    "SPEECH_STARTED": ("|", "grey"),
    "SPECULATIVE_ENDPOINT": ("v", "tab:orange"),
    "CONFIRMED": ("o", "tab:green"),
    "RESET": ("x", "tab:red"),
    "FINAL_ENDPOINT": ("s", "tab:blue"),
    "RESCORED": ("*", "tab:purple"),
    "ON_DEVICE_FINAL": ("D", "black"),
}


def _label(run: RunResult) -> str:
    return "speculation on" if run.speculative else "speculation off"


def _cdf(ax, values: list[float], label: str, style: str, colour: str) -> None:
    if not values:
        return
    xs = np.sort(values)
    ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), style, color=colour, where="post",
            label=label)


def plot_latency_cdfs(runs: list[RunResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        style = "-" if run.speculative else "--"
        rows = run.rows
        suffix = "" if len(runs) == 1 else f" ({_label(run)})"
        if run.speculative:
            _cdf(ax, [r["speculative_endpoint"] - r["speech_end"] for r in rows
                      if r["speculative_endpoint"] is not None], "speculative end-point" + suffix,
                 style, "tab:orange")
        _cdf(ax, [r["final_endpoint"] - r["speech_end"] for r in rows
                  if r["final_endpoint"] is not None], "final end-point" + suffix, style,
             "tab:blue")
        _cdf(ax, [r["perceived_latency"] for r in rows if r["perceived_latency"] is not None],
             "result at the client" + suffix, style, "tab:purple")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlim(-1.0, None)  # premature cuts (far left) are counted in the table
    ax.set_xlabel("seconds after the end of speech")
    ax.set_ylabel("share of requests")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(run: RunResult, path: Path) -> None:
    """One row per request: its speech as a bar, its events as markers, all relative to the
    end of its speech. Results are placed where the client received them (real time only)."""
    utterances = {u.id: u for u in group_utterances(run.events)}
    offset = wall_offset(run.events) if run.realtime and run.events else None
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(run.rows) + 1.6))
    seen = set()
    for row_i, r in enumerate(run.rows):
        end = r["speech_end"]
        ax.barh(row_i, end - r["speech_start"], left=r["speech_start"] - end, height=0.5,
                color="lightsteelblue")
        if r.get("phrase_start") is not None:  # the wake phrase before it
            ax.barh(row_i, r["phrase_end"] - r["phrase_start"], left=r["phrase_start"] - end,
                    height=0.5, color="wheat")
        if r.get("wake_time") is not None:
            marker, colour = _MARKERS["WAKE_WORD"]
            ax.plot(r["wake_time"] - end, row_i, marker, color=colour, ms=6,
                    label="WAKE_WORD" if "WAKE_WORD" not in seen else None)
            seen.add("WAKE_WORD")
        for uid in r["utterance_ids"]:
            for e in utterances[uid].events:
                at = e.audio_time
                if e.kind in ("RESCORED", "ON_DEVICE_FINAL"):
                    if offset is None:
                        continue
                    at = e.arrived - offset
                marker, colour = _MARKERS.get(e.kind, (".", "grey"))
                ax.plot(at - end, row_i, marker, color=colour, ms=6,
                        label=e.kind if e.kind not in seen else None)
                seen.add(e.kind)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlim(-4 if any(r.get("phrase_start") for r in run.rows) else -3, 2.5)
    ax.set_yticks(range(len(run.rows)), [str(r["index"]) for r in run.rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the end of the request's speech")
    ax.set_ylabel("request")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=4,
              frameon=False)  # above the rows, never over them
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bytes(run: RunResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([r["index"] for r in run.rows], [r["lattice_bytes"] for r in run.rows],
           color="tab:blue")
    ax.set_xlabel("request")
    ax.set_ylabel("lattice bytes sent")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value, percent: bool = False, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}{unit}"
    return f"{value}{unit}"


FIGURES = [  # (label, summary key, as percent, unit)
    ("requests", "utterances", False, ""),
    ("WER on the device", "wer", True, ""),
    ("WER delivered (rescored or on-device)", "delivered_wer", True, ""),
    ("speculative EP50 / EP90", ("speculative_ep50", "speculative_ep90"), False, " s"),
    ("final EP50 / EP90", ("final_ep50", "final_ep90"), False, " s"),
    ("user-perceived latency p50 / p90", ("perceived_p50", "perceived_p90"), False, " s"),
    ("decision lag behind the audio p50 / p90", ("decision_lag_p50", "decision_lag_p90"),
     False, " s"),
    ("premature cuts", "premature_cuts", True, ""),
    ("resets", "resets", True, ""),
    ("lattice bytes per request (median)", "lattice_bytes_median", False, ""),
    ("real-time factor (daemon CPU / audio)", "rtf", False, ""),
    ("results rescored / on-device", ("rescored_results", "on_device_finals"), False, ""),
    ("lost requests (no result)", "lost", False, ""),
    ("missed requests (no speech heard)", "missed", False, ""),
    ("requests merged into another's utterance", "merged", False, ""),
    ("spurious utterances (noise)", "spurious", False, ""),
    ("context name recall", "name_recall", True, ""),
]
# Shown only where they apply: with a wake word, and with speech not addressed to the device.
OPTIONAL_FIGURES = [
    ("requests woken (phrase heard, request recognised)", "woken", True, ""),
    ("false wakes / per hour of audio", ("false_wakes", "false_wakes_per_hour"), False, ""),
    ("other speech: utterances / sent to the cloud / lattices",
     ("non_addressed_utterances", "non_addressed_sent", "non_addressed_lattices"), False, ""),
]


def figure_values(run: RunResult) -> list[tuple[str, str]]:
    """(label, formatted value) for each of FIGURES, and each of OPTIONAL_FIGURES the
    run's summary has."""
    out = []
    for label, key, percent, unit in FIGURES + OPTIONAL_FIGURES:
        keys = key if isinstance(key, tuple) else (key,)
        if (label, key, percent, unit) in OPTIONAL_FIGURES \
                and not any(k in run.summary for k in keys):
            continue
        out.append((label, " / ".join(_fmt(run.summary.get(k), percent, unit) for k in keys)))
    return out


def figures_table(runs: list[RunResult]) -> str:
    columns = [dict(figure_values(run)) for run in runs]
    labels = list(dict.fromkeys(label for col in columns for label in col))
    lines = ["| figure | " + " | ".join(_label(r) for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(col.get(label, "n/a") for col in columns)
                     + " |")
    return "\n".join(lines)


def addressed_section(run: RunResult) -> list[str]:
    """What the device made of speech nobody addressed to it, utterance by utterance."""
    s = run.summary
    if "non_addressed_utterances" not in s:
        return []
    listening = (f"listening for the wake word \"{run.wake_word}\"" if run.wake_word
                 else "without a wake word: it recognises all it hears")
    lines = ["## Speech not addressed to the device", "",
             f"The device ran {listening}. Over speech that no request overlaps (a TV, "
             f"other people) it made {s['non_addressed_utterances']} utterances, "
             f"{s['non_addressed_sent']} of them sent to the cloud as "
             f"{s['non_addressed_lattices']} lattices ({s['non_addressed_bytes']} bytes).", ""]
    if run.non_addressed:
        lines += ["| from (s) | source | device heard | lattices | result |",
                  "|---|---|---|---|---|"]
        lines += [f"| {o['start']:.1f} | {', '.join(o['labels'])} | {o['hypothesis']} | "
                  f"{o['lattices']} | {o['result'] or 'none'} |" for o in run.non_addressed]
        lines.append("")
    return lines


def write_report(runs: list[RunResult], description: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_latency_cdfs(runs, out_dir / "latency_cdf.png")
    main = runs[0]
    plot_timeline(main, out_dir / "timeline.png")
    plot_bytes(main, out_dir / "bytes.png")
    lines = [f"# Scenario: {main.scenario}", "", description.strip(), "",
             f"{len(main.rows)} requests, {main.duration:.1f} s of audio, "
             f"{'paced in real time' if main.realtime else 'accelerated'}; network: "
             f"{main.network['connections']} connections, {main.network['bytes_up']} bytes up, "
             f"{main.network['bytes_down']} bytes down, {main.network['lost_segments']} of "
             f"{main.network['segments']} segments lost and retransmitted, "
             f"{main.network['cut'] + main.network['refused']} connections cut or refused.",
             "", "## Figures", "", figures_table(runs), ""]
    on = next((r for r in runs if r.speculative), None)
    off = next((r for r in runs if not r.speculative), None)
    if on and off and on.summary.get("perceived_p50") is not None \
            and off.summary.get("perceived_p50") is not None:
        saving = off.summary["perceived_p50"] - on.summary["perceived_p50"]
        lines += ["## What speculation saves", "",
                  f"Median user-perceived latency (end of speech to the result at the client): "
                  f"{on.summary['perceived_p50']:.3f} s with the speculative end-pointer, "
                  f"{off.summary['perceived_p50']:.3f} s without: **{1000 * saving:.0f} ms "
                  f"saved**. Without speculation the lattice leaves at the final end-point; "
                  f"with it, the cloud's rescoring and downstream work overlap the final "
                  f"end-pointer's wait.", ""]
    elif not main.realtime:
        lines += ["User-perceived latency needs real-time pacing; this run was accelerated.",
                  ""]
    lines += addressed_section(main)
    lines += ["## End-point latency", "", "![latency CDFs](latency_cdf.png)", "",
              "## Timeline", "", "Each row is a request: its speech (bar) and its events, "
              "in seconds from the end of its speech.", "", "![timeline](timeline.png)", "",
              "## Bytes per request", "", "![bytes](bytes.png)", "",
              "## Requests", "", "| # | reference | device | delivered | result | "
              "perceived (s) |", "|---|---|---|---|---|---|"]
    for r in main.rows:
        result = ", ".join(k or "none" for k in r["result_kinds"]) or "missed"
        if r["result_reasons"]:
            result += f" ({', '.join(r['result_reasons'])})"
        if "woken" in r:  # listening for a wake word
            if r["wake_time"] is None:
                result += "; phrase not heard"
            else:
                result += (f"; {'woken' if r['woken'] else 'phrase heard, no request'} "
                           f"({r['wake_score']:.2f})")
        lines.append(f"| {r['index']} | {r['text']} | {r['hypothesis']} | {r['delivered']} | "
                     f"{result} | {_fmt(r['perceived_latency'])} |")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
