"""The wake word's figures (printed, never asserted): false rejects, false accepts per hour,
CPU while waiting, and the request's WER with a second talker, with and without the
encoder state carried on from the phrase.

    python bench/wakeword.py --manifests DIR [--phrase "hey marvin"] [--voices test|dev]
        [--n 60] [--threshold T ...] [--bonus B] [--beam N] [--no-verify] [--json OUT]

Positives: the phrase, then a request (the text of a test_voices utterance), both spoken by
voices the model never trained on: --voices test takes synth.heldout_voices() (espeak-ng
variants and accents, flite rms) and the local hibari-tts voices, which are for evaluation
only; --voices dev takes synth.dev_voices(), the tuning speakers, on which the threshold is
chosen. Half have a pause of 0.2-0.6 s after the phrase. Each is heard clean, with kitchen, fan or
music noise at 10 dB SNR, and right after 2.5 s of another voice's words, in a fresh
pipeline after 1 s of room noise.
Negatives: every utterance of the held-out test manifests in DIR (recorded people:
test_speechocean762, Speech Commands, FSDD; held-out voices: test_voices, test_sentences,
test_snr10, test_hibari; with --voices dev the dev manifests instead) played back to back
with pauses, plus 10 minutes of noise, through one pipeline per set; every WAKE_WORD there
is a false accept. Requests are the texts of test_voices (dev_voices with --voices dev).
The second talker: another positive's request, of another voice, over the request at 0-6 dB
below it (signal-to-interference), starting with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.pipeline import EventType, Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.daemon.text import normalize_text
from edge_asr.daemon.wakeword.spotter import WakeWordConfig
from edge_asr.models.evaluate import word_error_rate
from edge_asr.models.levels import active_rms
from edge_asr.models.noise import make_noise

NEGATIVE_SETS = {"test": ("test_speechocean762", "test_speech_commands_test_v002", "test_fsdd",
                          "test_voices", "test_sentences", "test_snr10", "test_hibari"),
                 # the tuning side's recorded people and voices, for choosing the threshold
                 "dev": ("speechocean762_dev", "speech_commands_test_v002_dev", "dev_voices",
                         "dev_snr10")}
NOISE_FOR_SNR = ("kitchen", "fan", "music")


def room(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 10 ** (-70 / 20)).astype(
        np.float32)


def voices(split: str) -> list[tuple[str, object]]:
    from edge_asr.models import synth

    if split == "dev":
        return [(v.id, v) for v in synth.dev_voices()]
    from edge_asr.models.heldout_sets import local_hibari_voices

    return ([(v.id, v) for v in synth.heldout_voices()]
            + [(f"hibari-{name}", name) for name in local_hibari_voices()])


def speak(text: str, voice: object, rng: np.random.Generator) -> np.ndarray:
    if isinstance(voice, str):  # a hibari voice name
        from edge_asr.models.heldout_sets import speak_hibari

        return speak_hibari(text, voice, rng)
    from edge_asr.models.synth import synthesize

    return synthesize(text, voice, rng)


def positives(phrase: str, requests: list[str], split: str, n: int, seed: int = 0
              ) -> list[dict]:
    rng = np.random.default_rng(seed)
    cast = voices(split)
    out = []
    for i in range(n):
        name, voice = cast[i % len(cast)]
        pause = rng.uniform(0.2, 0.6) if i % 2 else 0.0
        said = speak(phrase, voice, rng)
        request = speak(requests[i % len(requests)], voice, rng)
        out.append({"voice": name, "text": requests[i % len(requests)],
                    "phrase": said, "pause": np.zeros(int(pause * SAMPLE_RATE), np.float32),
                    "request": request})
    return out


def at_snr(signal: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    """`other` scaled to `snr_db` below the active level of `signal`."""
    gain = active_rms(signal) / max(float(np.sqrt(np.mean(other ** 2))), 1e-9)
    return (other * gain * 10 ** (-snr_db / 20)).astype(np.float32)


def run(recognizer: Recognizer, audio: np.ndarray, wake: WakeWordConfig) -> tuple[list, float]:
    """Events (no partials) and the pipeline's CPU seconds."""
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 0.99:  # a mixture louder than full scale: turned down, as a mic's gain would be
        audio = audio * np.float32(0.9 / peak)
    pipeline = Pipeline(recognizer, PipelineConfig(wake_word=wake, partials=False))
    events = []
    cpu = time.thread_time()
    for i in range(0, len(audio), 320):
        events += pipeline.accept(audio[i:i + 320])
    events += pipeline.finish()
    return events, time.thread_time() - cpu


