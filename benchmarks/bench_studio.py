"""The studio page's responsiveness in headless Chromium (Debian's /usr/bin/chromium via Playwright), on this machine's
CPU: page load, preview click to the first decoded frame shown, and a 30-shot storyboard's input latency.

    .venv/bin/python -m benchmarks.bench_studio [--reps 5]

The server runs in this process on 127.0.0.1 with one CPU worker and the built-in `shapes` model (9 frames, 2 steps).
Page load: goto /studio?project=... until every card is drawn. Preview: click a card's Preview button until the card
shows a decoded frame (the live frame or the finished thumbnail); the model is warmed by one preview first. Input
latency: keydown in a prompt of the 30-shot storyboard to the next painted frame (two requestAnimationFrames), and one
prompt edit's round trip (change -> saved by the server -> storyboard redrawn). Writes the `studio` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engine"))

from benchmarks.results import write_section  # noqa: E402
from reel.engine.serve import ServeConfig, serving_in_thread  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
KEY_LATENCY = """async (n) => {
  const box = document.querySelector('#cards .card:nth-child(15) textarea');
  box.focus();
  const out = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    box.dispatchEvent(new KeyboardEvent('keydown', {key: 'a', bubbles: true}));
    box.value += 'a';
    box.dispatchEvent(new InputEvent('input', {bubbles: true}));
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    out.push(performance.now() - t0);
  }
  return out;
}"""


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ms (min {min(values):.0f}, max {max(values):.0f}, n={len(values)})"


def measure(page, url: str, reps: int) -> dict:
    from studio_fixtures import demo_root

    loads, previews, edits, first = [], [], [], {}
    opened = time.perf_counter()  # the first open asks the idle worker to load the model (Studio.open)
    for _ in range(reps):  # 1. page load, 6-shot demo
        t0 = time.perf_counter()
        page.goto(url + "studio?project=demo.toml")
        page.wait_for_selector('#cards .card[data-shot="closing"]')
        loads.append((time.perf_counter() - t0) * 1000)
    shots = ["opening", "rise", "crossing", "fall", "chase", "closing"]
    for i, shot in enumerate(shots[: reps + 1]):  # 2. preview click -> first frame shown (first one warms up)
        t0 = time.perf_counter()
        page.click(f'.card[data-shot="{shot}"] .preview')
        page.wait_for_selector(f'.card[data-shot="{shot}"] img', timeout=120_000)
        if i:
            previews.append((time.perf_counter() - t0) * 1000)
        else:  # a fresh server's first preview: the model was loading since the project opened
            first = {"ms": (time.perf_counter() - t0) * 1000, "clicked_after_open_ms": (t0 - opened) * 1000}
    demo_root(Path(page.evaluate("() => window.studio.S.project.path")).parent / "big", shots=30)
    page.goto(url + "studio?project=big/demo.toml")  # 3. 30 shots: keydown -> paint, and an edit's round trip
    page.wait_for_selector('#cards .card:nth-child(30)')
    keys = page.evaluate(KEY_LATENCY, 50)
    for i in range(reps):
        box = page.locator("#cards .card:nth-child(15) textarea")
        t0 = time.perf_counter()
        box.fill(f"a red circle moving right on a black background {i}")
        page.keyboard.press("Tab")
        page.wait_for_function(f"() => document.querySelector('#spec-text').value.includes('background {i}')")
        edits.append((time.perf_counter() - t0) * 1000)
    return {"page_load_ms": loads, "preview_to_first_frame_ms": previews, "keypress_to_paint_ms": keys,
            "edit_round_trip_ms": edits, "first_preview": first}


def main(argv: list[str] | None = None) -> dict:
    from playwright.sync_api import sync_playwright
    from studio_fixtures import demo_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        spec = demo_root(Path(tmp) / "root")
        config = ServeConfig(port=0, roots=(spec.parent,), data=Path(tmp) / "data", devices=("cpu",))
        with serving_in_thread(config) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            try:
                data = measure(browser.new_page(viewport={"width": 1200, "height": 800}), url, args.reps)
            finally:
                browser.close()
    markdown = ("## Studio page (headless Chromium on this CPU machine, no GPU)\n\n"
                "`.venv/bin/python -m benchmarks.bench_studio` — server and browser on the same 2 cores.\n\n"
                "| measure | median (min, max) |\n|---|---|\n"
                f"| page load, 6-shot demo (goto -> every card drawn) | {ms(data['page_load_ms'])} |\n"
                f"| Preview click -> first decoded frame shown (shapes, 9 frames) | "
                f"{ms(data['preview_to_first_frame_ms'])} |\n"
                f"| a fresh server's first preview (clicked {data['first_preview']['clicked_after_open_ms']:.0f} ms "
                f"after the project opened; the model loads from the open) | {data['first_preview']['ms']:.0f} ms "
                "(n=1) |\n"
                f"| 30-shot storyboard: keypress in a prompt -> next paint | {ms(data['keypress_to_paint_ms'])} |\n"
                f"| 30-shot storyboard: prompt edit -> saved and redrawn | {ms(data['edit_round_trip_ms'])} |\n")
    write_section("studio", markdown, data)
    print(markdown)
    return data


if __name__ == "__main__":
    main()
