"""Generation spread over the ranks of a process group: each rank generates its share of the batches,
and every rank ends with all completions, in prompt order.

The unit of sharing is the batch ``generate_completions`` would have made in one process, with its
global batch number: batch b holds the same prompts, is padded the same way and is seeded ``seed + b``
on whichever rank runs it. So a rank computes exactly what one process computes for that batch, and
the gathered completions (hence every file written from them) are those of one process — whatever the
number of ranks. Ranks take contiguous runs of batches (``distributed.shard``), so concatenating their
results in rank order is prompt order.

Off by default: only code inside ``sharded_generation(world)`` shares its batches (the entry point of a
launched sampling or evaluation stage, ``stages/sharded_entry.py``); elsewhere — a training rank, one
process — every call generates everything itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TypeVar

import torch

from alignflow.components.platform.distributed import World, shard

T = TypeVar("T")

_WORLD: ContextVar[World | None] = ContextVar("alignflow_generation_world", default=None)


@contextlib.contextmanager
def sharded_generation(world: World) -> Iterator[World]:
    """Inside the block, ``generate_completions`` shares its batches among ``world``'s ranks. Every rank
    must make the same calls, with the same prompts, in the same order (they meet in an all-gather)."""
    token = _WORLD.set(world if world.distributed else None)
    try:
        yield world
    finally:
        _WORLD.reset(token)


def generation_world() -> World | None:
    return _WORLD.get()


def local_batches(n_items: int, per_batch: int) -> list[tuple[int, int]]:
    """(global batch number, first item) of the batches this rank generates: all of them outside
    ``sharded_generation``."""
    batches = list(enumerate(range(0, n_items, per_batch)))
    world = _WORLD.get()
    if world is None:
        return batches
    return [batches[i] for i in shard(list(range(len(batches))), world)]


def gather_completions(local: list[T]) -> list[T]:
    """Every rank's results, concatenated in rank order (= prompt order); ``local`` itself outside
    ``sharded_generation``."""
    world = _WORLD.get()
    if world is None:
        return local
    parts: list[list[T] | None] = [None] * world.size
    torch.distributed.all_gather_object(parts, local)
    return [item for part in parts for item in (part or [])]
