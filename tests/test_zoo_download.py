"""Downloads into the cache: resume, progress, checksums, offline messages (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_zoo_support import LocalFileServer, card_dict, free_port_url

from qgis_unravel.zoo import (
    ChecksumMismatchError,
    DownloadCancelled,
    DownloadError,
    OfflineError,
    ensure_weights,
    mark_license_accepted,
)
from qgis_unravel.zoo import cache as zcache
from qgis_unravel.zoo.cache import part_path, read_record, record_path, verify_cached
from qgis_unravel.zoo.cards import card_from_dict
from qgis_unravel.zoo.download import download

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture()
def server():
    with LocalFileServer({"/model.pth": DATA}) as srv:
        yield srv


def test_download_records_sha_and_reports_progress(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "model.pth"
    calls = []
    result = download([server.url("/model.pth")], dest, progress=lambda d, t: calls.append((d, t)))
    assert dest.read_bytes() == DATA and result.sha256 == SHA and result.recorded
    assert not part_path(dest).exists()
    assert read_record(dest)["sha256"] == SHA and read_record(dest)["size_bytes"] == len(DATA)
    assert calls[-1] == (len(DATA), len(DATA))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_interrupted_download_resumes_with_range(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    server.behaviour.cut_after = 100_000
    with pytest.raises(DownloadError, match="again to resume"):
        download([server.url("/model.pth")], dest, sha256=SHA)
    assert part_path(dest).stat().st_size == 100_000 and not dest.exists()
    result = download([server.url("/model.pth")], dest, sha256=SHA)
    assert result.resumed_from == 100_000 and dest.read_bytes() == DATA
    assert server.behaviour.seen[-1]["range"] == "bytes=100000-"


def test_server_without_range_support_restarts_cleanly(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(DATA[:5000])
    server.behaviour.ignore_range = True
    result = download([server.url("/model.pth")], dest, sha256=SHA)
    assert result.resumed_from == 0 and dest.read_bytes() == DATA


def test_changed_server_file_restarts_instead_of_mixing(server: LocalFileServer, tmp_path: Path) -> None:
    """No checksum in the card: If-Range (the ETag of the first attempt) keeps old and new apart."""
    dest = tmp_path / "model.pth"
    server.behaviour.etag = '"v1"'
    server.behaviour.cut_after = 100_000
    with pytest.raises(DownloadError):
        download([server.url("/model.pth")], dest)
    new = os.urandom(len(DATA))
    server.files["/model.pth"] = new
    server.behaviour.etag = '"v2"'
    result = download([server.url("/model.pth")], dest)
    assert server.behaviour.seen[-1]["if_range"] == '"v1"' and result.resumed_from == 0
    assert dest.read_bytes() == new


def test_part_longer_than_server_file_is_dropped(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(os.urandom(len(DATA) + 10))
    result = download([server.url("/model.pth")], dest)
    assert [s["range"] for s in server.behaviour.seen] == [f"bytes={len(DATA) + 10}-", ""]
    assert result.resumed_from == 0 and dest.read_bytes() == DATA


def test_complete_part_file_is_finished_after_416(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(DATA)
    result = download([server.url("/model.pth")], dest, sha256=SHA)
    assert result.path == dest and dest.read_bytes() == DATA


def test_tampered_download_is_discarded_and_explained(tmp_path: Path) -> None:
    tampered = bytearray(DATA)
    tampered[1234] ^= 0xFF
    dest = tmp_path / "model.pth"
    with LocalFileServer({"/model.pth": bytes(tampered)}) as srv:
        with pytest.raises(ChecksumMismatchError) as info:
            download([srv.url("/model.pth")], dest, sha256=SHA)
    message = str(info.value)
    assert SHA in message and "discarded" in message and srv.url("/model.pth") in message
    assert not dest.exists() and not part_path(dest).exists() and not record_path(dest).exists()


def test_wrong_size_is_discarded(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    with pytest.raises(ChecksumMismatchError, match="bytes but the model card says"):
        download([server.url("/model.pth")], dest, size=len(DATA) + 1)
    assert not dest.exists() and not part_path(dest).exists()


def test_offline_message_names_url_and_manual_path(tmp_path: Path) -> None:
    url = free_port_url()
    dest = tmp_path / "models" / "m" / "model.pth"
    with pytest.raises(OfflineError) as info:
        download([url], dest, timeout=5)
    message = str(info.value)
    assert url in message and str(dest) in message and "browser" in message


def test_http_error_is_not_reported_as_offline(server: LocalFileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        download([server.url("/missing.pth")], tmp_path / "x.pth")
    assert not isinstance(info.value, OfflineError) and "HTTP 404" in str(info.value)


def test_second_url_is_tried_when_first_fails(server: LocalFileServer, tmp_path: Path) -> None:
    result = download([server.url("/missing.pth"), server.url("/model.pth")], tmp_path / "m.pth", sha256=SHA)
    assert result.url.endswith("/model.pth")


def test_cancel_keeps_partial_file(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "m.pth"
    state = {"n": 0}

    def cancel() -> bool:
        state["n"] += 1
        return state["n"] > 2

    with pytest.raises(DownloadCancelled, match="kept"):
        download([server.url("/model.pth")], dest, cancel=cancel)
    assert 0 < part_path(dest).stat().st_size < len(DATA)


def _card(url: str, **changes):
    return card_from_dict(card_dict(weights__urls=[url], **changes), where="test")


def test_recorded_sha_is_enforced_on_later_downloads(tmp_path: Path) -> None:
    """No sha256 in the card: the first download records one, and a changed file is refused after."""
    with LocalFileServer({"/model.pth": DATA}) as srv:
        card = _card(srv.url("/model.pth"))
        mark_license_accepted(card, tmp_path)
        path = ensure_weights(card, cache_dir=tmp_path)
        assert read_record(path)["sha256"] == SHA
        srv.files["/model.pth"] = os.urandom(len(DATA))  # the file on the server changed
        with pytest.raises(ChecksumMismatchError, match="discarded"):
            ensure_weights(card, cache_dir=tmp_path, force=True)
    assert path.read_bytes() == DATA  # the good file was not replaced


def test_cached_file_changed_on_disk_is_moved_aside(tmp_path: Path) -> None:
    with LocalFileServer({"/model.pth": DATA}) as srv:
        card = _card(srv.url("/model.pth"))
        mark_license_accepted(card, tmp_path)
        path = ensure_weights(card, cache_dir=tmp_path)
    path.write_bytes(DATA[:-10] + b"0123456789")
    with pytest.raises(ChecksumMismatchError, match="will not be used"):
        verify_cached(card, path)
    assert not path.exists() and path.with_name(path.name + ".bad").exists()


def test_cache_root_honours_env_and_matches_platformdirs(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "c"))
    assert zcache.cache_root() == tmp_path / "c"
    monkeypatch.delenv("QGIS_UNRAVEL_CACHE")
    from platformdirs import user_cache_dir

    # The plugin's fallback (for a QGIS Python without platformdirs) must find the same folder.
    assert zcache._fallback_cache_dir() == Path(user_cache_dir("qgis-unravel", appauthor=False))
    assert zcache.cache_root() == zcache._fallback_cache_dir()


def test_concurrent_download_of_the_same_file_is_refused(server: LocalFileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    lock = dest.with_name(dest.name + ".lock")
    lock.write_text("pid 1")
    with pytest.raises(DownloadError, match="Another download of model.pth is running"):
        download([server.url("/model.pth")], dest)
    assert server.behaviour.seen == [] and lock.exists()
    old = lock.stat().st_mtime - 600
    os.utime(lock, (old, old))  # a lock nobody touched for 10 minutes is stale: taken over
    download([server.url("/model.pth")], dest, sha256=SHA)
    assert dest.read_bytes() == DATA and not lock.exists()
