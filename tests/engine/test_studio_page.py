"""The studio page in a real headless Chromium (Debian's /usr/bin/chromium through Playwright): open the demo
project, reorder shots by keyboard and by drag, edit a prompt, render three preview takes and pick the second,
add an audio track, render the film, export OTIO; then the spec file, the outputs and the film's duration, and the
refusals (a conflicting save, a missing token, a path outside --root). The same steps run in Debian's Firefox
ESR over WebDriver BiDi (tests/engine/firefox_page.py), with the token login. Under CI a missing browser fails.

Screenshots of each view go to tmp_path, and to REEL_SCREENSHOTS=DIR when set (docs/studio/ in the repository).
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from studio_fixtures import demo_root, duration_of
from test_web_page import CHROMIUM_FLAGS, chromium_or_skip

from reel.engine.plan import stable_seed
from reel.engine.serve import ServeConfig, serving_in_thread

TOKEN = "studio-test-token-0123456789"


def ids(page) -> list[str]:
    return page.eval_on_selector_all("#cards .card", "cards => cards.map(c => c.dataset.shot)")


def snap(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"))
    if os.environ.get("REEL_SCREENSHOTS"):
        Path(os.environ["REEL_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(os.environ["REEL_SCREENSHOTS"]) / f"{name}.png")


def storyboard_steps(page, spec: Path) -> None:
    """Reorder by keyboard (Alt+Up) and by drag, edit a prompt in place."""
    page.wait_for_selector("#cards .card", timeout=30_000)
    assert ids(page) == ["opening", "rise", "crossing", "fall", "chase", "closing"]
    page.focus('.card[data-shot="rise"]')
    page.keyboard.press("Alt+ArrowUp")
    page.wait_for_function("() => document.querySelector('#cards .card').dataset.shot === 'rise'")
    page.drag_and_drop('.card[data-shot="fall"]', '.card[data-shot="crossing"]', source_position={"x": 20, "y": 8},
                       target_position={"x": 20, "y": 8})  # from the card's thumbnail, not its text box
    page.wait_for_function("() => document.querySelectorAll('#cards .card')[2].dataset.shot === 'fall'")
    assert ids(page) == ["rise", "opening", "fall", "crossing", "chase", "closing"]
    page.fill('.card[data-shot="opening"] textarea', "a red square moving left on a black background")
    page.keyboard.press("Tab")
    page.wait_for_function("() => document.querySelector('#spec-text').value.includes('a red square moving left')")
    assert "a red square moving left" in spec.read_text()


def takes_steps(page) -> None:
    """Three preview takes of `chase`, live, then pick the second."""
    page.click('.card[data-shot="chase"] .open-takes')
    page.fill("#take-count", "3")
    page.click("#render-takes")
    page.wait_for_function("() => document.querySelectorAll('#take-grid button.pick:not([disabled])').length === 3",
                           timeout=180_000)
    page.wait_for_function("() => document.querySelectorAll('#take-grid video').length === 3")
    page.click("#play-takes")
    page.click('#take-grid button[aria-label="pick take 2"]')
    page.wait_for_function("() => document.querySelector('#takes-title').textContent.includes('picked take 2')")


def timeline_steps(page, tmp_path: Path) -> Path:
    """Add the WAV as a track (its waveform drawn from the server's peaks), render the film, export OTIO."""
    film_steps(page)
    with page.expect_download() as download:
        page.click("a.export.otio")
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    return target


def film_steps(page) -> None:
    """Add the WAV as a track with a volume (its waveform drawn from the server's peaks), render the film and
    wait until the page's player has it."""
    page.click('nav button[data-view="timeline"]')
    page.select_option("#audio-file", label="music.wav")
    page.click("#add-audio")
    page.wait_for_function("() => { const c = document.querySelector('.audio-clip canvas');"
                           " return c && Number(c.dataset.peaks) > 0; }", timeout=30_000)
    page.fill('input[aria-label="volume of track 0"]', "0.5")
    page.keyboard.press("Tab")
    page.wait_for_function("() => document.querySelector('#spec-text').value.includes('volume = 0.5')")
    page.click("#render-film")
    page.wait_for_function("() => { const v = document.querySelector('#film');"
                           " return !v.hidden && v.readyState >= 1 && v.duration > 0; }", timeout=300_000)


def test_studio_page_end_to_end(tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    spec = demo_root(tmp_path / "root")
    config = ServeConfig(port=0, roots=(spec.parent,), data=tmp_path / "data", devices=("cpu",))
    with serving_in_thread(config) as url, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                       headless=True, args=CHROMIUM_FLAGS, accept_downloads=True,
                                                       viewport={"width": 1200, "height": 800})
        try:
            page = browser.new_page()
            page.goto(url + "studio?project=demo.toml")
            storyboard_steps(page, spec)
            snap(page, tmp_path, "storyboard")
            takes_steps(page)
            snap(page, tmp_path, "takes")
            otio = timeline_steps(page, tmp_path)
            page.evaluate("() => { const v = document.querySelector('#film'); v.currentTime = v.duration / 2; }")
            snap(page, tmp_path, "timeline")
            page.click('nav button[data-view="characters"]')
            snap(page, tmp_path, "characters")
            page_duration = page.evaluate("() => document.querySelector('#film').duration")

            # a conflicting save: the file changes on disk behind the page; the page shows the conflict
            page.click('nav button[data-view="storyboard"]')
            spec.write_text(spec.read_text() + "\n# edited elsewhere\n")
            page.fill('.card[data-shot="closing"] textarea', "a purple circle moving up on a black background")
            page.keyboard.press("Tab")
            page.wait_for_selector("#conflict", state="visible")
            assert "purple circle" not in spec.read_text() and spec.read_text().endswith("# edited elsewhere\n")
            snap(page, tmp_path, "conflict")
        finally:
            browser.close()

    # the spec: order, prompt, picked seed, audio track; comments kept
    text = spec.read_text()
    data = tomllib.loads(text)
    assert text.startswith("# The demo film") and [s["id"] for s in data["shots"]] == [
        "rise", "opening", "fall", "crossing", "chase", "closing"]
    chase = next(s for s in data["shots"] if s["id"] == "chase")
    first = stable_seed(2026, "chase")
    assert chase["seed"] == stable_seed(first, "take-2")
    assert data["audio"] == [{"file": "music.wav", "at": 0.0, "volume": 0.5}]
    # the outputs: the film (6 shots x 9 frames at 8 fps), its OTIO export
    films = sorted((tmp_path / "data" / "jobs").glob("*/out/film.mp4"))
    assert films and abs(duration_of(films[-1]) - 6 * 9 / 8) < 0.2 and abs(page_duration - 6 * 9 / 8) < 0.2
    timeline = json.loads(otio.read_text())
    assert timeline["OTIO_SCHEMA"].startswith("Timeline") and "chase" in otio.read_text()


def get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_studio_refuses_without_token_and_outside_root(tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    spec = demo_root(tmp_path / "root")
    (tmp_path / "outside.toml").write_text(spec.read_text())
    config = ServeConfig(port=0, roots=(spec.parent,), data=tmp_path / "data", devices=("cpu",), token=TOKEN)
    with serving_in_thread(config) as url, sync_playwright() as p:
        assert get(url + "api/studio/projects")[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for outside in (str(tmp_path / "outside.toml"), str(tmp_path / "missing.toml"), "../outside.toml"):
            status, body = get(url + "api/studio/project?path=" + urllib.request.quote(outside, safe=""), auth)
            assert status == 403 and "outside the folders" in body["error"]
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                       headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(url + "studio")
            page.wait_for_selector("#login", state="visible")  # no token yet: the page asks for it
            page.fill("#token", TOKEN)
            page.click("#login button")
            page.wait_for_selector('#cards .card[data-shot="opening"]', timeout=30_000)
            page.goto(url + "studio?project=" + urllib.request.quote(str(tmp_path / "outside.toml"), safe=""))
            page.wait_for_function("() => document.querySelector('#state').textContent.includes('outside the folders')")
        finally:
            browser.close()


def test_studio_page_in_firefox(tmp_path):
    """The same steps in Debian's Firefox ESR over WebDriver BiDi (tests/engine/firefox_page.py): storyboard
    (keyboard and drag reorder, a prompt typed in place), three preview takes played and take 2 picked, an audio
    track, the film rendered and played, its OTIO export fetched, each view screenshotted."""
    from firefox_page import firefox_page, firefox_or_skip

    firefox_or_skip()
    spec = demo_root(tmp_path / "root")
    config = ServeConfig(port=0, roots=(spec.parent,), data=tmp_path / "data", devices=("cpu",), token=TOKEN)
    with serving_in_thread(config) as url, firefox_page(tmp_path / "profile") as page:
        page.goto(url + "studio")
        page.wait_for_selector("#login", state="visible")  # no token yet: the page asks for it
        page.fill("#token", TOKEN)
        page.click("#login button")
        page.wait_for_selector('#cards .card[data-shot="opening"]', timeout=30_000)
        page.goto(url + "studio?project=demo.toml")
        storyboard_steps(page, spec)
        snap(page, tmp_path, "firefox-storyboard")
        takes_steps(page)
        snap(page, tmp_path, "firefox-takes")
        film_steps(page)
        snap(page, tmp_path, "firefox-timeline")
        page_duration = page.evaluate("() => document.querySelector('#film').duration")
        otio = page.evaluate("async () => { const a = document.querySelector('a.export.otio');"
                             " const r = await fetch(a.href); return [r.status, await r.text()]; }")
        page.click('nav button[data-view="characters"]')
        snap(page, tmp_path, "firefox-characters")
        labels = page.evaluate("() => [...document.querySelectorAll('button, input, select, textarea')]"
                               ".filter((e) => e.offsetParent !== null && !(e.labels && e.labels.length)"
                               " && !e.getAttribute('aria-label') && !e.textContent.trim()).map((e) => e.outerHTML)")
    assert labels == []  # every visible control has an accessible name
    data = tomllib.loads(spec.read_text())
    assert [s["id"] for s in data["shots"]] == ["rise", "opening", "fall", "crossing", "chase", "closing"]
    assert data["shots"][1]["prompt"] == "a red square moving left on a black background"
    chase = next(s for s in data["shots"] if s["id"] == "chase")
    assert chase["seed"] == stable_seed(stable_seed(2026, "chase"), "take-2")
    assert data["audio"] == [{"file": "music.wav", "at": 0.0, "volume": 0.5}]
    films = sorted((tmp_path / "data" / "jobs").glob("*/out/film.mp4"))
    assert films and abs(duration_of(films[-1]) - 6.75) < 0.2 and abs(page_duration - 6.75) < 0.2
    assert otio[0] == 200 and json.loads(otio[1])["OTIO_SCHEMA"].startswith("Timeline") and "chase" in otio[1]
