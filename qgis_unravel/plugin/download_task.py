"""Download a model's weights inside QGIS, as a cancellable background task.

It goes through QgsNetworkAccessManager, so the proxy, SSL and authentication settings of QGIS
apply (urllib would ignore them). The file handling is the engine's own (``qgis_unravel.zoo``):
the same cache, the same ``.part`` resume, the same size/sha256 check and atomic rename, so a
model downloaded here is found by the worker and vice versa. No torch is imported.

Use (in the GUI thread)::

    task = start_download(card, parent=dialog, on_done=callback)  # asks for the licence first
    # callback(ok: bool, path or message: str); task is None if nothing had to be started

or, with a licence dialog of your own::

    task = ModelDownloadTask(card, license_accepted=True)
    task.downloadFinished.connect(on_done)
    QgsApplication.taskManager().addTask(task)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsNetworkAccessManager, QgsTask
from qgis.PyQt.QtCore import QEventLoop, QTimer, QUrl, pyqtSignal
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest
from qgis.PyQt.QtWidgets import QMessageBox

from ..zoo.cache import (
    DownloadLock,
    cache_status,
    license_accepted,
    mark_license_accepted,
    part_path,
    read_record,
    weights_path,
    write_validator,
)
from ..zoo.cards import Card
from ..zoo.download import (
    USER_AGENT,
    complete_after_416,
    finish_download,
    manual_hint,
    resume_headers,
    resume_offset,
    resume_point,
)
from ..zoo.errors import (
    ChecksumMismatchError,
    DownloadCancelled,
    DownloadError,
    LicenseNotAcceptedError,
    OfflineError,
    WeightsUnavailableError,
    ZooError,
)

# Errors that mean "no server could be reached" rather than "the server said no".
_OFFLINE_ERRORS = {
    QNetworkReply.ConnectionRefusedError, QNetworkReply.RemoteHostClosedError,
    QNetworkReply.HostNotFoundError, QNetworkReply.TimeoutError, QNetworkReply.TemporaryNetworkFailureError,
    QNetworkReply.NetworkSessionFailedError, QNetworkReply.ProxyConnectionRefusedError,
    QNetworkReply.ProxyConnectionClosedError, QNetworkReply.ProxyNotFoundError,
    QNetworkReply.ProxyTimeoutError, QNetworkReply.UnknownNetworkError, QNetworkReply.UnknownProxyError,
}


class ModelDownloadTask(QgsTask):
    """Fetch, verify and install the weights of one model card into the user cache."""

    downloadFinished = pyqtSignal(bool, str)  # noqa: N815 (Qt naming); (ok, path or error message)

    def __init__(self, card: Card, license_accepted: bool = False, cache_dir: Optional[Path] = None,
                 inactivity_timeout_s: float = 60.0) -> None:
        super().__init__(f"Downloading model {card.title}", QgsTask.CanCancel)
        self.card = card
        self.cache_dir = cache_dir
        self.accepted_now = bool(license_accepted)
        self.inactivity_timeout_ms = int(inactivity_timeout_s * 1000)
        self.dest = weights_path(card, cache_dir) if card.weights.filename else None
        self.path: Optional[Path] = None
        self.error: Optional[str] = None
        self._lock: Optional[DownloadLock] = None

    # QgsTask ---------------------------------------------------------------------------
    def run(self) -> bool:
        """Runs in a worker thread: every failure becomes ``self.error``, never an exception."""
        try:
            self.path = self.download()
            return True
        except ZooError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 (a task must not raise; report instead)
            self.error = f"Unexpected error while downloading {self.card.id}: {type(exc).__name__}: {exc}"
        return False

    def finished(self, result: bool) -> None:
        """Runs in the GUI thread when the task ends."""
        if result and self.path is not None:
            self.downloadFinished.emit(True, str(self.path))
        else:
            self.downloadFinished.emit(False, self.error or f"Download of {self.card.id} cancelled.")

    # the work --------------------------------------------------------------------------
    def download(self) -> Path:
        card = self.card
        if card.weights.availability != "download" or self.dest is None:
            raise WeightsUnavailableError(
                f"{card.id} cannot be downloaded automatically ({card.weights.availability}). "
                f"{card.weights.note}")
        if not license_accepted(card, self.cache_dir):
            if not self.accepted_now:
                raise LicenseNotAcceptedError(
                    f"{card.license_text()}\nThe licence must be accepted before the download.")
            mark_license_accepted(card, self.cache_dir)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        record = read_record(self.dest)
        expected = card.weights.sha256 or (record or {}).get("sha256")
        failures = []
        with DownloadLock(self.dest) as self._lock:
            for url in card.weights.urls:
                try:
                    offset = self._fetch(url)
                    self.setProgress(100.0)
                    return finish_download(url, self.dest, expected, card.weights.size_bytes, offset).path
                except (DownloadCancelled, ChecksumMismatchError):
                    raise
                except DownloadError as exc:
                    failures.append(exc)
        cls = OfflineError if all(isinstance(f, OfflineError) for f in failures) else DownloadError
        raise cls(f"Downloading {card.id} failed: {'; '.join(map(str, failures))}. "
                  f"{manual_hint(card.weights.urls, self.dest)}")

    def _fetch(self, url: str) -> int:
        """Bring the .part up to date from ``url`` (resuming if possible); return the start offset."""
        size = self.card.weights.size_bytes
        have = resume_point(self.dest, size)
        if size is not None and have == size:
            return have
        offset = self._transfer(url, have)
        if offset is None:  # the server refused the range and the old .part was dropped
            offset = self._transfer(url, 0) or 0
        return offset

    def _transfer(self, url: str, have: int) -> Optional[int]:
        """One GET through QGIS's network manager, streamed into the .part file."""
        size = self.card.weights.size_bytes
        state = _Transfer(self.dest, url, have)
        request = QNetworkRequest(QUrl(url))
        request.setRawHeader(b"User-Agent", USER_AGENT.encode())
        request.setRawHeader(b"Accept-Encoding", b"identity")
        request.setAttribute(QNetworkRequest.RedirectPolicyAttribute,
                             QNetworkRequest.NoLessSafeRedirectPolicy)
        for name, value in resume_headers(self.dest, have).items():
            request.setRawHeader(name.encode("ascii"), value.encode("latin-1"))
        reply = QgsNetworkAccessManager.instance().get(request)
        loop = QEventLoop()
        watchdog = QTimer()
        watchdog.setInterval(100)
        idle = {"ms": 0}

        def on_ready() -> None:
            idle["ms"] = 0
            state.write(reply)

        def on_progress(received: int, total: int) -> None:
            idle["ms"] = 0
            self._lock.touch()
            done, full = state.offset + received, (state.offset + total if total > 0 else size)
            if full:
                self.setProgress(min(99.0, 100.0 * done / full))
            if self.isCanceled() and not state.cancelled:
                state.cancelled = True
                reply.abort()

        def on_tick() -> None:
            idle["ms"] += watchdog.interval()
            if self.isCanceled():
                state.cancelled = True
                reply.abort()
            elif idle["ms"] > self.inactivity_timeout_ms:
                state.timed_out = True
                reply.abort()

        reply.readyRead.connect(on_ready)
        reply.downloadProgress.connect(on_progress)
        reply.finished.connect(loop.quit)
        watchdog.timeout.connect(on_tick)
        watchdog.start()
        if not reply.isFinished():
            loop.exec_()
        watchdog.stop()
        try:
            if reply.error() == QNetworkReply.NoError:
                state.write(reply)
            return state.conclude(url, reply)
        finally:
            state.close()
            reply.deleteLater()


