"""`reel serve` at its edge: schemathesis over /openapi.json against a real server on 127.0.0.1 (every operation,
positive and negative data, a few examples each), the parameters that used to reach SQLite and pathlib
unchecked, the declared error bodies, and the catch-all that answers an unexpected exception without a trace.

The long fuzz run is benchmarks/bench_server_fuzz.py (its request count is in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.testclient import TestClient

from benchmarks.bench_server_fuzz import fuzz_server
from reel.engine.serve import ServeConfig, create_app
from reel.engine.serve_api import add_error_handlers

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path):
    result = fuzz_server(tmp_path, examples=8)
    assert result["exit"] == 0 and result["server_errors"] == 0, result["output"][-8000:]
    statuses = result["statuses"]
    assert result["requests"] > 300, statuses
    assert statuses.get(201, 0) > 0, statuses  # the documented example spec (built-in model) was queued
    assert statuses.get(401, 0) > 0, statuses  # ignored_auth: /api operations sent without the token


@contextlib.contextmanager
def client(tmp_path, **overrides):
    config = ServeConfig(**{"token": TOKEN, "data": tmp_path / "data", "devices": ("cpu",), **overrides})
    with TestClient(create_app(config), base_url="http://127.0.0.1:8188") as http:
        yield http


def test_job_ids_shot_ids_and_file_names_are_checked_at_the_edge(tmp_path):
    with client(tmp_path) as http:
        for job_id in ("0", "-1", str(2**63), str(2**64), "9" * 40, "1.5", "x"):
            for suffix in ("", "/film", "/spec", "/events", "/shots/a", "/files/out/film.json"):
                r = http.get(f"/api/jobs/{job_id}{suffix}", headers=AUTH)
                assert r.status_code == 400, (job_id, suffix, r.text)
                assert r.json()["problems"][0]["field"] == "path.job_id"
            assert http.post(f"/api/jobs/{job_id}/cancel", headers=AUTH).status_code == 400
        assert http.get(f"/api/jobs/{2**63 - 1}", headers=AUTH).status_code == 404  # in range: no such job
        for shot in ("a%00b", "%2e%2e", "a.b", "-a", "a" * 65, "%C3%A9"):
            r = http.get(f"/api/jobs/1/shots/{shot}", headers=AUTH)
            assert r.status_code == 400 and r.json()["problems"][0]["field"] == "path.shot_id", (shot, r.text)
        for name in ("%00", "out/%00x", "a%00b", "%2e%2e/queue.db", "out/%2e%2e/%2e%2e/queue.db", ".hidden", "out//x",
                     "a\\b", "x/" * 9 + "y", "a" * 129):
            r = http.get(f"/api/jobs/1/files/{name}", headers=AUTH)
            assert r.status_code == 400 and r.json()["problems"][0]["field"] == "path.path", (name, r.text)
        assert http.get("/static/%00", headers=AUTH).status_code == 400
        for query in ("status=bogus", "limit=0", "limit=1001", f"limit={2**64}"):
            assert http.get(f"/api/jobs?{query}", headers=AUTH).status_code == 400, query
        assert http.post(f"/api/jobs?priority={2**64}", headers=AUTH).status_code == 400
        # a request without the token learns nothing about its parameters
        assert http.get(f"/api/jobs/{2**64}").status_code == 401


def test_the_openapi_document_declares_every_answer(tmp_path):
    with client(tmp_path) as http:
        doc = http.get("/openapi.json").json()
        problem = {"$ref": "#/components/schemas/Problem"}
        for path, operations in doc["paths"].items():
            for method, op in operations.items():
                where = f"{method.upper()} {path}"
                assert "422" not in op["responses"], where  # errors answer 400 with a Problem, not FastAPI's 422
                for status in ("4XX", "5XX"):
                    assert op["responses"][status]["content"]["application/json"]["schema"] == problem, where
                assert any(s.startswith("2") for s in op["responses"]), where
                if path.startswith("/api/") and path != "/api/session":
                    assert op["security"] == [{"HTTPBearer": []}], where
        job_id = doc["paths"]["/api/jobs/{job_id}"]["get"]["parameters"][0]["schema"]
        assert (job_id["type"], job_id["minimum"], job_id["maximum"]) == ("integer", 1, 2**63 - 1)
        example = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/toml"]["example"]
        assert http.post("/api/validate", content=example, headers={**AUTH, "Content-Type": "application/toml"}
                         ).status_code == 200  # the documented example is a film this server accepts
        r = http.options("/api/jobs", headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST" and "error" in r.json()


def test_an_unexpected_exception_is_a_json_500_without_a_traceback():
    app = FastAPI()
    add_error_handlers(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail /home/someone/.ssh")

    with TestClient(app, raise_server_exceptions=False) as http:
        r = http.get("/boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "problems"} and "internal error" in body["error"] and "server's log" in body["error"]
    assert "secret detail" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
