"""models/long_context.py: phone-book long contexts for evaluating biasing."""

from edge_asr.models.long_context import long_contexts


def test_each_context_keeps_its_own_entries_and_grows_to_the_size_asked():
    contexts = [{"contacts": ["ana", "bo"], "devices": ["the lamp"]},
                {"contacts": ["cy", "di", "ed"], "devices": ["the fan", "the door"]},
                {"contacts": ["fay"], "devices": []}]
    grown = long_contexts(contexts, {"contacts": 4, "devices": 2}, seed=1)
    for own, new in zip(contexts, grown, strict=True):
        for kind, size in (("contacts", 4), ("devices", 2)):
            assert set(own[kind]) <= set(new[kind])  # what the utterance may say stays
            assert len(new[kind]) == len(set(new[kind])) == size  # no repeats
            assert set(new[kind]) <= {n for c in contexts for n in c[kind]}
    # seeded: the same lists every time; a size beyond the pool gives the whole pool
    assert long_contexts(contexts, {"contacts": 4, "devices": 2}, seed=1) == grown
    whole = long_contexts(contexts, {"contacts": 100, "devices": 100})
    assert all(sorted(c["contacts"]) == ["ana", "bo", "cy", "di", "ed", "fay"] for c in whole)
