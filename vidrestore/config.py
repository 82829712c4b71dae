"""One typed configuration for a run: loaded, checked and overridden here.

Convention: every key lives in a frozen dataclass of :mod:`vidrestore.schema` (re-exported here),
with its default and a ``help`` line in the field's metadata; ``configs/default.yaml`` mirrors
them (a test keeps the two equal). Precedence, lowest first: the defaults, a ``--config`` file,
then ``--set KEY=VALUE`` overrides and CLI flags. Values from files and ``--set`` are
parsed with ``yaml.safe_load`` only. Any unknown key, wrong type or out-of-range
value raises :class:`ConfigError` naming the dotted key and where it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from vidrestore.errors import ConfigError
from vidrestore.schema import (
    ClusterConfig,
    Config,
    DetectorConfig,
    EncoderPreset,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    RestorerConfig,
    SmoothingConfig,
    TemporalConfig,
    UpscalerConfig,
)

__all__ = [
    "ClusterConfig",
    "Config",
    "DetectorConfig",
    "EncoderPreset",
    "InputConfig",
    "OutputConfig",
    "PipelineConfig",
    "RestorerConfig",
    "SmoothingConfig",
    "TemporalConfig",
    "UpscalerConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
]

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML/JSON dumps and reports)."""
    return dataclasses.asdict(config)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, key, source)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and ("on" if value else "off") in choices:
            value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: {key} = {value!r} is not valid; choose {_type_name(tp)[7:]}{hint}")
        return value
    if tp is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):  # NaN passes every range check: refuse it here
        raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
    return float(value) if tp is float else value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _merge(base: Any, data: Mapping[str, Any], source: str, prefix: str = "") -> Any:
    """A copy of dataclass ``base`` with ``data`` applied, checked key by key."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    hints = _hints(type(base))
    changes: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            changes[name] = _merge(current, value, source, key + ".")
            continue
        checked = _coerce(value, hints[name], key, source)
        meta = fields[name].metadata
        lo, hi = meta.get("lo"), meta.get("hi")
        if checked is not None and not isinstance(checked, (str, bool)):
            if (lo is not None and checked < lo) or (hi is not None and checked > hi):
                raise ConfigError(f"{source}: {key} = {checked!r} is out of range [{lo}, {hi}]")
        changes[name] = checked
    return dataclasses.replace(base, **changes)


def _check(config: Config, source: str) -> Config:
    """Rules that span keys or need more than a type and range."""
    if config.smoothing.window % 2 == 0:
        raise ConfigError(f"{source}: smoothing.window must be odd, got {config.smoothing.window}")
    if config.output.scale not in (1, 2, 4):
        raise ConfigError(f"{source}: output.scale must be 1, 2 or 4, got {config.output.scale}")
    if config.output.scale > 1 and config.upscaler.model == "none":
        raise ConfigError(f"{source}: output.scale > 1 needs an upscaler.model")
    dev = config.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"{source}: device = {dev!r} is not valid; use auto, cpu, cuda, cuda:N or mps")
    return config


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set: {dotted} goes through a value that is not a section")
    node[parts[-1]] = value


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set: cannot parse the value of {key}: {raw!r}") from exc
        _set_dotted(tree, key, value)
    return tree


def apply_overrides(config: Config, overrides: Mapping[str, Any], source: str) -> Config:
    """Apply a nested mapping of overrides, checked, to ``config``."""
    return _check(_merge(config, overrides, source), source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file -> empty mapping)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must hold a mapping of keys")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    preset: str | Path | None = None,
) -> Config:
    """Defaults < ``preset`` (YAML) < ``path`` (YAML) < ``overrides`` (``KEY=VALUE`` strings) < ``extra`` (flags)."""
    config = Config()
    if preset is not None:
        config = apply_overrides(config, read_config_file(preset), f"preset {Path(preset).stem}")
    if path is not None:
        config = apply_overrides(config, read_config_file(path), str(path))
    sets = parse_set(overrides)
    if sets:
        config = apply_overrides(config, sets, "--set")
    if extra:
        config = apply_overrides(config, extra, "command line")
    return _check(config, str(path) if path else "defaults")


def iter_keys(config: Any = None, prefix: str = "") -> Iterable[tuple[str, Any, str]]:
    """Every leaf key as ``(dotted_key, value, help)``."""
    config = Config() if config is None else config
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, f.metadata.get("help", "")
