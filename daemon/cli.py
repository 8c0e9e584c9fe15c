"""The `edge-asr` command: the device's own commands, and the dispatch to the cloud's
(simulator/cloud/cli.py), the simulator's (simulator/sim.py) and evaluation's
(models/evaluate.py).

    edge-asr daemon [--config daemon.toml] [...]    the long-running device service
    edge-asr listen [--socket PATH | --tcp ADDR [--token-file F]] [--reconnect]
                                                    print a running daemon's events
    edge-asr devices                                list audio input devices
    edge-asr transcribe FILE...                     the daemon's events for audio files
    edge-asr eval MANIFEST --output RESULTS.jsonl   score a JSON Lines manifest
    edge-asr demo                                   daemon + simulated microphone + listener
    edge-asr cloud [--port N] [--lm DIR]            the cloud-rescoring service
    edge-asr sim run SCENARIO                       play a scenario, write its report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from edge_asr.daemon.api.server import ServeError
from edge_asr.daemon.capture.audio import AudioFormatError, read_audio
from edge_asr.daemon.capture.sources import AudioSourceError
from edge_asr.daemon.frontend.denoise import METHODS as DENOISE_METHODS
from edge_asr.daemon.frontend.webrtc import FrontEndError
from edge_asr.daemon.recognition.context_graph import ContextError
from edge_asr.daemon.recognition.recognizer import DEFAULT_MODEL_DIR, Recognizer, RecognizerConfig
from edge_asr.daemon.recognition.transducer import ModelError

BUNDLED_CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data"


# Flags of `eval` and `transcribe` that override the [recognizer] table of --config, and
# the setting each one sets; a flag left out keeps the table's value (or the default).
RECOGNIZER_FLAGS = {"model": "model_dir", "decoding": "decoding_method", "beam": "beam",
                    "context_beam": "context_beam", "threads": "threads",
                    "context_bonus": "context_bonus", "lm_scale": "lm_scale",
                    "token_bonus": "token_bonus"}


def _recognizer(args: argparse.Namespace, config) -> Recognizer:
    """The recogniser the daemon configuration `config` describes, with the flags given."""
    settings = {name: getattr(args, flag) for flag, name in RECOGNIZER_FLAGS.items()
                if getattr(args, flag) is not None}
    if args.no_length_norm:
        settings["length_norm"] = False
    if args.no_name_rescue:
        settings["name_rescue"] = False
    return Recognizer(dataclasses.replace(config.recognizer, **settings))


def _pipeline_config(recognizer: Recognizer, config, partials: bool = True):
    """End-pointer and VAD settings from the daemon's configuration (`--config`), so that
    `transcribe` and `eval` decide exactly as a daemon with that configuration would."""
    return config.pipeline_config(Path(recognizer.config.model_dir).name, partials=partials)


def _apply_wake_word(args: argparse.Namespace, config) -> None:
    """--wake-word / --wake-threshold over the configuration's [wake_word] table."""
    changes = {k: v for k, v in (("phrase", args.wake_word), ("threshold", args.wake_threshold))
               if v is not None}
    if changes:
        config.wake_word = dataclasses.replace(config.wake_word, **changes)


def _apply_endpointer(args: argparse.Namespace, config) -> None:
    """--rules-endpointer over the configuration's [endpoint] table."""
    if getattr(args, "rules_endpointer", False):
        config.endpoint = dataclasses.replace(config.endpoint, query_end=False)


def _add_wake_word_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wake-word", metavar="PHRASE",
                        help="recognise only what follows this phrase (WAKE_WORD event first)")
    parser.add_argument("--wake-threshold", type=float, metavar="SCORE",
                        help="lowest detector score (0-1) that counts as the phrase")


