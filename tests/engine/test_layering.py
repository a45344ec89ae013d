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
