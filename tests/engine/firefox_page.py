"""Debian's Firefox ESR driven over WebDriver BiDi, behind the few Playwright `Page` calls the studio test uses.

Playwright's own Firefox is a patched build it downloads (never here), and its "moz-firefox" channel needs BiDi
commands Firefox ESR 153 lacks (emulation.setMediaFeaturesOverride). Firefox itself speaks WebDriver BiDi, the W3C
protocol, when started with --remote-debugging-port; this module talks it over a websocket (the `websockets`
package): navigate, evaluate, real key and pointer input (input.performActions), screenshots. The page steps of
tests/engine/test_studio_page.py run unchanged on it.

    with firefox_page(tmp_path / "profile") as page:
        page.goto(url); page.click("#render"); page.wait_for_function("() => ...")
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KEYS = {"Alt": "\ue00a", "Control": "\ue009", "Shift": "\ue008", "Tab": "\ue004", "Enter": "\ue007",
        "Backspace": "\ue003", "Delete": "\ue017", "ArrowUp": "\ue013", "ArrowDown": "\ue015",
        "ArrowLeft": "\ue012", "ArrowRight": "\ue014", "Escape": "\ue00c", "Home": "\ue011", "End": "\ue010"}
# Quiet, offline, fast: no updates, telemetry, first-run pages or remote settings (what geckodriver sets too).
PREFS = {"app.update.disabledForTesting": True, "browser.shell.checkDefaultBrowser": False,
         "browser.startup.homepage_override.mstone": "ignore", "browser.startup.page": 0,
         "datareporting.policy.dataSubmissionEnabled": False, "toolkit.telemetry.reportingpolicy.firstRun": False,
         "remote.prefs.recommended": True, "services.settings.server": "http://127.0.0.1:9/",
         "network.captive-portal-service.enabled": False, "browser.safebrowsing.update.enabled": False,
         "media.autoplay.default": 0, "dom.disable_beforeunload": True}


class BiDiError(AssertionError):
    pass


def firefox_or_skip() -> str:
    """Firefox ESR's path (Debian's firefox-esr), else skip (fail under CI, which installs it)."""
    missing = []
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        missing.append("pip install websockets")
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    if not firefox:
        missing.append("apt-get install firefox-esr")
    if missing:
        reason = "the Firefox page test needs headless Firefox: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason} — CI must install these")
        pytest.skip(reason)
    return firefox


class _Keyboard:
    def __init__(self, page: FirefoxPage):
        self.page = page

    def press(self, combo: str) -> None:
        """"Alt+ArrowUp", "Tab", "a": modifiers held down, the key pressed, all released (real key events)."""
        names = combo.split("+")
        keys = [KEYS.get(n, n) for n in names]
        actions = [{"type": "keyDown", "value": k} for k in keys] + [{"type": "keyUp", "value": k}
                                                                      for k in reversed(keys)]
        self.page.actions([{"type": "key", "id": "keyboard", "actions": actions}])

    def type(self, text: str) -> None:
        actions = [a for ch in text for a in ({"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch})]
        self.page.actions([{"type": "key", "id": "keyboard", "actions": actions}])


class FirefoxPage:
    """One browsing context of a headless Firefox; the Playwright Page methods the studio steps call."""

    def __init__(self, socket, context: str):
        self.socket, self.context, self._ids = socket, context, itertools.count(1)
        self.keyboard = _Keyboard(self)

    # -- protocol ------------------------------------------------------------------------------
    def send(self, method: str, params: dict, timeout: float = 60) -> dict:
        msg_id = next(self._ids)
        self.socket.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, end - time.monotonic())))
            if reply.get("id") != msg_id:
                continue  # an event, or a late reply
            if reply.get("type") == "error":
                raise BiDiError(f"{method}: {reply.get('error')}: {reply.get('message')}")
            return reply["result"]

    def call(self, function: str, *args, timeout: float = 60):
        """Run a JavaScript function declaration in the page with JSON-able args; its (awaited) value back."""
        declaration = function if not args else f"(...a) => ({function})(...a.map((s) => JSON.parse(s)))"
        result = self.send("script.callFunction", {
            "functionDeclaration": declaration, "target": {"context": self.context}, "awaitPromise": True,
            "arguments": [{"type": "string", "value": json.dumps(a)} for a in args], "resultOwnership": "none"},
            timeout=timeout)
        if result.get("type") == "exception":
            raise BiDiError(f"{function[:80]}: {result['exceptionDetails'].get('text')}")
        return _value(result["result"])

    def actions(self, sources: list[dict]) -> None:
        self.send("input.performActions", {"context": self.context, "actions": sources})

    # -- the Playwright Page subset --------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def evaluate(self, function: str, *args):
        return self.call(function, *args)

    def eval_on_selector_all(self, selector: str, function: str):
        return self.call(f"(s) => ({function})([...document.querySelectorAll(s)])", selector)

    def wait_for_function(self, function: str, timeout: float = 30_000) -> None:
        end = time.monotonic() + timeout / 1000
        while not self.call(function):
            if time.monotonic() > end:
                raise BiDiError(f"timed out after {timeout / 1000:.0f} s waiting for {function}")
            time.sleep(0.05)

    def wait_for_selector(self, selector: str, timeout: float = 30_000, state: str = "attached") -> None:
        test = ("(s) => { const e = document.querySelector(s); return !!e && "
                + ("e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'"
                   if state == "visible" else "true") + "; }")
        end = time.monotonic() + timeout / 1000
        while not self.call(test, selector):
            if time.monotonic() > end:
                raise BiDiError(f"timed out after {timeout / 1000:.0f} s waiting for {selector} ({state})")
            time.sleep(0.05)

    def _center(self, selector: str, position: dict | None = None) -> tuple[int, int]:
        self.wait_for_selector(selector, state="visible")
        x, y = self.call("(s, p) => { const e = document.querySelector(s); e.scrollIntoView({block: 'center'});"
                         " const r = e.getBoundingClientRect();"
                         " return p ? [r.left + p.x, r.top + p.y] : [r.left + r.width / 2, r.top + r.height / 2]; }",
                         selector, position)
        return round(x), round(y)

    def click(self, selector: str) -> None:
        """A real pointer click at the element's centre (the element must be the one hit there)."""
        x, y = self._center(selector)
        self.actions([{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "x": x, "y": y}, {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0}]}])

    def focus(self, selector: str) -> None:
        self.call("(s) => document.querySelector(s).focus()", selector)

    def fill(self, selector: str, text: str) -> None:
        """Focus, select what is there, type `text` with real key events (as a user replaces a field)."""
        self.click(selector)
        self.call("(s) => { const e = document.querySelector(s); e.focus(); e.select && e.select(); }", selector)
        self.keyboard.press("Backspace")
        self.keyboard.type(text)

    def select_option(self, selector: str, label: str) -> None:
        self.call("(s, l) => { const e = document.querySelector(s);"
                  " const o = [...e.options].find((o) => o.label === l || o.textContent === l);"
                  " e.value = o.value; e.dispatchEvent(new Event('input', {bubbles: true}));"
                  " e.dispatchEvent(new Event('change', {bubbles: true})); }", selector, label)

    def drag_and_drop(self, source: str, target: str, source_position: dict | None = None,
                      target_position: dict | None = None) -> None:
        """HTML drag and drop from `source` onto `target`, as drag events carrying one DataTransfer. WebDriver
        pointer actions do not start a native drag session in Firefox ESR 153 (tried: the page saw no
        dragstart), so the events the browser would send are dispatched at the same points instead."""
        x0, y0 = self._center(source, source_position)
        x1, y1 = self._center(target, target_position)
        self.call("""(s, t, p0, p1) => {
            const src = document.querySelector(s), dst = document.querySelector(t), dt = new DataTransfer();
            const fire = (node, type, [x, y]) => node.dispatchEvent(new DragEvent(type, {
                bubbles: true, cancelable: true, composed: true, clientX: x, clientY: y, dataTransfer: dt }));
            fire(src, "dragstart", p0); fire(dst, "dragenter", p1); fire(dst, "dragover", p1);
            fire(dst, "drop", p1); fire(src, "dragend", p1);
        }""", source, target, [x0, y0], [x1, y1])

    def screenshot(self, path: str) -> None:
        data = self.send("browsingContext.captureScreenshot", {"context": self.context})["data"]
        Path(path).write_bytes(base64.b64decode(data))


