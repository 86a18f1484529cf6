"""A job: many rasters (or one mosaic) and one output, in this process or on a Dask cluster.

Before the first window: the output is checked, every raster is opened and described,
and a manifest of an interrupted run of the same command is picked up (``job.JobStore``).
Then each unfinished raster is planned by the engine (``plan_raster``) and its windows are
run, here (``run_windows``) or as batches on the cluster's workers (``cluster``); as soon as
all windows of a raster are back, the engine merges them (``finish_raster``, the same merge
as a single-process run, in window order) and the raster's result is saved in the job
folder. The output is written at the end from all rasters in input order, so it is the
same however the work was split, interrupted or retried.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..engine.detect import (
    RasterPlan,
    WindowsRun,
    class_ids,
    classes_of,
    finish_raster,
    plan_raster,
    run_windows,
)
from ..engine.errors import UserError
from ..engine.geoparquet import check_parquet_output, is_parquet, write_geoparquet
from ..engine.raster import describe, open_dataset
from ..engine.result import RasterDetections, concatenate
from ..engine.spec import ModelDefaults, RunSpec
from ..worker import protocol
from .job import JobStore, job_key

Emit = Callable[[Dict[str, Any]], None]
PROGRESS_EVERY_S = 0.25  # at most this often on the terminal and in --json


class JobInterrupted(Exception):
    """Cancelled between windows; the finished rasters are kept for the next run."""


@dataclass(frozen=True)
class JobSpec:
    """A job: its rasters and how to spread them, around the run's ``RunSpec``.

    ``run`` holds the output (output, layer, overwrite, append), the model, the device and
    every per-raster setting, exactly as for one raster; its ``input`` is not used.
    """

    inputs: Tuple[str, ...]
    run: RunSpec
    partition: bool = False  # GeoParquet: one file per source raster in a folder
    workers: Optional[int] = None  # a local Dask cluster of this many processes
    scheduler: Optional[str] = None  # or the address of an existing Dask scheduler
    windows_per_task: Optional[int] = None  # default: 8 network batches

    @property
    def on_cluster(self) -> bool:
        return self.workers is not None or bool(self.scheduler)

    @property
    def output(self) -> str:
        return str(self.run.output)

    @property
    def is_job(self) -> bool:
        """Whether this needs the job path (else it is one raster in this process, as before)."""
        return (len(self.inputs) != 1 or self.on_cluster or self.partition
                or (self.run.output is not None and is_parquet(self.run.output)))

    def validate(self) -> JobSpec:
        """One line for the first mistake, before anything slow."""
        self.run.validate()
        if not self.is_job:
            return self
        if self.run.output is None:
            raise UserError("a job over several rasters needs an output: -o OUT.gpkg or -o OUT.parquet")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers must be at least 1, not {self.workers}")
        if self.windows_per_task is not None and self.windows_per_task < 1:
            raise UserError(f"--windows-per-task must be at least 1, not {self.windows_per_task}")
        if self.partition and not is_parquet(self.run.output):
            raise UserError("--partition is for GeoParquet outputs (.parquet)")
        if self.on_cluster:
            from .cluster import require_distributed

            require_distributed()
            if self.run.device.startswith("cuda:"):
                raise UserError("with --workers or --scheduler use --device auto, cuda or cpu: "
                                "each worker is pinned to one GPU")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return {"inputs": list(self.inputs), "run": self.run.to_dict(), "partition": self.partition,
                "workers": self.workers, "scheduler": self.scheduler,
                "windows_per_task": self.windows_per_task}


class Progress:
    """Tiles done over the whole job, the rate of this run, its ETA and the workers alive."""

    def __init__(self, emit: Emit, total: int, done: int, workers: Callable[[], Optional[int]]):
        self.emit, self.total, self.done, self.workers = emit, total, done, workers
        self.run = 0
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, tiles: int) -> None:
        self.done += tiles
        self.run += tiles
        self.tick(force=self.done >= self.total)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.run / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        event = protocol.progress(self.done, self.total, eta, "tiles")
        event["tiles_per_s"] = round(rate, 2)
        event["workers"] = self.workers()
        self.emit(event)


def run_job(job: JobSpec, emit: Emit, loader: Optional[Callable[[], Any]],
            cancel: Optional[threading.Event] = None, detector: Any = None, client: Any = None,
            defaults: Optional[ModelDefaults] = None) -> Dict:
    """Run a job to its output; return the ``result`` event (also emitted).

    ``loader()`` gives the detector (in each worker, or here when not on a cluster, unless
    ``detector`` is already loaded); ``client`` is an existing Dask client to use.
    ``defaults`` are the model card's; without them the model's own info is used. The run
    spec is resolved once, here, and every raster runs with the same resolved spec.
    """
    started = time.monotonic()
    job.validate()
    inputs = list(job.inputs)
    _preflight(job, inputs)
    store = JobStore(job.output, job_key(inputs, job.run), inputs)
    resumed = store.open()
    if store.stale:
        emit(protocol.warning(f"{store.folder} held an unfinished job with other settings; starting over"))
    if resumed:
        emit({"type": "log", "message": f"resuming: {len(resumed)} of {len(inputs)} rasters were "
                                        f"finished by an earlier run ({store.manifest})"})
    session = None
    try:
        if job.on_cluster:
            from .cluster import ClusterSession

            session = ClusterSession(loader, job.workers, job.scheduler, job.run.device, client)
            facts: Any = session.model_facts()
            info, classes = facts.info, facts.classes
            workers = session.workers_alive
        else:
            detector = detector if detector is not None else loader()
            info, classes = getattr(detector, "info", None), classes_of(detector)
            workers = lambda: None  # noqa: E731
        spec = job.run.resolve(defaults or ModelDefaults.from_info(info, name=Path(job.run.model).stem))
        class_ids(classes, spec.classes)  # a typo in a class name fails before any window
        todo = [i for i in range(len(inputs)) if i not in store.done]
        plans = {i: plan_raster(inputs[i], spec) for i in todo}
        finished = sum(entry["tiles"] for entry in store.done.values())
        progress = Progress(emit, finished + sum(len(p.tiles) for p in plans.values()), finished, workers)
        progress.tick(force=True)

        def done(index: int, run: WindowsRun) -> None:
            result = finish_raster(plans[index], run, classes, spec)
            for note in result.warnings:
                emit(protocol.warning(note))
            store.save(index, result, len(plans[index].tiles))
            del plans[index]

        if session is not None:
            per_task = job.windows_per_task or 8 * max(1, spec.batch_size)
            _run_on_cluster(session.client, plans, spec, per_task, progress, done, cancel)
        else:
            _run_here(detector, plans, spec, progress, done, cancel)
        worker_count = workers()
    except JobInterrupted:
        raise JobInterrupted(f"interrupted: {len(store.done)} of {len(inputs)} rasters are finished and "
                             f"kept in {store.folder}; run the same command again to resume") from None
    finally:
        if session is not None:
            session.close()
    results = [store.load(i) for i in range(len(inputs))]
    written = _write(job, results)
    store.finish()
    joined = concatenate(results)
    event = {
        "type": "result", "output": written[0], "layer": written[1], "count": len(joined),
        "counts": joined.counts(), "partial": False, "model": spec.model_name, "features": None,
        "crs": joined.crs_wkt, "tiles": progress.total, "tiles_run": progress.run, "rasters": len(inputs),
        "resumed": len(resumed), "workers": worker_count, "seconds": round(time.monotonic() - started, 2),
        "spec": spec.to_dict(), "job": job.to_dict(),
    }
    emit(event)
    return event


def _preflight(job: JobSpec, inputs: Sequence[str]) -> None:
    """Check the output and open every raster before any window runs."""
    if not inputs:
        raise UserError("no input raster")
    parquet = is_parquet(job.output)
    if parquet:
        check_parquet_output(job.output, job.run.overwrite)
    else:
        _check_vector_output(job.run)
    crss = []
    for path in inputs:
        with open_dataset(path) as ds:
            crss.append(describe(ds, job.run.bands).crs_wkt)
    if len(set(crss)) > 1 and not (parquet and job.partition):
        raise UserError(f"the {len(inputs)} rasters are in {len(set(crss))} different CRSs and one layer has "
                        "one; write a partitioned GeoParquet (-o OUT.parquet --partition) or run per CRS")


def _check_vector_output(spec: RunSpec) -> None:
    from ..engine.writer import driver_for

    path = Path(spec.output).expanduser().absolute()
    driver_for(path)
    if spec.overwrite and spec.append:
        raise UserError("--overwrite and --append exclude each other; choose one")
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if path.exists() and not (spec.overwrite or spec.append):
        from osgeo import ogr

        ds = ogr.Open(str(path))
        names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())] if ds is not None else []
        if (spec.layer or path.stem) in names or ds is None:
            raise UserError(f"{path} already has layer '{spec.layer or path.stem}'; "
                            "use --overwrite to replace it or --append to add to it")


def _write(job: JobSpec, results: List[RasterDetections]) -> Tuple[str, Optional[str]]:
    run = job.run
    if is_parquet(job.output):
        write_geoparquet(results, job.output, job.partition, run.overwrite)
        return str(Path(job.output).expanduser().absolute()), None
    from ..engine.writer import write_detections

    report = write_detections(concatenate(results), job.output, run.layer, run.overwrite, run.append)
    return report.path, report.layer


def _run_here(detector: Any, plans: Dict[int, RasterPlan], options: RunSpec, progress: Progress,
              done: Callable[[int, WindowsRun], None], cancel: Optional[threading.Event]) -> None:
    """The rasters one after another in this process (no cluster)."""
    for index in sorted(plans):
        plan = plans[index]
        run = run_windows(plan.source, plan.tiles, detector, options, _counter(progress), cancel)
        if run.partial:
            raise JobInterrupted()
        done(index, run)


def _counter(progress: Progress) -> Callable[[int, int], None]:
    """An engine progress callback (tiles done of one raster) that adds to the job's count."""
    counted = [0]

    def tiles_done(count: int, total: int) -> None:
        progress.add(count - counted[0])
        counted[0] = count

    return tiles_done


