"""Drive a headless Chromium over the DevTools protocol with the stdlib (for the ComfyUI frontend checks).

Used by tests/test_comfyui_integration.py to load ComfyUI's page with our web extension, collect console
errors and uncaught exceptions, load an example workflow on the canvas, and take screenshots.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from tests.comfy_client import WebSocket

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=2200,1100",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Browser:
    """One headless Chromium with one page; `console` collects errors seen on that page."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="nada-chromium-")
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.port = port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t.get("type") == "page")
        path = page["webSocketDebuggerUrl"].split(str(port), 1)[1]
        self.ws = WebSocket("127.0.0.1", port, path, timeout=60)
        self._ids = itertools.count(1)
        self.console: list[str] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method)

    def _note(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            desc = d.get("exception", {}).get("description") or d.get("text", "")
            self.console.append(f"uncaught: {desc} ({d.get('url', '')}:{d.get('lineNumber', '')})")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            self.console.append(f"log.error: {e.get('text', '')} {e.get('url', '')}")

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws._send_frame(1, json.dumps({"id": msg_id, "method": method, "params": params or {}}).encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if msg is None:
                break
            data = msg[1]
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            self._note(data)
        raise TimeoutError(f"{method} got no answer in {timeout} s")

    def pump(self, seconds: float) -> None:
        """Read events (console messages) for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.ws.receive(timeout=max(0.05, deadline - time.monotonic()))
            if msg is not None:
                self._note(msg[1])

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            raise RuntimeError(d.get("exception", {}).get("description") or d.get("text"))
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.pump(0.25)
        raise TimeoutError(f"{expression} stayed falsy for {timeout} s")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
