"""What the learned end-of-query model costs the device: calls and CPU per audio second.

Runs a manifest's utterances through the daemon's pipeline with the model folder's
query_end.json, counts the classifier's calls (the final end-pointer asks once per decoded
chunk while it waits in a pause) and times them, and compares the whole pipeline's CPU per
audio second with the rules-only end-pointer on the same audio, side by side.

    python bench/query_end.py DATA/manifests/eoq_test_voices_pause.jsonl --limit 100
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import run_pipeline
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.pipeline import Pipeline, PipelineConfig
from edge_asr.daemon.recognition.config import DEFAULT_MODEL_DIR
from edge_asr.daemon.recognition.recognizer import Recognizer


class _Timed:
    """Wraps a QueryEnd: every probability call timed on the process clock."""

    def __init__(self, inner) -> None:
        self.inner, self.model, self.calls = inner, inner.model, []

    def probability(self, *args) -> float:
        start = time.process_time_ns()
        p = self.inner.probability(*args)
        self.calls.append(time.process_time_ns() - start)
        return p


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="passes; medians are reported")
    args = p.parse_args()
    recognizer = Recognizer.from_model_dir(args.model)
    entries = read_manifest(args.manifest)[: args.limit]
    audio = [read_audio(e.audio_filepath) for e in entries]
    seconds = sum(a.size for a in audio) / SAMPLE_RATE
    rules_cfg = PipelineConfig(endpoint=EndpointConfig(query_end=False), partials=False)
    learned_cfg = PipelineConfig(partials=False)
    per_call, learned_cpu, rules_cpu, calls = [], [], [], 0
    for _ in range(args.repeats):
        for config, out in ((learned_cfg, learned_cpu), (rules_cfg, rules_cpu)):
            timed_calls: list[int] = []
            start = time.process_time()
            for entry, samples in zip(entries, audio, strict=True):
                pipeline = Pipeline(recognizer, config)
                if pipeline.query_end is not None:
                    timed = _Timed(pipeline.query_end)
                    pipeline.query_end = timed
                pipeline.set_context(entry.context or None)
                run_pipeline(pipeline, samples)
                if config is learned_cfg and pipeline.query_end is not None:
                    timed_calls += pipeline.query_end.calls
            out.append((time.process_time() - start) / seconds)
            if config is learned_cfg:
                if not timed_calls:
                    raise SystemExit(f"{args.model} ships no query_end.json: nothing to measure")
                per_call.append(statistics.median(timed_calls) / 1e3)
                calls = len(timed_calls)
    print(f"{len(entries)} utterances, {seconds:.0f} s of audio, {args.model}")
    print(f"classifier calls: {calls} ({calls / seconds:.1f} per audio second); "
          f"median {statistics.median(per_call):.0f} us a call; "
          f"{calls / seconds * statistics.median(per_call) / 1e6:.5f} s CPU per audio second")
    print(f"pipeline CPU per audio second (median of {args.repeats}): learned "
          f"{statistics.median(learned_cpu):.4f}, rules only {statistics.median(rules_cpu):.4f}")


if __name__ == "__main__":
    main()