# helpers for the GUI ------------------------------------------------------------------------
def ask_license(card: Card, parent=None) -> bool:
    """Show the licence of ``card`` and ask whether to download; True when the user accepts."""
    box = QMessageBox(QMessageBox.Question, f"Licence of {card.title}", card.license_text(),
                      QMessageBox.Yes | QMessageBox.No, parent)
    box.setInformativeText("Accept this licence and download the weights?")
    box.setDefaultButton(QMessageBox.No)
    return box.exec_() == QMessageBox.Yes


def start_download(card: Card, parent=None, on_done=None, task_manager=None, cache_dir: Optional[Path] = None,
                   ask=ask_license) -> Optional[ModelDownloadTask]:
    """Download ``card``'s weights in the background, asking for the licence the first time.

    Returns the started task, or None when nothing was started: the weights are already here
    (``on_done(True, path)`` is called at once), cannot be downloaded automatically, or the
    licence was declined (``on_done(False, message)``).
    """
    def report(ok: bool, text: str) -> None:
        if on_done is not None:
            on_done(ok, text)

    if card.weights.availability != "download":
        report(False, f"{card.id} cannot be downloaded automatically ({card.weights.availability}). "
                      f"{card.weights.note}")
        return None
    if cache_status(card, cache_dir) == "cached":
        report(True, str(weights_path(card, cache_dir)))
        return None
    accepted = license_accepted(card, cache_dir) or bool(ask(card, parent))
    if not accepted:
        report(False, f"Licence of {card.id} not accepted; nothing was downloaded.")
        return None
    task = ModelDownloadTask(card, license_accepted=True, cache_dir=cache_dir)
    if on_done is not None:
        task.downloadFinished.connect(on_done)
    (task_manager or QgsApplication.taskManager()).addTask(task)
    return task