def cmd_transcribe(args: argparse.Namespace) -> int:
    from edge_asr.daemon.api.config import load_config
    from edge_asr.daemon.api.service import format_event
    from edge_asr.daemon.driver import run_pipeline
    from edge_asr.daemon.pipeline import Pipeline

    daemon_config = load_config(args.config)
    _apply_wake_word(args, daemon_config)
    _apply_endpointer(args, daemon_config)
    recognizer = _recognizer(args, daemon_config)
    config = daemon_config.pipeline_config(Path(recognizer.config.model_dir).name,
                                           partials=args.partials, wake=True)
    for path in args.files:
        samples = read_audio(path)
        print(f"{path}:")
        pipeline = Pipeline(recognizer, config, source="file")
        if args.contacts or args.devices:  # by kind, as SetContext takes it
            pipeline.set_context({"contacts": args.contacts or [],
                                  "devices": args.devices or [],
                                  "phrases": args.context or []})
        elif args.context:  # a flat list: no kinds, so no slot bonus
            pipeline.set_context(args.context)
        for event in run_pipeline(pipeline, samples):
            print("  " + format_event(event))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edge_asr.daemon.api.config import load_config
    from edge_asr.daemon.uplink.cloud_link import CloudLink
    from edge_asr.models.evaluate import evaluate

    daemon_config = load_config(args.config)
    _apply_endpointer(args, daemon_config)
    recognizer, link = _recognizer(args, daemon_config), None
    if args.cloud:  # the daemon's [cloud] settings (token, TLS, deadline), this address
        cloud = daemon_config.cloud
        cloud.address = args.cloud
        link = CloudLink(cloud).start()
        if not link.wait_connected(cloud.connect_timeout_s + 1.0):
            print(f"edge-asr eval: no cloud answers at {args.cloud}; every utterance will "
                  "get its on-device final", file=sys.stderr)
    try:
        summary = evaluate(recognizer, args.manifest, args.output,
                           use_context=not args.no_context, progress=True,
                           config=_pipeline_config(recognizer, daemon_config),
                           limit=args.limit,
                           link=link,
                           answer_deadline_s=link.config.answer_deadline_s if link else 0.5,
                           lattices=args.lattices)
    finally:
        if link is not None:
            link.close()
    print(summary.format())
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.__dict__, indent=2))
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from edge_asr.daemon.api.config import load_config
    from edge_asr.daemon.api.service import run_daemon

    config = load_config(args.config)
    if args.model:
        config.recognizer.model_dir = args.model
    for name in ("decoding_method", "beam", "threads"):
        if getattr(args, name) is not None:
            setattr(config.recognizer, name, getattr(args, name))
    if args.cloud is not None:
        config.cloud.address = args.cloud
    if args.local_only:
        config.local_only = True
    _apply_wake_word(args, config)
    _apply_endpointer(args, config)
    if args.source:
        config.source.kind = args.source
    if args.device is not None:
        config.source.device = args.device
    if args.files:
        config.source.files = [str(f) for f in args.files]
        config.source.kind = args.source or "files"
    if args.realtime is not None:
        config.source.realtime = args.realtime
    if args.wait_for_subscriber:
        config.source.wait_for_subscriber = True
    if args.reference is not None:  # a reference is given to be cancelled, unless told not to
        config.source.reference = str(args.reference)
        config.frontend.echo_cancellation = True
    if args.echo_cancellation is not None:
        config.frontend.echo_cancellation = args.echo_cancellation
    if args.noise_suppression is not None:
        config.frontend.noise_suppression = args.noise_suppression
    if args.socket is not None:
        config.server.socket = args.socket
    if args.tcp is not None:
        config.server.tcp = args.tcp
    if args.tcp_token_file is not None:
        config.server.tcp_token_file = args.tcp_token_file
    if args.metrics_port is not None:
        config.metrics_port = args.metrics_port
    config.print_events = args.print_events or config.print_events
    if config.server.tcp:
        _prepare_tcp_token(config.server)
    return run_daemon(config)


def _prepare_tcp_token(server) -> None:
    """Before anything starts: the configured token file must hold a token (ServeError naming
    it otherwise); without one, a new random token goes to the default token file, readable
    by this user only, and the server is pointed at it."""
    from edge_asr.daemon.api.addresses import (
        default_token_file,
        ensure_user_folder,
        read_token,
        write_new_token,
    )

    if server.tcp_token_file:
        read_token(server.tcp_token_file)
        return
    ensure_user_folder()
    server.tcp_token_file = default_token_file()
    write_new_token(server.tcp_token_file)
    print(f"edge-asr daemon: TCP clients must send the bearer token in "
          f"{server.tcp_token_file}", flush=True)


