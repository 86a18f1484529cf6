"""Resumable, verified downloads with urllib (the engine side; the plugin uses Qt's network stack).

The file grows in ``<dest>.part``; an interrupted download resumes with an HTTP Range request.
Only a complete file whose size and sha256 check out is renamed onto ``dest`` (os.replace is
atomic), so a reader never sees half a checkpoint. A file that fails the check is deleted, since
resuming onto bad bytes could never succeed.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .cache import (
    DownloadLock,
    discard_partial,
    part_path,
    read_validator,
    sha256_file,
    validator_path,
    write_record,
    write_validator,
)
from .errors import ChecksumMismatchError, DownloadCancelled, DownloadError, OfflineError

Progress = Callable[[int, Optional[int]], None]
USER_AGENT = "qgis-unravel-model-zoo"
CHUNK = 1 << 16
# Without a size from the card or the server, a download stops here (no checkpoint is this big).
MAX_UNANNOUNCED_BYTES = 16 << 30
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    url: str
    resumed_from: int
    recorded: bool  # True when the sha256 was recorded (the card had none)


def manual_hint(urls: Sequence[str], dest: Path) -> str:
    """The words that let a user finish by hand what the program could not."""
    links = " or ".join(urls)
    return (f"You can download {links} with a browser and save it as {dest} "
            "(create the folder if needed); it will be checked and used from there.")


def download(urls: Sequence[str], dest: Path, *, sha256: str | None = None, size: int | None = None,
             progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
             timeout: float = 30.0) -> DownloadResult:
    """Fetch the first URL that works into ``dest``; verify; record the sha256 when none is given.

    Raises OfflineError (no server reachable), ChecksumMismatchError (bad file, deleted),
    DownloadCancelled or DownloadError; all messages name the URL and the path for a manual copy.
    """
    if not urls:
        raise DownloadError(f"no download link is known for {dest.name}")
    make_cache_folder(dest.parent)
    failures: list[str] = []
    all_offline = True
    with DownloadLock(dest) as lock:
        def report(done: int, total: Optional[int]) -> None:
            lock.touch()
            if progress is not None:
                progress(done, total)

        for url in urls:
            try:
                return _download_one(url, dest, sha256, size, report, cancel, timeout)
            except (ChecksumMismatchError, DownloadCancelled):
                raise
            except DownloadError as exc:
                all_offline = all_offline and isinstance(exc, OfflineError)
                failures.append(str(exc))
    cls = OfflineError if all_offline else DownloadError
    raise cls(f"Downloading {dest.name} failed: {'; '.join(failures)}. {manual_hint(urls, dest)}")


def make_cache_folder(folder: Path) -> None:
    """Create the folder a download goes to; a file in the way is a clear DownloadError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise DownloadError(f"cannot create the model cache folder {folder}: {why}. Move it away, or "
                            "set QGIS_UNRAVEL_CACHE to a folder you can write to.") from None


def resume_point(dest: Path, size: int | None) -> int:
    """Bytes already in ``<dest>.part`` that are worth keeping (0 when there is none)."""
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if have and size is not None and have > size:
        discard_partial(dest)
        have = 0
    return have


def resume_headers(dest: Path, have: int) -> dict[str, str]:
    """Range (and If-Range, so a changed server file restarts instead of mixing) for a resume."""
    if not have:
        return {}
    headers = {"Range": f"bytes={have}-"}
    validator = read_validator(dest)
    if validator:
        headers["If-Range"] = validator
    return headers


def complete_after_416(dest: Path, content_range: str | None, have: int) -> bool:
    """After "416 Range Not Satisfiable": True when the .part already holds the whole file.

    Otherwise (the server file is now shorter, or the answer is unclear) the .part is discarded.
    """
    match = _UNSATISFIED_RANGE.match(content_range or "")
    if match and int(match.group(1)) == have:
        return True
    discard_partial(dest)
    return False


def _download_one(url: str, dest: Path, sha256: str | None, size: int | None,
                  progress: Progress | None, cancel: Callable[[], bool] | None,
                  timeout: float) -> DownloadResult:
    have = resume_point(dest, size)
    offset = have
    if not (size is not None and have == size):
        offset = _fetch(url, dest, have, size, progress, cancel, timeout)
        if offset is None:  # the old .part was useless: start again from zero, once
            offset = _fetch(url, dest, 0, size, progress, cancel, timeout) or 0
    return finish_download(url, dest, sha256, size, offset)


