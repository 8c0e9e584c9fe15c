"""The rule-based NLU: the domain's intents and slots, its cost and its cancellation."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from edge_asr.models.corpus import SentenceGenerator
from edge_asr.models.corpus_lexicon import INTENTS, load_lexicon
from edge_asr.models.corpus_person_names import split_names
from edge_asr.simulator.cloud.nlu import (
    UNKNOWN,
    NluCancelled,
    NluOptions,
    run_nlu,
    understand,
)

# The domain's examples (ARCHITECTURE.md, "The speech domain"), one or more per intent,
# with the slots they must yield.
DOMAIN_EXAMPLES = [
    ("turn on the kitchen lights", "smart_home_onoff", {"room": "kitchen"}),
    ("switch the fan off", "smart_home_onoff", {"device": "the fan"}),
    ("lights off in the bedroom", "smart_home_onoff", {"room": "bedroom"}),
    ("dim the hallway lamp to thirty percent", "smart_home_set",
     {"device": "the hallway lamp", "number": "thirty", "unit": "percent"}),
    ("set the thermostat to seventy two degrees", "smart_home_set",
     {"device": "the thermostat", "number": "seventy two", "unit": "degrees"}),
    ("make it warmer", "smart_home_set", {}),
    ("lock the front door", "locks_covers", {"device": "the front door"}),
    ("open the living room blinds", "locks_covers", {}),
    ("is the garage door closed", "locks_covers", {"device": "the garage door"}),
    ("call mom", "call", {"contact": "mom", "action": "call"}),
    ("call ananya krishnamurthy on her mobile", "call",
     {"contact": "ananya krishnamurthy", "phone_type": "mobile"}),
    ("text diego that i'm running late", "call",
     {"contact": "diego", "message": "i'm running late", "action": "message"}),
    ("dial five five five zero one nine two", "dial",
     {"digits": "five five five zero one nine two"}),
    ("set a timer for twelve minutes", "timers", {"duration": "twelve minutes"}),
    ("wake me up at six thirty a m", "timers", {"time": "six thirty a m"}),
    ("cancel the pasta timer", "timers", {"timer_name": "pasta"}),
    ("how much time is left", "timers", {}),
    ("play some jazz in the kitchen", "media", {"genre": "jazz", "room": "kitchen"}),
    ("pause", "media", {}),
    ("next song", "media", {}),
    ("turn the volume up", "media", {}),
    ("set the volume to four", "media", {"number": "four"}),
    ("what's the weather tomorrow in denver", "information",
     {"day": "tomorrow", "city": "denver"}),
    ("what time is it", "information", {}),
    ("what's on my calendar on friday", "information", {"day": "on friday"}),
    ("add oat milk to my shopping list", "lists", {"item": "oat milk", "list_name": "shopping"}),
    ("what's on my to do list", "lists", {"list_name": "to do"}),
    ("stop", "conversation", {}), ("cancel", "conversation", {}),
    ("never mind", "conversation", {}), ("yes", "conversation", {}),
    ("no", "conversation", {}), ("repeat that", "conversation", {}),
]


@pytest.mark.parametrize("text,intent,slots", DOMAIN_EXAMPLES, ids=[e[0] for e in DOMAIN_EXAMPLES])
def test_domain_examples(text, intent, slots):
    result = understand(text.split())
    assert result.intent == intent
    for name, value in slots.items():
        assert result.slots.get(name) == value, (name, result.slots)


def test_every_corpus_intent_is_recognised_in_many_phrasings():
    lexicon = load_lexicon()
    names = split_names(lexicon, random.Random("0:names"))
    generator = SentenceGenerator(lexicon, names.train)
    utterances = generator.sample(2000, random.Random("nlu-test"), set())
    right, total = Counter(), Counter()
    for u in utterances:
        total[u.intent] += 1
        right[u.intent] += understand(u.text.split()).intent == u.intent
    assert set(total) == set(INTENTS)
    for intent in INTENTS:
        assert right[intent] / total[intent] >= 0.95, (intent, right[intent], total[intent])
    assert sum(right.values()) / len(utterances) >= 0.98


def test_politeness_is_ignored_and_nonsense_is_unknown():
    plain = understand("turn on the kitchen lights".split())
    polite = understand("hey could you please turn on the kitchen lights for me".split())
    assert polite == plain
    assert understand([]).intent == UNKNOWN
    assert understand("purple monkey dishwasher".split()).intent == UNKNOWN


def test_cost_is_spent_before_the_answer():
    started = time.monotonic()
    result = run_nlu("next song".split(), NluOptions(cost_s=0.15))
    assert time.monotonic() - started >= 0.15
    assert result.intent == "media"


def test_cancel_stops_the_wait_at_once():
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(NluCancelled):
        run_nlu("next song".split(), NluOptions(cost_s=10.0), cancel)
    assert time.monotonic() - started < 2.0
    with pytest.raises(NluCancelled):  # already cancelled: no work at all
        run_nlu("next song".split(), NluOptions(), cancel)
