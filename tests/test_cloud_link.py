"""The device's side of the cloud: the link (reconnects, bounded outbox) and the finisher
that closes every utterance with RESCORED or ON_DEVICE_FINAL, against a real
`edge-asr cloud` server on loopback."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path as FsPath

import numpy as np
import pytest
import soundfile as sf

from edge_asr.daemon.capture.audio import read_audio
from edge_asr.daemon.pipeline import Event, EventType
from edge_asr.daemon.uplink.cloud_link import (
    CloudLink,
    CloudLinkConfig,
    CloudResult,
    backoff_delays,
)
from edge_asr.daemon.uplink.finisher import Finisher
from edge_asr.daemon.uplink.lattice import Path, WordArc, build_lattice
from edge_asr.simulator.cloud.dev_set import load_dev_set
from edge_asr.simulator.cloud.name_classes import Contacts

# The device's acoustics prefer a homophone the LM knows to be wrong.
SPECULATIVE = [("turn of the kitchen", -4.0), ("turn off the kitchen", -5.0)]
REVISED = [("turn of the kitchen lights", -5.0), ("turn off the kitchen lights", -6.0)]


def lattice(texts, utterance_id: str, revision: int):
    paths = [Path([WordArc(w, 0.3 * i, 0.3 * i + 0.25, score / len(text.split()))
                   for i, w in enumerate(text.split())]) for text, score in texts]
    return build_lattice(paths, utterance_id, revision, speculative=revision == 1)


def spec(utt: str = "u1") -> list[Event]:
    return [Event(EventType.SPEECH_STARTED, utt, 0.1, speech_start=0.1),
            Event(EventType.SPECULATIVE_ENDPOINT, utt, 1.2, SPECULATIVE[0][0], revision=1,
                  nbest=SPECULATIVE, lattice=lattice(SPECULATIVE, utt, 1))]


def confirmed(utt: str = "u1") -> Event:
    return Event(EventType.CONFIRMED, utt, 1.4, SPECULATIVE[0][0], revision=1)


def revised(utt: str = "u1") -> list[Event]:
    return [Event(EventType.RESET, utt, 1.3, revision=1, reason="speech resumed"),
            Event(EventType.FINAL_ENDPOINT, utt, 2.0, REVISED[0][0], revision=2,
                  nbest=REVISED, lattice=lattice(REVISED, utt, 2))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def link_to(cloud_link):
    def connect(port: int, wait: bool = True, **config) -> CloudLink:
        link = cloud_link(f"127.0.0.1:{port}", **config)
        assert not wait or link.wait_connected(10.0)
        return link

    return connect


def types(events: list[Event]) -> list[str]:
    return [e.type.value for e in events]


def wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


# -- without a cloud --------------------------------------------------------------------

def test_local_only_closes_each_utterance_with_the_devices_own_best():
    out: list[Event] = []
    finisher = Finisher(out.append)
    finisher.process([*spec(), confirmed()])
    assert types(out) == ["SPEECH_STARTED", "SPECULATIVE_ENDPOINT", "CONFIRMED",
                          "ON_DEVICE_FINAL"]
    closing = out[-1]
    assert closing.text == SPECULATIVE[0][0] and closing.nbest == SPECULATIVE
    assert closing.revision == 1 and closing.reason == "local-only"
    out.clear()
    finisher.process([*spec("u2"), *revised("u2")])
    assert out[-1].type is EventType.ON_DEVICE_FINAL and out[-1].revision == 2
    assert out[-1].text == REVISED[0][0]


class RecordingLink:
    """Stands in for CloudLink: records what the finisher asks of it."""

    connected = True

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def upload(self, lat, on_result, contacts=()) -> None:
        self.calls.append(("upload", lat.utterance_id, lat.revision))
        self.contacts = tuple(contacts)

    def reset(self, utt: str) -> None:
        self.calls.append(("reset", utt))

    def confirm(self, utt: str, revision: int) -> None:
        self.calls.append(("confirm", utt, revision))

    def forget(self, utt: str) -> None:
        self.calls.append(("forget", utt))

    def missed_answer(self) -> None:
        self.calls.append(("missed",))


def test_stale_answers_never_surface():
    out: list[Event] = []
    link = RecordingLink()
    finisher = Finisher(out.append, link, deadline_s=5.0)
    finisher.process(spec())
    finisher.on_result(CloudResult("u1", 1, [("turn off the kitchen", 0.0)]))  # early, rev 1
    finisher.process(revised())  # ... withdrawn by the reset
    finisher.on_result(CloudResult("u1", 1, [("turn off the kitchen", 0.0)]))  # late rev 1
    finisher.on_result(CloudResult("u9", 1, [("never asked", 0.0)]))
    assert EventType.RESCORED not in [e.type for e in out]
    assert finisher.counters.stale_results == 2
    finisher.on_result(CloudResult("u1", 2, [("turn off the kitchen lights", 0.0)], "x"))
    assert out[-1].type is EventType.RESCORED and out[-1].revision == 2
    assert link.calls == [("upload", "u1", 1), ("reset", "u1"), ("upload", "u1", 2),
                          ("forget", "u1")]
    finisher.on_result(CloudResult("u1", 2, [("again", 0.0)]))  # after the close: stale
    assert [e.type for e in out].count(EventType.RESCORED) == 1


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    cfg = CloudLinkConfig(address="x:1", backoff_initial_s=0.1, backoff_max_s=1.0,
                          backoff_jitter=0.5)
    delays = backoff_delays(cfg, random.Random(1))
    got = [next(delays) for _ in range(8)]
    for i, d in enumerate(got):
        base = min(1.0, 0.1 * 2 ** i)
        assert 0.5 * base <= d <= 1.5 * base
    assert len({round(d, 6) for d in got[4:]}) > 1  # jittered, not in lockstep
    with pytest.raises(ValueError, match="backoff_jitter"):
        CloudLinkConfig(address="x:1", backoff_jitter=1.5)


def test_outbox_is_bounded_and_counts_what_it_drops():
    link = CloudLink(CloudLinkConfig(address=f"127.0.0.1:{free_port()}", outbox_size=4))
    for i in range(10):  # not started: nothing drains the outbox
        link.upload(lattice(SPECULATIVE, f"u{i}", 1), lambda r: None)
    assert link.counters.outbox_drops == 6


# -- against a real cloud ---------------------------------------------------------------

def test_the_speculative_answer_is_ready_when_the_final_end_point_confirms(cloud, link_to):
    link = link_to(cloud().port)
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=5.0)
    finisher.process(spec())
    wait_for(lambda: link.counters.results == 1)  # the cloud answered while we "listened"
    finisher.process([confirmed()])
    # RESCORED follows CONFIRMED at once: no round trip after the final end-point.
    assert types(out)[-2:] == ["CONFIRMED", "RESCORED"]
    rescored = out[-1]
    assert rescored.text == "turn off the kitchen"  # the LM fixed the device's homophone
    assert rescored.revision == 1 and rescored.intent and rescored.nbest
    assert finisher.counters.early_results == 1
    assert link.counters.bytes_sent > 0


def test_reset_cancels_revision_one_and_revision_two_is_rescored(cloud, link_to):
    link = link_to(cloud(nlu_cost_s=0.5).port)
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=5.0)
    finisher.process([*spec(), *revised()])
    assert finisher.wait_idle(10.0)
    closing = out[-1]
    assert closing.type is EventType.RESCORED and closing.revision == 2
    assert closing.text == "turn off the kitchen lights"
    assert [e.type for e in out].count(EventType.RESCORED) == 1
    wait_for(lambda: link.counters.cancelled >= 1)  # the cloud dropped revision 1's work


def test_a_slow_cloud_past_the_deadline_gives_the_on_device_final(cloud, link_to):
    link = link_to(cloud(slow_s=1.0).port)
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=0.2)
    finisher.process([*spec(), confirmed()])
    assert finisher.wait_idle(5.0)
    assert out[-1].type is EventType.ON_DEVICE_FINAL and out[-1].reason == "cloud late"
    assert out[-1].text == SPECULATIVE[0][0]
    wait_for(lambda: link.counters.results + link.counters.unrouted >= 1, 5.0)
    time.sleep(0.1)
    assert EventType.RESCORED not in [e.type for e in out]  # the late answer was dropped


def test_a_cloud_killed_mid_utterance_gives_the_on_device_final(cloud, link_to):
    server = cloud(nlu_cost_s=2.0)
    link = link_to(server.port)
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=0.3)
    finisher.process(spec())
    wait_for(lambda: link.counters.uploads == 1)
    server.stop(None).wait()
    finisher.process([confirmed()])
    assert finisher.wait_idle(5.0)
    assert types(out)[-2:] == ["CONFIRMED", "ON_DEVICE_FINAL"]
    assert out[-1].text == SPECULATIVE[0][0] and out[-1].nbest == SPECULATIVE


def test_the_link_reconnects_and_resends_what_still_waits(cloud, link_to):
    port = free_port()
    link = link_to(port, wait=False)
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=10.0)
    finisher.process([*spec(), confirmed()])  # no cloud yet: the lattice waits
    wait_for(lambda: link.counters.connect_failures >= 2)
    assert not link.connected
    cloud(port=port)
    assert link.wait_connected(10.0)
    assert finisher.wait_idle(10.0)
    assert out[-1].type is EventType.RESCORED and out[-1].text == "turn off the kitchen"


def test_local_only_daemon_opens_no_link(tiny_model_dir):
    from edge_asr.daemon.api.config import DaemonConfig, SourceConfig
    from edge_asr.daemon.api.service import Daemon
    from edge_asr.daemon.recognition.recognizer import RecognizerConfig

    config = DaemonConfig(recognizer=RecognizerConfig(model_dir=tiny_model_dir),
                          source=SourceConfig(kind="none"), local_only=True)
    config.cloud.address = f"127.0.0.1:{free_port()}"
    daemon = Daemon(config)
    assert daemon.link is None and daemon.finisher.link is None
    assert "cloud_bytes_sent" not in daemon.status()


def test_eval_with_a_cloud_fills_rescored(cloud, tiny_model_dir, tmp_path):
    from edge_asr.daemon.cli import main

    data = FsPath(__file__).parent / "data"
    rows = [json.loads(line) for line in (data / "manifest.jsonl").open()][:2]
    for row in rows:
        row["audio_filepath"] = str(data / row["audio_filepath"])
    # Two requests 2.5 s apart in one clip: two utterances, so no one lattice for its text.
    both = np.concatenate([read_audio(rows[0]["audio_filepath"]), np.zeros(40000, np.float32),
                           read_audio(rows[1]["audio_filepath"])])
    sf.write(tmp_path / "both.wav", both, 16000, subtype="FLOAT")
    rows.append({**rows[1], "audio_filepath": str(tmp_path / "both.wav"),
                 "text": rows[0]["text"] + " " + rows[1]["text"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    assert main(["eval", str(manifest), "--output", str(out), "--model", str(tiny_model_dir),
                 "--decoding", "greedy_search", "--cloud", f"127.0.0.1:{cloud().port}",
                 "--summary-json", str(summary), "--lattices", str(tmp_path / "lat.jsonl")]) == 0
    results = [json.loads(line) for line in out.open()]
    assert all(isinstance(r["rescored"], str) for r in results)
    assert all(r["lattice_bytes"] > 0 for r in results)
    figures = json.loads(summary.read_text())
    assert figures["rescored"] == len(results)
    # Lattice bytes against the audio they stand for (16 kHz PCM: 32,000 bytes a second).
    ratios = sorted(r["lattice_bytes"] / (r["duration"] * 32000) for r in results)
    assert figures["lattice_to_pcm_median"] == pytest.approx(ratios[1], abs=1e-5)  # 5 places
    # The standing lattices, in the cloud's tuning format, of the clips heard as one request.
    assert [r["utterances"] for r in results] == [1, 1, 2]
    dev = load_dev_set(tmp_path / "lat.jsonl")
    assert [" ".join(d.reference) for d in dev] == [r["text"] for r in results[:2]]
    # with the contacts each was heard with, as the cloud's name class gets them
    assert [d.contacts for d in dev] == [Contacts.of(r["context"]["contacts"]) for r in rows[:2]]
    assert all(d.contacts for d in dev)


def test_a_hung_cloud_session_is_dropped_and_opened_anew(cloud, link_to):
    link = link_to(cloud(slow_s=3.0).port, max_missed_answers=2)
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=0.1)
    for i in range(2):
        finisher.process([*spec(f"u{i}"), confirmed(f"u{i}")])
        assert finisher.wait_idle(5.0)
    assert [e.type for e in out].count(EventType.ON_DEVICE_FINAL) == 2
    wait_for(lambda: link.counters.stalled_sessions == 1 and link.counters.sessions == 2)


def test_an_answer_for_the_withdrawn_revision_does_not_swallow_the_revised_one():
    """Revision 1 was answered before the cloud heard the reset; that answer reaches the
    device after revision 2 went up. Revision 2's answer must still be delivered."""
    from edge_asr.daemon.api.proto import cloud_pb2

    def answer(revision: int, words: str) -> cloud_pb2.ServerMessage:
        return cloud_pb2.ServerMessage(rescored=cloud_pb2.Rescored(
            utterance_id="u1", revision=revision,
            nbest=[cloud_pb2.Hypothesis(words=words.split(), total=-1.0)]))

    link = CloudLink(CloudLinkConfig(address=f"127.0.0.1:{free_port()}"))  # not started
    out: list[Event] = []
    finisher = Finisher(out.append, link, deadline_s=5.0)
    finisher.process([*spec(), *revised()])  # rev 1 up, reset, rev 2 up, final decision
    link._handle(answer(1, "turn off the kitchen"))  # late: for the withdrawn revision
    link._handle(answer(2, "turn off the kitchen lights"))
    assert out[-1].type is EventType.RESCORED and out[-1].revision == 2
    assert out[-1].text == "turn off the kitchen lights"
    assert finisher.counters.stale_results == 1
