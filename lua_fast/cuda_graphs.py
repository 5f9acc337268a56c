"""CUDA graph capture and replay per input shape (``upscale(..., cuda_graph=True)``).

The first call for a (shape, dtype, scales, switches) key warms the model up on a side stream
(autotuning, mask caches and lazy loads all happen outside the capture), captures one
graph with static input/output buffers, and every later call copies the input in,
replays, and returns clones of the outputs. Graphs are built under one lock and
replayed under a per-graph lock, so one upscaler is safe to share between threads. The lock
only orders the host's calls; threads often run on streams of their own, so each use of a graph's
static buffers also waits, on the device, for the previous use to finish (an event), or a second
thread's input copy could overwrite the buffer while the first thread's replay still reads it.

The switches are the environment variables read per forward or per launch (which kernels run,
how they launch), and the tuning mode (``triton_support.autotuning``: timed, or each kernel's first
config under ``torch.use_deterministic_algorithms(True)`` or ``LUA_FAST_AUTOTUNE=0``): a graph
replays what it captured, so flipping one captures a new graph instead of being ignored.

Two things a capture must not depend on, and how it does not:
- Work other threads do meanwhile (their own forwards, a data loader's copies): PyTorch captures
  in the "global" mode by default, where a synchronising or allocating CUDA call from any thread
  invalidates the capture (and fails in that thread). Captures here use "thread_local": only the
  capturing thread's own unsafe calls count. One capture at a time in the process (a module lock),
  as torch.cuda.graph's source says graphs require: its start synchronises the device and empties
  the allocator's cache, and its default capture stream is shared.
- Tensors it reads but does not own: the reference and torch backends read shift masks from LRU
  caches. A graph holds raw pointers, so each graph keeps the cached values its capture was
  handed (``lru.hold_values``); an eviction then frees nothing the graph still reads.

Each graph holds a private memory pool about the size of its forward's activations, so a service
meeting many latent sizes would otherwise keep one pool per size until ``clear()``. A runner keeps
at most ``max_graphs`` (default :data:`DEFAULT_MAX_GRAPHS`; None: no bound) and drops the least
recently used one before capturing another, once that graph's last replay has finished (as
``clear()`` does). ``stats()`` counts captures and evictions: a service whose evictions keep
growing is re-capturing (0.1-0.4 s each) and should raise the bound or leave graphs off.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from . import lru
from .errors import InputError

# Read per forward or per launch (tests/test_cuda_graph_keys.py checks these names against the modules).
SWITCHES = ("LUA_FAST_FUSED_MLP", "LUA_FAST_FUSED_ATTN_PROJ", "LUA_FAST_PDL", "LUA_FAST_FP32_DOTS")
CAPTURE_ERROR_MODE = "thread_local"  # other threads' CUDA work does not invalidate a capture
_capture_lock = threading.Lock()  # one capture at a time in the process, across upscalers
DEFAULT_MAX_GRAPHS = 8  # graphs (shapes) kept per upscaler: a few resolution buckets, not every size


def check_max_graphs(value) -> int | None:
    """``value`` if it is a valid bound on a runner's graphs (an int >= 1, or None: no bound)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise InputError(f"max_cuda_graphs must be an int >= 1 or None (no bound), got {value!r}")


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    static_in: torch.Tensor
    static_out: dict
    held: list  # cached tensors the capture read (masks): alive as long as the graph
    done: "torch.cuda.Event"  # recorded after each use of the static buffers (a wait before: none yet)
    lock: threading.Lock = field(default_factory=threading.Lock)


