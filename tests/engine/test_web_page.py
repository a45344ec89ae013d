"""The server's web page in a real headless Chromium: submit a film, watch it render, play it.

Needs Debian's `chromium` and the `playwright` Python package (driving /usr/bin/chromium; Playwright's own
browser download is never used). Outside CI a missing one skips this test and says what to install;
under CI (CI=true) it fails instead, so the check cannot silently vanish.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reel.engine.serve import ServeConfig, serving_in_thread

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
FILM = """[film]
title = "Browser film"
model = "{model}"
seed = 11
fps = 8
steps = 3

[[shots]]
id = "one"
prompt = "a red circle moving right on a black background"

[[shots]]
id = "two"
prompt = "a yellow square moving up on a navy background"
"""
PLAYABLE = """() => { const v = document.querySelector('#film');
  return v !== null && !v.hidden && v.readyState >= 2 && v.duration > 0; }"""


def chromium_or_skip() -> str:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("pip install playwright==1.65.2 (never `playwright install`)")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        missing.append("apt-get install chromium")
    if missing:
        reason = "the web page test needs headless Chromium: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason} — CI must install these")
        pytest.skip(reason)
    return chromium


def test_page_submits_a_film_and_plays_it(tmp_path, tiny_model):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    config = ServeConfig(port=0, roots=(tiny_model.parent,), data=tmp_path / "data", devices=("cpu",))
    with serving_in_thread(config) as url, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(url)
            # a spec with a mistake: the problems appear, field by field
            page.fill("#spec", FILM.replace("{model}", str(tiny_model)).replace("steps = 3", "steps = 3\nframes = 20"))
            page.click("#submit")
            page.wait_for_selector("#problems li", timeout=30_000)
            assert "film.frames" in page.inner_text("#problems")

            page.fill("#spec", FILM.replace("{model}", str(tiny_model)))
            page.click("#submit")
            page.wait_for_function(PLAYABLE, timeout=120_000)
            video = page.evaluate("() => { const v = document.querySelector('#film');"
                                  " return {state: v.readyState, duration: v.duration, src: v.currentSrc}; }")
            assert video["state"] >= 2 and video["duration"] > 0 and video["src"].endswith("/api/jobs/1/film")
            assert "completed" in page.inner_text("#job-status")
            assert page.locator("#shots .shot.done").count() == 2
            assert page.locator("#shots .shot img").count() == 2  # the live frames
            assert "Browser film" in page.inner_text("#queue")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
