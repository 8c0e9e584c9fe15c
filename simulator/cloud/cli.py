"""`edge-asr cloud`: the cloud-rescoring service's command (the `edge-asr` dispatcher in
daemon/cli.py adds it, as it adds the simulator's `sim`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from edge_asr.simulator.cloud.lm import CloudLM, CloudLmError
from edge_asr.simulator.cloud.security import CloudSecurity
from edge_asr.simulator.cloud.server import CloudOptions, CloudServeError, serve_cloud

DEFAULT_CLOUD_LM = Path(__file__).resolve().parents[2] / "models" / "cloud-lm"


def cmd_cloud(args: argparse.Namespace) -> int:
    """The cloud-rescoring service in this process, until SIGINT or SIGTERM."""
    try:
        lm = CloudLM.load(args.lm)
        options = CloudOptions(nbest=args.nbest, max_paths=args.max_paths,
                               nlu_cost_s=args.nlu_cost_ms / 1000, slow_s=args.slow_ms / 1000,
                               max_sessions=args.max_sessions)
        token = args.token_file.read_text().strip() if args.token_file else ""
        security = CloudSecurity(token, args.tls_cert or "", args.tls_key or "",
                                 args.tls_client_ca or "")
        served = serve_cloud(lm, options, host=args.host, port=args.port, security=security)
    except (CloudLmError, CloudServeError, ValueError, OSError) as e:
        print(f"edge-asr: error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"edge-asr cloud: serving on {args.host}:{served.port} (LM {lm.version}, "
          f"weights {lm.weights})", flush=True)
    stop.wait()
    served.stop(grace=2.0).wait()
    return 0


def add_parser(subparsers) -> None:
    c = subparsers.add_parser("cloud", help="run the cloud-rescoring service")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on")
    c.add_argument("--port", type=int, default=50061, help="TCP port (0: any free port)")
    c.add_argument("--lm", type=Path, default=DEFAULT_CLOUD_LM,
                   help="cloud LM folder (make cloud-lm)")
    c.add_argument("--nbest", type=int, default=10, help="hypotheses returned by default")
    c.add_argument("--max-paths", type=int, default=50, help="lattice paths rescored")
    c.add_argument("--nlu-cost-ms", type=float, default=0.0,
                   help="emulated NLU service time per result (cancelled by a reset)")
    c.add_argument("--slow-ms", type=float, default=0.0,
                   help="extra delay before every result, to emulate a slow cloud")
    c.add_argument("--max-sessions", type=int, default=64)
    c.add_argument("--token-file", type=Path,
                   help="file holding the bearer token devices must send")
    c.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    c.add_argument("--tls-key", help="PEM private key of --tls-cert")
    c.add_argument("--tls-client-ca", help="PEM CA: require device certificates it signed")
    c.set_defaults(func=cmd_cloud)
