"""Automatic batch size and out-of-memory recovery, with a fake GPU allocator."""

from __future__ import annotations

from typing import List, Sequence

import pytest

from qgis_unravel.engine.batching import (
    CPU_BATCH_SIZE,
    AdaptiveBatches,
    auto_batch_size,
    choose_batch_size,
    is_out_of_memory,
    resolve_batch_size,
    tile_cost_bytes,
)
from qgis_unravel.engine.errors import UserError

GIB = 2**30


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which is what is recognised."""


class FakeAllocator:
    """A GPU with ``capacity`` bytes where each item of a batch takes ``per_item`` bytes.

    A batch that needs more than what is free raises like CUDA does; ``leak`` bytes stay
    taken after each successful batch (another process growing, fragmentation), so a batch
    size that fitted at first can stop fitting part-way through a run.
    """

    def __init__(self, capacity: int, per_item: int, leak: int = 0,
                 error: type = OutOfMemoryError):
        self.capacity, self.per_item, self.leak, self.error = capacity, per_item, leak, error
        self.used = 0
        self.calls: List[List[int]] = []
        self.released = 0

    def free(self, device: str) -> int:
        assert device.startswith("cuda")
        return self.capacity - self.used

    def run(self, items: Sequence[int]) -> List[int]:
        self.calls.append(list(items))
        need = len(items) * self.per_item
        if need > self.capacity - self.used:
            raise self.error(f"CUDA out of memory. Tried to allocate {need} bytes")
        self.used += self.leak
        return [10 * i for i in items]

    def release(self) -> None:
        self.released += 1


def test_batch_size_fills_the_free_memory_in_powers_of_two():
    assert choose_batch_size(free_bytes=40 * GIB, per_tile_bytes=GIB) == 16  # capped
    assert choose_batch_size(free_bytes=10 * GIB, per_tile_bytes=GIB) == 8   # 8 GiB <= 80 % of 10
    assert choose_batch_size(free_bytes=9 * GIB, per_tile_bytes=GIB) == 4    # 8 > 7.2 usable
    assert choose_batch_size(free_bytes=GIB // 2, per_tile_bytes=GIB) == 1   # tried, see below
    assert choose_batch_size(free_bytes=40 * GIB, per_tile_bytes=GIB, max_batch=4) == 4


def test_tile_cost_scales_with_area_and_precision():
    assert tile_cost_bytes(2048) == 4 * tile_cost_bytes(1024)
    assert tile_cost_bytes(1024, half_precision=True) < tile_cost_bytes(1024)


def test_auto_batch_size_asks_the_device_only_on_cuda():
    gpu = FakeAllocator(capacity=80 * GIB, per_item=GIB)
    assert auto_batch_size("cpu", 1024, free_memory=gpu.free) == CPU_BATCH_SIZE
    big = auto_batch_size("cuda:1", 1024, free_memory=gpu.free)
    gpu.used = 78 * GIB
    small = auto_batch_size("cuda:1", 1024, free_memory=gpu.free)
    assert big == 16 and small == 1
    assert auto_batch_size("cuda", 512, free_memory=lambda d: 2 * tile_cost_bytes(512)) == 1
    assert auto_batch_size("cuda", 512, free_memory=lambda d: 3 * tile_cost_bytes(512)) == 2


def test_explicit_batch_size_wins_and_is_checked():
    assert resolve_batch_size(3, "cuda", 1024, False, free_memory=lambda d: 0) == 3
    assert resolve_batch_size(None, "cpu", 1024, False) == CPU_BATCH_SIZE
    with pytest.raises(UserError, match="at least 1"):
        resolve_batch_size(0, "cpu", 1024, False)


def test_out_of_memory_is_recognised_without_torch():
    assert is_out_of_memory(OutOfMemoryError("boom"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_oom_mid_run_halves_the_batch_and_loses_nothing():
    # 8 items fit at first; each batch leaks 1 GiB, so batch 8 stops fitting part-way through.
    gpu = FakeAllocator(capacity=10 * GIB, per_item=GIB, leak=GIB)
    batches = AdaptiveBatches(gpu.run, batch_size=8, release=gpu.release)
    items = list(range(40))
    results = batches.run(items)
    assert results == [10 * i for i in items]  # every item once, in order
    assert batches.batch_size < 8
    assert gpu.released >= 1
    assert len(batches.warnings) == 1 and "continued with" in batches.warnings[0]
    assert "8 tiles per batch" in batches.warnings[0]
    done = [i for call in gpu.calls for i in call]
    assert sorted(set(done)) == items


def test_oom_on_the_first_batch_retries_from_the_same_item():
    gpu = FakeAllocator(capacity=3 * GIB, per_item=GIB)
    batches = AdaptiveBatches(gpu.run, batch_size=8, release=gpu.release)
    assert batches.run([1, 2, 3, 4, 5]) == [10, 20, 30, 40, 50]
    assert [len(c) for c in gpu.calls] == [5, 4, 2, 2, 1]  # 5 and 4 fail: halved twice to 2
    assert batches.batch_size == 2


def test_the_older_runtime_error_message_is_handled_too():
    gpu = FakeAllocator(capacity=2 * GIB, per_item=GIB, error=RuntimeError)
    batches = AdaptiveBatches(gpu.run, batch_size=4, release=gpu.release)
    assert batches.run([1, 2, 3]) == [10, 20, 30]


def test_a_single_tile_that_does_not_fit_says_what_to_do():
    gpu = FakeAllocator(capacity=GIB // 2, per_item=GIB)
    batches = AdaptiveBatches(gpu.run, batch_size=4, release=gpu.release)
    with pytest.raises(UserError) as info:
        batches.run([1, 2])
    message = str(info.value)
    assert "single tile" in message and "--device cpu" in message and "tile size" in message


def test_other_errors_pass_through_untouched():
    def broken(items):
        raise ValueError("bad tile")

    with pytest.raises(ValueError, match="bad tile"):
        AdaptiveBatches(broken, batch_size=4, release=lambda: None).run([1])
