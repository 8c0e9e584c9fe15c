"""context_fallback: an utterance in which the biasing context wins no phrase comes out as
it would without the context (the plain beam run beside the biased one stands in)."""

import json
from pathlib import Path

import pytest

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.recognition.name_rescue import ContextPhrase
from edge_asr.daemon.recognition.recognizer import (
    DEFAULT_MODEL_DIR,
    Recognizer,
    RecognizerConfig,
    context_claims,
)
from edge_asr.daemon.text import normalize_text

DATA = Path(__file__).parent / "data"
ROWS = [json.loads(line) for line in (DATA / "manifest.jsonl").open() if line.strip()]

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model_card.json").is_file(),
                                reason="needs the shipped model")


def decode(recognizer: Recognizer, row: dict, context=None):
    stream = recognizer.create_stream(context=context)
    stream.accept_waveform(16000, read_audio(DATA / row["audio_filepath"]))
    stream.input_finished()
    recognizer.decode(stream)
    return recognizer.result(stream)


def claimed(biased: str, plain: str, context: dict) -> bool:
    """Whether the biased text says a context phrase, or a contact's word the plain beam
    did not hear: then the biased result stands."""
    entries = [normalize_text(e) for names in context.values() for e in names]
    if any(f" {e} " in f" {biased} " for e in entries):
        return True
    contact_words = {w for e in context.get("contacts", ()) for w in normalize_text(e).split()}
    return bool((set(biased.split()) - set(plain.split())) & contact_words)


@pytest.fixture(scope="module")
def recognizers():
    on = Recognizer(RecognizerConfig())
    off = Recognizer(RecognizerConfig(context_fallback=False), model=on.model)
    # The plain beam stands in as wide as the biased one searched.
    wide = Recognizer(RecognizerConfig(beam=on.config.beam_with_context), model=on.model)
    return on, off, wide


def test_without_a_phrase_won_the_result_is_the_plain_one(recognizers):
    on, off, wide = recognizers
    # Each clip with another clip's context (its names and devices are not said here), until
    # the boosted partial matches have steered the biased beam on a few clips and the
    # fallback has stood in at least once. Which pairs do that depends on the model, so
    # they are searched for, not listed: a new model moves them.
    steered = fell_back = 0
    for shift in (9, 1, 5, 13):
        for clip, row in enumerate(ROWS):
            context = ROWS[(clip + shift) % len(ROWS)]["context"]
            plain = decode(wide, row)
            biased = decode(off, row, context)
            result = decode(on, row, context)
            if claimed(biased.text, plain.text, context):
                assert result.text == biased.text, clip
            else:
                assert (result.tokens, result.nbest, result.nbest_log_probs) == (
                    plain.tokens, plain.nbest, plain.nbest_log_probs), clip
                assert result.nbest_bias == [0.0] * len(result.nbest)
                fell_back += biased.text != plain.text
            steered += biased.text != plain.text
            if steered >= 3 and fell_back >= 1:
                return
    pytest.fail(f"the contexts steered {steered} clips and the fallback stood in on "
                f"{fell_back}: these clips do not exercise it")


def test_what_the_context_claims():
    def phrase(text: str, slot: bool = True) -> ContextPhrase:
        return ContextPhrase(text, (1,), 1.5, slot)

    phrases = [phrase("nikolai whitfield"), phrase("the blue lamp", slot=False)]
    assert context_claims("call nikolai whitfield", "call nicola", phrases)
    assert context_claims("turn on the blue lamp", "turn on the blue lamb", phrases)
    # half a name the plain beam missed; not when the plain beam heard it too
    assert context_claims("video call nikolai whit", "redial wit cell", phrases)
    assert not context_claims("call nikolai now", "call nikolai now please", phrases)
    # a device's word alone claims nothing ("blue" of "bluegrass")
    assert not context_claims("play blue rass radio", "play bluegrass radio", phrases)
    assert not context_claims("take yogort off", "take yogurt off", phrases)


def test_a_phrase_won_keeps_the_biased_result(recognizers):
    on, off, _ = recognizers
    row = ROWS[7]  # "get yasaman grigoriev on the phone", its own context
    result = decode(on, row, row["context"])
    assert "yasaman grigoriev" in result.text
    assert result.text == decode(off, row, row["context"]).text
