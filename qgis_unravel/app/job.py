"""The job manifest: what a many-raster run has finished, kept next to its output.

A job is one command over several rasters with one output. Each raster's merged result is
saved in ``OUTPUT.job/`` as soon as it is complete, and ``OUTPUT.job/manifest.json`` lists
the finished rasters. Running the same command again after a crash or a Ctrl-C finds the
manifest, loads the finished rasters' results and runs only the others; the output is
written once, at the end, from all of them in input order, so it is the same as that of
an uninterrupted run. A manifest made by a different command (other inputs, options or
model) is not reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from ..engine.result import RasterDetections
from ..engine.spec import RunSpec

MANIFEST_VERSION = 1
_ARRAYS = ("polygons", "boxes_px", "scores", "class_ids", "angle_deg", "length_m", "width_m", "area_m2",
           "windows")
_SCALARS = ("classes", "crs_wkt", "model", "source", "partial", "tiles_total", "tiles_done",
            "tiles_skipped", "pixel_size_m", "warnings")


def job_key(inputs: Sequence[str], spec: RunSpec) -> str:
    """A fingerprint of everything that decides a job's output: the rasters, the settings as
    typed (``spec``, before resolution) and the model file."""
    model_path = Path(spec.model)
    model_id: Any = spec.model
    if model_path.is_file():
        stat = model_path.stat()
        model_id = [str(model_path.resolve()), stat.st_size, stat.st_mtime_ns]
    settings = spec.to_dict()
    settings["output"] = str(Path(str(spec.output)).absolute())
    text = json.dumps({"inputs": list(inputs), "settings": settings, "model": model_id},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def job_folder(output: str) -> Path:
    """Where a job's manifest and finished results live: ``OUTPUT.job`` beside the output."""
    path = Path(output)
    return path.with_name(path.name.rstrip("/") + ".job")


class JobStore:
    """The manifest and the finished rasters' results of one job."""

    def __init__(self, output: str, key: str, inputs: Sequence[str]):
        self.folder = job_folder(output)
        self.key = key
        self.inputs = list(inputs)
        self.done: Dict[int, Dict[str, Any]] = {}
        self.stale = False  # a manifest of another job was found (and is replaced)

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    def open(self) -> List[int]:
        """Read an existing manifest of this job; the indices of the rasters already done."""
        if self.manifest.is_file():
            try:
                data = json.loads(self.manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if data.get("key") == self.key and data.get("version") == MANIFEST_VERSION:
                self.done = {int(k): v for k, v in data.get("done", {}).items()
                             if (self.folder / v["file"]).is_file()}
            else:
                self.stale = True
                shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_manifest(complete=False)
        return sorted(self.done)

    def save(self, index: int, result: RasterDetections, tiles: int) -> None:
        """Keep one finished raster's result, then record it in the manifest (in that order,
        so the manifest never lists a result that is not on disk)."""
        name = f"{index:06d}.npz"
        tmp = self.folder / f".{name}.partial"
        with open(tmp, "wb") as handle:
            np.savez(handle, **_arrays(result), meta=np.array(json.dumps(_scalars(result))))
        os.replace(tmp, self.folder / name)
        self.done[index] = {"file": name, "source": result.source, "count": len(result), "tiles": tiles}
        self._write_manifest(complete=False)

    def load(self, index: int) -> RasterDetections:
        with np.load(self.folder / self.done[index]["file"], allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
            meta = json.loads(str(data["meta"]))
        return RasterDetections(**arrays, **meta)

    def finish(self) -> None:
        """The output is written: drop the results, keep the manifest as the job's record."""
        for entry in self.done.values():
            (self.folder / entry["file"]).unlink(missing_ok=True)
        self._write_manifest(complete=True)

    def _write_manifest(self, complete: bool) -> None:
        data = {"version": MANIFEST_VERSION, "key": self.key, "complete": complete,
                "inputs": self.inputs, "done": {str(k): v for k, v in sorted(self.done.items())}}
        tmp = self.manifest.with_name(".manifest.json.partial")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, self.manifest)


def _arrays(result: RasterDetections) -> Dict[str, np.ndarray]:
    out = {name: np.asarray(getattr(result, name)) for name in _ARRAYS if name != "windows"}
    out["windows"] = np.asarray(result.windows if result.windows is not None else np.zeros((0, 4)), np.int64)
    return out


def _scalars(result: RasterDetections) -> Dict[str, Any]:
    return {name: getattr(result, name) for name in _SCALARS}
