"""The ``vidrestore`` command line.

Exit codes: 0 done; 1 unexpected failure; 2 bad usage or configuration; 3 model
weights missing or invalid; 4 input unreadable or not a video/image; 130 interrupted.
Expected errors print one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

import yaml

from vidrestore import __version__
from vidrestore.config import Config, EncoderPreset, config_to_dict, load_config
from vidrestore.errors import ConfigError, InputError, ModelError, VidrestoreError
from vidrestore.models.compat import CODEFORMER_INSTALL
from vidrestore.models.registry import DEFAULT_REGISTRY
from vidrestore.models.store import ModelStore, default_weights_dir, offline_requested
from vidrestore.presets import list_presets, preset_path

__all__ = ["main"]

log = logging.getLogger("vidrestore")

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"vidrestore: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _common(debug_only: bool = False) -> _Parser:
    parent = _Parser(add_help=False)
    g = parent.add_argument_group("general")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bar or summary (warnings show)",
    )
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log each step (INFO)")
    g.add_argument(
        "--weights-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="model cache folder (default: $VIDRESTORE_WEIGHTS or the user cache)",
    )
    if not debug_only:
        g.add_argument(
            "--offline",
            action="store_true",
            default=argparse.SUPPRESS,
            help="never download: a missing model is an error (also VIDRESTORE_OFFLINE=1)",
        )
        c = parent.add_argument_group("configuration")
        c.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="YAML config file; keys you leave out keep their defaults (applied over --preset)",
        )
        c.add_argument(
            "-p",
            "--preset",
            metavar="NAME",
            default=argparse.SUPPRESS,
            help="a shipped preset: video-call, screenshot, vhs, tiny-faces, quality (see 'vidrestore presets')",
        )
        c.add_argument(
            "--set",
            metavar="KEY=VALUE",
            action="append",
            default=argparse.SUPPRESS,
            help="override one key, e.g. --set restorer.blend=0.7 (repeatable)",
        )
        c.add_argument("--device", default=argparse.SUPPRESS, help="auto, cpu, cuda, cuda:N or mps")
        c.add_argument(
            "--detector",
            default=argparse.SUPPRESS,
            help="retinaface_resnet50, retinaface_mobile0.25, centerface (no download) or none",
        )
        c.add_argument(
            "--restorer",
            default=argparse.SUPPRESS,
            help="restorer.model: gfpgan-1.4, gfpgan-1.3, gfpgan-1.2, restoreformer, codeformer (extra) or none",
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vidrestore",
        description="Restore faces in videos and images: detect, track, upscale small faces, restore with "
        "GFPGAN, paste back; audio and timestamps untouched.",
        epilog="Exit codes: 0 done, 1 unexpected failure, 2 bad usage or config, 3 model weights missing "
        "or invalid, 4 input unreadable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"vidrestore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)  # type: ignore[arg-type]

    r = sub.add_parser(
        "restore",
        parents=[_common()],
        help="restore the faces in videos, images or folders",
        description="Restore the faces in each INPUT and write the result to OUTPUT.",
    )
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="video or image files, or folders of them")
    r.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help="output file (one input) or folder (several inputs or a folder; names are kept); "
        "required except with --dry-run",
    )
    r.add_argument("-y", "--overwrite", action="store_true", default=None, help="replace existing outputs")
    r.add_argument("--blend", type=float, metavar="F", help="restorer.blend: 0 original .. 1 fully restored")
    r.add_argument(
        "--fidelity",
        type=float,
        metavar="W",
        help="restorer.fidelity: CodeFormer's w, 0 more detail .. 1 more faithful",
    )
    r.add_argument("--upscale-below", type=int, metavar="PX", help="upscaler.below: upscale faces under PX first")
    r.add_argument("--crf", type=int, help="output.crf: encoder quality (lower is better)")
    r.add_argument(
        "--codec",
        help="output.codec: auto (by container), libx264, libx265, libsvtav1, libvpx-vp9, h264_nvenc, hevc_nvenc",
    )
    r.add_argument(
        "--encode-preset",
        choices=get_args(EncoderPreset),
        metavar="NAME",
        help="output.preset: encoder speed, ultrafast .. veryslow (veryfast keeps up with a GPU at 1080p)",
    )
    r.add_argument("--scale", type=int, choices=(1, 2, 4), help="output.scale: upscale the whole frame 2x or 4x")
    r.add_argument("--no-audio", action="store_true", default=None, help="drop audio tracks on purpose")
    r.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="input.strict: stop with exit 4 at the first damage in an input instead of reading on past it",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, the inputs' streams and the models; process nothing",
    )
    r.add_argument("--report", metavar="FILE.json", help="write counts, timings, config and versions as JSON")
    long = r.add_argument_group("long videos and clusters")
    long.add_argument(
        "--segment-seconds",
        type=float,
        metavar="S",
        help="pipeline.segment_seconds: cut videos longer than 2*S into resumable segments (0: whole files)",
    )
    long.add_argument("--workers", type=int, metavar="N", help="pipeline.workers: segment pipelines run at once")
    again = long.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="insist on resuming: refuse (exit 2) if the input, config or models changed since the segments "
        "were made (by default a matching earlier run is resumed and a changed one started afresh)",
    )
    again.add_argument("--no-resume", action="store_true", help="start afresh, discarding an earlier run's segments")
    long.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the segments on a Ray cluster (ADDRESS, or cluster.address; none: a local Ray); "
        "needs pip install 'vidrestore[ray]' and storage every node reaches",
    )

    i = sub.add_parser(
        "inspect",
        parents=[_common()],
        help="show the faces and tracks found in a video",
        description="Detect and track faces (no restoration weights needed).",
    )
    i.add_argument("input", metavar="INPUT")
    i.add_argument("--json", metavar="FILE", help="write every frame's faces as JSON ('-' for stdout)")
    i.add_argument("--annotate", metavar="OUT", help="write a video with boxes, landmarks and track ids drawn")
    i.add_argument("-y", "--overwrite", action="store_true", default=None, help="replace existing outputs")

    c = sub.add_parser(
        "compare",
        parents=[_common()],
        help="put the original and the restored side by side, to look at",
        description="Write ORIGINAL and RESTORED side by side (or --split at a line) into OUTPUT, with the "
        "original's audio and timing; images give an image.",
    )
    c.add_argument("original", metavar="ORIGINAL")
    c.add_argument("restored", metavar="RESTORED")
    c.add_argument("-o", "--output", metavar="OUTPUT", help="the comparison video or image")
    c.add_argument("--split", action="store_true", help="one picture split by a line instead of two side by side")
    c.add_argument(
        "--plot",
        metavar="PNG",
        help="also draw the per-frame flicker of input, per-frame restoration and output (needs --report)",
    )
    c.add_argument("--report", metavar="JSON", help="the --report of the restore run that made RESTORED (for --plot)")
    c.add_argument("-y", "--overwrite", action="store_true", default=None, help="replace an existing output")

    sv = sub.add_parser(
        "serve",
        parents=[_common()],
        help="serve the restoration API and a web page over HTTP (needs the serve extra)",
        description="Serve the HTTP API (POST /v1/edit, /v1/restore, /v1/files, /v1/jobs) and a web page at /. "
        "--config/--set give every request's defaults; the models load once. Needs: "
        "pip install 'vidrestore[serve]'.",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token", help="the bearer token clients must send (default: $VIDRESTORE_TOKEN; none on loopback)")
    sv.add_argument(
        "--allow-no-token",
        action="store_true",
        help="bind to a non-loopback address without a token (anyone who reaches it can use it)",
    )
    sv.add_argument(
        "--data", metavar="DIR", help="uploads, results and the job database (default: the user data folder)"
    )
    sv.add_argument("--workers", type=int, default=1, metavar="N", help="device workers (each loads the models)")
    sv.add_argument("--queue", type=int, default=8, metavar="N", help="jobs and images waiting at most; more get 429")
    sv.add_argument("--max-upload-mb", type=float, default=512, metavar="MB", help="larger uploads get 413")
    sv.add_argument("--expire-hours", type=float, default=24, metavar="H", help="results and uploads are removed after")
    sv.add_argument(
        "--fetch-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let image_url fetch from HOST (repeatable; .example.com for its subdomains); off by default",
    )

    sub.add_parser(
        "presets",
        help="list the shipped presets, one line each",
        description="Presets tune the defaults for a kind of footage; use one with --preset NAME.",
    )

    m = sub.add_parser(
        "models",
        help="list, fetch or locate model weights",
        description="Model weights live in one cache folder; downloads are verified by SHA-256.",
    )
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)  # type: ignore[arg-type]
    msub.add_parser("list", parents=[_common(True)], help="each model, whether it is present, its size and path")
    f = msub.add_parser("fetch", parents=[_common(True)], help="download and verify models")
    f.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: those the configuration uses)")
    f.add_argument("-c", "--config", metavar="FILE", help="fetch what this config file uses")
    f.add_argument("-p", "--preset", metavar="NAME", help="fetch what this preset uses")
    f.add_argument("--force", action="store_true", help="download again even if present")
    p = msub.add_parser("path", parents=[_common(True)], help="print where a model's file goes")
    p.add_argument("name", metavar="NAME")
    return parser


def _flags_to_config(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a nested override mapping (the highest precedence)."""
    pairs: dict[str, Any] = {
        "device": getattr(args, "device", None),
        "weights_dir": getattr(args, "weights_dir", None),
        "detector.model": getattr(args, "detector", None),
        "restorer.model": getattr(args, "restorer", None),
        "restorer.blend": getattr(args, "blend", None),
        "restorer.fidelity": getattr(args, "fidelity", None),
        "upscaler.below": getattr(args, "upscale_below", None),
        "output.crf": getattr(args, "crf", None),
        "output.codec": getattr(args, "codec", None),
        "output.preset": getattr(args, "encode_preset", None),
        "output.scale": getattr(args, "scale", None),
        "output.overwrite": True if getattr(args, "overwrite", None) else None,
        "output.audio": False if getattr(args, "no_audio", None) else None,
        "input.strict": True if getattr(args, "strict", None) else None,
        "pipeline.segment_seconds": getattr(args, "segment_seconds", None),
        "pipeline.workers": getattr(args, "workers", None),
        "cluster.address": getattr(args, "ray", None) or None,
    }
    tree: dict[str, Any] = {}
    for dotted, value in pairs.items():
        if value is None:
            continue
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _config(args: argparse.Namespace) -> Config:
    preset = getattr(args, "preset", None)
    return load_config(
        getattr(args, "config", None),
        getattr(args, "set", None) or (),
        _flags_to_config(args),
        preset=preset_path(preset) if preset else None,
    )


