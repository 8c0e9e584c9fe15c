"""The cloud-rescoring service over real gRPC on loopback: sessions, resets, bad input."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path as FsPath

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from edge_asr.daemon.api.proto import cloud_pb2, cloud_pb2_grpc, lattice_pb2
from edge_asr.daemon.recognition.ngram_arpa import save_arpa
from edge_asr.daemon.uplink.lattice import Path, WordArc, build_lattice, to_proto
from edge_asr.models.ngram_train import NgramOptions, train_ngram
from edge_asr.simulator.cloud.lm import CloudLM, RescoreWeights
from edge_asr.simulator.cloud.server import CloudOptions, serve_cloud

REPO = FsPath(__file__).resolve().parent.parent
TRAIN = [s.split() for s in [
    "turn on the kitchen lights", "turn off the kitchen lights", "turn off the fan",
    "call mom on her mobile", "set a timer for ten minutes", "play some jazz in the kitchen",
    "what time is it", "next song",
]] * 3
NLU_COST_S = 1.0  # long enough that a Reset always finds the work still running
TIMEOUT_S = 10.0


def lattice(texts: list[tuple[str, float]], utterance_id: str, revision: int
            ) -> lattice_pb2.Lattice:
    paths = [Path([WordArc(w, 0.3 * i, 0.3 * i + 0.25, score / len(text.split()))
                   for i, w in enumerate(text.split())]) for text, score in texts]
    return to_proto(build_lattice(paths, utterance_id, revision, speculative=revision == 1))


SPECULATIVE = [("turn of the kitchen", -4.0), ("turn off the kitchen", -5.0)]
REVISED = [("turn of the kitchen lights", -5.0), ("turn off the kitchen lights", -6.0)]


@pytest.fixture(scope="module")
def lm() -> CloudLM:
    return CloudLM(train_ngram(TRAIN, NgramOptions(order=3)), None,
                   RescoreWeights(lm_weight=1.0, length_bonus=0.0, ngram_lambda=1.0), "tiny")


@pytest.fixture(scope="module")
def server(lm):
    served = serve_cloud(lm, CloudOptions(nlu_cost_s=NLU_COST_S, max_lattice_bytes=4096,
                                          max_message_bytes=16384, max_pending=2,
                                          max_sessions=8))
    yield served
    served.stop(None).wait()


@pytest.fixture
def stub(server) -> Iterator[cloud_pb2_grpc.CloudStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield cloud_pb2_grpc.CloudStub(channel)


class Device:
    """A session driven message by message, with the server's answers on a queue."""

    def __init__(self, stub: cloud_pb2_grpc.CloudStub, device_id: str = "dev-1") -> None:
        self._out: queue.Queue = queue.Queue()
        self.answers: queue.Queue = queue.Queue()
        self.send(cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(device_id=device_id,
                                                                model_version="m1")))
        self.call = stub.Session(iter(self._out.get, None))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.answers.put(message)
        except grpc.RpcError as exc:
            self.answers.put(exc)
        self.answers.put(None)

    def send(self, message: cloud_pb2.ClientMessage) -> None:
        self._out.put(message)

    def upload(self, message: lattice_pb2.Lattice, nbest: int = 0) -> None:
        self.send(cloud_pb2.ClientMessage(lattice=cloud_pb2.LatticeUpload(lattice=message,
                                                                          nbest=nbest)))

    def reset(self, utterance_id: str) -> None:
        self.send(cloud_pb2.ClientMessage(reset=cloud_pb2.Reset(utterance_id=utterance_id)))

    def next(self, timeout: float = TIMEOUT_S):
        answer = self.answers.get(timeout=timeout)
        if isinstance(answer, cloud_pb2.ServerMessage):
            return answer.WhichOneof("message"), getattr(answer, answer.WhichOneof("message"))
        return None, answer

    def close(self) -> list:
        """Half-closes and returns every answer still to come."""
        self._out.put(None)
        rest = []
        while (answer := self.next()) != (None, None):
            rest.append(answer)
        return rest


def test_session_says_welcome_then_rescores_with_intent(stub):
    device = Device(stub)
    kind, welcome = device.next()
    assert kind == "welcome" and welcome.lm_version == "tiny"
    assert welcome.max_lattice_bytes == 4096
    device.upload(lattice(REVISED, "utt-1", 1), nbest=2)
    kind, result = device.next()
    assert kind == "rescored"
    assert (result.utterance_id, result.revision) == ("utt-1", 1)
    assert " ".join(result.nbest[0].words) == "turn off the kitchen lights"  # the LM's fix
    assert len(result.nbest) == 2 and result.nbest[0].total >= result.nbest[1].total
    assert result.intent.name == "smart_home_onoff"
    assert result.intent.slots["room"] == "kitchen"
    assert result.timings.nlu_ms >= 0.9 * NLU_COST_S * 1000
    device.send(cloud_pb2.ClientMessage(confirm=cloud_pb2.Confirm(utterance_id="utt-1",
                                                                  revision=1)))
    assert device.close() == []