def _open(url: str, dest: Path, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **resume_headers(dest, start)}
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https checked by cards)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            return exc  # the range starts at or past the end: handled by the caller
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OfflineError(f"cannot reach {url} ({reason})") from None


def _fetch(url: str, dest: Path, have: int, size: int | None, progress: Progress | None,
           cancel: Callable[[], bool] | None, timeout: float) -> int | None:
    """Append the missing bytes to the .part; return the offset the transfer started at.

    None means the server refused the range and the old .part was dropped.
    """
    part = part_path(dest)
    response = _open(url, dest, have, timeout)
    with response:
        status = getattr(response, "status", None) or response.getcode()
        if status == 416:
            return have if complete_after_416(dest, response.headers.get("Content-Range"), have) else None
        offset = resume_offset(status, response.headers.get("Content-Range"), have)
        if offset == 0:
            write_validator(dest, url, response.headers.get("ETag"), response.headers.get("Last-Modified"))
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        # The card's size when known (a server cannot make us store more), else the server's.
        limit = size if size is not None else (total if total is not None else MAX_UNANNOUNCED_BYTES)
        if total is not None and total > limit:
            discard_partial(dest)
            raise ChecksumMismatchError(
                f"{url} announces {total} bytes but the model card says {limit}; nothing was kept. "
                "Report the problem if it persists.")
        mode = "ab" if offset else "wb"
        done = offset
        if progress:
            progress(done, total)
        try:
            with open(part, mode) as handle:
                if offset:
                    handle.truncate(offset)
                while True:
                    if cancel is not None and cancel():
                        raise DownloadCancelled(
                            f"download of {url} cancelled; {done} bytes kept in {part} for resuming")
                    try:
                        chunk = response.read(CHUNK)
                    except (http.client.HTTPException, socket.timeout, OSError) as exc:
                        raise DownloadError(
                            f"the connection to {url} broke after {done} bytes ({exc}); "
                            "run the download again to resume") from None
                    if not chunk:
                        break
                    if done + len(chunk) > limit:
                        handle.close()
                        discard_partial(dest)
                        raise ChecksumMismatchError(
                            f"{url} sent more than the {limit} bytes expected; the download was "
                            "stopped and discarded. Report the problem if it persists.")
                    handle.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except OSError as exc:
            raise DownloadError(f"cannot write {part} ({exc.strerror or exc})") from None
    if total is not None and done < total:
        raise DownloadError(f"{url} sent {done} of {total} bytes; run the download again to resume")
    return offset


def resume_offset(status: int, content_range: str | None, have: int) -> int:
    """Where the body starts in the file: ``have`` for a matching 206, 0 for a full 200."""
    if status == 206:
        match = _CONTENT_RANGE.match(content_range or "")
        if match and int(match.group(1)) == have:
            return have
        raise DownloadError(f"the server sent an unexpected range ({content_range!r}) for a resume at {have}")
    return 0


def finish_download(url: str, dest: Path, sha256: str | None, size: int | None,
                    offset: int) -> DownloadResult:
    """Check the complete ``.part`` (size, sha256) and rename it onto ``dest``; discard it if bad."""
    part = part_path(dest)
    what = f"The file downloaded from {url}"
    actual = part.stat().st_size
    if size is not None and actual != size:
        discard_partial(dest)
        raise ChecksumMismatchError(
            f"{what} has {actual} bytes but the model card says {size}. The file was discarded; "
            "try again, and report the problem if it persists.")
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        discard_partial(dest)
        raise ChecksumMismatchError(
            f"{what} has sha256 {digest} but {sha256} was expected: it is damaged or not the "
            "published file. It was discarded and nothing was installed. Try again; if this "
            "persists, the file on the server has changed, so report it.")
    os.replace(part, dest)
    validator_path(dest).unlink(missing_ok=True)
    write_record(dest, digest, source=url)
    return DownloadResult(path=dest, sha256=digest, url=url, resumed_from=offset, recorded=sha256 is None)
