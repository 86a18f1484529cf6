"""Running batches of windows on a Dask cluster (``dask.distributed``).

Each worker loads the model once, in a worker plugin, and keeps it warm; a task is one
batch of windows of one raster (``detect_windows``) and returns the windows' detections,
which the client merges exactly as the single-process engine does. A local cluster
(``--workers N``) runs one process per worker, pinned to one GPU each when there are GPUs
(``CUDA_VISIBLE_DEVICES``, the way dask-cuda does it); ``--scheduler ADDRESS`` uses an
existing cluster (dask-jobqueue on HPC, a Kubernetes operator, ``dask scheduler``).

A worker that dies is replaced by its nanny, and the scheduler runs its tasks again
elsewhere; the client takes each task's result exactly once, so no box is lost or doubled.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..engine.detect import WindowSource, WindowsRun, classes_of, run_windows
from ..engine.errors import UserError
from ..engine.spec import RunSpec
from ..engine.windows import Tile

try:
    import distributed
    from distributed import WorkerPlugin
except ImportError:  # the single-process CLI never needs it; require_distributed() explains
    distributed = None
    WorkerPlugin = object

PLUGIN_NAME = "qgis-unravel-detector"
TASK_PREFIX = "qgis-unravel-windows"


def require_distributed() -> None:
    """One clear line when the cluster extra is not installed."""
    if distributed is None:
        raise UserError("--workers and --scheduler need Dask: pip install 'qgis-unravel[cluster]'")


@dataclass(frozen=True)
class ModelFacts:
    """What the client needs to know about the model to plan windows: its info and classes."""

    info: Dict[str, Any] = field(default_factory=dict)
    classes: List[str] = field(default_factory=list)


class DetectorPlugin(WorkerPlugin):  # type: ignore[misc,valid-type]
    """Loads the model once per worker process (also in a worker that replaces a dead one)."""

    def __init__(self, loader: Callable[[], Any], torch_threads: Optional[int] = None):
        self.loader = loader
        self.torch_threads = torch_threads
        self.detector: Any = None

    def setup(self, worker: Any) -> None:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        self.detector = self.loader()

    def teardown(self, worker: Any) -> None:
        self.detector = None


def _warm_detector() -> Any:
    worker = distributed.get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or plugin.detector is None:
        raise RuntimeError("this Dask worker has no qgis-unravel model loaded (plugin missing)")
    return plugin.detector


def describe_model() -> ModelFacts:
    """Run on a worker: the warm model's tiling info and class names."""
    detector = _warm_detector()
    return ModelFacts(dict(getattr(detector, "info", None) or {}), classes_of(detector))


def detect_windows(source: WindowSource, tiles: Sequence[Tile], spec: RunSpec) -> WindowsRun:
    """Run on a worker: one batch of windows of one raster through the warm model.

    ``spec`` is resolved (by the client, once for the whole job); the model is not modified.
    """
    return run_windows(source, tiles, _warm_detector(), spec)


def cuda_count() -> int:
    """GPUs visible here (0 without torch or CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def local_cluster(workers: int, device: str = "auto") -> Any:
    """N worker processes with one thread each; each pinned to one GPU when there are GPUs."""
    require_distributed()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    gpus = 0 if device == "cpu" else cuda_count()
    if device.startswith("cuda") and not gpus:
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    quiet = logging.ERROR
    if not gpus:
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=quiet)
    specs = {i: {"cls": distributed.Nanny,
                 "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i % gpus)}}}
             for i in range(workers)}
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    return distributed.SpecCluster(workers=specs, scheduler=scheduler, silence_logs=quiet)


def torch_threads_for(workers: int) -> int:
    """CPU threads per local worker, so N workers share the cores instead of fighting."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class ClusterSession:
    """A client with the model plugin registered: a local cluster or an existing one."""

    def __init__(self, loader: Callable[[], Any], workers: Optional[int] = None,
                 scheduler: Optional[str] = None, device: str = "auto", client: Any = None):
        require_distributed()
        self.cluster = None
        self.own_client = client is None
        if client is None:
            if scheduler:
                try:
                    client = distributed.Client(scheduler, timeout="30s")
                except OSError as exc:
                    raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            else:
                self.cluster = local_cluster(workers or 1, device)
                client = distributed.Client(self.cluster)
        self.client = client
        local_cpu = self.cluster is not None and (device == "cpu" or not cuda_count())
        threads = torch_threads_for(workers or 1) if local_cpu else None
        if scheduler and not client.nthreads():
            client.wait_for_workers(1, timeout=120)
        client.register_plugin(DetectorPlugin(loader, threads), name=PLUGIN_NAME)

    def workers_alive(self) -> int:
        return len(self.client.nthreads())

    def model_facts(self) -> ModelFacts:
        return self.client.submit(describe_model, pure=False).result()

    def close(self) -> None:
        if self.own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> ClusterSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task_failure(exc: BaseException, raster: str) -> UserError:
    """A failed batch as one line: a worker that kept dying, or an error inside the task."""
    name = type(exc).__name__
    if name == "KilledWorker":
        return UserError(f"Dask workers kept dying while running windows of {raster} (out of memory, or a "
                         "crash in GDAL or the GPU driver); the finished rasters are kept for a re-run")
    return UserError(f"a batch of windows of {raster} failed on a worker: {name}: {exc}")
