"""The user cache of downloaded weights: where files go, and what was recorded about them.

Layout, under ``cache_root()``::

    models/<card id>/<weights.filename>            the weights, only ever renamed into place whole
    models/<card id>/<weights.filename>.part       an unfinished download (resumed next time)
    models/<card id>/<weights.filename>.sha256.json  sha256 + size recorded on first download/use
    models/<card id>/license-accepted.json         who accepted which licence, and when

The cache root is ``$QGIS_UNRAVEL_CACHE`` when set, otherwise platformdirs'
``user_cache_dir("qgis-unravel", appauthor=False)``. QGIS's own Python may lack platformdirs,
so the same folders are computed by hand as a fallback: the plugin and the engine must agree.
Standard library only (the plugin imports this module).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .cards import Card
from .errors import ChecksumMismatchError, DownloadError, ZooError

APP_NAME = "qgis-unravel"
ENV_CACHE = "QGIS_UNRAVEL_CACHE"
_HASH_CHUNK = 1 << 20


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _default_cache_dir() -> Path:
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return _fallback_cache_dir()
    return Path(user_cache_dir(APP_NAME, appauthor=False))


def _fallback_cache_dir() -> Path:
    """platformdirs' answer for ``user_cache_dir(APP_NAME, appauthor=False)``, without it."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP_NAME / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_NAME
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / APP_NAME


def cache_root() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get(ENV_CACHE, "").strip()
    return Path(env).expanduser() if env else _default_cache_dir()


def model_cache_dir(card: Card, root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / card.id


def weights_path(card: Card, root: Path | None = None) -> Path:
    """Where this card's weights live once downloaded (or where to put a manual download)."""
    if not card.weights.filename:
        raise ZooError(f"model {card.id!r} has no weights file name in its card")
    return model_cache_dir(card, root) / card.weights.filename


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def validator_path(dest: Path) -> Path:
    """ETag / Last-Modified of the server file a ``.part`` came from (for If-Range on resume)."""
    return dest.with_name(dest.name + ".part.json")


def read_validator(dest: Path) -> str | None:
    """The If-Range value for resuming ``dest``: a strong ETag, else Last-Modified, else None."""
    try:
        data = json.loads(validator_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    etag = data.get("etag") if isinstance(data, dict) else None
    if isinstance(etag, str) and etag and not etag.startswith("W/"):
        return etag
    modified = data.get("last_modified") if isinstance(data, dict) else None
    return modified if isinstance(modified, str) and modified else None


def write_validator(dest: Path, url: str, etag: str | None, last_modified: str | None) -> None:
    write_json_atomic(validator_path(dest), {"url": url, "etag": etag, "last_modified": last_modified})


def discard_partial(dest: Path) -> None:
    """Forget an unfinished download entirely."""
    part_path(dest).unlink(missing_ok=True)
    validator_path(dest).unlink(missing_ok=True)


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256.json")


def sha256_file(path: Path, progress: Optional[Callable[[int, int], None]] = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write beside the target and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(dest: Path) -> dict[str, Any] | None:
    """The recorded sha256/size of a cached file, or None (absent or unreadable)."""
    try:
        data = json.loads(record_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        return None
    return data


def write_record(dest: Path, sha256: str, source: str) -> None:
    """Remember what the file was when it arrived; later uses are checked against this."""
    stat = dest.stat()
    write_json_atomic(record_path(dest), {
        "file": dest.name, "sha256": sha256, "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "source": source, "recorded_at": _utc_now(),
    })


def check_file(path: Path, expected_sha256: str | None, expected_size: int | None, what: str) -> str:
    """Verify size then sha256 of a finished file; return the sha256. Raise on mismatch.

    The caller decides what to do with a bad file; the message already says what happened.
    """
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ChecksumMismatchError(
            f"{what} has {size} bytes but {expected_size} were expected.")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ChecksumMismatchError(
            f"{what} has sha256 {digest} but {expected_sha256} was expected.")
    return digest


def verify_cached(card: Card, dest: Path) -> None:
    """Check a file already in the cache before it is used.

    A file with a record whose size and mtime still match is trusted (hashing hundreds of MB on
    every run would be slow); anything else is hashed and compared with the card's sha256 or the
    recorded one. A file that fails is moved aside (never silently used, never silently lost).
    """
    record = read_record(dest)
    stat = dest.stat()
    expected = card.weights.sha256 or (record or {}).get("sha256")
    if (record and record.get("size_bytes") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns
            and (card.weights.sha256 is None or record.get("sha256") == card.weights.sha256)):
        return
    try:
        digest = check_file(dest, expected, card.weights.size_bytes, f"The cached weights {dest}")
    except ChecksumMismatchError as exc:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise ChecksumMismatchError(
            f"{exc} The file was moved to {bad} and will not be used. Download it again with "
            f"'qgis-unravel models download {card.id}'.") from None
    write_record(dest, digest, source="file found in the cache")


class DownloadLock:
    """One download per file at a time, across processes (the QGIS task and the worker).

    The lock is a file created exclusively beside the weights and touched while bytes arrive;
    a lock left by a crashed process goes stale after ``stale_s`` and is taken over.
    """

    def __init__(self, dest: Path, stale_s: float = 120.0) -> None:
        self.dest = dest
        self.path = dest.with_name(dest.name + ".lock")
        self.stale_s = stale_s
        self._touched = 0.0

    def __enter__(self) -> DownloadLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._remove_if_stale():
                    continue
                raise DownloadError(
                    f"Another download of {self.dest.name} is running (lock file {self.path}). "
                    "Wait for it to finish, or delete that file if no download is running.") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(f"pid {os.getpid()} since {_utc_now()}\n")
            self._touched = time.monotonic()
            return self
        raise DownloadError(f"cannot lock {self.path} for the download; try again")

    def _remove_if_stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if age <= self.stale_s:
            return False
        self.path.unlink(missing_ok=True)
        return True

    def touch(self) -> None:
        """Show the lock is alive (cheap: at most every few seconds)."""
        now = time.monotonic()
        if now - self._touched > 5.0:
            self._touched = now
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def license_marker(card: Card, root: Path | None = None) -> Path:
    return model_cache_dir(card, root) / "license-accepted.json"


def license_accepted(card: Card, root: Path | None = None) -> bool:
    """True when this card's current licence was accepted before on this machine."""
    try:
        data = json.loads(license_marker(card, root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("license") == card.license.weights


def mark_license_accepted(card: Card, root: Path | None = None) -> None:
    write_json_atomic(license_marker(card, root), {
        "model": card.id, "license": card.license.weights, "url": card.license.url,
        "accepted_at": _utc_now(),
    })


def cache_status(card: Card, root: Path | None = None) -> str:
    """One word for lists: 'bundled', 'cached', 'partial' or 'missing'."""
    if card.weights.availability == "bundled":
        return "bundled" if card.bundled_path().is_file() else "missing"
    if not card.weights.filename:
        return "missing"
    dest = weights_path(card, root)
    if dest.is_file():
        return "cached"
    return "partial" if part_path(dest).is_file() else "missing"
