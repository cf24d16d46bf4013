"""A small client for a ComfyUI server started by a test: HTTP with urllib, the websocket with the stdlib.

ComfyUI's own tests use the `websocket-client` package; the few frames we need (text events, binary
progress text and previews, ping, close) are easy to read with a socket, so the pack has no extra test
dependency. Only the parts of RFC 6455 a server-to-client stream uses are implemented.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

# ComfyUI's binary websocket events (protocol.py): a 4-byte big-endian type, then the payload.
BINARY_PREVIEW_IMAGE = 1
BINARY_TEXT = 3
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4


class WebSocket:
    """Client side of one websocket connection (unmasked server frames in, masked frames out)."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"websocket handshake refused: {status!r}")

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed by the server")
            buf.extend(chunk)
        return bytes(buf)

    def _send_frame(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self, timeout: float) -> tuple[str, Any] | None:
        """Next message as ("text", dict) or ("binary", bytes); None on timeout."""
        self.sock.settimeout(timeout)
        message = bytearray()
        kind = None
        try:
            while True:
                b0, b1 = self._read_exact(2)
                fin, opcode = b0 & 0x80, b0 & 0x0F
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read_exact(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read_exact(8))[0]
                mask = self._read_exact(4) if b1 & 0x80 else None
                payload = self._read_exact(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 9:  # ping
                    self._send_frame(10, payload)
                    continue
                if opcode == 10:  # pong
                    continue
                if opcode == 8:
                    raise ConnectionError("websocket closed by the server")
                if opcode in (1, 2):
                    kind = "text" if opcode == 1 else "binary"
                message.extend(payload)
                if fin:
                    break
        except TimeoutError:
            return None
        if kind == "text":
            return "text", json.loads(message.decode("utf-8"))
        return "binary", bytes(message)

    def close(self) -> None:
        try:
            self._send_frame(8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


@dataclass
class RunResult:
    prompt_id: str
    events: list[dict[str, Any]] = field(default_factory=list)  # JSON events of this prompt, in order
    texts: list[tuple[str, str]] = field(default_factory=list)  # (node id, text) shown on nodes
    previews: int = 0  # preview images received
    outcome: str = ""  # execution_success | execution_error | execution_interrupted
    error: dict[str, Any] | None = None

    def of_type(self, name: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["type"] == name]


class ComfyClient:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.base = f"http://{host}:{port}"
        self.client_id = uuid.uuid4().hex
        self.ws: WebSocket | None = None

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            return r.read()

    def post_json(self, path: str, data: Any) -> Any:
        req = urllib.request.Request(
            self.base + path, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from e
        return json.loads(body) if body else None

    def connect(self) -> None:
        self.ws = WebSocket(self.host, self.port, f"/ws?clientId={self.client_id}")

    def queue(self, prompt: dict[str, Any]) -> str:
        return self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def interrupt(self) -> None:
        self.post_json("/interrupt", {})

    def wait(self, prompt_id: str, timeout: float, on_event=None) -> RunResult:
        """Collect this prompt's websocket messages until it succeeds, fails or is interrupted."""
        assert self.ws is not None, "connect() first"
        result = RunResult(prompt_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if msg is None:
                break
            kind, data = msg
            if kind == "binary":
                event_type = struct.unpack(">I", data[:4])[0]
                if event_type == BINARY_TEXT:
                    n = struct.unpack(">I", data[4:8])[0]
                    result.texts.append((data[8 : 8 + n].decode(), data[8 + n :].decode(errors="replace")))
                elif event_type in (BINARY_PREVIEW_IMAGE, BINARY_PREVIEW_IMAGE_WITH_METADATA):
                    result.previews += 1
                continue
            payload = data.get("data") or {}
            if payload.get("prompt_id") not in (None, prompt_id):
                continue
            result.events.append(data)
            if on_event is not None:
                on_event(data)
            if data["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                result.outcome = data["type"]
                if data["type"] == "execution_error":
                    result.error = payload
                return result
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s; events: {result.events[-5:]}")

    def history(self, prompt_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The prompt's /history entry; ComfyUI writes it just after the final websocket message."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"no /history entry for prompt {prompt_id} after {timeout} s")
            time.sleep(0.1)

    def view(self, image: dict[str, str]) -> bytes:
        query = urllib.parse.urlencode(
            {"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": image["type"]}
        )
        return self.get_bytes(f"/view?{query}")

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