def test_reset_cancels_speculative_work_and_only_the_revision_is_answered(stub):
    device = Device(stub)
    assert device.next()[0] == "welcome"
    device.upload(lattice(SPECULATIVE, "utt-2", 1))
    device.reset("utt-2")  # while rev 1 is still in its NLU
    kind, cancelled = device.next()
    assert kind == "cancelled"
    assert (cancelled.utterance_id, cancelled.revision) == ("utt-2", 1)
    assert cancelled.was_running and cancelled.reason == "reset"
    device.upload(lattice(REVISED, "utt-2", 2))
    kind, result = device.next()
    assert kind == "rescored" and (result.utterance_id, result.revision) == ("utt-2", 2)
    assert " ".join(result.nbest[0].words) == "turn off the kitchen lights"
    assert device.close() == []  # nothing ever came for revision 1


def test_newer_revision_supersedes_pending_work(stub):
    device = Device(stub)
    assert device.next()[0] == "welcome"
    device.upload(lattice(SPECULATIVE, "utt-3", 1))
    device.upload(lattice(REVISED, "utt-3", 2))
    kind, cancelled = device.next()
    assert kind == "cancelled" and cancelled.revision == 1 and cancelled.reason == "superseded"
    kind, result = device.next()
    assert kind == "rescored" and result.revision == 2
    assert device.close() == []


def test_reset_after_the_result_still_withdraws_it(stub):
    device = Device(stub)
    assert device.next()[0] == "welcome"
    device.upload(lattice(REVISED, "utt-4", 1))
    assert device.next()[0] == "rescored"
    device.reset("utt-4")
    kind, cancelled = device.next()
    assert kind == "cancelled" and cancelled.revision == 1 and not cancelled.was_running
    device.close()


