"""The package's layers import downwards only, and the modules stay small and of one idea.

    front ends   cli/, api, server/, inspection, compare, plot, __main__
    executors    run/: file < segments/ (plan < render, join < manifest) < tasks < local < ray < restore
    report       report
    work         stages/ and io/ (which never import each other)
    models       models/
    base         records, errors, control, stats, config, schema, presets, geometry, transfer, colour, device, progress

The checks read the source (``ast``), so a planted upward import fails them without running it.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vidrestore"
MAX_LINES = 400
BASE = (
    "records",
    "errors",
    "control",
    "stats",
    "config",
    "schema",
    "presets",
    "geometry",
    "transfer",
    "colour",
    "device",
    "progress",
)
FRONT = ("cli", "api", "server", "inspection", "compare", "plot", "__main__")
RUN_ORDER = {
    "file": 0,
    "segments.plan": 1,
    "segments.render": 2,
    "segments.join": 2,
    "segments.manifest": 3,
    "segments": 3,
    "tasks": 4,
    "local": 5,
    "ray": 6,
    "restore": 7,
}
# function-level imports of our own modules are allowed only for optional extras (the cluster and
# the server need extras that a plain install lacks), and in front ends that nothing imports back
# (the CLI loads what a command runs when it runs, so --help stays light)
OPTIONAL = ("vidrestore.run.ray", "vidrestore.server")
LAZY_FRONTS = ("vidrestore", "vidrestore.cli.commands")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> tuple[int, float]:
    """(layer, place within the executors) of one of our modules."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in BASE:
        return (0, 0)
    head = parts[0]
    if head == "models":
        return (1, 0)
    if head in ("io", "stages"):
        return (2, 0)
    if head == "report":
        return (3, 0)
    if head == "run":
        inner = ".".join(parts[1:])
        return (4, RUN_ORDER.get(inner, -1) if inner else 8)
    if head in FRONT:
        return (5, 0)
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layout.py and to the README's map")


def top_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m == "vidrestore" or m.startswith("vidrestore.")}


def function_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module:
                    found.add(sub.module)
                elif isinstance(sub, ast.Import):
                    found.update(a.name for a in sub.names)
    return {m for m in found if m == "vidrestore" or m.startswith("vidrestore.")}


def graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): top_imports(p) for p in root.rglob("*.py")}


def upward_imports(root: Path) -> list[str]:
    """Every import that goes up a layer (or up the executors' order), or between io and stages."""
    bad = []
    for mod, imports in graph(root).items():
        for target in imports:
            here, there = rank(mod), rank(target)
            crossing = {
                mod.split(".")[1:2][0] if "." in mod else "",
                target.split(".")[1:2][0] if "." in target else "",
            }
            if there > here or crossing == {"io", "stages"}:
                bad.append(f"{mod} -> {target}")
    return bad


def cycles(root: Path) -> list[list[str]]:
    """Import cycles among module-level imports (a package imports its __init__ too)."""
    g = graph(root)
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if nxt not in g:
                continue
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    return found


def dodging_imports(root: Path) -> list[str]:
    bad = []
    for p in root.rglob("*.py"):
        mod = module_name(p, root)
        if mod in LAZY_FRONTS:
            continue
        for target in function_imports(p):
            if not target.startswith(OPTIONAL):
                bad.append(f"{mod} imports {target} inside a function")
    return bad


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(PKG) == []


def test_every_import_goes_down_the_layers() -> None:
    assert upward_imports(PKG) == []


def test_no_function_level_import_dodges_a_cycle() -> None:
    assert dodging_imports(PKG) == []


def test_report_stages_io_and_models_never_reach_the_executors_or_a_front_end() -> None:
    for mod, imports in graph(PKG).items():
        if rank(mod)[0] <= 3:
            reached = [m for m in imports if rank(m)[0] >= 4]
            assert not reached, f"{mod} imports {reached}"


def test_a_planted_upward_import_or_cycle_is_caught(tmp_path: Path) -> None:
    """The checks above are not vacuous: a copy of the package with one bad import fails each."""
    copy = tmp_path / "vidrestore"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert upward_imports(copy) == [] and cycles(copy) == [] and dodging_imports(copy) == []
    probe = copy / "io" / "probe.py"
    original = probe.read_text()
    probe.write_text(original + "\nfrom vidrestore.run.file import drive  # planted\n")
    assert "vidrestore.io.probe -> vidrestore.run.file" in upward_imports(copy)
    assert cycles(copy)  # run.file -> io.reader -> io.probe -> run.file
    probe.write_text(original + "\n\ndef planted() -> None:\n    from vidrestore.run.file import drive\n")
    assert dodging_imports(copy) == ["vidrestore.io.probe imports vidrestore.run.file inside a function"]
    stages = copy / "stages" / "fuse.py"
    stages.write_text(stages.read_text() + "\nfrom vidrestore.io.probe import open_input  # planted\n")
    assert "vidrestore.stages.fuse -> vidrestore.io.probe" in upward_imports(copy)


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_base_modules_import_nothing_above_them() -> None:
    for name in BASE:
        leaves = ("vidrestore.errors", "vidrestore.records", "vidrestore.colour", "vidrestore.schema")
        bad = [m for m in top_imports(PKG / f"{name}.py") if m not in leaves]
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
    assert top_imports(PKG / "transfer.py") == set()


def test_the_server_and_the_cluster_sit_on_top() -> None:
    """Only the CLI reaches the server; only the restore planner reaches the cluster executor, and
    neither reaches back into the CLI."""
    for path in PKG.rglob("*.py"):
        mod = module_name(path, PKG)
        imports = top_imports(path) | function_imports(path)
        if not mod.startswith(("vidrestore.server", "vidrestore.cli")):
            assert not [m for m in imports if m.startswith("vidrestore.server")], mod
        if mod not in ("vidrestore.run.restore", "vidrestore.run.ray"):
            assert "vidrestore.run.ray" not in imports, mod
        if not mod.startswith("vidrestore.cli") and mod != "vidrestore.__main__":
            assert not [m for m in imports if m.startswith("vidrestore.cli")], mod


def test_the_test_kit_is_not_in_the_package() -> None:
    assert not (PKG / "testing.py").exists() and not (PKG / "corpus.py").exists()
    for path in PKG.rglob("*.py"):
        assert not [m for m in top_imports(path) | function_imports(path) if m.startswith("testkit")], path
