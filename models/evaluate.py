"""`edge-asr eval`: run a manifest through the daemon's pipeline and score it.

Audio is fed in 20 ms pieces through the same `Pipeline` (VAD, recognizer, the two
end-pointers, lattices) that the daemon runs on its microphone, so what eval measures is
what the device does. Writes one JSON line per utterance (ARCHITECTURE.md, "Evaluation output")
and returns a summary: WER per tag, end-point latency (EP50/EP90 after the manifest's
speech_end), premature cuts, resets, lattice bytes, real-time factor.

With a cloud link (`--cloud ADDR`) every utterance's lattices go to `edge-asr cloud`
through the daemon's own loop (daemon/driver.py), and `rescored` holds the cloud's best for the
standing revision (null when it did not answer in time); the summary then also gives the WER of
what a user receives (rescored where the cloud answered, the device's best elsewhere).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.driver import StreamDriver, microphone_pieces
from edge_asr.daemon.manifest import Entry, read_manifest
from edge_asr.daemon.pipeline import Event, EventType, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.text import normalize_text
from edge_asr.daemon.uplink.cloud_link import CloudLink
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.daemon.uplink.lattice import serialize
from edge_asr.daemon.uplink.lattice_oracle import concatenate, oracle_errors
from edge_asr.models.pause_sets import SHORT_PAUSE_S
from edge_asr.simulator.cloud.dev_set import encode_dev_line


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


MAX_VOICES_PRINTED = 8


@dataclass
class Summary:
    utterances: int = 0
    wer: float = 0.0
    wer_by_tag: dict[str, float] = field(default_factory=dict)
    count_by_tag: dict[str, int] = field(default_factory=dict)
    # WER per speaker, for manifests that name one ("voice", as the recipe's do): which
    # held-out voices a model hears worst.
    wer_by_voice: dict[str, float] = field(default_factory=dict)
    count_by_voice: dict[str, int] = field(default_factory=dict)
    rtf: float = 0.0
    audio_seconds: float = 0.0
    errors: int = 0  # utterances whose audio could not be read (reported, not scored)
    # End-point latency after the true end of speech (manifest speech_end), seconds.
    speculative_ep50: float | None = None
    speculative_ep90: float | None = None
    final_ep50: float | None = None
    final_ep90: float | None = None
    premature_cuts: float = 0.0  # share of utterances whose final end-point cut speech
    # ... of those whose longest pause is at most SHORT_PAUSE_S (sets of models/pause_sets.py
    # say how long; None for others): what the end-of-query target is stated for
    premature_cuts_short_pauses: float | None = None
    short_pause_utterances: int = 0
    resets: float = 0.0  # share of utterances whose speculative lattice was revised
    no_endpoint: int = 0  # utterances where no end-point fired before the audio ended
    false_starts: int = 0  # utterances of noise alone that ended before the request began
    lattice_bytes_median: float | None = None
    # What a lattice costs against sending the audio itself: median over utterances of
    # lattice bytes / bytes of the same audio as 16 kHz 16-bit PCM, and as Opus at 16 kbit/s.
    lattice_to_pcm_median: float | None = None
    lattice_to_opus16k_median: float | None = None
    # Contextual biasing: share of the context names spoken in an utterance that the final
    # hypothesis contains, and WER on the utterances that contain no context name.
    name_recall: float | None = None
    names_spoken: int = 0
    wer_without_names: float | None = None
    # With a cloud: WER of what the user receives, and how many utterances were rescored;
    # and the context names the user receives (the rescoring can lose or find them).
    delivered_wer: float | None = None
    rescored: int = 0
    delivered_name_recall: float | None = None
    # The best any rescoring could deliver from the lattices sent (errors of their best path
    # against the reference / reference words); None for rows from before it was recorded.
    oracle_wer: float | None = None
    # With a cloud: utterances answered before the deadline / those decided, and the wait
    # from the final decision to the answer (answered ones), seconds.
    answered_in_time: float | None = None
    answer_wait_p50: float | None = None
    answer_wait_p99: float | None = None

    def format(self) -> str:
        lines = [f"utterances {self.utterances}  WER {100 * self.wer:.2f}%  RTF {self.rtf:.4f}"
                 f"  audio {self.audio_seconds / 60:.1f} min"
                 + (f"  unreadable {self.errors}" if self.errors else "")]
        if self.final_ep50 is not None:
            lines.append(
                f"end-points after speech end: speculative EP50 {self.speculative_ep50}s "
                f"EP90 {self.speculative_ep90}s; final EP50 {self.final_ep50}s "
                f"EP90 {self.final_ep90}s; premature cuts {100 * self.premature_cuts:.1f}%"
                + ("" if self.premature_cuts_short_pauses is None else
                   f" ({100 * self.premature_cuts_short_pauses:.1f}% of the "
                   f"{self.short_pause_utterances} with pauses up to {SHORT_PAUSE_S} s)")
                + "; "
                f"resets {100 * self.resets:.1f}%; no end-point {self.no_endpoint}; "
                f"false starts {self.false_starts}; "
                f"lattice bytes median {self.lattice_bytes_median} (of the audio as 16 kHz "
                f"PCM {self.lattice_to_pcm_median}, as 16 kbit/s Opus "
                f"{self.lattice_to_opus16k_median})")
        if self.oracle_wer is not None:
            lines.append(f"lattices: oracle WER {100 * self.oracle_wer:.2f}% (1-best "
                         f"{100 * self.wer:.2f}%)")
        if self.delivered_wer is not None:
            lines.append(f"cloud: {self.rescored} of {self.utterances} rescored; WER device "
                         f"{100 * self.wer:.2f}% -> delivered {100 * self.delivered_wer:.2f}%"
                         + ("" if self.delivered_name_recall is None or self.name_recall is None
                            else f"; context name recall {100 * self.name_recall:.1f}% -> "
                                 f"delivered {100 * self.delivered_name_recall:.1f}%"))
        if self.answered_in_time is not None:
            lines.append(f"cloud answers: {100 * self.answered_in_time:.1f}% inside the deadline;"
                         f" wait after the final decision p50 {self.answer_wait_p50}s "
                         f"p99 {self.answer_wait_p99}s")
        if self.name_recall is not None:
            lines.append(f"context names: recall {100 * self.name_recall:.1f}% of "
                         f"{self.names_spoken} spoken; WER without names "
                         f"{100 * (self.wer_without_names or 0):.2f}%")
        for tag in sorted(self.wer_by_tag):
            lines.append(f"  {tag:<16} {100 * self.wer_by_tag[tag]:6.2f}%  "
                         f"({self.count_by_tag[tag]} utts)")
        # A held-out-voice set has a handful of voices; a training-voice set has dozens, of
        # which the worst few are what a reader wants (all are in --summary-json).
        worst = sorted(self.wer_by_voice, key=self.wer_by_voice.get, reverse=True)
        if len(worst) > MAX_VOICES_PRINTED:
            lines.append(f"  {len(worst)} voices; the {MAX_VOICES_PRINTED} heard worst:")
        for voice in sorted(worst[:MAX_VOICES_PRINTED]):
            lines.append(f"  voice {voice:<30} {100 * self.wer_by_voice[voice]:6.2f}%  "
                         f"({self.count_by_voice[voice]} utts)")
        return "\n".join(lines)


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER (errors / reference words); an empty hypothesis counts all deletions."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return 0.0
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    errors = out.substitutions + out.deletions + out.insertions
    return errors / sum(len(r.split()) for r, _ in pairs)


_FINALS = (EventType.CONFIRMED, EventType.FINAL_ENDPOINT)


def request_endpoints(events: list[Event], speech_start: float | None) -> dict:
    """The request's end-point keys of a results row: its first speculative and first final
    decision times, whether it was reset, and how many false starts came before it.

    Noise before the request can make an utterance of its own that ends before the request
    begins (a false start); its end-points are not the request's. The first final decision
    after the start of speech is the one scored, even if an end-pointer cut the request
    into several utterances (that is a premature cut).
    """
    if speech_start is None:
        before, request = [], events
    else:
        before = [e for e in events if e.type in _FINALS and e.audio_time <= speech_start]
        request = [e for e in events if e.audio_time > speech_start]
    spec = next((e for e in request if e.type is EventType.SPECULATIVE_ENDPOINT), None)
    final = next((e for e in request if e.type in _FINALS), None)
    return {"speculative_endpoint": _decision_time(spec), "final_endpoint": _decision_time(final),
            "reset": any(e.type is EventType.RESET for e in request),
            "false_starts": len(before)}


def _decision_time(event: Event | None) -> float | None:
    """Audio time of an end-point decision, or None if only the end of input closed it."""
    if event is None or event.reason == "end_of_input":
        return None
    return round(event.audio_time, 3)


def names_in(text: str, names: list[str]) -> list[str]:
    """The context entries (normalised) that occur as whole words in a normalised text."""
    padded = f" {text} "
    found = []
    for name in names:
        norm = normalize_text(name)
        if norm and f" {norm} " in padded and norm not in found:
            found.append(norm)
    return found


def evaluate_entry(recognizer: Recognizer, entry: Entry, use_context: bool,
                   config: PipelineConfig | None = None, link: CloudLink | None = None,
                   answer_deadline_s: float = 0.5) -> tuple[dict, bytes | None]:
    """One utterance through the pipeline: its results row (ARCHITECTURE.md, "Evaluation
    output") and its standing lattice, serialized (None when no end-point produced one)."""
    samples = read_audio(entry.audio_filepath)
    context = entry.context if use_context and entry.context else None
    closing: list[Event] = []  # everything the finisher emits, RESCORED included
    cpu = time.process_time()  # building a context graph is part of the device's work
    pipeline = Pipeline(recognizer, config)
    pipeline.set_context(context)
    driver = StreamDriver(pipeline, Finisher(closing.append, link, answer_deadline_s))
    events = driver.feed_all(microphone_pieces(samples))
    events += driver.finish(answer_deadline_s + 1.0)
    cpu = time.process_time() - cpu  # waiting for the cloud costs no CPU
    rescored, waits, missed = None, [], 0
    if link is not None:
        answers = [e for e in closing if e.type is EventType.RESCORED]
        rescored = normalize_text(" ".join(e.text for e in answers)) if answers else None
        waits, missed = _answer_waits(closing)
    finals = [e for e in events if e.type in _FINALS]
    last = finals[-1] if finals else None
    # One request may come out as several utterances if an end-pointer cut it: the
    # hypothesis is all of them in order (words of a false start too: they are insertions).
    hypothesis = normalize_text(" ".join(e.text for e in finals if e.text))
    timing = request_endpoints(events, entry.speech_start)
    sent = [serialize(e.lattice) for e in events if e.lattice is not None]
    reference = normalize_text(entry.text)
    standing = {e.utterance_id: e.lattice for e in events if e.lattice is not None}
    oracle = (oracle_errors(concatenate(list(standing.values())), reference.split())
              if standing else len(reference.split()))
    spoken = names_in(reference, entry.context_names)
    return {
        "audio_filepath": entry.audio_filepath,
        "text": reference,
        "hypothesis": hypothesis,
        "nbest": [normalize_text(t) for t, _ in last.nbest] if last else [],
        "rescored": rescored,
        # With a cloud: seconds from each final decision to its answer (wall clock; about 0
        # where the answer to the speculative lattice came first), and the decisions that
        # went unanswered by the deadline
        "answer_waits": waits,
        "answers_missed": missed,
        **timing,
        "lattice_bytes": sum(len(lattice) for lattice in sent),
        # The fewest word errors of any path through the standing lattices (lattice_oracle.py)
        "oracle_errors": oracle,
        "utterances": len(finals),
        "cpu_seconds": round(cpu, 4),
        "duration": round(len(samples) / SAMPLE_RATE, 3),
        "speech_end": entry.speech_end,
        "tags": entry.tags,
        "voice": entry.extra.get("voice"),
        "longest_pause_s": entry.extra.get("longest_pause_s"),
        "context_used": context is not None,
        # The manifest's context names spoken in this utterance, and those recognised; scored
        # with or without the context given to the recognizer (--no-context).
        "context_names": spoken,
        "context_names_recognized": [n for n in spoken if n in names_in(hypothesis, [n])],
    }, (sent[-1] if sent else None)


def _answer_waits(closing: list[Event]) -> tuple[list[float], int]:
    """From what the finisher emitted: how long each rescored utterance waited after its
    final decision, and how many utterances closed on the device without an answer."""
    decided = {e.utterance_id: e.wall_time for e in closing if e.type in _FINALS}
    waits = [round(e.wall_time - decided[e.utterance_id], 4) for e in closing
             if e.type is EventType.RESCORED and e.utterance_id in decided]
    missed = sum(e.type is EventType.ON_DEVICE_FINAL for e in closing)
    return waits, missed


PCM_BYTES_PER_SECOND = 16000 * 2
OPUS_16K_BYTES_PER_SECOND = 16000 / 8


def _ratio_median(rows: list[dict], audio_bytes_per_second: float) -> float | None:
    if not rows:
        return None
    return round(float(np.median([r["lattice_bytes"] / (r["duration"] * audio_bytes_per_second)
                                  for r in rows])), 5)


def _wer_of_groups(groups: dict[str, list[dict]]) -> dict[str, float]:
    return {key: word_error_rate([r["text"] for r in rs], [r["hypothesis"] for r in rs])
            for key, rs in groups.items()}


def summarize(rows: list[dict], errors: int = 0) -> Summary:
    by_tag: dict[str, list[dict]] = defaultdict(list)
    by_voice: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        for tag in row.get("tags") or []:
            by_tag[tag].append(row)
        if row.get("voice"):
            by_voice[row["voice"]].append(row)
    audio = sum(r["duration"] for r in rows)
    timed = [r for r in rows if r.get("speech_end") is not None]
    premature = [r for r in timed if r["final_endpoint"] is not None
                 and r["final_endpoint"] < r["speech_end"]]
    ok = [r for r in timed if r not in premature]
    short = [r for r in timed if r.get("longest_pause_s") is not None
             and r["longest_pause_s"] <= SHORT_PAUSE_S]
    spec = [r["speculative_endpoint"] - r["speech_end"] for r in ok
            if r["speculative_endpoint"] is not None]
    final = [r["final_endpoint"] - r["speech_end"] for r in ok if r["final_endpoint"] is not None]
    sent = [r["lattice_bytes"] for r in rows if r.get("lattice_bytes")]
    sized = [r for r in rows if r.get("lattice_bytes") and r["duration"] > 0]
    spoken = sum(len(r.get("context_names", [])) for r in rows)
    recognized = sum(len(r.get("context_names_recognized", [])) for r in rows)
    plain = [r for r in rows if not r.get("context_names")]
    clouded = any(r.get("rescored") is not None for r in rows)
    words = sum(len(r["text"].split()) for r in rows)
    oracle = (sum(r["oracle_errors"] for r in rows) / words
              if words and all("oracle_errors" in r for r in rows) else None)

    waits = [w for r in rows for w in r.get("answer_waits", [])]
    decided = len(waits) + sum(r.get("answers_missed", 0) for r in rows)

    def delivered(r: dict) -> str:
        return r["hypothesis"] if r.get("rescored") is None else r["rescored"]

    return Summary(
        utterances=len(rows),
        wer=word_error_rate([r["text"] for r in rows], [r["hypothesis"] for r in rows]),
        wer_by_tag=_wer_of_groups(by_tag),
        count_by_tag={t: len(rs) for t, rs in by_tag.items()},
        wer_by_voice=_wer_of_groups(by_voice),
        count_by_voice={v: len(rs) for v, rs in by_voice.items()},
        rtf=sum(r["cpu_seconds"] for r in rows) / audio if audio else 0.0,
        audio_seconds=audio,
        errors=errors,
        speculative_ep50=_percentile(spec, 50),
        speculative_ep90=_percentile(spec, 90),
        final_ep50=_percentile(final, 50),
        final_ep90=_percentile(final, 90),
        premature_cuts=len(premature) / len(timed) if timed else 0.0,
        premature_cuts_short_pauses=(sum(r in premature for r in short) / len(short)
                                     if short else None),
        short_pause_utterances=len(short),
        resets=sum(bool(r["reset"]) for r in rows) / len(rows) if rows else 0.0,
        no_endpoint=sum(r["final_endpoint"] is None for r in rows),
        false_starts=sum(r.get("false_starts", 0) for r in rows),
        lattice_bytes_median=float(np.median(sent)) if sent else None,
        lattice_to_pcm_median=_ratio_median(sized, PCM_BYTES_PER_SECOND),
        lattice_to_opus16k_median=_ratio_median(sized, OPUS_16K_BYTES_PER_SECOND),
        name_recall=recognized / spoken if spoken else None,
        names_spoken=spoken,
        wer_without_names=word_error_rate([r["text"] for r in plain],
                                          [r["hypothesis"] for r in plain]) if plain else None,
        delivered_wer=word_error_rate([r["text"] for r in rows], [delivered(r) for r in rows])
        if clouded else None,
        rescored=sum(r.get("rescored") is not None for r in rows),
        delivered_name_recall=sum(len(names_in(delivered(r), r.get("context_names", [])))
                                  for r in rows) / spoken if clouded and spoken else None,
        oracle_wer=oracle,
        answered_in_time=len(waits) / decided if decided else None,
        answer_wait_p50=_percentile(waits, 50),
        answer_wait_p99=_percentile(waits, 99),
    )


def evaluate(recognizer: Recognizer, manifest: Path, output: Path | None,
             use_context: bool = True, progress: bool = False,
             config: PipelineConfig | None = None, limit: int | None = None,
             link: CloudLink | None = None, answer_deadline_s: float = 0.5,
             lattices: Path | None = None) -> Summary:
    """Scores every entry of `manifest`; `lattices` also gets, per clip heard as one
    utterance, its standing lattice and reference (the cloud's weight-tuning input,
    simulator/cloud/rescore.py)."""
    entries = read_manifest(manifest)[:limit]
    rows, errors, split = [], 0, 0
    out = output.open("w", encoding="utf-8") if output else None
    dump = lattices.open("w", encoding="utf-8") if lattices else None
    try:
        for i, entry in enumerate(entries):
            try:
                row, standing = evaluate_entry(recognizer, entry, use_context, config, link,
                                               answer_deadline_s)
            except (OSError, ValueError) as e:
                errors += 1
                print(f"skipping {entry.audio_filepath}: {e}")
                continue
            if dump and standing is not None:
                if row["utterances"] == 1:
                    contacts = entry.context_by_kind.get("contacts", []) if use_context else []
                    dump.write(encode_dev_line(standing, row["text"], row["hypothesis"],
                                               contacts) + "\n")
                else:  # no one lattice stands for the whole reference
                    split += 1
            rows.append(row)
            if out:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            if progress and (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(entries)}", flush=True)
    finally:
        for f in (out, dump):
            if f:
                f.close()
    if split:
        print(f"lattices: {split} clips left out, heard as several utterances (the reference "
              "cannot be split between their lattices)")
    return summarize(rows, errors)
