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
import numbers
import threading
from collections import OrderedDict
from typing import Callable, Hashable, Iterator, TypeVar

import torch

from .errors import InputError

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


# Bytes a cache may hold. Shift masks grow with the latent (the released config's (nW, 256, 256)
# fp32 mask is 1 KiB per latent pixel: 16 MiB at 128x128, 64 MiB at 256x256); bounded by count
# alone, a service seeing many sizes kept GBs of them (64 sizes of 256x256: 4 GiB). A mask costs one
# launch (CUDA) or a few ms per MiB (CPU) to rebuild, so a budget of a few sizes loses little.
DEFAULT_MAX_BYTES = 256 << 20


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _bound(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        none = " or None (no bound)" if name == "max_bytes" else ""
        raise InputError(f"LRUCache.{name} must be an int >= {least}{none}, got {value!r}")
    return int(value)


class LRUCache:
    """At most ``capacity`` entries and ``max_bytes`` bytes of tensors (None: no byte bound), least
    recently used evicted first; the newest entry is always kept, whatever its size."""

    def __init__(self, capacity: int = 64, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self.nbytes = 0  # bytes of tensors held now
        self._lock = threading.Lock()
        self.capacity = capacity
        self.max_bytes = max_bytes

    # Checked when set (before 2026-11-29 a max_bytes of "10" or 1.5 was taken, and the first
    # eviction then failed inside a forward with a TypeError).
    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = _bound("capacity", value, least=1)

    @property
    def max_bytes(self) -> int | None:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int | None) -> None:
        self._max_bytes = None if value is None else _bound("max_bytes", value, least=0)

    # A copy (copy.deepcopy, pickle) starts empty: its values are derived, and rebuilt on demand.
    def __getstate__(self) -> dict:
        return {"capacity": self.capacity, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"], state.get("max_bytes", DEFAULT_MAX_BYTES))

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
            if kept is value:
                self._sizes[key] = _nbytes(value)
                self.nbytes += self._sizes[key]
            self._items.move_to_end(key)
            self._evict()
        return _hand_out(kept if kept is value else _used_on_this_stream(kept))  # (another thread's build won)

    def _evict(self) -> None:
        """Drop least recently used entries past the bounds (the lock held). A CUDA graph that read
        one keeps its own reference (``hold_values``), and eager readers on other streams are
        recorded on them, so an evicted tensor is never freed under a reader."""
        while len(self._items) > 1 and (len(self._items) > self.capacity
                                        or (self.max_bytes is not None and self.nbytes > self.max_bytes)):
            key, _ = self._items.popitem(last=False)
            self.nbytes -= self._sizes.pop(key)

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate`` (e.g. one device's: an offloaded model's
        masks); returns how many. Safe under readers for the reasons ``_evict`` is."""
        with self._lock:
            keys = [key for key in self._items if predicate(key)]
            for key in keys:
                del self._items[key]
                self.nbytes -= self._sizes.pop(key)
        return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)
