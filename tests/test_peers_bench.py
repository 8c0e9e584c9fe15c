"""bench/peers.py's per-system functions on two bundled clips: every system yields rows
that `summarize` can score, with end-point decisions inside the clip.

The figures themselves are the bench's business (printed, never asserted); this only
keeps the harness honest: a peer that silently decoded nothing, or an end-point time in
the wrong unit, would make its whole column meaningless.
"""

import math
import sys
from pathlib import Path

import pytest
from bench_modules import load_bench

from edge_asr.daemon.manifest import read_manifest
from edge_asr.models.evaluate import summarize

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def peers():
    module = load_bench("peers")
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def entries():
    chosen = [e for e in read_manifest(DATA / "manifest.jsonl") if "clean" in e.tags][:2]
    assert len(chosen) == 2
    return chosen


def _check_rows(rows, entries):
    assert len(rows) == len(entries)
    for row, entry in zip(rows, entries, strict=True):
        assert row["audio_filepath"] == entry.audio_filepath
        assert row["duration"] > 0 and row["cpu_seconds"] > 0
        for key in ("speculative_endpoint", "final_endpoint"):
            t = row[key]
            assert t is None or 0 < t <= row["duration"], (key, t, row["duration"])
    summary = summarize(rows)
    assert math.isfinite(summary.wer) and summary.wer >= 0
    assert math.isfinite(summary.rtf) and summary.rtf > 0
    return summary


def test_edge_asr_rows(peers, entries, shipped_model_dir):
    for options in (peers.EdgeAsrOptions("greedy_search"), peers.EdgeAsrOptions()):
        rows = peers.run_edge_asr(entries, shipped_model_dir, options)
        _check_rows(rows, entries)
        for row in rows:
            if row["speculative_endpoint"] is not None and row["final_endpoint"] is not None:
                assert row["speculative_endpoint"] <= row["final_endpoint"]
    assert any(r["final_endpoint"] is not None for r in rows), "no end-point on clean clips"


def test_sherpa_rows_greedy_and_hotwords(peers, entries, shipped_model_dir):
    pytest.importorskip("sherpa_onnx")
    beam = "modified_beam_search"
    for options in (peers.SherpaOptions("greedy_search"),
                    peers.SherpaOptions(beam, rules=peers.TUNED_RULES, hotwords=True)):
        rows = peers.run_sherpa(entries, shipped_model_dir, options)
        _check_rows(rows, entries)
        assert any(r["hypothesis"] for r in rows)
        assert all(r["context_used"] is options.hotwords for r in rows)


def test_hotwords_are_spelled_with_our_pieces(peers, shipped_model_dir, tmp_path):
    vocab = peers.write_bpe_vocab(shipped_model_dir, tmp_path / "bpe.vocab")
    pieces = [line.split()[0] for line in vocab.read_text(encoding="utf-8").splitlines()]
    tokens = [line.split()[0] for line in
              (shipped_model_dir / "tokens.txt").read_text(encoding="utf-8").splitlines()]
    assert pieces == tokens  # sherpa maps hotword pieces to ids through tokens.txt
    assert peers.sherpa_hotwords(["Gaëlle Vincent", "the lava lamp", "gaelle vincent", ""]) \
        == "gaelle vincent/the lava lamp"


def test_pocketsphinx_rows(peers, entries):
    pytest.importorskip("pocketsphinx")
    rows = peers.run_pocketsphinx(entries, peers.PocketsphinxOptions())
    _check_rows(rows, entries)
    assert all(r["hypothesis"] for r in rows), "pocketsphinx heard nothing in a clean clip"


def test_table_has_a_line_per_system(peers, entries):
    rows = [peers._row(e, e.text, e.speech_end, 0.1, e.duration) for e in entries]
    table = peers.markdown_table({"bundled": {"a": summarize(rows), "b": summarize(rows)}})
    assert table.count("\n| bundled |") == 2 and "| 0.00 |" in table
