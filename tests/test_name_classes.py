"""The cloud LM's <contact> class, filled with the user's contacts at rescoring time."""

from __future__ import annotations

import math

import pytest

from edge_asr.daemon.uplink.lattice import Path, WordArc, build_lattice
from edge_asr.models.ngram_train import NgramOptions, train_ngram
from edge_asr.simulator.cloud.lm import CloudLM, RescoreWeights
from edge_asr.simulator.cloud.name_classes import (
    CONTACT,
    MAX_CONTACTS,
    Contacts,
    ContextError,
    class_reading,
    contacts_said,
)
from edge_asr.simulator.cloud.rescore import rescore

# Trained as the recipe trains the cloud LM: many names as the class, so the LM knows
# where a name goes without knowing the name.
TRAIN = [s.split() for s in [
    f"call {CONTACT} on her mobile", f"call {CONTACT} at work", f"text {CONTACT}",
    "call mom on her mobile", "call ben at work", "play some jazz", "turn off the lights",
    f"send {CONTACT} a message", "ben or jerry", "call bend or leave",
]] * 3


def lattice(*texts_and_scores: tuple[str, float], utterance_id: str = "u", revision: int = 1):
    paths = [Path([WordArc(w, 0.3 * i, 0.3 * i + 0.25, score / len(t.split()))
                   for i, w in enumerate(t.split())]) for t, score in texts_and_scores]
    return build_lattice(paths, utterance_id, revision, revision == 1)


@pytest.fixture(scope="module")
def lm() -> CloudLM:
    return CloudLM(train_ngram(TRAIN, NgramOptions(order=3)), None,
                   RescoreWeights(lm_weight=1.0, length_bonus=0.0, ngram_lambda=1.0), "test")


def test_contacts_are_normalised_as_recognised_text_is():
    contacts = Contacts.of(["Benoît Leroy", "Ngô Thắng", "Yan", "  "])
    assert contacts.names == {("benoit", "leroy"), ("ngo", "thang"), ("yan",)}
    assert contacts.longest == 2
    assert contacts.in_class_logprob == pytest.approx(-math.log(3))


def test_a_path_reads_its_contacts_as_the_class_longest_first():
    contacts = Contacts.of(["Ben", "Ben Oram", "Leroy"])
    assert class_reading("call ben oram and leroy".split(), contacts) == (
        ("call", CONTACT, "and", CONTACT), 2)
    assert class_reading("call mom".split(), contacts) == (("call", "mom"), 0)


def test_the_contacts_a_text_says_are_found_longest_first():
    contacts = Contacts.of(["Ben", "Ben Oram", "Leroy"])
    assert contacts_said("call ben oram and ben".split(), contacts) == {("ben", "oram"),
                                                                       ("ben",)}
    assert contacts_said("call benoit".split(), contacts) == frozenset()


def test_the_class_brings_a_listed_name_the_lm_never_saw(lm):
    heard = lattice(("call ben or leroy at work", -10.0), ("call benoit leroy at work", -11.0))
    assert rescore(heard, lm)[0].text == "call ben or leroy at work"  # no list: the words win
    with_list = rescore(heard, lm, contacts=Contacts.of(["Benoît Leroy", "Ana Lima"]))
    assert with_list[0].text == "call benoit leroy at work"
    # The class reading is only an alternative: a path without a name is scored as before.
    plain = lattice(("turn off the lights", -4.0))
    assert rescore(plain, lm, contacts=Contacts.of(["Ana"]))[0].lm == \
        pytest.approx(rescore(plain, lm)[0].lm)


def test_a_long_list_makes_each_name_less_likely(lm):
    heard = lattice(("call ben or leroy at work", -10.0), ("call benoit leroy at work", -11.0))
    crowd = Contacts.of(["Benoît Leroy"] + [f"Person {i}" for i in range(MAX_CONTACTS - 1)])
    few = Contacts.of(["Benoît Leroy"])
    assert rescore(heard, lm, contacts=few)[0].lm > rescore(heard, lm, contacts=crowd)[0].lm