def cmd_devices(args: argparse.Namespace) -> int:
    from edge_asr.daemon.capture.microphone import list_input_devices

    try:
        devices = list_input_devices()
    except AudioSourceError as e:
        print(f"edge-asr: {e}", file=sys.stderr)
        return 2
    if not devices:
        print("no audio input devices")
    for d in devices:
        print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['default_rate']:.0f} Hz, "
              f"{d['host_api']})")
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from edge_asr.daemon.api.client import listen

    return listen(args.socket, args.tcp, partials=not args.no_partials, timeout=args.timeout,
                  token_file=args.token_file, reconnect=args.reconnect)


def cmd_demo(args: argparse.Namespace) -> int:
    """The daemon in its own process, playing the bundled clips as a microphone would, and
    this process subscribed to its events over gRPC, printing them."""
    from edge_asr.daemon.api.client import run_demo
    from edge_asr.daemon.recognition.transducer import verify_model_dir

    if not any((Path(args.model) / n).exists() for n in ("encoder.onnx", "encoder.onnx.pack")):
        raise ModelError(f"no model in {args.model}: `make train` builds one "
                         "(or pass --model DIR)")
    verify_model_dir(Path(args.model))
    files = args.files or sorted(BUNDLED_CLIPS.glob("*.flac"))[: args.limit]
    cloud_lm = None if args.local_only or not (args.cloud_lm / "model_card.json").exists() \
        else args.cloud_lm
    return run_demo([str(f) for f in files], model=args.model, realtime=args.realtime,
                    cloud_lm=cloud_lm)


