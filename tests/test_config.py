from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from vidrestore.config import Config, config_to_dict, iter_keys, load_config, parse_set
from vidrestore.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_yaml_lists_every_key_with_its_default_and_a_comment() -> None:
    text = (CONFIGS / "default.yaml").read_text()
    assert yaml.safe_load(text) == config_to_dict(Config())
    for key, _, help_text in iter_keys():
        leaf = key.split(".")[-1]
        line = next((ln for ln in text.splitlines() if re.match(rf"\s*{re.escape(leaf)}:", ln)), None)
        assert line is not None, key
        assert "#" in line, f"{key} has no comment in default.yaml"
        assert help_text, f"{key} has no help text"


def test_design_keys_exist() -> None:
    keys = {k for k, _, _ in iter_keys()}
    for required in (
        "device",
        "detector.model",
        "detector.weights",
        "restorer.model",
        "restorer.weights",
        "restorer.blend",
        "upscaler.model",
        "upscaler.weights",
        "upscaler.below",
        "smoothing.method",
        "output.codec",
        "output.crf",
        "pipeline.queue_size",
    ):
        assert required in keys


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_file_validates(preset: str) -> None:
    config = load_config(CONFIGS / preset)
    assert isinstance(config, Config)


def test_presets_change_only_some_keys() -> None:
    for preset in CONFIGS.glob("*.yaml"):
        if preset.name == "default.yaml":
            continue
        data = yaml.safe_load(preset.read_text())
        assert 0 < sum(len(v) if isinstance(v, dict) else 1 for v in data.values()) < 15, preset


def test_precedence_defaults_file_set_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("restorer:\n  blend: 0.3\n  batch_size: 2\noutput:\n  crf: 30\n")
    c = load_config(f)
    assert (c.restorer.blend, c.restorer.batch_size, c.output.crf) == (0.3, 2, 30)
    c = load_config(f, ["restorer.blend=0.6"])
    assert (c.restorer.blend, c.restorer.batch_size) == (0.6, 2)
    c = load_config(f, ["restorer.blend=0.6"], {"restorer": {"blend": 0.9}})
    assert c.restorer.blend == 0.9
    assert c.output.crf == 30
    assert c.detector == Config().detector


def test_unknown_key_is_named_with_the_file_and_a_suggestion(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("restorer:\n  blnd: 0.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'restorer\.blnd' \(did you mean 'restorer\.blend'"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"--set: unknown key 'restorer\.blnd'"):
        load_config(None, ["restorer.blnd=0.5"])
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_config(None, ["colour=1"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("restorer.blend=1.5", r"restorer\.blend = 1\.5 is out of range \[0\.0, 1\.0\]"),
        ("restorer.blend=high", r"restorer\.blend must be float"),
        ("restorer.batch_size=2.5", r"restorer\.batch_size must be int"),
        ("output.audio=maybe", r"output\.audio must be bool"),
        ("detector.model=retinaface", r"detector\.model = 'retinaface' is not valid.*did you mean"),
        ("smoothing.window=4", r"smoothing\.window must be odd"),
        ("output.scale=3", r"output\.scale must be 1, 2 or 4"),
        ("device=gpu", r"device = 'gpu' is not valid"),
        ("restorer=1", r"restorer must be a mapping"),
    ],
)
def test_bad_values_are_errors_naming_the_key(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])


def test_set_values_are_parsed_as_yaml_scalars_not_code() -> None:
    assert parse_set(["a.b=1", "c=true", "d=x", "e=__import__('os')"]) == {
        "a": {"b": 1},
        "c": True,
        "d": "x",
        "e": "__import__('os')",
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["novalue"])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("restorer: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML at line"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_config_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().device = "cpu"  # type: ignore[misc]