def test_an_lm_without_the_class_ignores_the_list():
    words_only = CloudLM(train_ngram([s for s in TRAIN if CONTACT not in s],
                                     NgramOptions(order=3)), None,
                         RescoreWeights(1.0, 0.0, 1.0), "old")
    assert not words_only.has_contact_class
    heard = lattice(("call ben or leroy at work", -10.0), ("call benoit leroy at work", -11.0))
    assert [p.text for p in rescore(heard, words_only, contacts=Contacts.of(["Benoit Leroy"]))] \
        == [p.text for p in rescore(heard, words_only)]


@pytest.mark.parametrize("entries,message", [
    ([f"n{i}" for i in range(MAX_CONTACTS + 1)], "contacts, more than"),
    (["x" * 201], "characters"),
])
def test_lists_beyond_the_limits_are_refused(entries, message):
    with pytest.raises(ContextError, match=message):
        Contacts.of(entries)


@pytest.fixture(scope="module")
def stub(lm):
    import grpc

    from edge_asr.daemon.api.proto import cloud_pb2_grpc
    from edge_asr.simulator.cloud.server import CloudOptions, serve_cloud

    served = serve_cloud(lm, CloudOptions())
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        yield cloud_pb2_grpc.CloudStub(channel)
    served.stop(None).wait()


HEARD = [("call ben or leroy at work", -10.0), ("call benoit leroy at work", -11.0)]


def test_the_cloud_fills_the_class_with_the_contacts_the_device_sends(stub):
    from edge_asr.daemon.api.proto import cloud_pb2
    from edge_asr.daemon.uplink.lattice import to_proto

    request = cloud_pb2.RescoreRequest(lattice=to_proto(lattice(*HEARD)))
    assert list(stub.Rescore(request).nbest[0].words) == "call ben or leroy at work".split()
    request.context.contacts.extend(["Ana Lima", "Benoît Leroy"])
    assert list(stub.Rescore(request).nbest[0].words) == "call benoit leroy at work".split()


def test_a_session_refuses_a_bad_list_and_goes_on(stub):
    import queue

    from edge_asr.daemon.api.proto import cloud_pb2
    from edge_asr.daemon.uplink.lattice import to_proto

    out: queue.Queue = queue.Queue()
    out.put(cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(device_id="d")))
    bad = cloud_pb2.LatticeUpload(lattice=to_proto(lattice(*HEARD)),
                                  context=cloud_pb2.Context(contacts=["x" * 201]))
    good = cloud_pb2.LatticeUpload(lattice=to_proto(lattice(*HEARD)),
                                   context=cloud_pb2.Context(contacts=["Benoit Leroy"]))
    good.lattice.utterance_id = "u2"
    out.put(cloud_pb2.ClientMessage(lattice=bad))
    out.put(cloud_pb2.ClientMessage(lattice=good))
    call = stub.Session(iter(out.get, None))
    answers = []
    for message in call:
        answers.append(message)
        if message.WhichOneof("message") == "rescored":
            out.put(None)
    kinds = [m.WhichOneof("message") for m in answers]
    assert kinds == ["welcome", "error", "rescored"]
    assert "characters" in answers[1].error.message and answers[1].error.utterance_id == "u"
    assert list(answers[2].rescored.nbest[0].words) == "call benoit leroy at work".split()


def test_the_device_link_sends_the_utterances_contacts_with_its_lattice(lm, cloud_link):
    from edge_asr.daemon.pipeline import Event, EventType
    from edge_asr.daemon.uplink.finisher import Finisher
    from edge_asr.simulator.cloud.server import CloudOptions, serve_cloud

    served = serve_cloud(lm, CloudOptions())
    try:
        link = cloud_link(f"127.0.0.1:{served.port}")
        assert link.wait_connected(10.0)
        out: list = []
        finisher = Finisher(out.append, link, deadline_s=10.0)
        for utt, contacts in (("u1", ()), ("u2", ("Benoît Leroy", "Ana Lima"))):
            finisher.process([
                Event(EventType.SPEECH_STARTED, utt, 0.1, speech_start=0.1),
                Event(EventType.FINAL_ENDPOINT, utt, 2.0, HEARD[0][0], revision=2,
                      nbest=HEARD, lattice=lattice(*HEARD, utterance_id=utt, revision=2),
                      contacts=contacts)])
            assert finisher.wait_idle(10.0)
        rescored = [e.text for e in out if e.type is EventType.RESCORED]
        assert rescored == ["call ben or leroy at work", "call benoit leroy at work"]
    finally:
        served.stop(None).wait()