def build_parser() -> argparse.ArgumentParser:
    # The cloud's and the simulator's commands live with them; the runtime itself never
    # imports either, only this dispatcher does, when it builds the command line.
    from edge_asr.simulator import sim
    from edge_asr.simulator.cloud import cli as cloud_cli

    p = argparse.ArgumentParser(prog="edge-asr", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        # Defaults are None: a flag given overrides --config's [recognizer] table, a flag
        # left out does not (RecognizerConfig holds the defaults).
        defaults = RecognizerConfig()
        sp.add_argument("--model", type=Path,
                        help="model folder (encoder/decoder/joiner.onnx, tokens.txt); "
                             f"default {defaults.model_dir}")
        sp.add_argument("--decoding", choices=["greedy_search", "modified_beam_search"],
                        help=f"default {defaults.decoding_method}")
        sp.add_argument("--beam", type=int, help=f"default {defaults.beam}")
        sp.add_argument("--context-beam", type=int,
                        help="beam width while a biasing context is set (at least --beam); "
                             f"default {defaults.context_beam}")
        sp.add_argument("--no-length-norm", action="store_true",
                        help="beam search: pick the best hypothesis by total log-prob, not "
                             "log-prob per token")
        sp.add_argument("--context-bonus", type=float,
                        help="log-prob bonus per token of a context phrase; default "
                             f"{defaults.context_bonus}")
        sp.add_argument("--lm-scale", type=float,
                        help="weight of the device LM (the model folder's lm.arpa.gz) in the "
                             f"beam search, 0 for none; default {defaults.lm_scale}")
        sp.add_argument("--token-bonus", type=float,
                        help="beam search: reward per token emitted (keeps the LM from "
                             f"dropping words); default {defaults.token_bonus}")
        sp.add_argument("--no-name-rescue", action="store_true",
                        help="skip the second pass that puts back context names the beam "
                             "lost (daemon/recognition/name_rescue.py)")
        sp.add_argument("--threads", type=int,
                        help=f"onnxruntime threads; default {defaults.threads}")
        sp.add_argument("--config", type=Path,
                        help="daemon TOML whose [recognizer], [endpoint] and vad_mode "
                             "settings to use (the flags above override it)")
        sp.add_argument("--rules-endpointer", action="store_true",
                        help="the final end-pointer waits as the completeness rules say, not "
                             "as the model folder's learned end-of-query model does")

    t = sub.add_parser("transcribe", help="run audio files through the daemon's pipeline")
    t.add_argument("files", nargs="+", type=Path)
    _add_wake_word_flags(t)
    t.add_argument("--partials", action="store_true", help="print partial results too")
    t.add_argument("--context", nargs="*", help="names and phrases to boost (the other "
                   "phrases when --contacts or --devices is given)")
    t.add_argument("--contacts", nargs="*", help="people's names to boost, more so right "
                   "after a carrier word (\"call _\")")
    t.add_argument("--devices", nargs="*", help="device and room names to boost")
    model_args(t)
    t.set_defaults(func=cmd_transcribe)

    e = sub.add_parser("eval", help="evaluate on a manifest")
    e.add_argument("manifest", type=Path)
    e.add_argument("--output", type=Path, help="results JSON Lines, one line per utterance")
    e.add_argument("--summary-json", type=Path, help="also write the summary as JSON")
    e.add_argument("--no-context", action="store_true", help="ignore the manifest's context")
    e.add_argument("--limit", type=int, help="score only the first N utterances")
    e.add_argument("--cloud", help="host:port of `edge-asr cloud`: also score its rescoring")
    e.add_argument("--lattices", type=Path,
                   help="also write each utterance's lattice and reference (JSON Lines) for "
                        "tuning the cloud's weights")
    model_args(e)
    e.set_defaults(func=cmd_eval)

    dm = sub.add_parser("daemon", help="run the device service")
    dm.add_argument("--config", type=Path, help="TOML configuration (see README)")
    dm.add_argument("--model", type=Path)
    dm.add_argument("--decoding", dest="decoding_method",
                    choices=["greedy_search", "modified_beam_search"])
    dm.add_argument("--beam", type=int)
    dm.add_argument("--threads", type=int)
    dm.add_argument("--cloud", help="host:port of `edge-asr cloud` to send lattices to")
    dm.add_argument("--local-only", action="store_true",
                    help="send nothing off the device, even with a cloud configured")
    _add_wake_word_flags(dm)
    dm.add_argument("--source", choices=["microphone", "files", "none"])
    dm.add_argument("--device", help="microphone name (substring) or index")
    dm.add_argument("--files", nargs="*", type=Path, help="play these files as the microphone")
    dm.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None)
    dm.add_argument("--wait-for-subscriber", action="store_true",
                    help="start the source once a client subscribes")
    dm.add_argument("--reference", type=Path,
                    help="what the device's loudspeaker plays, in step with the source: "
                         "cancelled from the microphone (turns --echo-cancellation on)")
    dm.add_argument("--echo-cancellation", action=argparse.BooleanOptionalAction,
                    default=None, help="cancel the reference's echo (default: off)")
    dm.add_argument("--noise-suppression", choices=list(DENOISE_METHODS),
                    help="noise suppressor in front of the recogniser (default: off)")
    dm.add_argument("--socket", help="Unix socket path ('' to disable)")
    dm.add_argument("--tcp", help="also listen on this loopback address, e.g. 127.0.0.1:50051")
    dm.add_argument("--tcp-token-file",
                    help="file holding the bearer token TCP clients must send (default: a new "
                         "random token, written 0600 beside the default socket)")
    dm.add_argument("--metrics-port", type=int, help="serve Prometheus metrics (0: any port)")
    dm.add_argument("--print-events", action="store_true", help="also print events")
    dm.set_defaults(func=cmd_daemon)

    dv = sub.add_parser("devices", help="list audio input devices")
    dv.set_defaults(func=cmd_devices)

    ls = sub.add_parser("listen", help="print the events of a running daemon")
    ls.add_argument("--socket", default=None, help="Unix socket (default: the daemon's)")
    ls.add_argument("--tcp", default=None, help="or a loopback TCP address")
    ls.add_argument("--token-file", default=None,
                    help="with --tcp: the daemon's bearer token file (default: the one it "
                         "writes beside its default socket)")
    ls.add_argument("--no-partials", action="store_true")
    ls.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    ls.add_argument("--reconnect", action="store_true",
                    help="when the daemon goes away, say which utterances were cut off "
                         "(UTTERANCE_LOST) and subscribe again once it is back")
    ls.set_defaults(func=cmd_listen)

    d = sub.add_parser("demo", help="daemon + simulated microphone + listener (make run)")
    d.add_argument("files", nargs="*", type=Path)
    d.add_argument("--limit", type=int, default=6, help="bundled clips to play")
    d.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True)
    d.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    d.add_argument("--cloud-lm", type=Path, default=cloud_cli.DEFAULT_CLOUD_LM,
                   help="start `edge-asr cloud` with this LM (when it exists)")
    d.add_argument("--local-only", action="store_true", help="no cloud: on-device results")
    d.set_defaults(func=cmd_demo)

    cloud_cli.add_parser(sub)
    sim.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelError, AudioFormatError, FileNotFoundError, ServeError, AudioSourceError,
            ContextError, FrontEndError, ValueError) as e:
        print(f"edge-asr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
