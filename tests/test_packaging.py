"""reel installs as one import package, `reel`, and a wheel install works like the checkout.

- The wheel holds only reel/... and its dist-info: every module and data file of engine/, models/ and
  kernels/ under reel/, nothing at the top level that could clash with another distribution (`kernels` is
  also Hugging Face's package, which transformers >= 5.25 imports).
- From the repository root, `import kernels` is never ours.
- Installed from the wheel into a fresh virtualenv, `reel models`, `reel demo`, `reel render` and `reel serve`
  (its page too) work from an unrelated folder, reading the demo spec, the page, the estimator configs and the
  built-in weights as package data; `pip uninstall reel` then leaves the virtualenv as it was.

    .venv/bin/python -m pytest tests/test_packaging.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = {"engine": "reel/engine", "models": "reel/models", "kernels": "reel/kernels"}
DATA_SUFFIXES = (".json", ".safetensors", ".toml", ".html", ".js", ".css", ".md")


def _source_files() -> set[str]:
    """What the wheel must hold: every module and data file of the three parts, as reel/... paths."""
    listed = subprocess.run(["git", "ls-files", *PARTS], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the source file list comes from git ls-files")
    wanted = set()
    for name in listed.stdout.split():
        part, rest = name.split("/", 1)
        if name.endswith(".py") or name.endswith(DATA_SUFFIXES):
            wanted.add(f"{PARTS[part]}/{rest}")
    return wanted


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (so the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for part in PARTS:
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__", "*.train", "runs",
                                                                               "checkpoints"))
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("reel-*.whl")
    return wheel


def test_the_wheel_holds_only_the_reel_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/"
    outside = [n for n in names if not n.startswith(("reel/", dist_info))]
    assert not outside, f"files outside reel/: {outside}"
    assert not any(n.startswith(("reel/engine/__init__", "kernels/", "engine/", "models/")) for n in names)
    missing = _source_files() - set(names)
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    record = zipfile.ZipFile(wheel).read(dist_info + "RECORD").decode()
    assert all(line.split(",")[0].startswith(("reel/", dist_info)) for line in record.splitlines() if line)
    entry_points = zipfile.ZipFile(wheel).read(dist_info + "entry_points.txt").decode()
    assert "reel = reel.engine.cli:main" in entry_points


def test_import_kernels_from_the_repository_root_is_never_ours():
    run = subprocess.run([sys.executable, "-c", "import importlib.util as u; s = u.find_spec('kernels'); "
                          "print(s.origin if s else None, list(s.submodule_search_locations or []) if s else [])"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    origin = run.stdout.split(" ", 1)[0]
    if origin not in ("None", ""):  # Hugging Face's kernels, a regular package in site-packages
        assert "site-packages" in origin and not origin.startswith(str(REPO / "kernels")), run.stdout
    # else: our folder is at most a namespace portion, which any installed `kernels` takes precedence over
    assert not (REPO / "kernels" / "__init__.py").exists()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; reel's dependencies come from this one's site-packages."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # a path line only: .pth files inside it (our own editable install's) are not processed from there
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    before = sorted(str(p.relative_to(venv)) for p in venv.rglob("*") if "__pycache__" not in p.parts)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                              "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    venv.joinpath("files-before.txt").write_text("\n".join(before))
    return venv


def _run(venv: Path, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**env, "HF_HUB_OFFLINE": "1"})


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    run = _run(installed, ["python", "-c", "import reel.engine.cli as c, reel.models.registry as r; "
                           "print(c.__file__); print(r.BUILTIN_MODELS['shapes'])"], tmp_path)
    assert run.returncode == 0, run.stderr
    for line in run.stdout.split():
        assert line.startswith(str(installed)) and str(REPO) not in line, run.stdout


def test_reel_models_and_demo_work_from_an_unrelated_folder(installed, tmp_path):
    models = _run(installed, ["reel", "models"], tmp_path)
    assert models.returncode == 0, models.stderr
    assert "shapes" in models.stdout
    demo = _run(installed, ["reel", "demo", "--out", "demo", "--device", "cpu", "-q"], tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "demo" / "film.mp4").stat().st_size > 0 and (tmp_path / "demo" / "contact_sheet.png").is_file()
    assert len(list((tmp_path / "demo" / "shots").glob("*.mp4"))) == 6


def test_reel_render_works_from_an_unrelated_folder(installed, tmp_path):
    (tmp_path / "film.toml").write_text('[film]\nmodel = "shapes"\nupscale = "x2"\n'
                                        '[[shots]]\nid = "one"\n'
                                        'prompt = "a red circle moving right on a black background"\n')
    render = _run(installed, ["reel", "render", "film.toml", "--out", "out", "--device", "cpu", "-q"], tmp_path)
    assert render.returncode == 0, render.stderr
    assert (tmp_path / "out" / "shots" / "one.mp4").is_file() and (tmp_path / "out" / "film.mp4").is_file()
    estimate = _run(installed, ["reel", "estimate", "film.toml", "--gpu", "h100", "--model-config", "wan2.1-t2v-1.3b"],
                    tmp_path)
    assert estimate.returncode == 0, estimate.stderr  # the shipped estimator configs are package data


def test_reel_serve_serves_its_page_from_an_unrelated_folder(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([str(installed / "bin" / "reel"), "serve", "--port", "0", "--root", str(tmp_path),
                             "--data", str(tmp_path / "data"), "--device", "cpu"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        seen = ""
        while "reel server on http://" not in (line := proc.stdout.readline()):
            seen += line
            assert line, f"the server did not start:\n{seen}"
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        url = line.split(" on ", 1)[1].split(" ", 1)[0].rstrip("/")
        with httpx.Client(base_url=url, timeout=30) as http:
            page = http.get("/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            for asset in ("app.js", "style.css"):
                assert http.get(f"/static/{asset}").status_code == 200, asset
            assert http.get("/openapi.json").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_pip_uninstall_leaves_the_virtualenv_as_it_was(installed):
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(installed / "bin" / "python"), "uninstall",
                          "-y", "-q", "reel"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    after = sorted(str(p.relative_to(installed)) for p in installed.rglob("*")
                   if "__pycache__" not in p.parts and p.name != "files-before.txt")
    before = installed.joinpath("files-before.txt").read_text().split("\n")
    assert set(before) <= set(after)  # every other package intact
    left = [p for p in set(after) - set(before) if not (installed / p).is_dir() or any((installed / p).iterdir())]
    assert not left, f"left behind: {left}"  # pip may leave the namespace folder reel/ behind, empty
