"""The cloud-rescoring service: rescoring latency, gRPC throughput and lattice size (printed,
never asserted).

    python bench/cloud.py [--lm DIR] [--lattices N] [--clients N] [--seconds S]

Lattices like the device's: for N dev sentences of the device corpus (never seen by the
cloud LM), an n-best of 4-8 hypotheses (the sentence and variants with a word substituted
by a similar-looking one, deleted or inserted), words timed along the utterance and scored
so that the reference is not always the acoustically best; merged with build_lattice.

1. In process, one thread: rescore() of each lattice, p50/p90 milliseconds.
2. The real server: `edge-asr cloud` in a subprocess pinned to one core (sched_setaffinity)
   on loopback; several client threads send the unary Rescore with the NLU on, as fast as
   it answers, for a fixed time. Lattices per second, the server's CPU seconds (from /proc)
   and the latency the clients see.
3. Median serialized lattice bytes.

Other work on the machine slows the server: the output gives the server's share of its
core and lattices per server CPU second, which other load changes much less.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_asr.daemon.api.proto import cloud_pb2, cloud_pb2_grpc
from edge_asr.daemon.recognition.ngram_lm import BOS, EOS, UNK
from edge_asr.daemon.uplink.lattice import (
    Lattice,
    WordArc,
    build_lattice,
    serialize,
    to_proto,
)
from edge_asr.daemon.uplink.lattice import Path as LatticePath
from edge_asr.daemon.uplink.lattice_paths import paths
from edge_asr.models import corpus
from edge_asr.models.cloud_lm_recipe import CorpusOptions
from edge_asr.simulator.cloud.lm import CloudLM
from edge_asr.simulator.cloud.rescore import rescore
from edge_asr.simulator.process_stats import process_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 1.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


# -- lattices ---------------------------------------------------------------------------

class Confusions:
    """Words that look alike (same first two letters), standing in for sound-alikes."""

    def __init__(self, vocab: list[str]) -> None:
        self.words = sorted(set(vocab) - {BOS, EOS, UNK})  # the same lattices for any LM
        self.by_prefix: dict[str, list[str]] = {}
        for word in self.words:
            self.by_prefix.setdefault(word[:2], []).append(word)

    def similar(self, word: str, rng: random.Random) -> str:
        pool = [w for w in self.by_prefix.get(word[:2], []) if w != word] or self.words
        return rng.choice(pool)


def _variant(words: list[WordArc], confusions: Confusions, rng: random.Random) -> list[WordArc]:
    """The reference with one or two errors; unchanged words keep their arcs, so that
    the hypotheses share prefixes as a beam search's do."""
    out = list(words)
    for _ in range(rng.choice((1, 1, 2))):
        i = rng.randrange(len(out))
        arc = out[i]
        kind = rng.random()
        if kind < 0.6:  # substitution, sometimes better scored than the reference
            out[i] = WordArc(confusions.similar(arc.word, rng), arc.start, arc.end,
                             arc.acoustic + rng.gauss(-0.3, 1.0))
        elif kind < 0.8 and len(out) > 1:  # deletion: the neighbour absorbs its frames
            j = i - 1 if i > 0 else 1
            near = out[j]
            out[j] = WordArc(near.word, near.start, near.end,
                             near.acoustic + arc.acoustic - rng.uniform(0.5, 2.0))
            del out[i]
        else:  # insertion in the second half of the word's time
            middle = round((arc.start + arc.end) / 2, 2)
            out[i] = WordArc(arc.word, arc.start, middle, arc.acoustic * 0.6)
            out.insert(i + 1, WordArc(confusions.similar(arc.word, rng), middle, arc.end,
                                      arc.acoustic * 0.4 - rng.uniform(1.0, 3.0)))
    return out


def make_lattices(sentences: list[str], confusions: Confusions, seed: int = 0
                  ) -> list[Lattice]:
    rng = random.Random(seed)
    lattices = []
    for n, text in enumerate(sentences):
        reference, t = [], 0.3
        for word in text.split():
            length = 0.12 + 0.05 * len(word)
            reference.append(WordArc(word, round(t, 2), round(t + length, 2),
                                     -rng.uniform(0.2, 2.5)))
            t += length + rng.uniform(0.0, 0.15)
        hypotheses = [LatticePath(reference)]
        for _ in range(rng.randint(3, 7)):
            hypotheses.append(LatticePath(_variant(reference, confusions, rng)))
        lattices.append(build_lattice(hypotheses, f"bench-{n}", 2, False, "bench"))
    return lattices


