"""`reel serve`: the HTTP API, the SQLite queue and its workers, on the tiny random Wan model.

Real HTTP through FastAPI's TestClient (a real uvicorn process for the crash test), real renders, a real
SQLite file. Waits are bounded by deadlines (they fail with the job's state, they measure nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reel.engine.cli import app as cli
from reel.engine.jobqueue import TERMINAL
from reel.engine.post.contact import read_video
from reel.engine.serve import ServeConfig, create_app
from reel.engine.serve_security import BindError, check_bind
from reel.engine.spec import SpecError, load_film

REPO = Path(__file__).resolve().parents[2]
FILM = """
[film]
title = "Served"
model = "{model}"
seed = 3
fps = 8
steps = 3

[[shots]]
id = "a"
prompt = "a red circle moving left on a black background"

[[shots]]
id = "b"
prompt = "a blue square moving up on a gray background"
frames = 5
"""
ONE_SHOT = """
[film]
title = "{title}"
model = "{model}"
steps = 2

[[shots]]
id = "only"
prompt = "a green triangle moving down on a navy background"
frames = 5
"""
TOML = {"Content-Type": "application/toml"}
TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@contextlib.contextmanager
def serving(tmp_path, tiny_model, root, **overrides):
    config = ServeConfig(**{"roots": (root, tiny_model.parent), "data": tmp_path / "data", "devices": ("cpu",),
                            **overrides})
    with TestClient(create_app(config), base_url="http://127.0.0.1:8188") as client:
        yield client


def spec(tiny_model, body: str = FILM, **fields) -> str:
    for key, value in {**fields, "model": str(tiny_model)}.items():
        body = body.replace("{" + key + "}", value)
    return body


def wait_for(get, job_id: int, statuses=TERMINAL, timeout: float = 90.0, check=None) -> dict:
    """Poll GET /api/jobs/{id} until the job's status is in `statuses` (and `check(job)` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses and (check is None or check(job)):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not reach {statuses} within {timeout} s: {job}")
        time.sleep(0.02)


def read_events(client, job_id: int) -> list[tuple[str, dict]]:
    """The server-sent events of a job until its `end` event."""
    out, event = [], None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[6:])))
                if event == "end":
                    break
    return out


