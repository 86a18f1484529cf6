"""One writer at a time per output folder, and cleaning up after writers that were killed.

Adding to a GeoPackage is copy, modify, replace: two runs doing it at once would each replace
the file with their own copy and one run's features would be lost. So every write holds an
exclusive lock on the output folder for its whole read-check-copy-write-replace sequence; a
second run waits for it (then sees the first run's layer). The lock is the kernel's
(``flock`` on the folder itself, ``msvcrt`` on a lock file on Windows): a process killed with
``kill -9`` releases it at once, and no lock file is left beside the outputs on POSIX.

While the lock is held no other writer is alive in the folder, so any temporary ``.partial``
folder left there for the same output comes from a killed run and is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

from .errors import Cancelled, UserError

WAIT_S = 600.0  # give up waiting for another writer after this long
POLL_S = 0.05
PARTIAL_SUFFIX = ".partial"


def partial_prefix(path: Path) -> str:
    """Name prefix of the temporary folders a write to ``path`` creates beside it."""
    return f".{path.name}."


def stale_partials(path: Path) -> List[Path]:
    """Temporary folders of earlier writes to ``path`` (only stale while the lock is held)."""
    prefix = partial_prefix(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.name.startswith(prefix) and p.name.endswith(PARTIAL_SUFFIX)
            and p.is_dir()]


def remove_stale_partials(path: Path) -> None:
    for leftover in stale_partials(path):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def output_lock(folder: Path, cancel: Optional[threading.Event] = None,
                wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the folder's writer lock; wait for another writer, honouring ``cancel``."""
    handle = _open_lock(folder)
    try:
        deadline = time.monotonic() + wait_s
        while not _try_lock(handle):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if time.monotonic() > deadline:
                raise UserError(f"another run has been writing in {folder} for over {wait_s:g} s; "
                                "try again when it has finished")
            time.sleep(POLL_S)
        try:
            yield
        finally:
            _unlock(handle)
    finally:
        os.close(handle)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _open_lock(folder: Path) -> int:
        try:
            return os.open(str(folder / ".qgis-unravel.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot write in {folder} ({exc.strerror or exc})") from None

    def _try_lock(handle: int) -> bool:
        try:
            os.lseek(handle, 0, os.SEEK_SET)
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle: int) -> None:
        os.lseek(handle, 0, os.SEEK_SET)
        msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _open_lock(folder: Path) -> int:
        try:
            return os.open(str(folder), os.O_RDONLY)
        except OSError as exc:
            raise UserError(f"cannot open the output folder {folder} ({exc.strerror or exc})") from None

    def _try_lock(handle: int) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
