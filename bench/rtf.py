"""Real-time factor of streaming recognition on one thread (printed, never asserted).

Recognizer alone (greedy and modified beam search, the latter also without the device LM,
to show what the LM costs) and the daemon's whole pipeline, without
and with each clip's biasing context (the manifest's; the search then runs `context_beam`
wide), and with the context but without the plain beam that runs beside the biased one
(`context_fallback`), to show what that second beam costs; with `--wide-context-beam N`,
also with the context searched N wide, and its cost against the default width; with
`--other-beam N`, the pipeline without the context at beam N, against the default beam.

    python bench/rtf.py [--model DIR [--model DIR2 ...]] [--clips DIR] [--repeats N]
                        [--wide-context-beam N] [--other-beam N]

Feeds every bundled clip in 20 ms pieces, as the device does, and reports the median over
repeats of CPU seconds per audio second, for greedy and modified beam search side by side.
With several models (fp32 and int8, say) their repeats alternate within one run, so that
the ratios are measured side by side under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import recognize_samples, run_pipeline
from edge_asr.daemon.frontend.features import compute_fbank
from edge_asr.daemon.pipeline import Pipeline
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, action="append",
                   help="model folder (repeat to compare; default: the shipped model)")
    p.add_argument("--clips", type=Path, default=ROOT / "tests" / "data")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--wide-context-beam", type=int, default=0,
                   help="also the pipeline with contexts at this context_beam")
    p.add_argument("--other-beam", type=int, default=0,
                   help="also the pipeline without contexts at this beam")
    args = p.parse_args()
    paths = sorted(args.clips.glob("*.flac"))
    clips = [read_audio(f) for f in paths]
    manifest = args.clips / "manifest.jsonl"
    by_name = {} if not manifest.is_file() else {
        r["audio_filepath"]: r.get("context") for r in map(json.loads, manifest.open())}
    contexts = [by_name.get(f.name) for f in paths]
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    figures: dict[str, object] = {"machine": f"{cpu_name()}, {os.cpu_count()} cores",
                                  "audio_seconds": round(audio_s, 2), "threads": 1}
    # Features alone, to show where the time goes.
    runs = []
    for _ in range(args.repeats):
        t = time.process_time()
        for c in clips:
            compute_fbank(c)
        runs.append((time.process_time() - t) / audio_s)
    figures["rtf_features"] = round(statistics.median(runs), 5)
    models = args.model or [DEFAULT_MODEL_DIR]
    methods = ["greedy_search", "modified_beam_search", "modified_beam_search_no_lm",
               "pipeline"] + (["pipeline_other_beam"] if args.other_beam else [])
    if any(contexts):
        methods += ["pipeline_context", "pipeline_context_no_fallback"]
        if args.wide_context_beam:
            methods += ["pipeline_context_wide"]
    runs_of: dict[str, list[list[float]]] = {}
    for method in methods:
        recs = [Recognizer(RecognizerConfig(
            model_dir=m, threads=1,
            decoding_method="greedy_search" if method == "greedy_search"
            else "modified_beam_search",
            beam=args.other_beam if method == "pipeline_other_beam" else RecognizerConfig.beam,
            context_fallback=method != "pipeline_context_no_fallback",
            context_beam=(args.wide_context_beam if method == "pipeline_context_wide"
                          else RecognizerConfig.context_beam),
            lm_scale=0.0 if method.endswith("_no_lm") else RecognizerConfig.lm_scale))
            for m in models]
        runs: list[list[float]] = [[] for _ in models]
        for rec in recs:
            recognize_samples(rec, clips[0])  # warm-up: first runs allocate
        for _ in range(args.repeats):
            for i, rec in enumerate(recs):
                t = time.process_time()
                for c, context in zip(clips, contexts, strict=True):
                    if method.startswith("pipeline"):  # VAD, features, model, beam search,
                        pipeline = Pipeline(rec)  # end-pointers, lattices
                        if "context" in method:  # the graph's build counts too
                            pipeline.set_context(context)
                        run_pipeline(pipeline, c)
                    else:
                        recognize_samples(rec, c)
                runs[i].append((time.process_time() - t) / audio_s)
        key = {"pipeline": "rtf_pipeline_modified_beam_search",
               "pipeline_context": "rtf_pipeline_modified_beam_search_context",
               "pipeline_context_no_fallback":
                   "rtf_pipeline_modified_beam_search_context_no_fallback",
               "pipeline_context_wide":
                   f"rtf_pipeline_modified_beam_search_context_beam{args.wide_context_beam}",
               "pipeline_other_beam": f"rtf_pipeline_modified_beam_search_beam{args.other_beam}",
               }.get(method, f"rtf_{method}")
        for i, m in enumerate(models):
            name = "" if len(models) == 1 else f"{Path(m).name}:"
            figures[name + key] = round(statistics.median(runs[i]), 5)
            figures[name + key + "_runs"] = [round(r, 5) for r in runs[i]]
            if i:  # against the first model, repeat by repeat
                ratios = [a / b for a, b in zip(runs[i], runs[0], strict=True)]
                figures[name + key + "_ratio_to_" + Path(models[0]).name] = round(
                    statistics.median(ratios), 3)
        runs_of[method] = runs
        against = {"pipeline_context_wide": "pipeline_context",
                   "pipeline_other_beam": "pipeline"}.get(method)
        if against:  # against the default width, repeat by repeat
            for i, m in enumerate(models):
                name = "" if len(models) == 1 else f"{Path(m).name}:"
                ratios = [a / b for a, b in zip(runs[i], runs_of[against][i], strict=True)]
                figures[name + key + "_ratio_to_default"] = round(statistics.median(ratios), 3)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
