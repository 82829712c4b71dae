"""The command line's parser tree, and the configuration its flags give."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, get_args

from vidrestore import __version__
from vidrestore.config import Config, EncoderPreset, load_config
from vidrestore.models.store import offline_requested
from vidrestore.presets import list_presets, preset_path

__all__ = ["build_parser", "config_from", "offline"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"vidrestore: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


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
            help=f"a shipped preset: {', '.join(p.name for p in list_presets())} (see 'vidrestore presets')",
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
    long.add_argument(
        "--workers", type=int, metavar="N", help="pipeline.workers: segment pipelines run at once (0: auto)"
    )
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
    sv.add_argument(
        "--max-json-mb",
        type=float,
        default=64,
        metavar="MB",
        help="larger JSON bodies get 413 (a data: URL image is at most 3/4 of this)",
    )
    sv.add_argument(
        "--max-uploads", type=int, default=8, metavar="N", help="uploads streaming in at once at most; more get 429"
    )
    sv.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a request body that stalls S seconds, or averages under 8 KiB/s after S seconds, gets 408",
    )
    sv.add_argument("--max-pixels", type=int, default=50_000_000, metavar="N", help="larger input images get 413")
    sv.add_argument(
        "--max-output-pixels", type=int, default=100_000_000, metavar="N", help="larger outputs (after scale) get 413"
    )
    sv.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a connection whose request head has not arrived in S seconds is closed",
    )
    sv.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="open connections at most (the open-file limit is raised to fit); more get 503",
    )
    sv.add_argument(
        "--public-url",
        metavar="URL",
        help="what output URLs start with (default: the bound address; never a Host header)",
    )
    sv.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer to besides loopback ones",
    )
    sv.add_argument(
        "--allow-downloads",
        action="store_true",
        help="let a request's parameters (restorer=...) make the server download a model it lacks",
    )
    sv.add_argument(
        "--allow-origin", action="append", default=[], metavar="URL", help="a web page origin allowed to call the API"
    )
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


def config_from(args: argparse.Namespace) -> Config:
    preset = getattr(args, "preset", None)
    return load_config(
        getattr(args, "config", None),
        getattr(args, "set", None) or (),
        _flags_to_config(args),
        preset=preset_path(preset) if preset else None,
    )


def offline(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "offline", False)) or offline_requested()
