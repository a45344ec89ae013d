"""Fuzz reel's HTTP API with schemathesis over its own OpenAPI document: every operation, positive and
negative data (boundary values, wrong types, NUL bytes, huge numbers, stateful sequences from the links it
infers), against a real server on 127.0.0.1 with a real token, the built-in model and a CPU worker. The
property: no 5xx answer, every answer as the document declares it, no /api operation open without the token.

    .venv/bin/python -m benchmarks.bench_server_fuzz --examples 100    # the long run; writes `server_fuzz`

tests/engine/test_serve_schema.py runs the same with a few examples per operation. Requests are counted from
schemathesis' HAR report (every request it sent, with the status it got).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from reel.engine.serve import ServeConfig, serving_in_thread

REPO = Path(__file__).resolve().parents[1]
# positive_data_acceptance is left out: the body schema says "a string" / "an object", and most of those are
# not films (a spec's own rules, such as frames = 4k+1, are no JSON Schema; they answer 400 with problems).
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
          "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
          "allow_header_conformance", "ignored_auth")


def fuzz_root(root: Path) -> Path:
    """A root holding what the studio routes look for, and what broke them before: the demo film (the schema's
    example project path), a folder named like a spec, a spec nested too deep to parse, a short WAV."""
    import shutil
    import wave

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "models" / "shapes" / "demo.toml", root / "demo.toml")
    (root / "folder.toml").mkdir(exist_ok=True)
    (root / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with wave.open(str(root / "music.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 8000)
    return root


def fuzz_server(work: Path, examples: int, seed: int = 1, checks=CHECKS, timeout: float = 1800) -> dict:
    """Serve on loopback, run `schemathesis run` against it, and count what it sent (from its HAR report)."""
    # 1. a real server: token, one root (fuzz_root), the built-in model, one CPU worker
    token = secrets.token_urlsafe(24)
    root = fuzz_root(work / "root")
    config = ServeConfig(host="127.0.0.1", port=0, token=token, roots=(root,), data=work / "data", devices=("cpu",))
    har = work / "fuzz.har"
    started = time.perf_counter()
    with serving_in_thread(config) as url:
        # 2. schemathesis' CLI in its own process (its caches land in `work`, not in the checkout)
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}openapi.json", "--header",
               f"Authorization: Bearer {token}", "--checks", ",".join(checks), "--mode", "all", "--max-examples",
               str(examples), "--seed", str(seed), "--workers", "1", "--request-timeout", "5",
               "--generation-database", "none", "--report", "har", "--report-har-path", str(har), "--no-color"]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "benchmarks.schemathesis_hooks", "PYTHONPATH": str(REPO),
               "NO_COLOR": "1"}
        run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    # 3. every request it sent, by status
    entries = json.loads(har.read_text())["log"]["entries"] if har.is_file() else []
    statuses = Counter(e["response"]["status"] for e in entries)
    return {"exit": run.returncode, "requests": len(entries), "server_errors": sum(n for s, n in statuses.items()
                                                                                   if s >= 500),
            "statuses": dict(sorted(statuses.items())),
            "seconds": round(seconds, 1), "output": run.stdout + run.stderr, "examples": examples, "seed": seed,
            "checks": list(checks)}


def report(result: dict) -> str:
    """The RESULTS.md section."""
    statuses = ", ".join(f"{s}: {n}" for s, n in result["statuses"].items())
    return (f"## Server fuzzing (schemathesis over /openapi.json)\n\n"
            f"`.venv/bin/python -m benchmarks.bench_server_fuzz --examples {result['examples']}`\n\n"
            "schemathesis (every operation, positive and negative data, stateful sequences) against `reel serve` "
            "on 127.0.0.1 with a token, the built-in model and one CPU worker. Checks: "
            f"{', '.join(result['checks'])}.\n\n"
            "| measure | value |\n|---|---|\n"
            f"| requests sent | {result['requests']} |\n"
            f"| 5xx answers | {result['server_errors']} |\n"
            f"| schemathesis exit code (0: every check held) | {result['exit']} |\n"
            f"| answers by status | {statuses} |\n"
            f"| examples per operation (at most), seed | {result['examples']}, {result['seed']} |\n"
            f"| time | {result['seconds']:.0f} s |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="schemathesis' --max-examples per operation")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reel-fuzz-") as work:
        result = fuzz_server(Path(work), args.examples, args.seed)
    print(result["output"][-6000:])
    print(json.dumps({k: v for k, v in result.items() if k != "output"}, indent=2))
    from benchmarks.results import write_section

    write_section("server_fuzz", report(result), {k: v for k, v in result.items() if k != "output"})
    sys.exit(0 if result["exit"] == 0 and result["server_errors"] == 0 else 1)


if __name__ == "__main__":
    main()