def _value(remote: dict):
    """A BiDi RemoteValue as Python (primitives, arrays, plain objects)."""
    kind = remote.get("type")
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return remote["value"]
    if kind == "number":
        v = remote["value"]
        return float(v) if isinstance(v, str) else v  # "NaN", "Infinity"
    if kind == "array":
        return [_value(v) for v in remote.get("value", [])]
    if kind == "object":
        return {k if isinstance(k, str) else _value(k): _value(v) for k, v in remote.get("value", [])}
    return remote  # nodes, functions, ...: the raw description


def _listening_url(process: subprocess.Popen, timeout: float = 60) -> str:
    """Firefox prints "WebDriver BiDi listening on ws://127.0.0.1:PORT" on stderr once its server is up."""
    found: list[str] = []
    lines: list[str] = []

    def read() -> None:
        for raw in process.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            m = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            if m and not found:
                found.append(m.group(1))

    threading.Thread(target=read, daemon=True).start()
    end = time.monotonic() + timeout
    while not found:
        if process.poll() is not None or time.monotonic() > end:
            raise BiDiError("Firefox did not start its WebDriver BiDi server:\n" + "".join(lines[-20:]))
        time.sleep(0.05)
    return found[0]


@contextlib.contextmanager
def firefox_page(profile: Path, width: int = 1200, height: int = 800) -> Iterator[FirefoxPage]:
    """A headless Firefox on a fresh profile (prefs above), one page sized width x height; closed on exit."""
    from websockets.sync.client import connect

    firefox = firefox_or_skip()
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                             for k, v in PREFS.items()))
    env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
    process = subprocess.Popen([firefox, "--headless", "--no-remote", "--remote-debugging-port=0", "--profile",
                                str(profile), f"--width={width}", f"--height={height}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        with connect(_listening_url(process) + "/session", max_size=None, open_timeout=30) as socket:
            boot = FirefoxPage(socket, "")
            boot.send("session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
            # a window of its own: the initial about:blank tab of a headless Firefox never has focus, so focus,
            # blur and change events would not fire there (document.hasFocus() is false)
            context = boot.send("browsingContext.create", {"type": "window"})["context"]
            page = FirefoxPage(socket, context)
            page.send("browsingContext.setViewport", {"context": context,
                                                      "viewport": {"width": width, "height": height}})
            yield page
            with contextlib.suppress(Exception):
                page.send("browser.close", {}, timeout=10)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