def _offline(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "offline", False)) or offline_requested()


def _store(args: argparse.Namespace, config: Config | None = None) -> ModelStore:
    """The model cache; ``restore`` and ``inspect`` fetch a missing model on first use unless offline."""
    override = getattr(args, "weights_dir", None) or (config.weights_dir if config else None)
    quiet = bool(getattr(args, "quiet", False))
    return ModelStore(
        default_weights_dir(override),
        DEFAULT_REGISTRY,
        fetch_missing=args.command in ("restore", "inspect", "serve") and not _offline(args),
        progress=lambda name: _download_bar(name, quiet),
    )


def _fmt_size(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _cmd_models(args: argparse.Namespace) -> int:
    store = _store(args)
    action = args.models_command
    if action == "list":
        _out(f"weights folder: {store.root}")
        _out(f"{'name':24} {'role':9} {'status':8} {'size':>9}  {'licence':24} path")
        for name in store.registry:
            st = store.status(name)
            spec = st.spec
            size = _fmt_size(st.size_bytes) if st.size_bytes is not None else f"~{spec.size_mb:.0f} MB"
            note = "" if spec.sha256 else "  (no confirmed checksum: supply via *.weights)"
            licence = spec.licence if len(spec.licence) <= 24 else spec.licence.split(" (")[0]
            status = "present" if st.present else "missing"
            _out(f"{name:24} {spec.role:9} {status:8} {size:>9}  {licence:24} {st.path}{note}")
            card = f"    {spec.arch}, {spec.params_m:g} M parameters, input {spec.input_size}: {spec.good_at}"
            if spec.extra is not None:
                card += f"; needs {CODEFORMER_INSTALL if spec.extra == 'codeformer' else spec.extra}"
                card += f" ({'installed' if _has_extra(spec.arch) else 'not installed'}); {spec.licence}"
            _out(card)
        return 0
    if action == "path":
        _out(str(store.path(args.name)))
        return 0
    if action == "fetch":
        from vidrestore.report import models_for  # local: keeps 'models list' light

        names = args.names or models_for(_config(args))
        for name in names:
            store.spec(name)  # an unknown name stops before anything is fetched
        failed: list[str] = []
        for name in names:  # every one is tried: an offline machine learns every file to bring at once
            try:
                store.fetch(name, progress=_download_bar(name, quiet=getattr(args, "quiet", False)), force=args.force)
            except ModelError as exc:
                log.debug("%s: %s", name, exc)
                spec = store.spec(name)
                failed.append(f"{name} ({spec.url or 'no download'} -> {store.path(name)})")
                continue
            _out(f"{name}: {store.path(name)}")
        if failed:
            raise ModelError(
                f"{len(failed)} of {len(names)} model(s) could not be fetched; save each file by hand at the "
                f"path given: {'; '.join(failed)}"
            )
        return 0
    raise ConfigError("models: choose an action: list, fetch or path")


def _has_extra(arch: str) -> bool:
    import importlib.util

    return arch != "codeformer" or importlib.util.find_spec("spandrel_extra_arches") is not None


def _download_bar(name: str, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def progress(done: int, total: int | None) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
        b = bar["bar"]
        b.update(done - b.n)
        if total is not None and done >= total:
            b.close()

    return progress


def _cmd_restore(args: argparse.Namespace) -> int:
    from vidrestore.pipeline import restore_paths
    from vidrestore.report import dry_run, run_report

    config = _config(args)
    store = _store(args, config)
    quiet = bool(getattr(args, "quiet", False))
    if args.dry_run:
        _out(yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip())
        for line in dry_run([Path(p) for p in args.inputs], config, store):
            _out(line)
        return 0
    if args.output is None:
        raise ConfigError("restore needs -o/--output OUTPUT (only --dry-run goes without)")
    summary = restore_paths(
        [Path(p) for p in args.inputs],
        Path(args.output),
        config,
        store,
        progress=not quiet and sys.stderr.isatty(),
        resume="require" if args.resume else "never" if args.no_resume else "auto",
        ray=args.ray is not None,
    )
    for line in summary.lines():
        if not quiet or line.startswith("warning:"):  # --quiet drops the summary, never a warning
            sys.stderr.write(line + "\n")
    if args.report:
        Path(args.report).write_text(json.dumps(run_report(summary, config, store), indent=2) + "\n", encoding="utf-8")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from vidrestore.inspection import inspect_path

    config = _config(args)
    summary = inspect_path(
        Path(args.input),
        config,
        _store(args, config),
        json_out=args.json,
        annotate_out=Path(args.annotate) if args.annotate else None,
        progress=not getattr(args, "quiet", False) and sys.stderr.isatty(),
    )
    if args.json != "-" and not getattr(args, "quiet", False):  # stdout is free: the short table
        for line in summary.lines():
            _out(line)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from vidrestore.compare import compare_paths
    from vidrestore.io.atomic import check_target

    config = _config(args)
    original, restored = Path(args.original), Path(args.restored)
    if args.output is None and args.plot is None:
        raise ConfigError("compare needs -o OUTPUT, --plot PNG or both")
    if args.plot is not None and args.report is None:
        raise ConfigError("--plot needs --report JSON: the report of the restore run that made RESTORED")
    for src in (original, restored):
        if not src.is_file():
            raise InputError(f"{src}: no such file")
    targets = [Path(p) for p in (args.output, args.plot) if p is not None]
    for dst in targets:
        check_target(dst, [original, restored], config.output.overwrite)
    quiet = getattr(args, "quiet", False)
    if args.plot is not None:  # first: a report without figures stops the run before the long part
        from vidrestore.plot import write_flicker_plot

        points = write_flicker_plot(Path(args.report), original, Path(args.plot), config.output.overwrite)
        if not quiet:
            sys.stderr.write(f"done: {args.plot} (flicker of {points} frame(s))\n")
    if args.output is not None:
        frames = compare_paths(original, restored, Path(args.output), config, "split" if args.split else "side")
        if not quiet:
            sys.stderr.write(f"done: {args.output} ({frames} frame(s))\n")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        import uvicorn

        from vidrestore.server.app import ServerSettings, create_app
    except ImportError as exc:
        raise ConfigError("vidrestore serve needs the serve extra: pip install 'vidrestore[serve]'") from exc
    config = _config(args)
    token = args.token or os.environ.get("VIDRESTORE_TOKEN") or None
    loopback = args.host in ("127.0.0.1", "::1", "localhost")
    if not loopback and token is None and not args.allow_no_token:
        raise ConfigError(
            f"binding to {args.host} lets other machines in: give a --token (or $VIDRESTORE_TOKEN), "
            "or pass --allow-no-token to accept that anyone who reaches it can use it"
        )
    data = Path(args.data) if args.data else _data_dir()
    settings = ServerSettings(
        config=config,
        models=_store(args, config),
        data=data,
        token=token,
        workers=max(1, args.workers),
        queue_size=max(1, args.queue),
        max_upload=int(args.max_upload_mb * 2**20),
        expire_seconds=args.expire_hours * 3600,
        fetch_hosts=tuple(args.fetch_host),
    )
    app = create_app(settings)
    if not getattr(args, "quiet", False):
        shown = f"[{args.host}]" if ":" in args.host else args.host
        sys.stderr.write(f"serving on http://{shown}:{args.port} (data in {data}); Ctrl-C stops\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _data_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vidrestore" / "serve"


def _cmd_presets(args: argparse.Namespace) -> int:
    presets = list_presets()
    width = max(len(p.name) for p in presets)
    for p in presets:
        _out(f"{p.name:{width}}  {p.summary}")
    _out("use one with: vidrestore restore INPUT -o OUTPUT --preset NAME")
    return 0


def _setup_logging(level: int) -> None:
    """Our log lines go to stderr as ``vidrestore: warning: ...``, one line each."""
    logger = logging.getLogger("vidrestore")
    for handler in [h for h in logger.handlers if getattr(h, "_vidrestore", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vidrestore: %(levelname)s: %(message)s"))
    handler._vidrestore = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    level = logging.DEBUG if debug else logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    _setup_logging(level)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {
        "restore": _cmd_restore,
        "inspect": _cmd_inspect,
        "compare": _cmd_compare,
        "serve": _cmd_serve,
        "models": _cmd_models,
        "presets": _cmd_presets,
    }
    try:
        return handlers[args.command](args)
    except VidrestoreError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"vidrestore: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        finished = getattr(exc, "finished", [])
        done = (
            f"{len(finished)} output(s) were finished before it: {', '.join(map(str, finished))}; " if finished else ""
        )
        sys.stderr.write(f"vidrestore: interrupted; {done}nothing was written at the output path in progress\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"vidrestore: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)\n")
        return 1
