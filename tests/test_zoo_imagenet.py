"""ImageNet ResNet backbones for Refined-Det: download once, verify against the name's hash, use."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from test_zoo_support import LocalFileServer

from qgis_unravel.zoo import ChecksumMismatchError, imagenet


def _named(data: bytes, depth: int) -> str:
    return f"resnet{depth}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def test_download_is_verified_cached_and_damage_is_caught(tmp_path: Path, monkeypatch) -> None:
    data = b"pretend resnet weights" * 1000
    name = _named(data, 50)
    monkeypatch.setitem(imagenet.RESNET_FILES, 50, name)
    with LocalFileServer({f"/models/{name}": data}) as server:
        path = imagenet.resnet_weights(50, root=tmp_path, base_url=server.url("/models/"))
        assert path == tmp_path / "imagenet" / name and path.read_bytes() == data
    # cached: no server needed the second time
    assert imagenet.resnet_weights(50, root=tmp_path, base_url="http://127.0.0.1:9/") == path
    path.write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError, match="does not start with"):
        imagenet.resnet_weights(50, root=tmp_path, base_url="http://127.0.0.1:9/")
    assert not path.exists()


def test_known_files_carry_their_hash_prefix() -> None:
    for depth, name in imagenet.RESNET_FILES.items():
        assert name.startswith(f"resnet{depth}-") and len(imagenet.hash_prefix(name)) == 8


def test_train_from_imagenet_weights_through_the_zoo(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--backbone-weights imagenet``: a torchvision-layout ResNet-18 file (with its fc) is
    fetched from a local server into the cache, its licence shown, and loaded into the backbone."""
    from qgis_unravel.app.train_cli import main
    from qgis_unravel.detector.backbones.resnet import ResNet
    from qgis_unravel.synthetic import CLASS_NAMES, write_scene

    torch.manual_seed(3)
    state = {k: v for k, v in ResNet(18).state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    name = _named(data, 18)
    monkeypatch.setitem(imagenet.RESNET_FILES, 18, name)
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "cache"))
    tif, gpkg = tmp_path / "s.tif", tmp_path / "s.gpkg"
    write_scene(tif, gpkg, seed=4, size=128)
    with LocalFileServer({f"/m/{name}": data}) as server:
        monkeypatch.setattr(imagenet, "BASE_URL", server.url("/m/"))
        args = [
            "train",
            "--arch",
            "refined-det",
            "--preset",
            "r18",
            "--backbone-weights",
            "imagenet",
            "--raster",
            str(tif),
            "--labels",
            str(gpkg),
            "--tile-size",
            "128",
            "--overlap",
            "0",
            "--batch-size",
            "1",
            "--warmup-iters",
            "1",
            "--classes",
            ",".join(CLASS_NAMES),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--iterations",
            "1",
        ]
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "ImageNet-1k" in out and "loaded 100 of 100 tensors" in out
    assert (tmp_path / "cache" / "imagenet" / name).is_file()
    args[args.index("r18")] = "nano"
    assert main(args) == 2
    assert "no ImageNet weights fit" in capsys.readouterr().err
