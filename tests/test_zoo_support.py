"""Support for the model-zoo tests (a local HTTP server, card files), and tests of it.

Tests must never touch the internet: this serves generated files on 127.0.0.1 with Range
support, and can misbehave on purpose (cut a transfer short, ignore Range, answer 404, act as
an HTTP proxy). It runs in a daemon thread and shuts itself down after ``lifetime_s`` even if a
test forgets to stop it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest


@dataclass
class Behaviour:
    """How the server treats requests; tests change it between downloads."""

    cut_after: Optional[int] = None  # close the connection after this many body bytes (once)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    status: Optional[int] = None  # answer every request with this status and no body
    etag: Optional[str] = None  # sent as ETag; an If-Range naming another one gets the whole file
    seen: List[Dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5  # a stuck client cannot hold a handler thread forever

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        owner = self.server.owner
        behaviour = owner.behaviour
        path = re.sub(r"^https?://[^/]+", "", self.path)  # absolute form = request via a proxy
        behaviour.seen.append({"path": path, "raw": self.path, "range": self.headers.get("Range") or "",
                               "if_range": self.headers.get("If-Range") or "",
                               "user_agent": self.headers.get("User-Agent") or ""})
        if behaviour.status is not None:
            self.send_error(behaviour.status)
            return
        body = owner.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        stale = if_range is not None and if_range != behaviour.etag
        if match and not behaviour.ignore_range and not stale:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if behaviour.etag:
            self.send_header("ETag", behaviour.etag)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if behaviour.cut_after is not None:
            payload = payload[:behaviour.cut_after]
            behaviour.cut_after = None
            self.close_connection = True
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LocalFileServer


class LocalFileServer:
    """``with LocalFileServer({"/a.pth": data}) as srv: srv.url("/a.pth")``."""

    def __init__(self, files: Dict[str, bytes], lifetime_s: float = 120.0) -> None:
        self.files = dict(files)
        self.behaviour = Behaviour()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._killer = threading.Timer(lifetime_s, self.stop)
        self._killer.daemon = True
        self._stopped = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> LocalFileServer:
        self._thread.start()
        self._killer.start()
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._killer.cancel()
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> LocalFileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port_url(path: str = "/model.pth") -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


BASE_CARD: Dict[str, Any] = {
    "schema_version": 1,
    "id": "test-model",
    "title": "Test model",
    "summary": "A model card used by the tests.",
    "dataset": "DOTA-v1.0",
    "architecture": {"detector": "OrientedRCNN", "backbone": "UnravelNet", "variant": "reduced",
                     "stem_dim": 16, "depths": [1, 2, 2, 1], "widths": [16, 32, 64, 128],
                     "neck_channels": 64, "angle_version": "le90"},
    "classes": ["plane", "ship"],
    "normalization": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                      "channel_order": "RGB"},
    "tiling": {"tile_size": 1024, "overlap": 200},
    "ground_resolution_m": {"min": None, "max": None, "note": "unknown"},
    "thresholds": {"score": 0.3, "nms_iou": 0.1, "max_detections": 2000},
    "weights": {"availability": "download", "filename": "test-model.pth",
                "urls": ["http://127.0.0.1:9/test-model.pth"], "path": None, "size_bytes": None,
                "sha256": None, "note": ""},
    "license": {"weights": "CC-BY-NC-4.0", "url": "https://creativecommons.org/licenses/by-nc/4.0/",
                "data": "DOTA: academic use only.", "notice": "Non-commercial use only (test notice)."},
    "citation": "@misc{test}",
    "source": {"repository": "https://example.org/test", "config": "", "reported_map": None,
               "evaluation": ""},
}


def card_dict(**changes: Any) -> Dict[str, Any]:
    """A valid card as a dict; ``weights__sha256="..."`` style keys change nested fields."""
    data = copy.deepcopy(BASE_CARD)
    for key, value in changes.items():
        target = data
        parts = key.split("__")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return data


def write_card(folder: Path, **changes: Any) -> Path:
    data = card_dict(**changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data['id']}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# tests of the helpers themselves ------------------------------------------------------------------
def _get(url: str, headers: Optional[Dict[str, str]] = None):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5)


def test_server_serves_whole_file_and_ranges() -> None:
    data = bytes(range(256)) * 4
    with LocalFileServer({"/f.bin": data}) as srv:
        with _get(srv.url("/f.bin")) as resp:
            assert resp.status == 200 and resp.read() == data
        with _get(srv.url("/f.bin"), {"Range": "bytes=1000-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-1023/{len(data)}"
            assert resp.read() == data[1000:]
        assert [s["range"] for s in srv.behaviour.seen] == ["", "bytes=1000-"]


def test_server_can_cut_a_transfer_and_answer_errors() -> None:
    with LocalFileServer({"/f.bin": b"x" * 5000}) as srv:
        srv.behaviour.cut_after = 100
        with _get(srv.url("/f.bin")) as resp:
            with pytest.raises(Exception):  # noqa: B017 (http.client raises IncompleteRead)
                resp.read()
        srv.behaviour.status = 503
        with pytest.raises(urllib.error.HTTPError):
            _get(srv.url("/f.bin"))


def test_server_stops_by_itself() -> None:
    srv = LocalFileServer({}, lifetime_s=0.2).start()
    srv._thread.join(timeout=5)
    assert not srv._thread.is_alive()