class _Transfer:
    """The .part file of one request: decides append vs restart from the first response."""

    def __init__(self, dest: Path, url: str, have: int) -> None:
        self.dest = dest
        self.url = url
        self.part = part_path(dest)
        self.have = have
        self.offset = have
        self.handle = None
        self.error: Optional[DownloadError] = None
        self.cancelled = False
        self.timed_out = False
        self.done = have

    def open(self, reply: QNetworkReply) -> None:
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute) or 0
        content_range = _header(reply, b"Content-Range")
        self.offset = resume_offset(int(status), content_range, self.have)
        if self.offset == 0:
            write_validator(self.dest, self.url, _header(reply, b"ETag"), _header(reply, b"Last-Modified"))
        self.handle = open(self.part, "ab" if self.offset else "wb")
        if self.offset:
            self.handle.truncate(self.offset)
        self.done = self.offset

    def write(self, reply: QNetworkReply) -> None:
        if self.error is not None:
            return
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute) or 0
        if int(status) >= 300:
            return
        try:
            if self.handle is None:
                self.open(reply)
            data = reply.readAll().data()
            self.handle.write(data)
            self.done += len(data)
        except DownloadError as exc:
            self.error = exc
            reply.abort()
        except OSError as exc:
            self.error = DownloadError(f"cannot write {self.part} ({exc.strerror or exc})")
            reply.abort()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def conclude(self, url: str, reply: QNetworkReply) -> Optional[int]:
        """The start offset of a finished transfer (None: redo from zero), or the right error."""
        self.close()
        status = int(reply.attribute(QNetworkRequest.HttpStatusCodeAttribute) or 0)
        if self.error is not None:
            raise self.error
        if self.cancelled:
            raise DownloadCancelled(
                f"Download cancelled; {self.done} bytes kept in {self.part} for resuming.")
        if self.timed_out:
            raise OfflineError(f"cannot reach {url} (no data for too long)")
        if status == 416 and self.have:
            complete = complete_after_416(self.dest, _header(reply, b"Content-Range"), self.have)
            return self.have if complete else None
        if reply.error() != QNetworkReply.NoError:
            if status:
                raise DownloadError(f"{url} answered HTTP {status} ({reply.errorString()})")
            cls = OfflineError if reply.error() in _OFFLINE_ERRORS else DownloadError
            prefix = "cannot reach" if cls is OfflineError else "download from"
            raise cls(f"{prefix} {url} ({reply.errorString()})")
        length = reply.header(QNetworkRequest.ContentLengthHeader)
        if length is not None and self.done < self.offset + int(length):
            raise DownloadError(
                f"{url} sent {self.done - self.offset} of {length} bytes; try again to resume")
        return self.offset


def _header(reply: QNetworkReply, name: bytes) -> Optional[str]:
    value = reply.rawHeader(name).data().decode("latin-1")
    return value or None
