"""The learned end-of-query model: its file, its features, the pause sets it is measured on,
and the offline replay its threshold is tuned with. The end-pointer's use of it is tested
in test_endpoint.py ("learned end-of-query")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.constants import SAMPLE_RATE
from edge_asr.daemon.endpointing.endpoint_config import EndpointConfig
from edge_asr.daemon.endpointing.query_end import (
    FEATURES,
    QUERY_END_FILE,
    QueryEnd,
    QueryEndFormatError,
    QueryEndModel,
)
from edge_asr.daemon.manifest import read_manifest
from edge_asr.daemon.pipeline import Pipeline, PipelineConfig
from edge_asr.daemon.recognition.recognizer import Recognizer
from edge_asr.models import pause_sets
from edge_asr.models.query_end_train import DecisionPoints, fit, record, replay, tune

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "rnnt-v4-int4"


def _model(hidden: int = 3, threshold: float = 0.5) -> QueryEndModel:
    rng = np.random.default_rng(0)
    n = len(FEATURES)
    return QueryEndModel(rng.normal(size=n), rng.uniform(0.5, 2, size=n),
                         rng.normal(size=(hidden, n)), rng.normal(size=hidden),
                         rng.normal(size=hidden), 0.3, threshold)


def test_model_file_round_trips_and_computes_the_mlp(tmp_path: Path) -> None:
    model = _model()
    model.save(tmp_path / QUERY_END_FILE)
    loaded = QueryEndModel.load(tmp_path / QUERY_END_FILE)
    x = np.linspace(-1, 1, model.num_features)
    h = np.tanh(model.w1 @ ((x - model.mean) / model.scale) + model.b1)
    expected = 1 / (1 + np.exp(-(model.w2 @ h + model.b2)))
    assert loaded.probability(x) == pytest.approx(expected)
    assert loaded.threshold == 0.5


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("w1"), "not a query-end model"),
    (lambda d: d.update(mean=d["mean"][:-1]), "shapes"),
    (lambda d: d.update(threshold=1.0), "threshold"),
    (lambda d: d.update(features=["silence_s"]), "made for the features"),
])
def test_a_broken_model_file_is_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / QUERY_END_FILE
    _model().save(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(QueryEndFormatError, match=message):
        QueryEndModel.load(path)
    path.write_text("{not json")
    with pytest.raises(QueryEndFormatError, match=str(path)):
        QueryEndModel.load(path)


# ---------------------------------------------------------------- features on the model

@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.from_model_dir(MODEL_DIR)


def _query_end(recognizer: Recognizer) -> QueryEnd:
    shipped = QueryEnd.for_recognizer(recognizer)
    assert shipped is not None, "the shipped model folder carries query_end.json"
    return shipped


def _tokens(recognizer: Recognizer, text: str) -> tuple[int, ...]:
    return tuple(recognizer.spell(text)[1])


def test_the_lm_feature_tells_a_finished_request_from_a_cut_one(recognizer) -> None:
    query_end = _query_end(recognizer)
    lm_end = FEATURES.index("lm_end")
    finished = query_end.features(_tokens(recognizer, "turn on the lights"),
                                  "turn on the lights", 0.4, 0.4, None)
    cut = query_end.features(_tokens(recognizer, "turn on the"), "turn on the", 0.4, 0.4, None)
    assert finished.shape == (query_end.model.num_features,)
    assert finished[lm_end] > cut[lm_end] + 2.0  # ln p(end of sentence)


def test_the_shipped_classifier_waits_after_a_cut_request_longer(recognizer) -> None:
    """At every length of pause, "turn on the" looks less over than "turn on the lights",
    and a cut request is not ended 0.7 s into its pause."""
    query_end = _query_end(recognizer)

    def p(text: str, silence_s: float) -> float:
        tokens = _tokens(recognizer, text)
        return query_end.probability(tokens, text, silence_s, silence_s, None)

    for silence_s in (0.4, 0.7, 1.0):
        assert p("turn on the lights", silence_s) > p("turn on the", silence_s)
        assert p("set an alarm for seven thirty", silence_s) > p("set an alarm for", silence_s)
    assert p("turn on the", 0.7) < query_end.model.threshold
    assert p("turn on the lights", 0.4) < p("turn on the lights", 1.0)  # silence counts


def test_the_pipeline_uses_the_model_folders_classifier_unless_turned_off(recognizer) -> None:
    on = Pipeline(recognizer)
    assert on.query_end is not None
    assert on.endpointer.query_end_threshold == on.query_end.model.threshold
    chosen = Pipeline(recognizer, PipelineConfig(endpoint=EndpointConfig(
        query_end_threshold=0.8)))
    assert chosen.endpointer.query_end_threshold == 0.8
    off = Pipeline(recognizer, PipelineConfig(endpoint=EndpointConfig(query_end=False)))
    assert off.query_end is None and off.endpointer.query_end_threshold is None


# ---------------------------------------------------------------- pause sets

def _words(*spans: tuple[float, float], seconds: float = 3.0) -> np.ndarray:
    """Tone bursts ("words") at the given spans over a faint noise floor."""
    rng = np.random.default_rng(1)
    out = rng.normal(scale=1e-3, size=int(seconds * SAMPLE_RATE)).astype(np.float32)
    t = np.arange(out.size) / SAMPLE_RATE
    for a, b in spans:
        on = (t >= a) & (t < b)
        out[on] += 0.3 * np.sin(2 * np.pi * 220 * t[on])
    return out


def test_speech_bounds_and_the_quiet_point_between_words() -> None:
    samples = _words((0.5, 1.1), (1.3, 2.2))
    start, end = pause_sets.speech_bounds(samples)
    assert start == pytest.approx(0.5, abs=0.02) and end == pytest.approx(2.2, abs=0.02)
    assert 1.1 <= pause_sets.quiet_point(samples, start, end) <= 1.3


def test_a_spliced_pause_moves_the_end_and_sounds_like_the_background() -> None:
    rng = np.random.default_rng(2)
    utt = pause_sets.Utterance(_words((0.5, 1.1), (1.3, 2.2)), 0.5, 2.2)
    paused, at = utt.with_pause(0.6, rng)
    assert 1.1 <= at <= 1.3
    assert paused.speech_end == pytest.approx(2.8) and paused.speech_start == 0.5
    gap = paused.samples[int((at + 0.05) * SAMPLE_RATE): int((at + 0.55) * SAMPLE_RATE)]
    assert 1e-4 < np.sqrt(np.mean(gap**2)) < 3e-3  # the floor, not silence or speech
    tailed = utt.with_tail(rng, 1.0)
    assert len(tailed.samples) == int(2.2 * SAMPLE_RATE) + SAMPLE_RATE


def test_the_longest_pause_is_the_silence_the_vad_hears_between_words() -> None:
    """What the end-pointer waits through: a pause spliced between words is heard at its
    length; spliced where the speaker already paused, the two make one longer pause."""
    entries = read_manifest(Path(__file__).parent / "data" / "manifest.jsonl")
    plain, paused_already = entries[2], entries[1]  # "dial seven ..."; rendered with a pause
    rng = np.random.default_rng(0)
    for entry, low, high in ((plain, 0.55, 0.75), (paused_already, 1.0, 1.4)):
        utt = pause_sets.Utterance.read(entry.audio_filepath, entry.speech_start,
                                        entry.speech_end)
        spliced, _ = utt.with_pause(0.6, rng)
        before = pause_sets.longest_pause(utt.samples, utt.speech_start, utt.speech_end)
        after = pause_sets.longest_pause(spliced.samples, spliced.speech_start,
                                         spliced.speech_end)
        assert low <= after <= high and after >= before + 0.55
    assert pause_sets.longest_pause(utt.samples, 0.0, 0.3) == 0.0  # no speech on both sides


def test_build_writes_whole_and_paused_sets_of_the_same_utterances(tmp_path: Path) -> None:
    audio, manifests = tmp_path / "audio", tmp_path / "manifests"
    (audio / "src").mkdir(parents=True)
    manifests.mkdir()
    rows = []
    for i, spans in enumerate([((0.5, 1.1), (1.3, 2.2)), ((0.4, 1.0), (1.2, 2.0)),
                               ((0.5, 0.8),), ((0.5, 1.0), (1.2, 2.0))]):
        sf.write(audio / "src" / f"{i}.wav", _words(*spans), SAMPLE_RATE)
        tags = ["pause"] if i == 3 else []  # rendered with pauses: left out
        rows.append({"text": f"utterance {i}", "audio_filepath": f"../audio/src/{i}.wav",
                     "tags": tags})
    (manifests / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pause_sets.build(manifests / "demo.jsonl", manifests, audio, "demo") == (2, 2)
    whole = [json.loads(x) for x in (manifests / "eoq_demo.jsonl").read_text().splitlines()]
    paused = [json.loads(x) for x in (manifests / "eoq_demo_pause.jsonl").read_text().splitlines()]
    assert [r["text"] for r in whole] == [r["text"] for r in paused] == ["utterance 0",
                                                                         "utterance 1"]
    for w, p in zip(whole, paused, strict=True):
        assert "mid_pause" in p["tags"] and 0.3 <= p["pause_s"] <= 0.8
        assert p["speech_end"] == pytest.approx(w["speech_end"] + p["pause_s"], abs=0.002)
        assert w["duration"] - w["speech_end"] >= pause_sets.TAIL_S - 0.01
        assert (manifests / p["audio_filepath"]).is_file()


def test_noisy_sets_are_the_same_requests_and_pauses_with_noise_in_the_pauses(
        tmp_path: Path) -> None:
    """`--noise music:10`: what the clean sets hold, with music in the gaps and the tail,
    where the end-pointer decides (the clean build is untouched)."""
    audio, manifests = tmp_path / "audio", tmp_path / "manifests"
    (audio / "src").mkdir(parents=True)
    manifests.mkdir()
    rows = []
    for i, spans in enumerate([((0.5, 1.1), (1.3, 2.2)), ((0.4, 1.0), (1.2, 2.0))]):
        sf.write(audio / "src" / f"{i}.wav", _words(*spans), SAMPLE_RATE)
        rows.append({"text": f"utterance {i}", "audio_filepath": f"../audio/src/{i}.wav"})
    (manifests / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pause_sets.build(manifests / "demo.jsonl", manifests, audio, "demo")
    for kind in ("music", "babble"):
        assert pause_sets.build(manifests / "demo.jsonl", manifests, audio, "demo",
                                noise=(kind, 10.0)) == (2, 2)
        for suffix in ("", "_pause"):
            clean = [json.loads(x) for x in
                     (manifests / f"eoq_demo{suffix}.jsonl").read_text().splitlines()]
            noisy = [json.loads(x) for x in
                     (manifests / f"eoq_demo_{kind}10{suffix}.jsonl").read_text().splitlines()]
            same = ("text", "speech_end", "duration", "longest_pause_s")  # heard in clean audio
            assert ([{k: r[k] for k in same} for r in clean]
                    == [{k: r[k] for k in same} for r in noisy])
            for c, n in zip(clean, noisy, strict=True):
                quiet, _ = sf.read(manifests / c["audio_filepath"])
                loud, _ = sf.read(manifests / n["audio_filepath"])
                tail = slice(int((c["speech_end"] + 0.2) * SAMPLE_RATE), None)
                speech_rms = np.sqrt(np.mean(quiet[:tail.start] ** 2))
                # about 10 dB under the speech where there is no speech
                assert np.sqrt(np.mean(loud[tail] ** 2)) > speech_rms / 10
                assert np.sqrt(np.mean(quiet[tail] ** 2)) < speech_rms / 100


def test_an_unknown_noise_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown noise 'rain'"):
        pause_sets.mix(np.zeros(1600, np.float32), "rain", 10.0, np.random.default_rng(0))
    with pytest.raises(SystemExit):
        pause_sets.main(["--data", "/nonexistent", "--sets", "x", "--noise", "rain:10"])


# ---------------------------------------------------------------- fit, replay, tune

def _recorded(speech_end: float, pause: tuple[float, float] | None, over: float,
              inside: float) -> DecisionPoints:
    """Decision points every 40 ms of silence: in a mid-request pause (scalar feature
    `inside`) and after the end (`over`)."""
    utt = DecisionPoints(speech_end)
    spans = ([(pause[0], pause[1], inside)] if pause else []) + [(speech_end,
                                                                  speech_end + 1.5, over)]
    for a, b, value in spans:
        for t in np.arange(a + 0.04, b, 0.04):
            utt.times.append(float(t))
            utt.silences.append(float(t - a))
            utt.features.append(np.array([value, t - a], np.float32))
    return utt


def _linear(threshold: float = 0.5) -> QueryEndModel:
    """P(over) = sigmoid(8 tanh(feature) - 4): 0.08 at 0.2, 0.35 at 0.45, 0.85 at 0.9."""
    return QueryEndModel(np.zeros(2), np.ones(2), np.array([[1.0, 0.0]]), np.zeros(1),
                         np.array([8.0]), -4.0, threshold)


def test_replay_counts_cuts_in_a_pause_and_measures_the_rest() -> None:
    utts = [_recorded(2.0, (1.0, 1.6), over=0.9, inside=0.2),
            _recorded(2.0, (1.0, 1.6), over=0.9, inside=0.45)]
    model = _linear()
    low = replay(model, utts, 0.3)  # 0.45 inside reads P > 0.3: the second one is cut
    assert low.premature == 0.5
    high = replay(model, utts, 0.6)
    assert high.premature == 0.0
    # the first point at or after final_silence_min (0.35 s) of silence
    assert high.ep50 == pytest.approx(0.36, abs=0.01)
    assert tune(model, utts, 0.0)[0] == pytest.approx(0.36)  # lowest without a cut
    # Counting only the cuts of requests with short pauses (the first), 0.3 will do.
    assert replay(model, utts, 0.3, short=[True, False]).premature_short == 0.0
    assert replay(model, utts, 0.3, short=[False, True]).premature_short == 1.0
    assert tune(model, utts, 0.0, short=[True, False])[0] == pytest.approx(0.30)
    assert tune(model, utts, 0.0, short=[False, False])[0] == pytest.approx(0.36)  # none: all


def test_replay_counts_the_cuts_of_the_silence_timeout_and_the_ends_nothing_found() -> None:
    """A pause longer than silence_timeout cuts whatever the classifier says, as the
    end-pointer does; an end the classifier never calls counts at the recording's limit,
    not as missing from the latencies."""
    model = _linear()
    long_pause = _recorded(3.0, (1.0, 2.7), over=0.9, inside=0.0)
    assert replay(model, [long_pause], 0.6).premature == 1.0
    never = _recorded(2.0, None, over=0.0, inside=0.0)  # silence up to 1.48 s, P 0.02
    ended = replay(model, [never], 0.6)
    assert ended.premature == 0.0 and ended.ep50 == pytest.approx(2.5)


def test_fit_learns_what_tells_a_pause_from_the_end() -> None:
    utts = [_recorded(2.0, (1.0, 1.6), over=1.0, inside=0.0) for _ in range(4)]
    model = fit(utts, hidden=4, epochs=20)
    over = [model.probability(x) for x in utts[0].features[-5:]]
    inside = [model.probability(x) for x, t in zip(utts[0].features, utts[0].times,
                                                     strict=True) if t < 1.6]
    assert min(over) > 0.9 and max(inside) < 0.1


def test_recording_labels_a_pause_inside_unfinished_and_the_end_over(recognizer) -> None:
    """The training examples: decision points in a spliced pause say "more comes", those
    after the end of speech "over"."""
    entry = read_manifest(Path(__file__).parent / "data" / "manifest.jsonl")[0]
    rng = np.random.default_rng(0)
    utt = pause_sets.Utterance.read(entry.audio_filepath, entry.speech_start, entry.speech_end)
    paused, at = utt.with_tail(rng).with_pause(0.7, rng)
    recorded = record(recognizer, paused.samples, paused.speech_end)
    times, labels = np.asarray(recorded.times), recorded.labels
    inside = (times > at + 0.35) & (times < at + 0.65)
    after = times > paused.speech_end + 0.5
    assert inside.any() and not labels[inside].any()
    assert after.any() and labels[after].all()
    assert len(recorded.features[0]) == len(FEATURES)


def test_training_uses_the_default_sets_a_data_folder_has_and_refuses_missing_named_ones(
        tmp_path: Path, capsys) -> None:
    """A data folder made without --other-engines lacks train_voices4: the default leaves it
    out and says so; a set the user names must be there."""
    import argparse

    from edge_asr.models.query_end_train import TRAIN_SETS, training_sets

    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "speechocean762_train.jsonl").write_text("")
    p = argparse.ArgumentParser()
    assert training_sets(p, tmp_path, None) == ["train", "speechocean762_train"]
    assert "train_voices4" in capsys.readouterr().out
    assert training_sets(p, tmp_path, ["train"]) == ["train"]
    with pytest.raises(SystemExit):
        training_sets(p, tmp_path, ["train", "train_voices4"])
    assert "train_voices4.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        training_sets(p, tmp_path / "empty", None)
    err = capsys.readouterr().err
    assert all(s in err for s in TRAIN_SETS)


def test_the_threshold_is_tuned_on_requests_with_short_pauses_or_says_why_not(
        tmp_path: Path) -> None:
    import argparse

    from edge_asr.models.query_end_train import short_pauses

    rows = [{"audio_filepath": "a.wav", "longest_pause_s": 0.4},
            {"audio_filepath": "b.wav", "longest_pause_s": 1.1}]
    (tmp_path / "eoq_dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "old.jsonl").write_text(json.dumps({"audio_filepath": "a.wav"}) + "\n")
    p = argparse.ArgumentParser()
    assert short_pauses(p, tmp_path, ["eoq_dev"], 0.7) == [True, False]
    assert short_pauses(p, tmp_path, ["old"], 0.0) is None  # no limit: every request counts
    with pytest.raises(SystemExit):  # an older manifest: build it again
        short_pauses(p, tmp_path, ["old"], 0.7)


def test_the_endpoint_board_shows_the_cuts_of_requests_with_short_pauses() -> None:
    from edge_asr.models.endpoint_board import table
    from edge_asr.models.evaluate import summarize

    row = {"text": "a b", "hypothesis": "a", "tags": [], "duration": 2.0, "cpu_seconds": 0.1,
           "speech_end": 1.5, "speculative_endpoint": 1.2, "final_endpoint": 1.3,
           "reset": False, "lattice_bytes": 100}
    figures = {"eoq_x_pause": {"learned": summarize([{**row, "longest_pause_s": 0.5},
                                                     {**row, "longest_pause_s": 1.5,
                                                      "final_endpoint": 1.9}])},
               "eoq_y": {"rules": summarize([row])}}
    lines = table(figures).splitlines()
    assert "pauses <= 0.7 s" in lines[0]
    assert "| eoq_x_pause | learned | 50.0% / 100.0% |" in lines[2]
    assert "| eoq_y | rules | 100.0% / - |" in lines[3]
