"""DESIGN's layering: the spec and the plan import no torch (fast CLI start, validation without weights), and
all code imports reel's parts as `reel.engine`, `reel.models`, `reel.kernels`, never by their folder names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDER_NAMES = ("engine", "models", "kernels")


def test_spec_and_plan_import_no_torch(tmp_path):
    code = ("import sys, reel.engine.spec, reel.engine.plan, reel.engine.cast, reel.engine.spec_post; "
            "print('torch' in sys.modules)")
    # from an unrelated folder: the package is found as installed, not through the checkout's folders
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False"


def _python_files():
    for folder in (*FOLDER_NAMES, "scripts", "benchmarks", "tests"):
        yield from (p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_nothing_imports_the_folders_by_their_own_names():
    """`import engine...` works from the repository root by accident (a namespace folder) and nowhere else."""
    wrong = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            names += [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.split(".")[0] in FOLDER_NAMES and node.value.count(".") == 1 and \
                node.value.replace(".", "").replace("_", "").isalnum() else []
            wrong += [f"{path.relative_to(REPO)}:{node.lineno}: {name}" for name in names
                      if name.split(".")[0] in FOLDER_NAMES]
    assert not wrong, "import these as reel.<folder>...:\n" + "\n".join(wrong)


def test_family_modules_in_the_registry_are_importable_paths():
    from importlib.util import find_spec

    from reel.models.registry import FAMILIES

    for family in FAMILIES.values():
        assert family.module.startswith("reel.models.") and find_spec(family.module) is not None, family.module


def _import_graph() -> dict[str, set[str]]:
    """{reel module: the reel modules it imports}, lazy imports (inside functions) included."""
    parts = {"engine": "reel.engine", "models": "reel.models", "kernels": "reel.kernels"}
    files = {}
    for part, package in parts.items():
        for path in (REPO / part).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            name = ".".join([package, *path.relative_to(REPO / part).with_suffix("").parts])
            files[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_lazy_ones_included():
    assert _cycles(_import_graph()) == []


def test_dependencies_point_one_way():
    """engine -> models -> kernels: models never import engine, kernels import neither."""
    wrong = [f"{m} imports {d}" for m, deps in _import_graph().items() for d in deps
             if (m.startswith("reel.models") and d.startswith("reel.engine"))
             or (m.startswith("reel.kernels") and not d.startswith("reel.kernels"))]
    assert not wrong, "\n".join(wrong)


def test_the_speed_section_is_torch_free():
    code = "import sys, reel.engine.speed; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _python_files():
        if "tests" in path.relative_to(REPO).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}")
    assert not long, "\n".join(long)