# ---- submit, follow, download -----------------------------------------------------------------------
def test_submit_follow_and_download(tmp_path, tiny_model, root):
    with serving(tmp_path, tiny_model, root) as client:
        r = client.post("/api/jobs", content=spec(tiny_model), headers=TOML)
        assert r.status_code == 201, r.text
        job = r.json()
        assert r.headers["location"] == f"/api/jobs/{job['id']}"
        assert job["shots"] == ["a", "b"] and job["title"] == "Served" and job["status"] in ("queued", "running")

        events = read_events(client, job["id"])
        assert events[-1][0] == "end"
        last = [data for name, data in events if name == "job"][-1]
        assert last["status"] == "completed", last
        assert last["progress"]["shots_done"] == 2
        assert {s["status"] for s in last["progress"]["shots"].values()} == {"done"}
        assert last["result"]["rendered"] == 2 and last["links"]["film"] == f"/api/jobs/{job['id']}/film"

        # the film, as a file and by byte ranges (what a <video> element asks for)
        film = client.get(last["links"]["film"])
        assert film.status_code == 200 and film.headers["content-type"] == "video/mp4"
        (tmp_path / "film.mp4").write_bytes(film.content)
        frames, fps = read_video(tmp_path / "film.mp4")
        assert frames.shape == (9 + 5, 32, 32, 3) and fps == 8
        part = client.get(last["links"]["film"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == film.content[:100]
        # shot clips, the live frames, the manifests
        clip = client.get(f"/api/jobs/{job['id']}/shots/b")
        (tmp_path / "b.mp4").write_bytes(clip.content)
        assert read_video(tmp_path / "b.mp4")[0].shape == (5, 32, 32, 3)
        png = client.get(f"/api/jobs/{job['id']}/shots/a/frame.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        missing = client.get(f"/api/jobs/{job['id']}/shots/zz")
        assert missing.status_code == 404 and "its shots: a, b" in missing.json()["error"]
        manifest = client.get(f"/api/jobs/{job['id']}/files/out/film.json").json()
        assert [s["id"] for s in manifest["shots"]] == ["a", "b"]
        assert client.get(f"/api/jobs/{job['id']}/files/%2e%2e/%2e%2e/queue.db").status_code == 400  # at the edge
        assert client.get(f"/api/jobs/{job['id']}/spec").text == spec(tiny_model)

        # the same film as JSON, with a priority: a second job, listed first
        data = tomllib.loads(spec(tiny_model))
        r = client.post("/api/jobs?priority=7", json=data)
        assert r.status_code == 201, r.text
        second = wait_for(client.get, r.json()["id"])
        assert second["status"] == "completed" and second["priority"] == 7
        listed = client.get("/api/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [second["id"], job["id"]]

        # the page and the API description
        assert 'id="spec"' in client.get("/").text
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/../serve.py").status_code == 404
        doc = client.get("/openapi.json").json()
        assert "application/toml" in doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
        assert "/api/jobs/{job_id}/events" in doc["paths"]


# ---- validation: the CLI's messages ------------------------------------------------------------------
BAD = FILM.replace('frames = 5', 'frames = 20').replace("steps = 3", "steps = 3\nwidth = 30")


def test_spec_errors_carry_the_cli_messages(tmp_path, tiny_model, root, write_spec):
    path = write_spec(BAD)
    with pytest.raises(SpecError) as err:
        load_film(path)
    expected = [{"field": f, "message": m} for f, m in err.value.problems]
    assert {p["field"] for p in expected} == {"film.width", "shots[1].frames (shot 'b')"}
    cli_out = CliRunner().invoke(cli, ["validate", str(path)]).output
    with serving(tmp_path, tiny_model, root, max_body=4000) as client:
        r = client.post("/api/jobs", content=path.read_text(), headers=TOML)
        assert r.status_code == 400
        assert r.json()["problems"] == expected
        for p in r.json()["problems"]:
            assert f"{p['field']}: {p['message']}" in cli_out
        assert client.post("/api/validate", content=path.read_text(), headers=TOML).json()["problems"] == expected

        r = client.post("/api/jobs", content=FILM.replace("steps = 3", "stepz = 3"), headers=TOML)
        assert r.json()["problems"][0]["field"] == "film.stepz" and "did you mean 'steps'" in r.text
        r = client.post("/api/jobs", content="[film\ntitle=", headers=TOML)
        assert r.status_code == 400 and "not valid TOML" in r.json()["problems"][0]["message"]
        r = client.post("/api/jobs", content="[1, 2]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "a spec is a table" in r.json()["problems"][0]["message"]
        r = client.post("/api/jobs", content=spec(tiny_model), headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/toml" in r.json()["error"]
        r = client.post("/api/jobs", content=spec(tiny_model) + "#" * 5000, headers=TOML)
        assert r.status_code == 413 and "--max-body" in r.json()["error"]
        r = client.post("/api/jobs?priority=500", content=spec(tiny_model), headers=TOML)
        assert r.status_code == 400 and r.json()["problems"][0]["field"] == "query.priority"
        r = client.post("/api/jobs?preview=true", content=spec(tiny_model), headers=TOML)
        assert r.status_code == 400 and "no preview adapter" in r.json()["error"]
        ok = client.post("/api/validate", content=spec(tiny_model), headers=TOML)
        assert ok.status_code == 200 and ok.json()["shots"] == ["a", "b"]
        assert client.get("/api/jobs").json()["jobs"] == []  # nothing was queued
        assert client.get("/api/jobs/99").status_code == 404


# ---- files under the roots ---------------------------------------------------------------------------
def test_paths_outside_the_roots_are_refused(tmp_path, tiny_model, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"not read")
    (outside / "bob.safetensors").write_bytes(b"not read")
    (root / "link.png").symlink_to(outside / "x.png")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "lib" / "bob").mkdir(parents=True)  # a library inside the root whose LoRA lies outside
    (root / "lib" / "bob" / "character.toml").write_text(f'lora = "{outside}/bob.safetensors"\ntrigger = "sks"\n')
    film = spec(tiny_model)
    cases = {  # spec text -> the field the 400 must name
        film.replace(str(tiny_model), str(outside)): "film.model",
        film.replace(str(tiny_model), str(root / ".." / "outside")): "film.model",
        film.replace('frames = 5', f'image = "{outside}/x.png"'): "shots[1].image (shot 'b')",
        film.replace('frames = 5', f'image = "{outside}/missing.png"'): "shots[1].image (shot 'b')",
        film.replace('frames = 5', 'image = "../outside/x.png"'): "shots[1].image (shot 'b')",
        film.replace('frames = 5', 'image = "link.png"'): "shots[1].image (shot 'b')",
        film.replace('frames = 5', 'image = "linkdir/x.png"'): "shots[1].image (shot 'b')",
        film.replace('frames = 5', 'image = "~/x.png"'): "shots[1].image (shot 'b')",
        film + f'\n[characters.bob]\nlora = "{outside}/bob.safetensors"\ntrigger = "sks"\n': "characters.bob.lora",
        film + '\n[characters.bob]\nlora = ["../outside/bob.safetensors"]\ntrigger = "sks"\n': "characters.bob.lora[0]",
        film + '\n[[audio]]\nfile = "../outside/music.wav"\n': "audio[0].file",
        film.replace("steps = 3", 'steps = 3\nupscale = "/etc/upscaler.pth"'): "film.upscale",
        film.replace("steps = 3", f'steps = 3\npreview_lora = "{outside}/bob.safetensors"'): "film.preview_lora",
        film.replace("steps = 3", f'steps = 3\npreview_decoder = "{outside}/dec.safetensors"'): "film.preview_decoder",
        film.replace("steps = 3", f'steps = 3\ncharacters = "{outside}"'): "film.characters",
        film.replace("steps = 3", 'steps = 3\ncharacters = "lib"').replace("a red circle", "{bob} a red circle"):
            "characters.bob.lora",
    }
    with serving(tmp_path, tiny_model, root) as client:
        for text, field in cases.items():
            r = client.post("/api/jobs", content=text, headers=TOML)
            assert r.status_code == 400, (field, r.text)
            problems = r.json()["problems"]
            named = [p for p in problems if p["field"] == field]
            assert named and "outside the folders this server may read" in named[0]["message"], (field, problems)
        symlinked = client.post("/api/jobs", content=film.replace('frames = 5', 'image = "link.png"'), headers=TOML)
        assert "symbolic link" in symlinked.json()["problems"][0]["message"]
        data = tomllib.loads(film)
        data["shots"][0]["image"] = "x\0.png"
        r = client.post("/api/jobs", json=data)
        assert r.status_code == 400 and r.json()["problems"][0]["field"] == "shots[0].image (shot 'a')"
        assert client.get("/api/jobs").json()["jobs"] == []
        # built-in names are not files; a relative path inside the first root passes the check
        builtin = film.replace("steps = 3", 'steps = 3\nupscale = "x2"')
        assert client.post("/api/validate", content=builtin, headers=TOML).status_code == 200
        (root / "model").symlink_to(tiny_model, target_is_directory=True)  # a link from one root into another
        assert client.post("/api/validate", content=film.replace(str(tiny_model), "model"),
                           headers=TOML).status_code == 200


# ---- authentication ----------------------------------------------------------------------------------
def test_check_bind_needs_a_token_off_loopback():
    for host in ("127.0.0.1", "127.0.0.5", "localhost", "::1", "[::1]"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "reel.example.org"):
        with pytest.raises(BindError, match="--token"):
            check_bind(host, None)
        check_bind(host, TOKEN)


def test_serve_command_refuses_a_public_address_without_token(tmp_path, monkeypatch):
    monkeypatch.delenv("REEL_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and "REEL_TOKEN" in result.output
    result = CliRunner().invoke(cli, ["serve", "--root", str(tmp_path / "nope"), "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not a folder" in result.output


def test_token_is_required_when_set(tmp_path, tiny_model, root):
    with serving(tmp_path, tiny_model, root, token=TOKEN) as client:
        r = client.get("/api/jobs")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in r.json()["error"]
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/api/jobs", content=spec(tiny_model), headers=TOML).status_code == 401
        assert client.get("/api/jobs/1/film").status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/jobs", headers=good).json()["jobs"] == []  # nothing got queued
        assert client.get("/api/jobs", headers={**good, "Host": "reel.example.org"}).status_code == 200
        assert client.get("/").status_code == 200  # the page itself holds no data
        assert client.post("/api/session", json={"token": "wrong"}).status_code == 401
        assert client.post("/api/session", content=b"{" * 10_000).status_code == 413
        assert client.post("/api/session", json={"token": TOKEN}).status_code == 200
        assert client.get("/api/jobs").status_code == 200  # the session cookie now carries the token


def test_without_token_only_loopback_names_and_same_origin(tmp_path, tiny_model, root):
    with serving(tmp_path, tiny_model, root) as client:
        client.post("/api/queue/pause")
        r = client.get("/api/jobs", headers={"Host": "attacker.example:8188"})
        assert r.status_code == 403 and "loopback" in r.json()["error"]
        r = client.post("/api/jobs", content=spec(tiny_model), headers={**TOML, "Origin": "http://attacker.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
        r = client.post("/api/jobs", content=spec(tiny_model), headers={**TOML, "Origin": "http://127.0.0.1:8188"})
        assert r.status_code == 201
        assert client.get("/api/jobs", headers={"Host": "localhost:8188"}).status_code == 200


# ---- the queue: order, priorities, cancelling, restarts ----------------------------------------------
def test_concurrent_submissions_run_in_priority_order(tmp_path, tiny_model, root):
    priorities = [0, 2, 0, 5, 2, -1, 5, 0]
    with serving(tmp_path, tiny_model, root) as client:
        assert client.post("/api/queue/pause").json() == {"paused": True}
        ids, errors = [], []

        def submit(i: int, priority: int) -> None:
            r = client.post(f"/api/jobs?priority={priority}", content=spec(tiny_model, ONE_SHOT, title=f"j{i}"),
                            headers=TOML)
            (ids.append((r.json()["id"], priority)) if r.status_code == 201 else errors.append(r.text))

        threads = [threading.Thread(target=submit, args=(i, p)) for i, p in enumerate(priorities)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(ids) == len(priorities)
        queued = client.get("/api/jobs?status=queued").json()["jobs"]
        expected = [i for i, _ in sorted(ids, key=lambda x: (-x[1], x[0]))]
        assert sorted(queued, key=lambda j: j["position"]) == sorted(queued, key=lambda j: expected.index(j["id"]))
        client.post("/api/queue/resume")
        done = [wait_for(client.get, i) for i, _ in ids]
        assert {j["status"] for j in done} == {"completed"}
        assert [j["id"] for j in sorted(done, key=lambda j: j["run_order"])] == expected


def test_cancel_queued_and_running_jobs(tmp_path, tiny_model, root):
    slow = spec(tiny_model, ONE_SHOT, title="slow").replace("steps = 2", "steps = 1000")
    with serving(tmp_path, tiny_model, root) as client:
        client.post("/api/queue/pause")
        running = client.post("/api/jobs", content=slow, headers=TOML).json()
        queued = client.post("/api/jobs", content=spec(tiny_model, ONE_SHOT, title="q"), headers=TOML).json()
        assert client.post(f"/api/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
        client.post("/api/queue/resume")
        wait_for(client.get, running["id"], ("running",),
                 check=lambda j: j["progress"]["shots"]["only"]["step"] > 0)
        assert client.post(f"/api/jobs/{running['id']}/cancel").status_code == 200
        job = wait_for(client.get, running["id"])
        assert job["status"] == "cancelled" and job["links"]["film"] is None
        assert client.post(f"/api/jobs/{running['id']}/cancel").status_code == 409
        after = client.post("/api/jobs", content=spec(tiny_model, ONE_SHOT, title="after"), headers=TOML).json()
        assert wait_for(client.get, after["id"])["status"] == "completed"  # the worker goes on


def test_queued_job_survives_a_restart(tmp_path, tiny_model, root):
    with serving(tmp_path, tiny_model, root) as client:
        client.post("/api/queue/pause")
        job = client.post("/api/jobs?priority=3", content=spec(tiny_model), headers=TOML).json()
    with serving(tmp_path, tiny_model, root) as client:  # a new app on the same data folder
        again = client.get(f"/api/jobs/{job['id']}").json()
        assert again["status"] == "queued" and again["priority"] == 3 and again["position"] == 1
        assert client.get("/api/health").json()["paused"] is True  # the pause persists too
        client.post("/api/queue/resume")
        assert wait_for(client.get, job["id"])["status"] == "completed"


def start_server(tmp_path, tiny_model, root) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "reel.engine.cli", "serve", "--port", "0", "--root", str(root), "--root",
           str(tiny_model.parent), "--data", str(tmp_path / "data"), "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = ""
    while "reel server on http://" not in (line := proc.stdout.readline()):  # "reel server on URL — ..."
        seen += line
        if not line:
            proc.kill()
            raise AssertionError(f"the server did not start:\n{seen}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
    return proc, line.split(" on ", 1)[1].split(" ", 1)[0].rstrip("/")


def test_crash_mid_job_resumes_from_finished_shots(tmp_path, tiny_model, root):
    film = spec(tiny_model).replace('frames = 5', 'frames = 5\nsteps = 1000')  # shot b is slow: the crash lands in it
    proc, url = start_server(tmp_path, tiny_model, root)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            job = http.post("/api/jobs", content=film, headers=TOML).json()
            wait_for(http.get, job["id"], ("running",), check=lambda j: j["progress"]["shots"]["a"]["status"] == "done")
            proc.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
            proc.wait(timeout=30)
    finally:
        proc.kill()
    shots = tmp_path / "data" / "jobs" / str(job["id"]) / "out" / "shots"
    a_written = (shots / "a.mp4").stat().st_mtime_ns
    assert not (shots / "b.json").exists()  # b was cut off mid-render
    with sqlite3.connect(tmp_path / "data" / "queue.db") as db:
        assert db.execute("SELECT status FROM jobs WHERE id = ?", (job["id"],)).fetchone() == ("running",)

    with serving(tmp_path, tiny_model, root) as client:  # started again (in this process: no second start-up)
        done = wait_for(client.get, job["id"])
        assert done["status"] == "completed", done
        assert done["attempts"] == 2
        assert done["result"]["shots"] == {"a": "reused", "b": "rendered"}
        assert done["progress"]["shots"]["a"]["status"] == "reused"
        assert client.get(f"/api/jobs/{job['id']}/film").status_code == 200
    assert (shots / "a.mp4").stat().st_mtime_ns == a_written
