"""A small thread-safe LRU cache for per-geometry tensors (masks, biases).

A CUDA graph keeps raw pointers to every tensor its capture read, so a cached tensor a graph
read must live as long as the graph, whatever the cache evicts meanwhile (its memory would
otherwise go back to the allocator and be reused under the graph: silent garbage at replay).
``hold_values()`` collects, for the calling thread, every value the caches hand out while it is
open; ``cuda_graphs`` keeps that list with the graph. A value built *during* a capture is only
computed when the graph replays, so it is handed to the capture but not published in the cache.
Eager readers on other streams (threads with streams of their own) are covered the allocator's
way: a cached CUDA tensor handed out is recorded on the caller's stream (``record_stream``).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable, Hashable, Iterator, TypeVar

import torch

V = TypeVar("V")
_holders = threading.local()  # .lists: the open hold_values() lists of this thread


@contextlib.contextmanager
def hold_values() -> Iterator[list]:
    """Within the block, every value any :class:`LRUCache` returns in this thread is appended to
    the yielded list (a reference that outlives eviction)."""
    held: list = []
    lists = _holders.__dict__.setdefault("lists", [])
    lists.append(held)
    try:
        yield held
    finally:
        lists.remove(held)


def _hand_out(value):
    for held in getattr(_holders, "lists", ()):
        held.append(value)
    return value


def _capturing() -> bool:
    """Whether this thread's current CUDA stream is capturing a graph."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _used_on_this_stream(value):
    """Tell PyTorch's allocator that a cached CUDA tensor is read on the caller's stream. A tensor's
    memory is only kept from reuse for the stream it was allocated on: evicted while another
    thread's stream still reads it, it could be handed to a new tensor on its first stream and
    overwritten under that read. (A no-op on the allocating stream; not needed in a capture, whose
    graph keeps what it reads.)"""
    if isinstance(value, torch.Tensor) and value.is_cuda and not _capturing():
        value.record_stream(torch.cuda.current_stream(value.device))
    return value


class LRUCache:
    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    # A copy (copy.deepcopy, pickle) starts empty: its values are derived, and rebuilt on demand.
    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])

    def get_or_create(self, key: Hashable, factory: Callable[[], V]) -> V:
        if torch.compiler.is_compiling():
            # Traced (torch.compile, export): the graph builds the value itself; Dynamo cannot enter
            # the lock (fullgraph fails, else a graph break per shifted block) and a cached tensor
            # would only become a constant of the graph.
            return factory()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return _hand_out(_used_on_this_stream(self._items[key]))
        value = factory()  # outside the lock: two racing threads may both build, one wins
        if _capturing():  # graph-private memory, filled in only by a replay: not for other callers
            return _hand_out(value)
        with self._lock:
            kept = self._items.setdefault(key, value)
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return _hand_out(kept if kept is value else _used_on_this_stream(kept))  # (another thread's build won)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
