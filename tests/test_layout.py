"""The package's layers import downwards only (cli -> pipeline -> {stages, io} -> models -> base)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vidrestore"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.startswith("vidrestore")}


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("io", ("vidrestore.stages", "vidrestore.pipeline", "vidrestore.cli", "vidrestore.models")),
        ("stages", ("vidrestore.io", "vidrestore.pipeline", "vidrestore.cli")),
        ("models", ("vidrestore.io", "vidrestore.stages", "vidrestore.pipeline", "vidrestore.cli")),
    ],
)
def test_layers_import_downwards_only(layer: str, forbidden: tuple[str, ...]) -> None:
    for path in (PKG / layer).rglob("*.py"):
        bad = [m for m in imports_of(path) if m.startswith(forbidden)]
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_base_modules_import_nothing_above_them() -> None:
    for name in ("records", "geometry", "config", "errors", "control", "stats"):
        bad = [m for m in imports_of(PKG / f"{name}.py") if m not in ("vidrestore.errors", "vidrestore.records")]
        assert not bad, f"{name}.py imports {bad}"


def test_no_print_eval_or_shell_in_the_library() -> None:
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("print", "eval", "exec"), f"{path.name}:{node.lineno}"
            if isinstance(node, ast.keyword) and node.arg == "shell":
                pytest.fail(f"{path.name}:{node.lineno} passes shell=")


def test_no_committed_file_over_1_mb() -> None:
    import subprocess

    root = PKG.parent
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    big = [f for f in files if (root / f).is_file() and (root / f).stat().st_size > 1_000_000]
    assert not big


def test_the_sample_clip_is_what_its_script_makes() -> None:
    import av

    sample = PKG.parent / "clips" / "sample.mp4"
    with av.open(str(sample)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.video[0].frames == 75


def test_the_stages_package_is_a_map_not_a_module() -> None:
    tree = ast.parse((PKG / "stages" / "__init__.py").read_text())
    assert all(isinstance(n, ast.Expr) for n in tree.body), "stages/__init__.py holds only its docstring"


def test_transfer_functions_sit_at_the_base() -> None:
    assert imports_of(PKG / "transfer.py") == set()


def test_the_server_and_the_cluster_sit_on_top() -> None:
    """Only the CLI reaches the server; only the run loop reaches the cluster backend, and neither
    reaches back into the CLI."""
    for path in PKG.rglob("*.py"):
        if path.parent.name == "server" or path.name == "cli.py":
            continue
        assert not [m for m in imports_of(path) if m.startswith("vidrestore.server")], path.name
        if path.name not in ("pipeline.py", "cluster.py"):
            assert "vidrestore.cluster" not in imports_of(path), path.name
    for path in [*(PKG / "server").glob("*.py"), PKG / "segments.py", PKG / "runner.py", PKG / "cluster.py"]:
        assert "vidrestore.cli" not in imports_of(path), path.name