class GraphRunner:
    def __init__(self, model, device: torch.device, max_graphs: int | None = DEFAULT_MAX_GRAPHS) -> None:
        self.model = model
        self.device = device
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._max_graphs = check_max_graphs(max_graphs)
        self.captures = 0
        self.evictions = 0

    # A copy (copy.deepcopy, pickle: multiprocessing, torch.save) keeps the model, device and bound;
    # captured graphs belong to the original's memory and stream, so the copy captures its own.
    def __getstate__(self) -> dict:
        return {"model": self.model, "device": self.device, "max_graphs": self._max_graphs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model"], state["device"], state["max_graphs"])

    @property
    def max_graphs(self) -> int | None:
        return self._max_graphs

    @max_graphs.setter
    def max_graphs(self, value: int | None) -> None:
        value = check_max_graphs(value)
        with self._lock:
            self._max_graphs = value
            self._evict(keep=value)

    def stats(self) -> dict:
        """Graphs held now, the bound, and captures / evictions since this runner was made. (Read
        without the lock, which a capture holds for seconds while it autotunes: a monitor must not
        wait on it.)"""
        return {"graphs": len(self._graphs), "max_graphs": self._max_graphs,
                "captures": self.captures, "evictions": self.evictions}

    def key(self, x: torch.Tensor, scales: tuple[int, ...]) -> tuple:
        # The tuning mode too: under torch.use_deterministic_algorithms(True) (or LUA_FAST_AUTOTUNE=0)
        # the kernels run other configs than the timed ones a graph may have captured.
        from .kernels.triton_support import autotuning  # (here: importing Triton costs a CPU-only process 0.25 s)

        return (tuple(x.shape), x.dtype, scales, tuple(os.environ.get(name, "").strip() for name in SWITCHES),
                autotuning())

    def __call__(self, x: torch.Tensor, scales: tuple[int, ...]) -> dict[int, torch.Tensor]:
        # The upscaler's device made current (an upscaler on cuda:1 while cuda:0 is current): the
        # Triton kernels launch on the current device, and the events and streams below must
        # belong to this one. Captured elsewhere, the graph would hold none of this device's
        # kernels, and its replays would return the capture's outputs again.
        with torch.cuda.device(self.device):
            return self._run(x, scales)

    def _run(self, x: torch.Tensor, scales: tuple[int, ...]) -> dict[int, torch.Tensor]:
        key = self.key(x, scales)
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                if self._max_graphs is not None:
                    self._evict(keep=self._max_graphs - 1)  # before the capture: its pool may need the memory
                entry = self._graphs[key] = self._capture(x, scales)
                self.captures += 1
            else:
                self._graphs.move_to_end(key)
            entry.lock.acquire()  # before self._lock is let go: clear() cannot drop a graph about to replay
        try:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(entry.done)  # the last use may run on another stream (never recorded: no wait)
            entry.static_in.copy_(x)
            entry.graph.replay()
            outputs = {s: o.clone() for s, o in entry.static_out.items()}
            entry.done.record(stream)
            return outputs
        finally:
            entry.lock.release()

    def _capture(self, x: torch.Tensor, scales: tuple[int, ...]) -> _Graph:
        static_in = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.model(static_in, scales)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with _capture_lock, lru.hold_values() as held:
            # On this device's warm-up stream: torch.cuda.graph's default capture stream is one per
            # process, made on whichever device was current at the process's first capture.
            with torch.cuda.graph(graph, stream=side, capture_error_mode=CAPTURE_ERROR_MODE):
                static_out = self.model(static_in, scales)
        return _Graph(graph, static_in, static_out, held, torch.cuda.Event())

    def clear(self) -> None:
        """Drop captured graphs and their memory pools, once their last replays have finished."""
        with self._lock:
            self._evict(keep=0, count=False)

    def _evict(self, keep: int | None, count: bool = True) -> None:
        """Drop the least recently used graphs until ``keep`` remain (None: keep all); self._lock held.
        Each waits for its last replay, on the host (its lock: a thread may have looked it up and
        be replaying) and on the device (its event): a pool returned to the allocator while a
        replay still writes into it would corrupt whatever is allocated there next."""
        while keep is not None and len(self._graphs) > keep:
            key, entry = next(iter(self._graphs.items()))
            with entry.lock:
                entry.done.synchronize()
            del self._graphs[key]
            if count:
                self.evictions += 1

    def __len__(self) -> int:
        return len(self._graphs)