def request_text(events: list) -> str | None:
    """What the request after the first WAKE_WORD was heard as (None: no wake word)."""
    if not any(e.type is EventType.WAKE_WORD for e in events):
        return None
    closing = [e.text for e in events if e.type in (EventType.CONFIRMED,
                                                    EventType.FINAL_ENDPOINT)]
    return closing[0] if closing else ""


def rejects(recognizer: Recognizer, items: list[dict], wake: WakeWordConfig, noisy: bool,
            after_speech: bool = False, seed: int = 1) -> dict:
    """False rejects; `after_speech`: the phrase follows 2.5 s of another voice's words
    with no pause (a television, a conversation), as loud as the speaker."""
    rng = np.random.default_rng(seed)
    missed, refs, hyps, scores = 0, [], [], []
    for k, item in enumerate(items):
        speech = np.concatenate([item["phrase"], item["pause"], item["request"]])
        lead = room(1.0, rng)
        if after_speech:
            other = next(o for o in items[k + 1:] + items[:k] if o["voice"] != item["voice"])
            words = other["request"][: int(2.5 * SAMPLE_RATE)]
            lead = np.concatenate([lead, at_snr(speech, words, 0.0), room(0.05, rng)])
        audio = np.concatenate([lead, speech, room(2.0, rng)])
        if noisy:
            noise = make_noise(NOISE_FOR_SNR[k % len(NOISE_FOR_SNR)], len(audio), rng)
            audio = audio + at_snr(speech, noise, 10.0)
        events, _ = run(recognizer, audio, wake)
        heard = request_text(events)
        if heard is None:
            missed += 1
            continue
        scores += [e.score for e in events if e.type is EventType.WAKE_WORD][:1]
        refs.append(normalize_text(item["text"]))
        hyps.append(heard)
    return {"false_reject_rate": round(missed / len(items), 4), "utterances": len(items),
            "request_wer_when_woken": round(word_error_rate(refs, hyps), 4) if refs else None,
            "median_score": round(statistics.median(scores), 3) if scores else None}


def without_wake_word(recognizer: Recognizer, items: list[dict], seed: int = 1) -> dict:
    """The requests alone, with no wake word configured: what the request WER above would be
    if the phrase cost nothing."""
    rng = np.random.default_rng(seed)
    refs, hyps = [], []
    for item in items:
        audio = np.concatenate([room(1.0, rng), item["request"], room(2.0, rng)])
        events, _ = run(recognizer, audio, WakeWordConfig())
        refs.append(normalize_text(item["text"]))
        hyps.append(" ".join(e.text for e in events if e.type in (
            EventType.CONFIRMED, EventType.FINAL_ENDPOINT) and e.text))
    return {"utterances": len(refs), "request_wer": round(word_error_rate(refs, hyps), 4)}


def second_talker(recognizer: Recognizer, items: list[dict], wake: WakeWordConfig,
                  seed: int = 2) -> dict:
    """Request WER with another voice's request over it at 0-6 dB SIR, anchored or not,
    over the positives both runs woke on."""
    rng = np.random.default_rng(seed)
    refs, hyps = [], {True: [], False: []}
    for k, item in enumerate(items):
        other = next(o for o in items[k + 1:] + items[:k] if o["voice"] != item["voice"])
        request = item["request"].copy()
        talk = at_snr(request, other["request"][: len(request)], rng.uniform(0.0, 6.0))
        request[: len(talk)] += talk
        speech = np.concatenate([item["phrase"], item["pause"], request])
        audio = np.concatenate([room(1.0, rng), speech, room(2.0, rng)])
        heard = {a: request_text(run(recognizer, audio, WakeWordConfig(
            **{**wake.__dict__, "anchored": a}))[0]) for a in (True, False)}
        if heard[True] is None or heard[False] is None:
            continue
        refs.append(normalize_text(item["text"]))
        for a in (True, False):
            hyps[a].append(heard[a])
    return {"utterances": len(refs),
            "wer_anchored": round(word_error_rate(refs, hyps[True]), 4) if refs else None,
            "wer_cold_start": round(word_error_rate(refs, hyps[False]), 4) if refs else None}


