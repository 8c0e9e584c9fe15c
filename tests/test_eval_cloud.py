"""`edge-asr eval --cloud`: what the user receives, and how long the cloud keeps them waiting."""

import json
import socket
from pathlib import Path

from edge_asr.daemon.recognition.recognizer import Recognizer, RecognizerConfig
from edge_asr.models.evaluate import evaluate

DATA = Path(__file__).parent / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_utterance_is_answered_and_its_wait_reported(tmp_path, cloud, cloud_link):
    served = cloud()
    link = cloud_link(f"127.0.0.1:{served.port}")
    assert link.wait_connected(10.0)
    summary = evaluate(Recognizer(RecognizerConfig()), DATA / "manifest.jsonl",
                       tmp_path / "r.jsonl", use_context=False, link=link,
                       answer_deadline_s=5.0, limit=4)
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").open()]
    assert all(r["rescored"] is not None and len(r["answer_waits"]) == r["utterances"]
               for r in rows)
    assert summary.answered_in_time == 1.0 and summary.rescored == len(rows)
    assert 0.0 <= summary.answer_wait_p50 <= summary.answer_wait_p99 < 5.0
    assert "100.0% inside the deadline" in summary.format()


def test_a_cloud_that_is_down_leaves_the_device_words_and_says_so(tmp_path, cloud_link):
    link = cloud_link(f"127.0.0.1:{_free_port()}")  # nobody listens there
    summary = evaluate(Recognizer(RecognizerConfig()), DATA / "manifest.jsonl",
                       tmp_path / "r.jsonl", use_context=False, link=link,
                       answer_deadline_s=0.2, limit=2)
    assert summary.answered_in_time == 0.0 and summary.rescored == 0
    assert summary.answer_wait_p50 is None
    assert "0.0% inside the deadline" in summary.format()
