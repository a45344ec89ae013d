"""The studio's API on a real server on loopback: every new endpoint, with good and bad input (no renders here
beyond one preview take; the page test renders the film)."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from studio_fixtures import demo_root

from reel.engine.serve import ServeConfig, serving_in_thread


def call(url: str, method: str = "GET", body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def studio(tmp_path):
    spec = demo_root(tmp_path / "root")
    config = ServeConfig(port=0, roots=(spec.parent,), data=tmp_path / "data", devices=("cpu",))
    with serving_in_thread(config) as url:
        yield url + "api/studio/", spec


def test_projects_open_save_conflict_and_edits(studio):
    api, spec = studio
    status, listing = call(api + "projects")
    assert status == 200 and [p["name"] for p in listing["projects"]] == ["demo.toml"]
    assert [a.rsplit("/", 1)[-1] for a in listing["audio"]] == ["music.wav"]
    status, project = call(api + "project?path=demo.toml")
    assert status == 200 and project["valid"] and len(project["shots"]) == 6 and project["duration"] == 6.75
    assert project["shots"][0] | {"status": "not rendered", "frames": 9, "duration": 1.125} == project["shots"][0]

    bad = project["text"].replace('id = "rise"', 'id = "rise"\nframes = 10')
    status, saved = call(api + "project?path=demo.toml", "PUT", {"text": bad, "etag": project["etag"]})
    assert status == 200 and spec.read_text() == bad and not saved["valid"]  # kept, with its problems
    assert any(p["shot"] == "rise" and p["key"] == "frames" for p in saved["problems"])

    status, conflict = call(api + "project?path=demo.toml", "PUT", {"text": "lost", "etag": project["etag"]})
    assert status == 409 and conflict["text"] == bad and conflict["etag"] == saved["etag"]
    assert spec.read_text() == bad  # never overwritten

    etag = saved["etag"]
    for edit in ({"op": "move_shot", "shot": "closing", "to": 0}, {"op": "remove_shot", "shot": "fall"},
                 {"op": "set_shot", "shot": "rise", "field": "frames", "value": None},
                 {"op": "set_shot", "shot": "chase", "field": "seconds", "value": 2},  # 8 fps: 17 frames
                 {"op": "add_shot", "shot": "extra", "value": "a red circle moving up on a black background", "to": 1},
                 {"op": "add_audio", "fields": {"file": "music.wav", "at": 0.5}},
                 {"op": "set_audio", "track": 0, "field": "fade_in", "value": 0.25}):
        status, after = call(api + "edit?path=demo.toml", "POST", {"etag": etag, **edit})
        assert status == 200, after
        etag = after["etag"]
    assert [s["id"] for s in after["shots"]] == ["closing", "extra", "opening", "rise", "crossing", "chase"]
    assert after["valid"] and after["audio"][0]["fade_in"] == 0.25 and spec.read_text().startswith("# The demo film")
    chase = next(s for s in after["shots"] if s["id"] == "chase")
    assert chase["frames"] == 17 and "seconds = 2" in spec.read_text()
    status, wave = call(api + "waveform?path=demo.toml&track=0&bins=50")
    assert status == 200 and len(wave["peaks"]) == 50 and abs(wave["seconds"] - 2.0) < 0.05
    assert 0.12 < max(wave["peaks"]) < 0.13  # lavfi's sine has amplitude 1/8


@pytest.mark.parametrize("request_", [
    ("GET", "project?path=/etc/hostname.toml", None, 403), ("GET", "project?path=..%2Fx.toml", None, 403),
    ("GET", "project?path=nothing.toml", None, 404), ("GET", "project?path=music.wav", None, 400),
    ("GET", "project", None, 400), ("PUT", "project?path=demo.toml", {"text": "x"}, 400),
    ("PUT", "project?path=demo.toml", {"text": "x", "etag": "XYZ"}, 400),
    ("POST", "edit?path=demo.toml", {"etag": "", "op": "explode"}, 400),
    ("POST", "edit?path=demo.toml", {"etag": "", "op": "remove_shot", "shot": "rise"}, 409),
    ("POST", "takes?path=demo.toml&shot=nope&n=2", None, 404),
    ("POST", "takes?path=demo.toml&shot=rise&n=99", None, 400),
    ("GET", "waveform?path=demo.toml&track=0", None, 404), ("GET", "films/99/export/otio", None, 404),
    ("GET", "films/1/export/mov", None, 400),
    ("POST", "pick?path=demo.toml", {"etag": "", "shot": "rise", "take": 1}, 409),
])
def test_bad_requests_are_refused(studio, request_):
    api, spec = studio
    method, path, body, expected = request_
    before = spec.read_text()
    status, answer = call(api + path, method, body)
    assert status == expected and answer["error"] and spec.read_text() == before


def test_takes_render_through_the_queue_and_pick(studio):
    api, spec = studio
    status, record = call(api + "takes?path=demo.toml&shot=rise&n=2", "POST")
    assert status == 200 and [t["take"] for t in record["takes"]] == [1, 2]
    status, again = call(api + "reroll?path=demo.toml&shot=rise", "POST")
    assert [t["take"] for t in again["takes"]] == [1, 2, 3] and len({t["seed"] for t in again["takes"]}) == 3
    for _ in range(600):
        status, record = call(api + "takes?path=demo.toml&shot=rise")
        if all(t["status"] in ("completed", "failed") for t in record["takes"]):
            break
        time.sleep(0.5)
    assert all(t["status"] == "completed" and t["clip_url"] for t in record["takes"])
    status, project = call(api + "project?path=demo.toml")
    rise = next(s for s in project["shots"] if s["id"] == "rise")
    assert rise["status"] == "preview" and rise["thumbnail"].endswith("/frame.png")
    status, picked = call(api + "pick?path=demo.toml", "POST", {"etag": project["etag"], "shot": "rise", "take": 3})
    assert status == 200 and f"seed = {record['takes'][2]['seed']}" in spec.read_text()


def test_opening_a_project_loads_its_model_before_the_first_preview(studio, caplog):
    """The idle worker loads the opened project's model (Engine.prepare of its preview plan), so the first
    preview's job finds it loaded: its progress never says "loading"."""
    api, _ = studio
    caplog.set_level(logging.INFO, logger="reel.serve")
    assert call(api + "project?path=demo.toml")[0] == 200
    for _ in range(240):
        if any("warmed shapes" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.25)
    assert any("worker cpu warmed shapes" in r.getMessage() for r in caplog.records)
    status, record = call(api + "takes?path=demo.toml&shot=opening&n=1", "POST")
    job, messages = record["takes"][0]["job"], set()
    for _ in range(600):
        status, state = call(api.removesuffix("studio/") + f"jobs/{job}")
        messages.add(state["progress"].get("message", ""))
        if state["status"] in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert state["status"] == "completed" and not any(m.startswith("loading") for m in messages), messages


