"""The `edge-asr` command.

    edge-asr transcribe FILE [--model DIR]          partial and final transcripts of a file
    edge-asr eval MANIFEST --output RESULTS.jsonl   score a DOMAIN.md manifest (WER per tag, RTF)
    edge-asr demo [FILES...]                        stream the bundled clips as a microphone would
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edge_asr.daemon.audio import AudioFormatError, read_audio
from edge_asr.daemon.features import SAMPLE_RATE
from edge_asr.daemon.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig
from edge_asr.daemon.transducer import ModelError

BUNDLED_CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data"


def _recognizer(args: argparse.Namespace) -> Recognizer:
    return Recognizer(RecognizerConfig(model_dir=args.model, decoding_method=args.decoding,
                                       beam=args.beam, threads=args.threads))


def _print_partial(result, seconds: float) -> None:
    print(f"  [{seconds:6.2f}s] partial: {result.text}", flush=True)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from edge_asr.daemon.evaluate import recognize_samples

    recognizer = _recognizer(args)
    for path in args.files:
        samples = read_audio(path)
        print(f"{path}:")
        result = recognize_samples(recognizer, samples,
                                   on_partial=_print_partial if args.partials else None)
        print(f"  final: {result.text}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_asr.daemon.evaluate import evaluate

    summary = evaluate(_recognizer(args), args.manifest, args.output,
                       use_context=not args.no_context, progress=True)
    print(summary.format())
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.__dict__, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Plays clips in real time (or faster) through one recognizer, printing what it hears."""
    from edge_asr.daemon.evaluate import PIECE_SECONDS

    recognizer = _recognizer(args)
    files = args.files or sorted(BUNDLED_CLIPS.glob("*.flac"))[: args.limit]
    piece = int(PIECE_SECONDS * SAMPLE_RATE)
    for path in files:
        samples = read_audio(path)
        stream = recognizer.create_stream()
        print(f"\n>> {Path(path).name} ({len(samples) / SAMPLE_RATE:.2f} s)", flush=True)
        last = ""
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(samples), piece)):
            if args.realtime:  # pace like a microphone: one piece every 20 ms
                time.sleep(max(0.0, t0 + i * PIECE_SECONDS - time.monotonic()))
            stream.accept_waveform(samples[start : start + piece])
            if recognizer.decode(stream):
                text = recognizer.result(stream).text
                if text != last:
                    _print_partial(recognizer.result(stream), (start + piece) / SAMPLE_RATE)
                    last = text
        stream.input_finished()
        recognizer.decode(stream)
        print(f"   FINAL: {recognizer.result(stream).text}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-asr", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                        help="model folder (encoder/decoder/joiner.onnx, tokens.txt)")
        sp.add_argument("--decoding", choices=["greedy_search", "modified_beam_search"],
                        default="modified_beam_search")
        sp.add_argument("--beam", type=int, default=4)
        sp.add_argument("--threads", type=int, default=1, help="onnxruntime threads")

    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("files", nargs="+", type=Path)
    t.add_argument("--partials", action="store_true", help="print partial results too")
    model_args(t)
    t.set_defaults(func=cmd_transcribe)

    e = sub.add_parser("eval", help="evaluate on a manifest")
    e.add_argument("manifest", type=Path)
    e.add_argument("--output", type=Path, help="results JSON Lines, one line per utterance")
    e.add_argument("--summary-json", type=Path, help="also write the summary as JSON")
    e.add_argument("--no-context", action="store_true", help="ignore the manifest's context")
    model_args(e)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="stream clips as a microphone would and print results")
    d.add_argument("files", nargs="*", type=Path)
    d.add_argument("--limit", type=int, default=6, help="bundled clips to play")
    d.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True)
    model_args(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelError, AudioFormatError, FileNotFoundError) as e:
        print(f"edge-asr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
