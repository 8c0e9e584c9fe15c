"""edge-asr beside its peers on identical audio (printed, never asserted).

    python bench/peers.py [--model DIR] [--manifests DIR] [--sets test_voices ...]
                          [--limit N] [--systems edge-asr sherpa pocketsphinx] [--json PATH]

Systems, each on every utterance of every set:

- edge-asr: the daemon's own pipeline, exactly what `edge-asr eval` runs
  (`evaluate_entry`), greedy and modified beam search (beam 4) with the manifest's context.
- sherpa-onnx on the same ONNX files (its `lstm` online transducer): greedy and modified
  beam search, its end-point rules at their defaults and tuned close to ours, and its
  hotwords (per-stream, spelled with our bpe.model) for the manifest's context.
- pocketsphinx 5 with its bundled en-us model: its `Endpointer` (VAD) and `Decoder`.

Every system is fed the same 16 kHz samples in 20 ms pieces (pocketsphinx: its
Endpointer's 30 ms frames), as a microphone would, and its end-point decision is the audio
time at which it said "done": for edge-asr its first final end-point, as `edge-asr eval`
scores it; for the peers their first end-point that closes a segment with words (one that
closes nothing only resets them). Every system's rows
are scored by `evaluate.summarize`, so WER, RTF, EP50/EP90 after `speech_end`, premature
cuts and name recall mean the same thing in every row. RTF is process CPU seconds per
audio second with one inference thread everywhere.

Without the recipe's evaluation sets (~/.cache/edge-asr/manifests) the 24 bundled clips
(tests/data/manifest.jsonl) are used, so `make bench` runs on a fresh machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sentencepiece as spm

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import PIECE_SECONDS
from edge_asr.daemon.manifest import Entry, read_manifest
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig
from edge_asr.daemon.text import normalize_text
from edge_asr.models.evaluate import Summary, evaluate_entry, names_in, summarize

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFESTS = Path.home() / ".cache" / "edge-asr" / "manifests"
DEFAULT_SETS = ("test_voices", "test_sentences", "test_names", "test_snr10", "test_band8k")
BUNDLED = ROOT / "tests" / "data" / "manifest.jsonl"
SYSTEMS = ("edge-asr", "sherpa", "pocketsphinx")

Row = dict  # one utterance, in evaluate_entry's keys, so that summarize() scores it


def _row(entry: Entry, hypothesis: str, final_endpoint: float | None, cpu: float,
         duration: float, speculative_endpoint: float | None = None,
         context_used: bool = False) -> Row:
    """A results row in `evaluate_entry`'s format for a peer system (no lattices, no
    resets); context names are found exactly as evaluate_entry finds them."""
    reference = normalize_text(entry.text)
    hypothesis = normalize_text(hypothesis)
    spoken = names_in(reference, entry.context_names)
    return {
        "audio_filepath": entry.audio_filepath,
        "text": reference,
        "hypothesis": hypothesis,
        "speculative_endpoint": speculative_endpoint,
        "final_endpoint": final_endpoint,
        "reset": False,
        "lattice_bytes": 0,
        "cpu_seconds": round(cpu, 4),
        "duration": round(duration, 3),
        "speech_end": entry.speech_end,
        "tags": entry.tags,
        "context_used": context_used,
        "context_names": spoken,
        "context_names_recognized": [n for n in spoken if n in names_in(hypothesis, [n])],
    }


# ------------------------------------------------------------------------------- edge-asr


@dataclass(frozen=True)
class EdgeAsrOptions:
    decoding_method: str = "modified_beam_search"  # or "greedy_search"
    beam: int = 4
    use_context: bool = True  # greedy search ignores it, as the daemon does

    @property
    def label(self) -> str:
        if self.decoding_method == "greedy_search":
            return "edge-asr greedy"
        return f"edge-asr beam{self.beam}" + (" +context" if self.use_context else "")


def run_edge_asr(entries: Iterable[Entry], model_dir: Path, options: EdgeAsrOptions
                 ) -> list[Row]:
    """The daemon's pipeline through `evaluate_entry`, the very code `edge-asr eval` runs
    (VAD, both end-pointers, lattices; one onnxruntime intra-op thread)."""
    recognizer = Recognizer(RecognizerConfig(model_dir=model_dir, threads=1,
                                             decoding_method=options.decoding_method,
                                             beam=options.beam))
    return [evaluate_entry(recognizer, e, options.use_context)[0] for e in entries]


# ---------------------------------------------------------------------------- sherpa-onnx


@dataclass(frozen=True)
class EndpointRules:
    """sherpa-onnx's end-point rules (seconds). Its trailing silence is counted in decoder
    blanks, not VAD frames. rule1: silence with nothing decoded; rule2: silence after
    something was decoded; rule3: utterance length."""

    rule1: float = 2.4
    rule2: float = 1.2
    rule3: float = 20.0
    name: str = "default"


# Close to ours (EndpointConfig, daemon/endpointing/endpoint_config.py): rule2 =
# final_silence 0.45 s (the final end-point when the text is unsure), rule1 =
# silence_timeout 1.5 s (give up on a silence whatever was decoded), rule3 = max_utterance 12 s.
TUNED_RULES = EndpointRules(rule1=1.5, rule2=0.45, rule3=12.0, name="tuned")

# sherpa's own pipeline drops the last partial chunk at input_finished; this much silence
# after the audio lets every real frame reach its encoder (tests/test_shipped_model.py gets
# our greedy transcripts with it).
SHERPA_TAIL_S = 0.66


@dataclass(frozen=True)
class SherpaOptions:
    decoding_method: str = "greedy_search"  # or "modified_beam_search"
    beam: int = 4  # max_active_paths
    rules: EndpointRules = field(default_factory=EndpointRules)
    hotwords: bool = False  # the manifest's context as per-stream hotwords (beam only)
    hotwords_score: float = 1.5  # per token, as our context_bonus was when this was measured

    @property
    def label(self) -> str:
        method = "greedy" if self.decoding_method == "greedy_search" else f"beam{self.beam}"
        return (f"sherpa {method} ep:{self.rules.name}"
                + (" +hotwords" if self.hotwords else ""))


def write_bpe_vocab(model_dir: Path, out: Path) -> Path:
    """sherpa-onnx spells hotwords with `modeling_unit="bpe"` and a `bpe_vocab`: one
    "piece score" line per token, what sentencepiece's spm_export_vocab writes. Its
    encoder (ssentencepiece) takes the best-scoring split, which for our unigram model is
    what sentencepiece itself picks."""
    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "bpe.model"))
    out.write_text("".join(f"{sp.id_to_piece(i)} {sp.get_score(i)}\n"
                           for i in range(sp.get_piece_size())), encoding="utf-8")
    return out


def sherpa_recognizer(model_dir: Path, options: SherpaOptions, bpe_vocab: Path | None = None):
    import sherpa_onnx

    if options.hotwords and options.decoding_method != "modified_beam_search":
        raise ValueError("sherpa-onnx hotwords need modified_beam_search")
    extra = {}
    if options.hotwords:
        if bpe_vocab is None:
            raise ValueError("sherpa-onnx hotwords need a bpe_vocab (write_bpe_vocab)")
        extra = {"modeling_unit": "bpe", "bpe_vocab": str(bpe_vocab),
                 "hotwords_score": options.hotwords_score}
    d = model_dir
    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(d / "tokens.txt"), encoder=str(d / "encoder.onnx"),
        decoder=str(d / "decoder.onnx"), joiner=str(d / "joiner.onnx"),
        num_threads=1, decoding_method=options.decoding_method,
        max_active_paths=options.beam, enable_endpoint_detection=True,
        rule1_min_trailing_silence=options.rules.rule1,
        rule2_min_trailing_silence=options.rules.rule2,
        rule3_min_utterance_length=options.rules.rule3, **extra)


def sherpa_hotwords(context: list[str]) -> str:
    """Per-stream hotwords: phrases separated by "/", each normalised as our context is
    (lower-case ASCII words), which sherpa then splits into pieces word by word."""
    phrases = dict.fromkeys(n for n in (normalize_text(c) for c in context) if n)
    return "/".join(phrases)


def sherpa_entry(recognizer, entry: Entry, samples: np.ndarray, options: SherpaOptions
                 ) -> Row:
    """One utterance through sherpa-onnx as a microphone would drive it: 20 ms pieces,
    decode what is ready, ask is_endpoint, and on an end-point take the segment's text and
    reset the stream (sherpa's own microphone examples do this)."""
    cpu = time.process_time()
    # Per-stream hotwords go through the same EncodeHotwords as a hotwords_file, and
    # every utterance of a manifest has its own context list.
    hotwords = sherpa_hotwords(entry.context_names) if options.hotwords and entry.context else None
    stream = recognizer.create_stream(hotwords) if hotwords else recognizer.create_stream()
    piece = int(PIECE_SECONDS * SAMPLE_RATE)
    segments: list[str] = []
    decision: float | None = None
    for start in range(0, len(samples), piece):
        stream.accept_waveform(SAMPLE_RATE, samples[start : start + piece])
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
        if recognizer.is_endpoint(stream):
            text = recognizer.get_result(stream).strip()
            # An end-point on an empty segment (rule1 on leading silence) only resets the
            # stream; an application acts on, and we score, end-points that close words.
            if text:
                segments.append(text)
                if decision is None:
                    decision = round(min(start + piece, len(samples)) / SAMPLE_RATE, 3)
            recognizer.reset(stream)
    # End of audio: like our end_of_input, whatever closes here is no end-point decision.
    stream.accept_waveform(SAMPLE_RATE, np.zeros(int(SHERPA_TAIL_S * SAMPLE_RATE), np.float32))
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    segments.append(recognizer.get_result(stream).strip())
    cpu = time.process_time() - cpu
    return _row(entry, " ".join(segments), decision, cpu, len(samples) / SAMPLE_RATE,
                context_used=hotwords is not None)


def run_sherpa(entries: Iterable[Entry], model_dir: Path, options: SherpaOptions,
               audio: Callable[[Entry], np.ndarray] | None = None) -> list[Row]:
    audio = audio or (lambda e: read_audio(e.audio_filepath))
    with tempfile.TemporaryDirectory() as tmp:
        vocab = write_bpe_vocab(model_dir, Path(tmp) / "bpe.vocab") if options.hotwords else None
        recognizer = sherpa_recognizer(model_dir, options, vocab)
        return [sherpa_entry(recognizer, e, audio(e), options) for e in entries]


# --------------------------------------------------------------------------- pocketsphinx


@dataclass(frozen=True)
class PocketsphinxOptions:
    # pocketsphinx's own Endpointer defaults: a 0.3 s window, 90% of it non-speech ends
    # the segment; its VAD in LOOSE mode.
    window: float = 0.3
    ratio: float = 0.9

    label: str = "pocketsphinx en-us"


def pocketsphinx_entry(decoder, entry: Entry, samples: np.ndarray,
                       options: PocketsphinxOptions) -> Row:
    """One utterance through pocketsphinx's live-audio loop: the Endpointer gates 30 ms
    frames, the Decoder decodes each speech segment; a segment closes when the
    Endpointer leaves speech, and that moment is its end-point decision."""
    from pocketsphinx import Endpointer

    cpu = time.process_time()
    ep = Endpointer(window=options.window, ratio=options.ratio, sample_rate=SAMPLE_RATE)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    step = ep.frame_bytes
    segments: list[str] = []
    decision: float | None = None
    in_utt = False
    for start in range(0, len(pcm), step):
        frame = pcm[start : start + step]
        last = start + step >= len(pcm)
        was_in_speech = ep.in_speech
        speech = ep.end_stream(frame) if last else ep.process(frame)
        if speech is None:
            continue
        if not was_in_speech and not in_utt:
            decoder.start_utt()
            in_utt = True
        if speech:  # end_stream may hand back nothing at all for a short last frame
            decoder.process_raw(speech, False, False)
        if not ep.in_speech:  # the Endpointer closed the segment
            decoder.end_utt()
            in_utt = False
            text = decoder.hyp().hypstr if decoder.hyp() else ""
            segments.append(text)
            # As for sherpa: the scored decision is the first that closes words (a segment
            # of noise that decodes to nothing is dropped by an application).
            if decision is None and text.strip() and not last:
                decision = round((start + step) / 2 / SAMPLE_RATE, 3)  # 2 bytes a sample
    if in_utt:  # the audio ended inside speech: no end-point decision
        decoder.end_utt()
        segments.append(decoder.hyp().hypstr if decoder.hyp() else "")
    cpu = time.process_time() - cpu
    return _row(entry, " ".join(segments), decision, cpu, len(samples) / SAMPLE_RATE)


def pocketsphinx_decoder():
    from pocketsphinx import Decoder

    # Its bundled en-us acoustic model, 3-gram LM and dictionary; quiet logs.
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def run_pocketsphinx(entries: Iterable[Entry], options: PocketsphinxOptions,
                     audio: Callable[[Entry], np.ndarray] | None = None) -> list[Row]:
    audio = audio or (lambda e: read_audio(e.audio_filepath))
    decoder = pocketsphinx_decoder()
    return [pocketsphinx_entry(decoder, e, audio(e), options) for e in entries]


# ----------------------------------------------------------------------------- the bench


def system_runs(model_dir: Path, systems: Iterable[str]
                ) -> list[tuple[str, Callable[[list[Entry], Callable], list[Row]]]]:
    """(label, run(entries, audio)) for every configuration of the chosen systems."""
    runs: list[tuple[str, Callable]] = []
    if "edge-asr" in systems:
        for opts in (EdgeAsrOptions("greedy_search"), EdgeAsrOptions("modified_beam_search")):
            runs.append((opts.label,
                         lambda es, _audio, o=opts: run_edge_asr(es, model_dir, o)))
    if "sherpa" in systems:
        beam = "modified_beam_search"
        for opts in (SherpaOptions("greedy_search"),
                     SherpaOptions("greedy_search", rules=TUNED_RULES),
                     SherpaOptions(beam),
                     SherpaOptions(beam, rules=TUNED_RULES),
                     SherpaOptions(beam, rules=TUNED_RULES, hotwords=True)):
            runs.append((opts.label,
                         lambda es, audio, o=opts: run_sherpa(es, model_dir, o, audio)))
    if "pocketsphinx" in systems:
        opts = PocketsphinxOptions()
        runs.append((opts.label, lambda es, audio, o=opts: run_pocketsphinx(es, o, audio)))
    return runs


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def markdown_table(results: dict[str, dict[str, Summary]]) -> str:
    """One row per (set, system)."""
    lines = ["| set | system | utts | WER % | RTF | spec EP50 / EP90 s | final EP50 / EP90 s "
             "| premature % | no EP | name recall % (spoken) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for set_name, by_system in results.items():
        for system, s in by_system.items():
            spec = (f"{_fmt(s.speculative_ep50)} / {_fmt(s.speculative_ep90)}"
                    if s.speculative_ep50 is not None else "-")
            final = (f"{_fmt(s.final_ep50)} / {_fmt(s.final_ep90)}"
                     if s.final_ep50 is not None else "-")
            recall = (f"{_fmt(s.name_recall, 100, 1)} ({s.names_spoken})"
                      if s.name_recall is not None else "-")
            lines.append(f"| {set_name} | {system} | {s.utterances} | {_fmt(s.wer, 100)} | "
                         f"{s.rtf:.4f} | {spec} | {final} | {_fmt(s.premature_cuts, 100, 1)} | "
                         f"{s.no_endpoint} | {recall} |")
    return "\n".join(lines)


def choose_manifests(directory: Path, sets: list[str]) -> dict[str, Path]:
    found = {s: directory / f"{s}.jsonl" for s in sets if (directory / f"{s}.jsonl").is_file()}
    if found:
        return found
    print(f"no evaluation sets in {directory}: using the bundled clips ({BUNDLED})")
    return {"bundled": BUNDLED}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS,
                   help="folder of the recipe's evaluation manifests")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    p.add_argument("--limit", type=int, help="utterances per set (the first N)")
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument("--json", type=Path,
                   default=Path(tempfile.gettempdir()) / "edge-asr-peers.json")
    args = p.parse_args()

    from rtf import cpu_name  # bench/ is sys.path[0] when this file runs as a script

    machine = f"{cpu_name()}, {os.cpu_count()} cores; one inference thread per system"
    print(f"machine: {machine}")
    runs = system_runs(args.model, args.systems)
    results: dict[str, dict[str, Summary]] = {}
    start = time.perf_counter()

    def write_json() -> None:  # after every set, so a long run that dies keeps its figures
        if args.json:
            args.json.write_text(json.dumps({
                "machine": machine, "model": str(args.model), "limit": args.limit,
                "wall_seconds": round(time.perf_counter() - start, 1),
                "tuned_endpoint_rules": dataclasses.asdict(TUNED_RULES),
                "results": {s: {k: dataclasses.asdict(v) for k, v in by.items()}
                            for s, by in results.items()},
            }, indent=2) + "\n")

    for set_name, manifest in choose_manifests(args.manifests, args.sets).items():
        entries = read_manifest(manifest)[: args.limit]
        cache = {e.audio_filepath: read_audio(e.audio_filepath) for e in entries}
        results[set_name] = {}
        for label, run in runs:
            t = time.perf_counter()
            rows = run(entries, lambda e, c=cache: c[e.audio_filepath])
            results[set_name][label] = summarize(rows)
            print(f"  {set_name:<15} {label:<32} {time.perf_counter() - t:7.1f} s", flush=True)
        write_json()
    print()
    print(f"Peers on identical audio, {machine}; model {args.model}; "
          f"wall {time.perf_counter() - start:.0f} s")
    print(markdown_table(results))
    if args.json:
        print(f"figures written to {args.json}")

if __name__ == "__main__":
    main()