def test_concurrent_sessions_each_get_their_own_results(server):
    results: dict[str, list] = {}

    def run(device_id: str) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            device = Device(cloud_pb2_grpc.CloudStub(channel), device_id)
            device.next()
            device.upload(lattice(REVISED, f"{device_id}-u", 1))
            results[device_id] = [device.next()] + device.close()

    threads = [threading.Thread(target=run, args=(f"d{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [f"d{i}" for i in range(5)]
    for device_id, answers in results.items():
        assert [kind for kind, _ in answers] == ["rescored"]
        assert answers[0][1].utterance_id == f"{device_id}-u"


def _expect_error(device: Device, code: str, pattern: str) -> None:
    kind, error = device.next()
    assert kind == "error", (kind, error)
    assert error.code == code and re.search(pattern, error.message), error


def test_bad_messages_get_errors_and_the_session_goes_on(stub):
    device = Device(stub)
    assert device.next()[0] == "welcome"
    broken = lattice(REVISED, "bad-1", 1)
    broken.arcs[0].word = 99
    device.upload(broken)
    _expect_error(device, "INVALID_ARGUMENT", "word index 99")
    big = lattice([(" ".join(["kitchen"] * 30) + f" x{i}", -float(i + 1)) for i in range(12)],
                  "big-1", 1)
    assert 4096 < big.ByteSize() < 16384
    device.upload(big)
    _expect_error(device, "RESOURCE_EXHAUSTED", "more than the 4096 allowed")
    device.reset("never-seen")
    _expect_error(device, "NOT_FOUND", "unknown utterance")
    device.send(cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(device_id="again")))
    _expect_error(device, "FAILED_PRECONDITION", "first message")
    device.upload(lattice(REVISED, "ok-1", 2))
    assert device.next()[0] == "rescored"
    device.upload(lattice(REVISED, "ok-1", 1))  # older than the revision already seen
    _expect_error(device, "INVALID_ARGUMENT", "not newer")
    device.send(cloud_pb2.ClientMessage(confirm=cloud_pb2.Confirm(utterance_id="ok-1",
                                                                  revision=7)))
    _expect_error(device, "NOT_FOUND", "standing revision")
    device.upload(lattice(REVISED, "ok-2", 1))
    assert device.next()[0] == "rescored"
    assert device.close() == []


def test_full_session_queue_is_refused_not_stalled(stub):
    device = Device(stub)
    assert device.next()[0] == "welcome"
    for i in range(4):  # one running, two queued (max_pending=2 counts all unfinished)
        device.upload(lattice(REVISED, f"q{i}", 1))
    answers = [device.next() for _ in range(4)]
    errors = [a for kind, a in answers if kind == "error"]
    assert errors and all(e.code == "RESOURCE_EXHAUSTED" for e in errors)
    assert sum(kind == "rescored" for kind, _ in answers) == 4 - len(errors)
    device.close()


def test_undecodable_message_gets_an_error(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream("/edge_asr.cloud.v1.Cloud/Session",
                                     request_serializer=lambda b: b,
                                     response_deserializer=cloud_pb2.ServerMessage.FromString)
        hello = cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(device_id="raw"))
        answers = list(call(iter([hello.SerializeToString(), b"\xff\xff\xff\xff"]),
                            timeout=TIMEOUT_S))
    assert answers[0].WhichOneof("message") == "welcome"
    assert answers[1].error.code == "INVALID_ARGUMENT"
    assert "not a ClientMessage" in answers[1].error.message


def test_session_must_start_with_hello(stub):
    call = stub.Session(iter([cloud_pb2.ClientMessage(reset=cloud_pb2.Reset(utterance_id="x"))]),
                        timeout=TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_message_over_the_hard_limit_ends_only_that_call(stub):
    huge = lattice([(" ".join(["kitchen"] * 14) + f" x{i}", -float(i + 1)) for i in range(200)],
                   "huge", 1)
    assert huge.ByteSize() > 16384
    hello = cloud_pb2.ClientMessage(hello=cloud_pb2.Hello(device_id="huge"))
    upload = cloud_pb2.ClientMessage(lattice=cloud_pb2.LatticeUpload(lattice=huge))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Session(iter([hello, upload]), timeout=TIMEOUT_S))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = stub.Rescore(cloud_pb2.RescoreRequest(lattice=lattice(REVISED, "after", 1)),
                            timeout=TIMEOUT_S)
    assert " ".join(response.nbest[0].words) == "turn off the kitchen lights"


def test_unary_rescore(stub):
    response = stub.Rescore(cloud_pb2.RescoreRequest(lattice=lattice(REVISED, "u", 1), nbest=1,
                                                     nlu=True), timeout=TIMEOUT_S)
    assert len(response.nbest) == 1 and response.intent.name == "smart_home_onoff"
    plain = stub.Rescore(cloud_pb2.RescoreRequest(lattice=lattice(REVISED, "u", 1)),
                         timeout=TIMEOUT_S)
    assert not plain.HasField("intent") and len(plain.nbest) == 2
    broken = lattice(REVISED, "u", 1)
    broken.num_nodes = 1000
    with pytest.raises(grpc.RpcError) as info:
        stub.Rescore(cloud_pb2.RescoreRequest(lattice=broken), timeout=TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_no_client_message_can_carry_audio():
    """No bytes fields, no repeated numbers, in anything a device sends."""
    seen, todo = set(), [cloud_pb2.ClientMessage.DESCRIPTOR, cloud_pb2.RescoreRequest.DESCRIPTOR]
    numeric = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE,
               FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64,
               FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
               FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
               FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64}
    while todo:
        descriptor = todo.pop()
        if descriptor.full_name in seen:
            continue
        seen.add(descriptor.full_name)
        for f in descriptor.fields:
            assert f.type != FieldDescriptor.TYPE_BYTES, f.full_name
            assert not (f.is_repeated and f.type in numeric), f.full_name
            if f.message_type is not None:
                todo.append(f.message_type)
    assert "edge_asr.v1.Lattice" in seen


def test_cloud_command_serves_and_stops_on_sigterm(lm, tmp_path):
    folder = tmp_path / "lm"
    folder.mkdir()
    save_arpa(lm.ngram, folder / "ngram.arpa.gz")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_asr.daemon.cli", "cloud", "--port", "0", "--lm",
         str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()
        port = int(re.search(r"serving on 127\.0\.0\.1:(\d+)", line).group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = cloud_pb2_grpc.CloudStub(channel).Rescore(
                cloud_pb2.RescoreRequest(lattice=lattice(REVISED, "cli", 1)), timeout=TIMEOUT_S)
        assert " ".join(response.nbest[0].words) == "turn off the kitchen lights"
        process.terminate()
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cloud_command_without_an_lm_says_so(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edge_asr.daemon.cli", "cloud", "--port", "0",
                           "--lm", str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 2 and "make cloud-lm" in done.stderr


def test_vanished_client_frees_its_session_and_work(lm):
    served = serve_cloud(lm, CloudOptions(nlu_cost_s=5.0, max_sessions=1))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = cloud_pb2_grpc.CloudStub(channel)
            first = Device(stub, "first")
            assert first.next()[0] == "welcome"
            first.upload(lattice(REVISED, "v1", 1))  # its NLU would take 5 s
            second = Device(stub, "second")  # over max_sessions
            kind, error = second.next()
            assert kind is None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.call.cancel()
            deadline = threading.Event()
            for _ in range(50):  # the slot comes back once the server sees the cancel
                third = Device(stub, "third")
                kind, _ = third.next()
                if kind == "welcome":
                    break
                deadline.wait(0.1)
            assert kind == "welcome"
            third.call.cancel()
    finally:
        served.stop(None).wait()
