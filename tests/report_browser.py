"""Open a report page in headless Chromium and say what a person would see (tests of every report).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
ending in NUL on file descriptors 3 and 4), with the standard library only: no Selenium, no
Playwright. :func:`render` loads a page from ``file://`` and returns its console errors, uncaught
exceptions, failed loads, requests that left the machine, every ``<img>`` with its natural width,
the section titles and a PNG screenshot. :func:`check_report` asserts a page is whole.

Where Chromium is missing the tests skip with the line that installs it; under CI (``CI=true``)
they fail instead, so CI always renders the reports (``.ci/run`` installs it).

By hand (a screenshot to look at)::

    python tests/report_browser.py runs/x/report/index.html shot.png [--full]
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

INSTALL = "apt-get install chromium (Debian/Ubuntu package 'chromium')"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Optional[str]:
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The browser's path; pytest.skip (pytest.fail under CI=true) where there is none."""
    import pytest

    path = find_chromium()
    if path is None:
        message = f"headless Chromium not found: {INSTALL} to run the report browser tests"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: this test must run in CI)")
        pytest.skip(message)
    return path


@dataclass
class Page:
    console_errors: List[str] = field(default_factory=list)  # console.error, uncaught exceptions, log errors
    failed_requests: List[str] = field(default_factory=list)
    external_requests: List[str] = field(default_factory=list)  # anything not file: / data:
    images: List[dict] = field(default_factory=list)  # {"src", "complete", "naturalWidth"}
    sections: List[str] = field(default_factory=list)  # the <h2> titles, in order
    text: str = ""
    png: bytes = b""

    def screenshot_array(self) -> np.ndarray:
        import cv2

        return cv2.imdecode(np.frombuffer(self.png, np.uint8), cv2.IMREAD_COLOR)


class _Pipe:
    """One DevTools session over Chromium's debugging pipe."""

    def __init__(self, chromium: str, width: int, height: int):
        self._profile = tempfile.mkdtemp(prefix="reskit-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire():  # in the child: the protocol's fixed descriptors 3 (commands in) and 4 (out)
            import fcntl
            high_r, high_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w))
            os.dup2(high_r, 3)  # via copies above 10: the pipes' own numbers may be 3 or 4
            os.dup2(high_w, 4)

        args = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=wire,
                                     pass_fds=(3, 4, to_child_r, from_child_w))  # 3, 4: wired in the child
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: List[dict] = []

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may be gone already; terminate below
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self._profile, ignore_errors=True)


_INSPECT = """JSON.stringify({
  images: Array.from(document.images).map(i => ({src: i.getAttribute("src"), complete: i.complete,
                                                  naturalWidth: i.naturalWidth})),
  sections: Array.from(document.querySelectorAll("section > h2")).map(h => h.textContent),
  text: document.body.innerText})"""


def render(path: str, chromium: Optional[str] = None, width: int = 1280, height: int = 900,
           full_page: bool = False, timeout: float = 60.0, script: str = "") -> Page:
    """Load ``path`` from file:// in headless Chromium; what the page did and looks like.
    ``script``: JavaScript run once the page has loaded, before it is inspected (clicks ...)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(f"headless Chromium not found: {INSTALL}")
    url = "file://" + os.path.abspath(path)
    pipe = _Pipe(chromium, width, height)
    page = Page()
    try:
        targets = pipe.send("Target.getTargets", timeout=timeout)["targetInfos"]
        target = next(t["targetId"] for t in targets if t["type"] == "page")
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        pipe.send("Page.navigate", {"url": url}, session)
        pipe.wait_for("Page.loadEventFired", timeout)
        if script:
            pipe.send("Runtime.evaluate", {"expression": script}, session)
        result = pipe.send("Runtime.evaluate", {"expression": _INSPECT, "returnByValue": True}, session)
        found = json.loads(result["result"]["value"])
        page.images, page.sections, page.text = found["images"], found["sections"], found["text"]
        shot = {"format": "png"}
        if full_page:
            size = pipe.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["width"],
                                                          "height": size["height"], "scale": 1})
        page.png = base64.b64decode(pipe.send("Page.captureScreenshot", shot, session, timeout)["data"])
    finally:
        pipe.close()
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            page.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            page.console_errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            page.console_errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed":
            page.failed_requests.append(f"{params.get('errorText')} (request {params.get('requestId')})")
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if not request_url.startswith(("file:", "data:", "about:")):
                page.external_requests.append(request_url)
    return page


def check_report(path: str, sections: Sequence[str], full_page: bool = False) -> Page:
    """Render ``path`` and assert it is whole: no console error or exception, no failed load, no
    request off the machine, every <img> loaded, each of ``sections`` among the page's section
    titles, a screenshot that is not blank. Returns the page."""
    page = render(path, require_chromium(), full_page=full_page)
    assert not page.console_errors, f"console errors: {page.console_errors}"
    assert not page.failed_requests, f"failed loads: {page.failed_requests}"
    assert not page.external_requests, f"the page fetched from the network: {page.external_requests}"
    broken = [i["src"] for i in page.images if not (i["complete"] and i["naturalWidth"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    missing = [s for s in sections if s not in page.sections]
    assert not missing, f"sections {missing} not on the page (it has {page.sections})"
    shot = page.screenshot_array()
    assert shot is not None and shot.shape[0] > 100 and shot.shape[1] > 100, "no screenshot"
    # not blank: a rendered page has text and pictures, so many distinct grey levels and some contrast
    gray = shot.mean(axis=2)
    assert gray.std() > 10 and len(np.unique(gray.astype(np.uint8))) > 32, "the screenshot is blank"
    return page


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--full"]
    if len(args) != 2:
        sys.exit("usage: python tests/report_browser.py PAGE.html OUT.png [--full]")
    shown = render(args[0], full_page="--full" in sys.argv)
    with open(args[1], "wb") as f:
        f.write(shown.png)
    print(json.dumps({"sections": shown.sections, "console_errors": shown.console_errors,
                      "failed_requests": shown.failed_requests, "external_requests": shown.external_requests,
                      "images": len(shown.images),
                      "broken_images": [i["src"] for i in shown.images if not i["naturalWidth"]]}, indent=1))
