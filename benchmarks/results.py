"""Write one benchmark's section of benchmarks/RESULTS.md (and its JSON beside it), atomically.

Each benchmark owns the text between `<!-- NAME -->` and `<!-- /NAME -->`; other sections are kept.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
HEADER = "# Benchmark results\n\nEvery section says the command that reproduces it. Machine facts are per section.\n"


def machine() -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/RESULTS.md", ":(exclude)benchmarks/results"],
                               capture_output=True, text=True, cwd=HERE.parent).stdout.strip()  # outputs don't count
        if dirty:  # the run used code that was not committed yet: say so next to the commit
            commit += " + uncommitted changes"
    except OSError:
        commit = "?"
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "commit": commit,
            "date": datetime.now(timezone.utc).isoformat(timespec="minutes")}


def write_section(name: str, markdown: str, data: dict) -> None:
    """Replace (or append) section `name` in RESULTS.md and write benchmarks/results/NAME.json."""
    info = machine()
    body = (f"<!-- {name} -->\n{markdown.rstrip()}\n\n_Machine: {info['cores']} cores ({info['cpu']}), "
            f"torch {info['torch']} with {info['torch_threads']} threads, CUDA {info['cuda']}; "
            f"commit {info['commit']}; "
            f"{info['date']}._\n<!-- /{name} -->\n")
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->\n"
    if start in text and end in text:
        text = text[:text.index(start)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + body
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": info, "command": " ".join(sys.argv), **data}, indent=2) + "\n")


def model_under_test(ref: str) -> tuple[str, str]:
    """(model to load, note for the section title). The built-in model ships trained weights, so the note is
    empty; it stays for sections whose model needs a word in the title."""
    return ref, ""