def _run_on_cluster(client: Any, plans: Dict[int, RasterPlan], options: RunSpec, per_task: int,
                    progress: Progress, done: Callable[[int, WindowsRun], None],
                    cancel: Optional[threading.Event]) -> None:
    """Every raster's windows as tasks of ``per_task`` windows; results taken as they come."""
    from distributed import as_completed

    from .cluster import TASK_PREFIX, detect_windows, task_failure

    token = f"{time.time_ns():x}"
    owner: Dict[str, int] = {}
    runs: Dict[int, List[WindowsRun]] = {}
    left: Dict[int, int] = {}
    futures = []
    for index in sorted(plans):
        plan = plans[index]
        batches = [plan.tiles[i:i + per_task] for i in range(0, len(plan.tiles), per_task)]
        runs[index], left[index] = [], len(batches)
        for number, tiles in enumerate(batches):
            key = f"{TASK_PREFIX}-{token}-{index}-{number}"
            futures.append(client.submit(detect_windows, plan.source, tiles, options, key=key, retries=1))
            owner[key] = index
    pending = as_completed(futures)
    del futures
    try:
        while not pending.is_empty():
            if cancel is not None and cancel.is_set():
                raise JobInterrupted()
            ready = pending.next_batch(block=False)
            if not ready:
                progress.tick()
                time.sleep(0.05)
                continue
            for future in ready:
                try:
                    run = future.result()
                except UserError:
                    raise
                except Exception as exc:
                    raise task_failure(exc, plans[owner[future.key]].source.info.path) from None
                future.release()
                index = owner.pop(future.key)
                runs[index].append(run)
                left[index] -= 1
                progress.add(len(run.seen) + run.skipped)
                if left[index] == 0:
                    done(index, _joined(runs.pop(index)))
    finally:
        leftover = list(pending.futures) if hasattr(pending, "futures") else []
        if leftover:
            client.cancel(leftover)


def _joined(runs: Sequence[WindowsRun]) -> WindowsRun:
    """One raster's batches as one run (``finish_raster`` puts the windows in order)."""
    return WindowsRun([p for r in runs for p in r.parts], [i for r in runs for i in r.seen],
                      sum(r.skipped for r in runs), any(r.partial for r in runs))
