"""A short, bounded load test of `reel serve` on loopback: GET requests, then film submissions.

    .venv/bin/python -m benchmarks.bench_server
    .venv/bin/python -m benchmarks.bench_server --gets 200 --jobs 20 --clients 4

The server runs in this process (uvicorn on 127.0.0.1, a free port, one CPU worker) and renders with a
tiny random Wan model (the server's overhead is the subject, not the model). Phase 1 sends --gets GET
requests (health, job list, one job, a manifest) from --clients threads; phase 2 submits --jobs one-shot
films from the same threads and waits until all are rendered. Every loop is bounded in count and in time
(--deadline seconds per phase) and stops by itself; traffic goes to 127.0.0.1 only. Writes the `server`
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks.results import write_section
from reel.engine.serve import ServeConfig, serving_in_thread

FILM = """[film]
title = "load {n}"
model = "{model}"
steps = 4
seed = {n}

[[shots]]
id = "only"
prompt = "a red circle moving right on a black background"
frames = 5
"""
GETS = ("/api/health", "/api/jobs?limit=50", "/api/jobs/1", "/api/jobs/1/files/out/film.json")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def run_threads(count: int, clients: int, url: str, deadline: float, one) -> tuple[list, list]:
    """`count` calls of one(client, i) spread over `clients` threads; stops at the deadline."""
    results, errors, lock, next_i = [], [], threading.Lock(), iter(range(count))

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    status = one(client, i)
                except httpx.HTTPError as err:
                    status = repr(err)
                with lock:
                    (results if status in (200, 201) else errors).append((time.perf_counter() - t, status))

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per phase at most")
    args = parser.parse_args()
    from reel.models.tiny import build_tiny_wan

    work = Path(tempfile.mkdtemp(prefix="reel-bench-server-"))
    model = build_tiny_wan(work / "models" / "tiny-wan", seed=0)
    config = ServeConfig(host="127.0.0.1", port=0, roots=(model.parent,), data=work / "data", devices=("cpu",))
    toml = {"Content-Type": "application/toml"}
    with serving_in_thread(config) as url, httpx.Client(base_url=url, timeout=30) as http:
        # 0. one job first: model load and warm-up stay out of the figures; it also gives GET /api/jobs/1 a body
        http.post("/api/jobs", content=FILM.format(n=0, model=model), headers=toml).raise_for_status()
        wait_all(http, [1], time.monotonic() + args.deadline)
        # 1. GET requests on an idle server: half from one client, half from every client at once
        get = lambda c, i: c.get(GETS[i % len(GETS)]).status_code  # noqa: E731
        single, single_errors = run_threads(args.gets // 2, 1, url, time.monotonic() + args.deadline, get)
        t0 = time.perf_counter()
        gets, get_errors = run_threads(args.gets - args.gets // 2, args.clients, url,
                                       time.monotonic() + args.deadline, get)
        get_wall = time.perf_counter() - t0
        # 2. submissions from every client at once, then until every film is rendered
        t0 = time.perf_counter()
        posts, post_errors = run_threads(
            args.jobs, args.clients, url, time.monotonic() + args.deadline,
            lambda c, i: c.post(f"/api/jobs?priority={i % 3}", content=FILM.format(n=i + 1, model=model),
                                headers=toml).status_code)
        jobs = wait_all(http, list(range(2, 2 + len(posts))), time.monotonic() + args.deadline)
        job_wall = time.perf_counter() - t0
    stamp = {j["id"]: {k: datetime.fromisoformat(j[k]).timestamp() for k in ("created", "started", "finished")}
             for j in jobs}
    waits = [s["started"] - s["created"] for s in stamp.values()]
    runs = [s["finished"] - s["started"] for s in stamp.values()]
    completed = sum(j["status"] == "completed" for j in jobs)
    ms = [t * 1000 for t, _ in gets]
    one_ms = [t * 1000 for t, _ in single]
    post_ms = [t * 1000 for t, _ in posts]
    command = "python -m benchmarks.bench_server " + " ".join(sys.argv[1:])
    md = f"""## Server: API latency and queue throughput on loopback (tiny random Wan model)

`.venv/bin/{command.strip()}`

One uvicorn server in the benchmark's process (127.0.0.1, one CPU worker); the client threads run in the
same process (they share its GIL and the 2 cores with the server). GETs: health, job list, one job, a
manifest in turn. Films: 1 shot, 32x32, 5 frames, 4 steps each (the server's overhead is the subject).

| measure | value |
|---|---|
| GET, 1 client, one after another | {len(single)} ok, {len(single_errors)} failed; \
latency p50 / p95 {pct(one_ms, .5):.2f} / {pct(one_ms, .95):.2f} ms |
| GET, {args.clients} clients at once | {len(gets)} ok, {len(get_errors)} failed, in {get_wall:.2f} s \
({len(gets) / get_wall:.0f} requests/s) |
| GET latency with {args.clients} clients p50 / p95 / max | {pct(ms, .5):.1f} / {pct(ms, .95):.1f} / {max(ms):.1f} ms |
| submissions (POST /api/jobs, spec checked and queued) | {len(posts)} ok, {len(post_errors)} failed |
| submission latency p50 / p95 / max | {pct(post_ms, .5):.1f} / {pct(post_ms, .95):.1f} / {max(post_ms):.1f} ms |
| jobs completed | {completed} / {len(jobs)} in {job_wall:.1f} s ({completed / job_wall * 60:.0f} films/minute) |
| per job: render time (start to end) median | {statistics.median(runs):.2f} s |
| per job: time in the queue median / max | {statistics.median(waits):.1f} / {max(waits):.1f} s |
"""
    write_section("server", md, {"single_client_gets_ms": one_ms, "gets_ms": ms,
                                 "get_errors": [str(e) for _, e in single_errors + get_errors],
                                 "get_wall_s": get_wall, "post_ms": post_ms,
                                 "post_errors": [str(e) for _, e in post_errors], "job_wall_s": job_wall,
                                 "render_s": runs, "queue_wait_s": waits, "completed": completed})
    print(md)


def wait_all(http: httpx.Client, ids: list[int], deadline: float) -> list[dict]:
    """The jobs once every one has ended, or as they are at the deadline."""
    while True:
        jobs = [http.get(f"/api/jobs/{i}").json() for i in ids]
        if all(j["status"] in ("completed", "failed", "cancelled") for j in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


if __name__ == "__main__":
    main()
