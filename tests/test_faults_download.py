"""Fault injection on downloads: hostile HTTP servers on 127.0.0.1, a cache folder that is a file."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from qgis_unravel.zoo.cache import part_path
from qgis_unravel.zoo.download import CHUNK, download
from qgis_unravel.zoo.errors import ChecksumMismatchError, DownloadError

CARD_SIZE = 256 * 1024


class FloodServer:
    """Answers every request with 200 and up to ``cap`` bytes of body, with or without a length."""

    def __init__(self, content_length: int | None, cap: int = 64 << 20):
        self.content_length = content_length
        self.cap = cap
        self.sent = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/model.pth"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    head = "HTTP/1.1 200 OK\r\nConnection: close\r\n"
                    if self.content_length is not None:
                        head += f"Content-Length: {self.content_length}\r\n"
                    conn.sendall((head + "\r\n").encode())
                    block = b"\0" * CHUNK
                    while self.sent < self.cap and not self.stop.is_set():
                        conn.sendall(block)
                        self.sent += len(block)
                except OSError:  # the client hung up: what we want
                    continue

    def __enter__(self) -> FloodServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("announced", [None, 64 << 20], ids=["no length", "a false length"])
def test_a_server_sending_more_than_the_card_says_cannot_fill_the_disk(tmp_path: Path, announced):
    dest = tmp_path / "models" / "m" / "model.pth"
    with FloodServer(announced) as server:
        with pytest.raises(ChecksumMismatchError) as info:
            download([server.url], dest, size=CARD_SIZE, timeout=10)
    message = str(info.value)
    assert str(CARD_SIZE) in message and "\n" not in message
    assert not dest.exists() and not part_path(dest).exists()
    assert server.sent < 16 << 20  # the client stopped reading long before the flood ended


def test_a_cache_folder_that_is_a_file_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    before = blocker.read_bytes()
    with pytest.raises(DownloadError) as info:
        download(["http://127.0.0.1:9/model.pth"], blocker / "models" / "m" / "model.pth", timeout=2)
    message = str(info.value)
    assert "is a file, not a folder" in message and "QGIS_UNRAVEL_CACHE" in message
    assert blocker.read_bytes() == before