@pytest.mark.parametrize("path", ["~nouser/x.toml", "~nouser.toml", "~\u00fd\u00de\u0089"])
def test_home_folders_of_unknown_users_are_refused_not_crashed(studio, path):
    """`~name` of no known user made pathlib raise (schemathesis found the 500); now a plain refusal."""
    import urllib.parse

    api, _ = studio
    for method, route in (("GET", "project"), ("POST", "film"), ("GET", "takes")):
        query = urllib.parse.urlencode({"path": path, **({"shot": "rise"} if route == "takes" else {})})
        status, body = call(f"{api}{route}?{query}", method)
        assert status in (400, 403, 404), (route, status, body)


def test_a_picked_final_take_is_reused_by_the_studio_film(studio):
    api, spec = studio
    base = api.replace("api/studio/", "")
    status, record = call(api + "takes?path=demo.toml&shot=rise&n=1&final=true", "POST")
    assert status == 200
    for _ in range(600):
        status, record = call(api + "takes?path=demo.toml&shot=rise")
        if all(t["status"] in ("completed", "failed") for t in record["takes"]):
            break
        time.sleep(0.5)
    assert record["takes"][0]["status"] == "completed", record
    status, project = call(api + "project?path=demo.toml")
    status, picked = call(api + "pick?path=demo.toml", "POST", {"etag": project["etag"], "shot": "rise", "take": 1})
    assert status == 200, picked
    status, job = call(api + "film?path=demo.toml", "POST")
    assert status == 201, job
    for _ in range(1200):
        status, job = call(f"{base}api/jobs/{job['id']}")
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert job["status"] == "completed", job
    shots = job["progress"]["shots"]
    assert shots["rise"]["status"] == "reused" and shots["opening"]["status"] == "done", shots


def test_hostile_files_under_the_root_get_4xx_never_500(studio, tmp_path):
    """What the final review found: long names, a folder named like a spec, a spec nested too deep, a symlink out."""
    api, spec = studio
    root = spec.parent
    (root / "folder.toml").mkdir()
    (root / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    outside = tmp_path / "outside.toml"
    outside.write_text('[film]\ntitle = "secret"\n[[shots]]\nid = "a"\nprompt = "x"\n')
    (root / "link.toml").symlink_to(outside)
    status, listing = call(api + "projects")
    assert status == 200 and {p["name"] for p in listing["projects"]} == {"demo.toml"}  # no link, no deep, no dir
    long = "a" * 300 + ".toml"
    assert call(api + f"project?path={long}")[0] == 400
    assert call(api + f"project?path={long}", "PUT", {"text": "x", "etag": ""})[0] == 400
    status, body = call(api + "project?path=folder.toml", "PUT", {"text": "x", "etag": ""})
    assert status == 400 and "is a folder" in body["error"]
    status, body = call(api + "project?path=demo.toml/inner.toml", "PUT", {"text": "x", "etag": ""})
    assert status in (400, 403) and spec.is_file()


def test_crossfade_shots_get_takes_and_edits_need_tables(studio):
    from reel.engine.studio_takes import _take_spec

    api, spec = studio
    text = spec.read_text().replace('id = "rise"', 'id = "rise"\ntransition = "crossfade"\ntransition_seconds = 0.5')
    taken = _take_spec(text, "rise", 5)
    assert "crossfade" not in taken and "seed = 5" in taken  # alone in its spec a shot cannot fade in
    spec.write_text('shots = [1, 2]\n[film]\ntitle = "t"\n')
    status, project = call(api + "project?path=demo.toml")
    status, body = call(api + "edit?path=demo.toml", "POST", {"etag": project["etag"], "op": "remove_shot",
                                                              "shot": "a"})
    assert status == 400 and "not a list of [[shots]] tables" in body["error"]


def test_takes_of_an_edited_shot_are_queued_again(studio):
    api, spec = studio
    status, first = call(api + "takes?path=demo.toml&shot=rise&n=1", "POST")
    status, same = call(api + "takes?path=demo.toml&shot=rise&n=1", "POST")
    assert same["takes"][0]["job"] == first["takes"][0]["job"]  # the same spec: nothing new
    status, project = call(api + "project?path=demo.toml")
    status, _ = call(api + "edit?path=demo.toml", "POST", {"etag": project["etag"], "op": "set_shot", "shot": "rise",
                                                           "field": "prompt", "value": "a red star moving down"})
    assert status == 200
    status, again = call(api + "takes?path=demo.toml&shot=rise&n=1", "POST")
    assert status == 200 and again["takes"][0]["job"] != first["takes"][0]["job"]  # the edited shot: a new take