# -- in process -------------------------------------------------------------------------

def bench_in_process(lm: CloudLM, lattices: list[Lattice]) -> dict:
    for lattice in lattices[:10]:  # warm-up: onnxruntime allocates on its first runs
        rescore(lattice, lm)
    times = []
    for lattice in lattices:
        start = time.perf_counter()
        rescore(lattice, lm)
        times.append(1000 * (time.perf_counter() - start))
    return {"rescore_ms_p50": round(percentile(times, 0.5), 2),
            "rescore_ms_p90": round(percentile(times, 0.9), 2),
            "rescore_ms_mean": round(statistics.fmean(times), 2)}


# -- the server -------------------------------------------------------------------------

def start_server(lm_dir: Path, core: int) -> tuple[subprocess.Popen, int, float]:
    """`edge-asr cloud` on one core; returns it, its port and the seconds until SERVING."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_asr.daemon.cli", "cloud", "--port", "0", "--lm",
         str(lm_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "edge-asr cloud: serving on 127.0.0.1:PORT (...)"
    if "serving on" not in line:
        proc.kill()
        raise RuntimeError(f"edge-asr cloud did not start: {line}{proc.stdout.read()}")
    port = int(line.split("serving on ", 1)[1].split()[0].rsplit(":", 1)[1])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return proc, port, time.monotonic() - started


def bench_server(lm_dir: Path, lattices: list[Lattice], clients: int, seconds: float
                 ) -> dict:
    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1]
    proc, port, start_s = start_server(lm_dir, core)
    requests = [cloud_pb2.RescoreRequest(lattice=to_proto(x), nlu=True) for x in lattices]
    measuring = threading.Event()
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(index: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = cloud_pb2_grpc.CloudStub(channel)
            i = index
            while not stop.is_set():
                begin = time.perf_counter()
                try:
                    stub.Rescore(requests[i % len(requests)], timeout=30)
                except grpc.RpcError:
                    errors[index] += 1
                    continue
                if measuring.is_set():
                    latencies[index].append(1000 * (time.perf_counter() - begin))
                i += clients

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        time.sleep(WARMUP_S)
        cpu0, wall0 = process_cpu_seconds(proc.pid), time.monotonic()
        measuring.set()
        time.sleep(seconds)
        measuring.clear()
        cpu, wall = process_cpu_seconds(proc.pid) - cpu0, time.monotonic() - wall0
        stop.set()
        for t in threads:
            t.join(timeout=35)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    done = [x for per_client in latencies for x in per_client]
    return {
        "core": core, "clients": clients, "seconds": round(wall, 1),
        "start_to_serving_s": round(start_s, 2),
        "lattices_per_s": round(len(done) / wall, 1),
        "server_cpu_share": round(cpu / wall, 2),
        "lattices_per_server_cpu_s": round(len(done) / cpu, 1) if cpu else None,
        "latency_ms_p50": round(percentile(done, 0.5), 2) if done else None,
        "latency_ms_p90": round(percentile(done, 0.9), 2) if done else None,
        "errors": sum(errors),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", type=Path, default=ROOT / "models" / "cloud-lm")
    p.add_argument("--lattices", type=int, default=300)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    lm = CloudLM.load(args.lm, threads=1)
    options = CorpusOptions()
    dev = corpus.build_corpus(seed=options.seed, n_train=options.device_train).dev
    lattices = make_lattices([u.text for u in dev[:args.lattices]], Confusions(lm.ngram.vocab))
    sizes = [len(serialize(x)) for x in lattices]
    hypotheses = [len(paths(x, limit=100)) for x in lattices]
    result = {
        "lm": lm.version, "lm_folder_bytes": sum(f.stat().st_size for f in args.lm.iterdir()),
        "lattices": len(lattices),
        "hypotheses_per_lattice_median": statistics.median(hypotheses),
        "lattice_bytes_median": statistics.median(sizes),
        "lattice_bytes_p90": percentile(sizes, 0.9),
        "in_process_one_thread": bench_in_process(lm, lattices),
        "grpc_unary_rescore_with_nlu": bench_server(args.lm, lattices, args.clients,
                                                    args.seconds),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
