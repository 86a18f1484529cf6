"""How many tiles go through the network at once, and what happens when a GPU runs out of memory.

A batch size is chosen from the GPU's free memory and an estimate of one tile's peak memory; a
batch that still runs out of memory part-way through a raster is halved and retried, so the run
continues with every tile (and one warning) instead of failing after hours of work. When even one
tile does not fit, the user gets one message saying what to change.

The free-memory query and the memory-cache release are passed in, so all of this is tested on a
machine without a GPU.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, TypeVar

from .errors import UserError

Item = TypeVar("Item")
Result = TypeVar("Result")

CPU_BATCH_SIZE = 2  # on CPU larger batches do not raise throughput; 2 keeps the reader ahead
MAX_BATCH_SIZE = 16
# Peak memory of one 1024 x 1024 tile through the Small networks in float32, with room for the
# RoI head and post-processing; tiles of other sizes scale with their area. A generous figure:
# an underestimate only costs one halving (see AdaptiveBatches), never a failed run.
BYTES_PER_TILE_1024 = 3 * 2**30
HALF_PRECISION_FACTOR = 0.6  # fp16/bf16 activations; weights and the fp32 LoG stem stay
MEMORY_HEADROOM = 0.8  # use at most this share of the free memory (fragmentation, other users)


def tile_cost_bytes(tile_size: int, half_precision: bool = False) -> int:
    """Estimated peak device memory of one tile of ``tile_size`` pixels a side."""
    cost = BYTES_PER_TILE_1024 * (tile_size / 1024) ** 2
    return int(cost * (HALF_PRECISION_FACTOR if half_precision else 1.0))


def choose_batch_size(free_bytes: int, per_tile_bytes: int, max_batch: int = MAX_BATCH_SIZE) -> int:
    """The largest power of two, at most ``max_batch``, whose tiles fit in the usable free memory.

    Never below 1: whether one tile fits is found out by running it (AdaptiveBatches says so).
    """
    usable = free_bytes * MEMORY_HEADROOM
    size = 1
    while size * 2 <= max_batch and size * 2 * per_tile_bytes <= usable:
        size *= 2
    return size


def free_cuda_memory(device: str) -> int:
    """Free bytes on a CUDA device (``cuda`` or ``cuda:N``), as the driver reports them."""
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def auto_batch_size(
    device: str, tile_size: int, half_precision: bool = False,
    free_memory: Callable[[str], int] = free_cuda_memory,
) -> int:
    """The batch size for a run: fixed on CPU, from the free GPU memory on CUDA."""
    if not str(device).startswith("cuda"):
        return CPU_BATCH_SIZE
    return choose_batch_size(free_memory(str(device)), tile_cost_bytes(tile_size, half_precision))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (``torch.cuda.OutOfMemoryError`` or the older
    RuntimeError that says "out of memory"), without importing torch."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cuda_cache() -> None:
    """Give the allocator's cached blocks back so the smaller retry sees them free."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort: the retry happens anyway
        pass


class AdaptiveBatches:
    """Runs items through ``run_batch`` in batches, halving the batch on out-of-memory.

    ``run_batch(items)`` returns one result per item. A batch that fails with out-of-memory is
    retried from its first item with half as many items, so no item is lost or run twice into
    the results; the smaller size holds for the rest of the run. ``warnings`` receives one line
    the first time the size drops. A single item that does not fit raises a UserError.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], List[Result]], batch_size: int,
                 release: Callable[[], None] = release_cuda_cache, what: str = "tile"):
        if batch_size < 1:
            raise UserError(f"batch size {batch_size} must be at least 1")
        self.run_batch = run_batch
        self.batch_size = int(batch_size)
        self.initial_batch_size = int(batch_size)
        self.release = release
        self.what = what
        self.warnings: List[str] = []

    def run(self, items: Sequence[Item]) -> List[Result]:
        """Results for all ``items``, in order."""
        results: List[Result] = []
        start = 0
        while start < len(items):
            chunk = items[start: start + self.batch_size]
            try:
                out = self.run_batch(chunk)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._shrink(exc)
                continue
            results.extend(out)
            start += len(chunk)
        return results

    def _shrink(self, exc: BaseException) -> None:
        self.release()
        if self.batch_size == 1:
            raise UserError(
                f"the GPU ran out of memory on a single {self.what} ({first_line(exc)}); use a "
                "smaller tile size, mixed precision (--amp fp16), another GPU with more free memory, "
                "or --device cpu"
            ) from exc
        smaller = self.batch_size // 2
        self.warnings[:] = [  # one warning for the run, however often the size dropped
            f"the GPU ran out of memory with {self.initial_batch_size} {self.what}s per batch: "
            f"continued with {smaller} (nothing was lost; pass --batch {smaller} to start there)"]
        self.batch_size = smaller


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def resolve_batch_size(requested: Optional[int], device: str, tile_size: int, half_precision: bool,
                       free_memory: Callable[[str], int] = free_cuda_memory) -> int:
    """``requested`` when given (checked), else the automatic size for the device."""
    if requested is not None:
        if int(requested) < 1:
            raise UserError(f"--batch {requested}: give at least 1 tile per batch (or leave it automatic)")
        return int(requested)
    return auto_batch_size(device, tile_size, half_precision, free_memory)
