"""The project's golden reference data (``tests/golden``), made by ``reference/generate.py``.

Checkpoints are committed xz-compressed (their weights sit on a coarse grid, so they shrink a
lot); :func:`expanded` gives a folder where every file has its plain name
(``reduced_model.pth`` …), decompressed once per content into the system's temporary folder, so
tests and benches can hand real checkpoint paths to the engine, the CLI and the worker.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = "MANIFEST"
UNLISTED = {MANIFEST, "README.md"}


def read_manifest(folder: Path = GOLDEN) -> Dict[str, Tuple[str, int]]:
    """path -> (sha256, size) as listed in the folder's MANIFEST."""
    entries = {}
    for line in (folder / MANIFEST).read_text(encoding="utf-8").splitlines():
        digest, size, rel = line.split(maxsplit=2)
        entries[rel] = (digest, int(size))
    return entries


def data_files(folder: Path = GOLDEN) -> List[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() not in UNLISTED
    )


def manifest_problems(folder: Path = GOLDEN) -> List[str]:
    """Every way the folder differs from its MANIFEST (empty when it matches)."""
    listed = read_manifest(folder)
    present = set(data_files(folder))
    problems = [f"{rel}: in the folder but not in MANIFEST" for rel in sorted(present - set(listed))]
    for rel, (digest, size) in sorted(listed.items()):
        path = folder / rel
        if rel not in present:
            problems.append(f"{rel}: listed in MANIFEST but missing")
            continue
        if path.stat().st_size != size:
            problems.append(f"{rel}: {path.stat().st_size} bytes, MANIFEST says {size}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{rel}: sha256 differs from MANIFEST")
    return problems


def expanded(folder: Path = GOLDEN) -> Path:
    """A folder with the golden files under their plain names (``x.pth`` for ``x.pth.xz``)."""
    key = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"qgis-unravel-golden-{key}"
    for rel in data_files(folder):
        source = folder / rel
        plain = rel[: -len(".xz")] if rel.endswith(".xz") else rel
        dest = target / plain
        if dest.is_file():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}")
        if rel.endswith(".xz"):
            partial.write_bytes(lzma.decompress(source.read_bytes()))
        else:
            shutil.copyfile(source, partial)
        os.replace(partial, dest)  # atomic: parallel sessions never see half a file
    return target


def reduced_run(golden_dir: Path) -> dict:
    """Facts of the golden run of ``reduced_model.pth`` (score threshold, detections per class…)."""
    return json.loads((golden_dir / "reduced_model_info.json").read_text(encoding="utf-8"))


def frequent_classes(golden_dir: Path, count: int) -> List[str]:
    """Names of the ``count`` classes the golden reduced model detects most often on its scene."""
    run = reduced_run(golden_dir)
    ranked = sorted(range(len(run["classes"])), key=lambda c: -run["dets_per_class"][c])
    return [run["classes"][c] for c in ranked[:count]]


def array_names(npz: Any, prefix: str = "") -> List[str]:
    """Names of the arrays an .npz holds (whole or sampled), in file order, starting with ``prefix``."""
    names: List[str] = []
    for entry in (npz.files if hasattr(npz, "files") else list(npz)):
        name = entry.split("@", 1)[0]
        if name.startswith(prefix) and name not in names:
            names.append(name)
    return names


def compared(actual: Any, npz: Mapping[str, Any], name: str) -> Tuple[Any, Any]:
    """(actual values, reference values) as torch tensors, at the positions the golden file
    holds for ``name``: every element of an array stored whole, the stored positions of one
    stored as a sample (``name@shape``, ``name@index``, ``name@value``). The sample always
    holds the array's largest |values|, so a tolerance scaled by ``ref.abs().max()`` is the
    same either way."""
    import numpy as np
    import torch

    actual = torch.as_tensor(actual)
    entries = npz.files if hasattr(npz, "files") else npz
    if name in entries:
        ref = torch.from_numpy(np.asarray(npz[name]))
        assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
        return actual, ref
    shape = tuple(int(n) for n in npz[f"{name}@shape"])
    assert tuple(actual.shape) == shape, f"{name}: shape {tuple(actual.shape)} != {shape}"
    index = torch.from_numpy(np.asarray(npz[f"{name}@index"]))
    return actual.reshape(-1)[index.to(actual.device)], torch.from_numpy(np.asarray(npz[f"{name}@value"]))