def false_accepts(recognizer: Recognizer, manifests: Path, wake: WakeWordConfig, split: str,
                  seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    per_set, total_s, total_fa, cpu_s = {}, 0.0, 0, 0.0
    streams = {}
    for name in NEGATIVE_SETS[split]:
        path = manifests / f"{name}.jsonl"
        if path.is_file():
            clips = []
            for entry in read_manifest(path):
                clips += [read_audio(entry.audio_filepath), room(rng.uniform(0.5, 1.5), rng)]
            streams[name] = np.concatenate(clips)
    streams["noise"] = np.concatenate([make_noise(k, 120 * SAMPLE_RATE, rng) * 0.05
                                       for k in ("kitchen", "fan", "music", "pink", "white")])
    for name, audio in streams.items():
        events, cpu = run(recognizer, audio.astype(np.float32), wake)
        seconds = len(audio) / SAMPLE_RATE
        accepts = [e for e in events if e.type is EventType.WAKE_WORD]
        per_set[name] = {"hours": round(seconds / 3600, 3), "false_accepts": len(accepts),
                         "heard": [f"{e.audio_time:.1f}s {e.score:.2f}" for e in accepts][:5]}
        total_s, total_fa, cpu_s = total_s + seconds, total_fa + len(accepts), cpu_s + cpu
    return {"hours": round(total_s / 3600, 3), "false_accepts": total_fa,
            "false_accepts_per_hour": round(total_fa / (total_s / 3600), 3),
            "cpu_per_audio_second_waiting": round(cpu_s / total_s, 4), "sets": per_set}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifests", type=Path, required=True,
                   help="folder of the recipe's manifests (test_voices.jsonl ...)")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--phrase", default="hey marvin")
    p.add_argument("--voices", choices=["test", "dev"], default="test")
    p.add_argument("--n", type=int, default=60, help="positives (each clean and noisy)")
    p.add_argument("--threshold", type=float, nargs="*", default=None,
                   help="thresholds to report (default: WakeWordConfig's)")
    p.add_argument("--bonus", type=float, default=WakeWordConfig.bonus)
    p.add_argument("--beam", type=int, default=WakeWordConfig.beam)
    p.add_argument("--no-verify", action="store_true",
                   help="without the model folder's verifier (daemon/wakeword/verifier.py)")
    p.add_argument("--skip-negatives", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    recognizer = Recognizer() if args.model is None else Recognizer.from_model_dir(args.model)
    requests = [e.text for e in read_manifest(
        args.manifests / f"{'dev' if args.voices == 'dev' else 'test'}_voices.jsonl")]
    items = positives(args.phrase, requests, args.voices, args.n)
    report = {"phrase": args.phrase, "voices": args.voices, "model": recognizer.model.dir.name,
              "bonus": args.bonus, "beam": args.beam, "verify": not args.no_verify}
    for threshold in args.threshold or [WakeWordConfig.threshold]:
        wake = WakeWordConfig(phrase=args.phrase, threshold=threshold, bonus=args.bonus,
                              beam=args.beam, verify=not args.no_verify)
        row = {"clean": rejects(recognizer, items, wake, noisy=False),
               "snr10": rejects(recognizer, items, wake, noisy=True),
               "after_other_speech": rejects(recognizer, items, wake, noisy=False,
                                             after_speech=True)}
        if not args.skip_negatives:
            row["negatives"] = false_accepts(recognizer, args.manifests, wake, args.voices)
        report[f"threshold {threshold}"] = row
        print(json.dumps({f"threshold {threshold}": row}, indent=1), flush=True)
    report["no_wake_word"] = without_wake_word(recognizer, items)
    print(json.dumps({"no_wake_word": report["no_wake_word"]}), flush=True)
    wake = WakeWordConfig(phrase=args.phrase, bonus=args.bonus, beam=args.beam)
    report["second_talker"] = second_talker(recognizer, items, wake)
    print(json.dumps({"second_talker": report["second_talker"]}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
