"""The QGIS download task: QgsNetworkAccessManager (proxy settings apply), resume, checksum, cancel.

``task.run()`` is called directly so each test is synchronous; QGIS runs the same method in a
worker thread. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_zoo_support import LocalFileServer, card_dict, free_port_url

from qgis_unravel.zoo import license_accepted
from qgis_unravel.zoo.cache import part_path, read_record
from qgis_unravel.zoo.cards import card_from_dict

qgis_core = pytest.importorskip("qgis.core")
from qgis_unravel.plugin.download_task import ModelDownloadTask  # noqa: E402

DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()


def _card(url: str, **changes):
    return card_from_dict(card_dict(weights__urls=[url], **changes), where="test")


def _run(task: ModelDownloadTask) -> tuple[bool, str]:
    results = []
    task.downloadFinished.connect(lambda ok, text: results.append((ok, text)))
    ok = task.run()
    task.finished(ok)
    assert len(results) == 1 and results[0][0] == ok
    return results[0]


def test_task_downloads_records_and_reports_progress(tmp_path: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        card = _card(srv.url("/m.pth"))
        task = ModelDownloadTask(card, license_accepted=True, cache_dir=tmp_path)
        seen = []
        task.progressChanged.connect(seen.append)
        ok, text = _run(task)
    assert ok, text
    path = Path(text)
    assert path.read_bytes() == DATA and read_record(path)["sha256"] == SHA
    assert seen and seen[-1] == 100.0 and license_accepted(card, tmp_path)


def test_task_refuses_without_accepted_licence(tmp_path: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        ok, text = _run(ModelDownloadTask(_card(srv.url("/m.pth")), cache_dir=tmp_path))
        assert srv.behaviour.seen == []
    assert not ok and "CC-BY-NC-4.0" in text and "must be accepted" in text


def test_task_resumes_a_partial_file(tmp_path: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        card = _card(srv.url("/m.pth"), weights__sha256=SHA)
        task = ModelDownloadTask(card, license_accepted=True, cache_dir=tmp_path)
        part_path(task.dest).parent.mkdir(parents=True, exist_ok=True)
        part_path(task.dest).write_bytes(DATA[:70_000])
        ok, text = _run(task)
        assert srv.behaviour.seen[-1]["range"] == "bytes=70000-"
    assert ok, text
    assert Path(text).read_bytes() == DATA


def test_task_restarts_when_the_server_file_changed(tmp_path: Path) -> None:
    """If-Range carries the ETag of the first attempt; a changed file comes back whole."""
    with LocalFileServer({"/m.pth": DATA}) as srv:
        srv.behaviour.etag = '"v1"'
        card = _card(srv.url("/m.pth"))
        srv.behaviour.cut_after = 50_000
        ok, text = _run(ModelDownloadTask(card, license_accepted=True, cache_dir=tmp_path))
        assert not ok
        new = os.urandom(len(DATA))
        srv.files["/m.pth"], srv.behaviour.etag = new, '"v2"'
        ok, text = _run(ModelDownloadTask(card, cache_dir=tmp_path))
        assert srv.behaviour.seen[-1]["if_range"] == '"v1"'
    assert ok, text
    assert Path(text).read_bytes() == new


def test_task_drops_a_part_longer_than_the_server_file(tmp_path: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        task = ModelDownloadTask(_card(srv.url("/m.pth")), license_accepted=True, cache_dir=tmp_path)
        task.dest.parent.mkdir(parents=True)
        part_path(task.dest).write_bytes(os.urandom(len(DATA) + 5))
        ok, text = _run(task)
        assert [s["range"] for s in srv.behaviour.seen] == [f"bytes={len(DATA) + 5}-", ""]
    assert ok, text
    assert Path(text).read_bytes() == DATA


def test_task_discards_a_tampered_file(tmp_path: Path) -> None:
    tampered = DATA[:-1] + bytes([DATA[-1] ^ 1])
    with LocalFileServer({"/m.pth": tampered}) as srv:
        task = ModelDownloadTask(_card(srv.url("/m.pth"), weights__sha256=SHA), license_accepted=True,
                                 cache_dir=tmp_path)
        ok, text = _run(task)
    assert not ok and "discarded" in text and SHA in text
    assert not task.dest.exists() and not part_path(task.dest).exists()


def test_task_offline_message_names_url_and_path(tmp_path: Path) -> None:
    url = free_port_url("/m.pth")
    task = ModelDownloadTask(_card(url), license_accepted=True, cache_dir=tmp_path)
    ok, text = _run(task)
    assert not ok and url in text and str(task.dest) in text


def test_task_cancel_keeps_partial_file_and_next_task_resumes(tmp_path: Path) -> None:
    big = DATA * 20
    with LocalFileServer({"/m.pth": big}) as srv:
        card = _card(srv.url("/m.pth"), weights__sha256=hashlib.sha256(big).hexdigest())
        task = ModelDownloadTask(card, license_accepted=True, cache_dir=tmp_path)
        task.progressChanged.connect(lambda p: task.cancel() if p > 0 else None)
        ok, text = _run(task)
        assert not ok and "cancelled" in text.lower()
        assert not task.dest.exists() and part_path(task.dest).is_file()
        kept = part_path(task.dest).stat().st_size
        ok, text = _run(ModelDownloadTask(card, cache_dir=tmp_path))  # licence already accepted
        assert srv.behaviour.seen[-1]["range"] == f"bytes={kept}-"
    assert ok, text
    assert Path(text).read_bytes() == big


def test_task_uses_the_qgis_proxy_settings(tmp_path: Path) -> None:
    """A proxy set in QGIS carries the request: the local server, acting as that proxy, gets it."""
    from qgis.core import QgsNetworkAccessManager
    from qgis.PyQt.QtNetwork import QNetworkProxy

    manager = QgsNetworkAccessManager.instance()
    with LocalFileServer({"/m.pth": DATA}) as proxy:
        manager.setFallbackProxyAndExcludes(
            QNetworkProxy(QNetworkProxy.HttpProxy, "127.0.0.1", proxy.port), [], [])
        try:
            card = _card("http://models.example.invalid/m.pth")
            ok, text = _run(ModelDownloadTask(card, license_accepted=True, cache_dir=tmp_path))
        finally:
            manager.setFallbackProxyAndExcludes(QNetworkProxy(QNetworkProxy.NoProxy), [], [])
        raw = [s["raw"] for s in proxy.behaviour.seen]
    assert ok, text
    assert raw == ["http://models.example.invalid/m.pth"]  # absolute URI: it came as a proxy request


class _Manager:
    """Stands in for QgsApplication.taskManager(): runs the task at once, synchronously."""

    def __init__(self) -> None:
        self.tasks = []

    def addTask(self, task) -> None:  # noqa: N802 (Qt name)
        self.tasks.append(task)
        task.finished(task.run())


def test_start_download_asks_once_then_reuses_the_cache(tmp_path: Path) -> None:
    from qgis_unravel.plugin.download_task import start_download

    with LocalFileServer({"/m.pth": DATA}) as srv:
        card = _card(srv.url("/m.pth"))
        done, asked, manager = [], [], _Manager()
        task = start_download(card, on_done=lambda ok, t: done.append((ok, t)), task_manager=manager,
                              cache_dir=tmp_path, ask=lambda c, p: asked.append(c.id) or False)
        assert task is None and done[-1][0] is False and srv.behaviour.seen == []
        task = start_download(card, on_done=lambda ok, t: done.append((ok, t)), task_manager=manager,
                              cache_dir=tmp_path, ask=lambda c, p: asked.append(c.id) or True)
        assert task is manager.tasks[-1] and done[-1][0] is True and asked == ["test-model"] * 2
        again = start_download(card, on_done=lambda ok, t: done.append((ok, t)), task_manager=manager,
                               cache_dir=tmp_path, ask=lambda c, p: pytest.fail("asked again"))
        assert again is None and done[-1] == (True, done[-2][1]) and len(srv.behaviour.seen) == 1


def test_start_download_explains_unpublished_models(tmp_path: Path) -> None:
    from qgis_unravel.plugin.download_task import start_download
    from qgis_unravel.zoo import get_card

    done = []
    task = start_download(get_card("unravelnet-t-orcnn-dota10"), on_done=lambda ok, t: done.append((ok, t)),
                          cache_dir=tmp_path, ask=lambda c, p: pytest.fail("no licence prompt needed"))
    assert task is None and done[0][0] is False and "unpublished" in done[0][1]


def test_licence_dialog_shows_the_card_licence(monkeypatch: pytest.MonkeyPatch) -> None:
    from qgis.PyQt.QtWidgets import QMessageBox

    from qgis_unravel.plugin.download_task import ask_license

    shown = []

    def fake_exec(box) -> int:
        shown.append(box.text())
        return QMessageBox.Yes

    monkeypatch.setattr(QMessageBox, "exec_", fake_exec)
    assert ask_license(_card("http://127.0.0.1:9/m.pth")) is True
    assert "CC-BY-NC-4.0" in shown[0] and "test notice" in shown[0]


def test_task_refuses_while_another_download_runs(tmp_path: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        task = ModelDownloadTask(_card(srv.url("/m.pth")), license_accepted=True, cache_dir=tmp_path)
        task.dest.parent.mkdir(parents=True)
        task.dest.with_name(task.dest.name + ".lock").write_text("pid 1")
        ok, text = _run(task)
        assert srv.behaviour.seen == []
    assert not ok and "Another download" in text
