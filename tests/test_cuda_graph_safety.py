"""What ``cuda_graph=True`` promises beyond one thread and one shape, checked on the CPU with a
stand-in for torch.cuda's graph, stream and event API (the real capture and replay run in
tests/test_gpu_backends.py):

- a graph keeps alive the cached masks its capture read, whatever the cache evicts afterwards
  (a graph holds raw pointers: a freed mask would be reused memory at the next replay);
- a mask built during a capture is not published in the cache (its values only exist once the
  graph replays);
- captures run one at a time in the process, in the "thread_local" capture mode, so work on
  other threads does not invalidate them;
- each use of a graph's static buffers waits on the device for the previous use, which may have
  run on another thread's stream;
- an upscaler on a device that is not the current one captures and replays on its own device;
- outside captures, a cached CUDA tensor is recorded on each stream that reads it, so an eviction
  cannot hand its memory to a new tensor while another thread's stream still reads it;
- a runner keeps at most ``max_graphs`` graphs, dropping the least recently used one (after its
  last replay) before the next capture, so a service meeting many sizes does not keep a memory
  pool per size."""

import contextlib
import gc
import threading
import time
import weakref

import pytest
import torch

import lua_fast
from lua_fast import LUAConfig, cuda_graphs, lru
from lua_fast.reference import LUA
from conftest import run_in_threads


class FakeCuda:
    """torch.cuda's capture API as GraphRunner uses it. Streams are per thread; events remember
    the stream that last recorded them; ``log`` keeps (what, stream, other) in call order."""

    def __init__(self) -> None:
        self.log = []
        self.modes = []
        self.capture_streams = []
        self.devices = []
        self.capturing = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        fake = self

        class Stream:
            def __init__(self, device=None) -> None:
                self.device = device

            def wait_stream(self, other) -> None:
                pass

            def wait_event(self, event) -> None:
                fake.log.append(("wait", self, event.recorded_on))

        class Event:
            def __init__(self) -> None:
                self.recorded_on = None

            def record(self, stream=None) -> None:
                self.recorded_on = stream
                fake.log.append(("record", stream, None))

            def synchronize(self) -> None:
                fake.log.append(("synchronize", self.recorded_on, None))

        class Graph:
            def replay(self) -> None:
                fake.log.append(("replay", fake.current_stream(), None))

        @contextlib.contextmanager
        def graph(g, pool=None, stream=None, capture_error_mode="global"):
            with fake._lock:
                fake.capturing += 1
                fake.most_at_once = max(fake.most_at_once, fake.capturing)
            fake.modes.append(capture_error_mode)
            fake.capture_streams.append(stream)
            fake._local.capturing = True
            try:
                yield
            finally:
                fake._local.capturing = False
                with fake._lock:
                    fake.capturing -= 1

        @contextlib.contextmanager
        def device(d):
            fake.devices.append(torch.device(d))
            yield

        self.Stream, self.Event, self.CUDAGraph, self.graph, self.device = Stream, Event, Graph, graph, device

    def current_stream(self, device=None):
        if not hasattr(self._local, "stream"):
            self._local.stream = self.Stream()
        return self._local.stream

    def is_capturing(self) -> bool:
        return getattr(self._local, "capturing", False)

    def install(self, monkeypatch) -> "FakeCuda":
        for name in ("Stream", "Event", "CUDAGraph", "graph", "device"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, "current_stream", self.current_stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(lru, "_capturing", self.is_capturing)
        return self


@pytest.fixture
def fake_cuda(monkeypatch):
    return FakeCuda().install(monkeypatch)


@pytest.fixture(scope="module")
def small_weights():
    torch.manual_seed(0)
    return LUA(LUAConfig.small()).state_dict()


def mask_caches(up):
    """The backend's shift-mask cache (each model's own)."""
    return up.model.module._masks if up.backend == "torch" else up.model.module.masks


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_a_graph_keeps_the_masks_its_capture_read_after_they_are_evicted(fake_cuda, small_weights, backend):
    up = lua_fast.load(small_weights, backend=backend)
    cache = mask_caches(up)
    cache.clear()
    runner = cuda_graphs.GraphRunner(up.model, torch.device("cpu"))
    x = torch.randn(2, 16, 12, 20)  # not the training size: the shifted blocks' masks come from the cache
    runner(x, (2,))
    masks = [weakref.ref(v) for v in list(cache._items.values())]
    assert masks, "the shifted blocks read no cached mask"
    cache.clear()  # what an eviction does: the cache's reference is gone
    gc.collect()
    assert all(m() is not None for m in masks), "a mask the graph reads was freed with the cache entry"
    runner.clear()
    gc.collect()
    assert all(m() is None for m in masks), "the graph's masks outlived the graph"


def test_a_value_built_during_a_capture_is_handed_out_but_not_cached(monkeypatch):
    cache = lru.LRUCache()
    capturing = [True]
    monkeypatch.setattr(lru, "_capturing", lambda: capturing[0])
    with lru.hold_values() as held:
        built = cache.get_or_create("k", lambda: torch.ones(3))
    assert held == [built] and len(cache) == 0
    capturing[0] = False
    with lru.hold_values() as held:
        again = cache.get_or_create("k", lambda: torch.zeros(3))
        hit = cache.get_or_create("k", lambda: torch.full((3,), 7.0))
    assert again is hit and torch.equal(hit, torch.zeros(3)) and len(cache) == 1
    assert held == [again, hit]
    assert cache.get_or_create("k", lambda: None) is hit and held == [again, hit]  # the block has closed


def test_captures_are_thread_local_and_one_at_a_time(fake_cuda):
    def slow_model(x, scales):
        time.sleep(0.02)  # a capture long enough for the other threads to try theirs
        return {s: x * s for s in scales}

    runners = [cuda_graphs.GraphRunner(slow_model, torch.device("cpu")) for _ in range(4)]
    assert not run_in_threads(lambda i: runners[i](torch.ones(1, 2, 3, 3), (2,)), 4)
    assert fake_cuda.modes == ["thread_local"] * 4
    assert fake_cuda.most_at_once == 1


def test_each_use_of_a_graph_waits_for_the_last_on_the_device(fake_cuda):
    runner = cuda_graphs.GraphRunner(lambda x, scales: {s: x * s for s in scales}, torch.device("cpu"))
    x = torch.ones(1, 2, 3, 3)
    streams = []

    def call():
        streams.append(fake_cuda.current_stream())
        runner(x, (2,))

    for _ in range(2):  # two threads, two streams
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    first, second = streams
    uses = [entry for entry in fake_cuda.log if entry[0] != "synchronize"]
    assert uses == [("wait", first, None), ("replay", first, None), ("record", first, None),
                    ("wait", second, first), ("replay", second, None), ("record", second, None)]
    runner.clear()  # waits for the last use before the graph and its pool go
    assert fake_cuda.log[-1] == ("synchronize", second, None) and len(runner) == 0


def test_an_upscaler_on_another_device_captures_and_replays_there(fake_cuda):
    runner = cuda_graphs.GraphRunner(lambda x, scales: {s: x * s for s in scales}, torch.device("cuda:1"))
    runner(torch.ones(1, 2, 3, 3), (2,))
    runner(torch.ones(1, 2, 3, 3), (2,))
    assert fake_cuda.devices == [torch.device("cuda:1")] * 2  # made current for each call
    (stream,) = fake_cuda.capture_streams  # not torch.cuda.graph's one default stream per process
    assert stream is not None and stream.device == torch.device("cuda:1")


def doubling_runner(max_graphs):
    return cuda_graphs.GraphRunner(lambda x, scales: {s: x * s for s in scales}, torch.device("cpu"), max_graphs)


def shapes_held(runner):
    return [key[0][-1] for key in runner._graphs]  # the latents' widths, least recently used first


def replay_held_open(fake_cuda, monkeypatch, runner):
    """Capture a (1, 2, 3, 3) graph, then start a thread whose replay of it waits for ``release``
    (returned with the thread, once the replay has begun); later replays run at once."""
    runner(torch.ones(1, 2, 3, 3), (2,))  # captured
    replaying, release = threading.Event(), threading.Event()
    replay = fake_cuda.CUDAGraph.replay

    def slow_replay(graph):
        monkeypatch.setattr(fake_cuda.CUDAGraph, "replay", replay)
        replaying.set()
        release.wait(5)
        replay(graph)

    monkeypatch.setattr(fake_cuda.CUDAGraph, "replay", slow_replay)
    thread = threading.Thread(target=runner, args=(torch.ones(1, 2, 3, 3), (2,)))
    thread.start()
    assert replaying.wait(5)
    return thread, release


def test_clearing_waits_for_a_replay_in_progress(fake_cuda, monkeypatch):
    """A graph dropped while its replay still runs would return its pool to the allocator under
    that replay: clear() waits for the host side (the graph's lock) and the device side (its event)."""
    runner = doubling_runner(cuda_graphs.DEFAULT_MAX_GRAPHS)
    thread, release = replay_held_open(fake_cuda, monkeypatch, runner)
    clearer = threading.Thread(target=runner.clear)
    clearer.start()
    time.sleep(0.05)
    assert clearer.is_alive() and len(runner) == 1  # still waiting on the replaying thread
    release.set()
    thread.join(5)
    clearer.join(5)
    assert len(runner) == 0
    kinds = [entry[0] for entry in fake_cuda.log]
    assert kinds[-2:] == ["record", "synchronize"]  # the replay's event recorded, then waited on


def test_graphs_past_the_bound_go_least_recently_used_first(fake_cuda):
    runner = doubling_runner(2)
    for width in (3, 4, 3, 5):  # 3 is used again after 4: 4 is the one to go
        out = runner(torch.ones(1, 2, 3, width), (2,))
        assert torch.equal(out[2], torch.full((1, 2, 3, width), 2.0))
    assert shapes_held(runner) == [3, 5]
    assert runner.stats() == {"graphs": 2, "max_graphs": 2, "captures": 3, "evictions": 1}
    runner(torch.ones(1, 2, 3, 4), (2,))  # captured again; 3 is now the least recent
    assert shapes_held(runner) == [5, 4] and runner.stats()["captures"] == 4
    evicted = weakref.ref(next(entry for key, entry in runner._graphs.items() if key[0][-1] == 5))
    runner.max_graphs = 1  # lowering the bound drops graphs at once
    gc.collect()
    assert shapes_held(runner) == [4] and evicted() is None  # nothing keeps its graph (and pool) alive
    runner.max_graphs = None  # no bound
    for width in range(6, 16):
        runner(torch.ones(1, 2, 3, width), (2,))
    assert runner.stats() == {"graphs": 11, "max_graphs": None, "captures": 14, "evictions": 3}
    runner.clear()  # not an eviction
    assert runner.stats()["graphs"] == 0 and runner.stats()["evictions"] == 3


def test_an_eviction_waits_for_the_evicted_graphs_replay(fake_cuda, monkeypatch):
    runner = doubling_runner(1)
    thread, release = replay_held_open(fake_cuda, monkeypatch, runner)
    newcomer = threading.Thread(target=runner, args=(torch.ones(1, 2, 3, 4), (2,)))
    newcomer.start()
    time.sleep(0.05)
    assert newcomer.is_alive() and shapes_held(runner) == [3]  # waiting for the replay to end
    release.set()
    thread.join(5)
    newcomer.join(5)
    assert shapes_held(runner) == [4]
    kinds = [entry[0] for entry in fake_cuda.log]
    first_sync = kinds.index("synchronize")  # the evicted graph's event, waited on ...
    assert kinds[first_sync - 1] == "record" and kinds[first_sync - 2] == "replay"  # ... after its replay
    assert kinds[first_sync + 1:] == ["wait", "replay", "record"]  # then the newcomer's capture and use


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "3"])
def test_the_bound_on_graphs_is_an_int_or_none(small_weights, bad):
    up = lua_fast.load(small_weights, backend="torch")
    assert up.max_cuda_graphs == cuda_graphs.DEFAULT_MAX_GRAPHS
    with pytest.raises(lua_fast.InputError, match="max_cuda_graphs"):
        up.max_cuda_graphs = bad
    up.max_cuda_graphs = 3
    assert up.max_cuda_graphs == 3 and up.cuda_graph_stats() == {
        "graphs": 0, "max_graphs": 3, "captures": 0, "evictions": 0}
    up.max_cuda_graphs = None
    assert up.cuda_graph_stats()["max_graphs"] is None


def test_a_cached_cuda_tensor_is_recorded_on_the_stream_that_reads_it(monkeypatch):
    recorded = []

    class OnCuda(torch.Tensor):
        @property
        def is_cuda(self):
            return True

        def record_stream(self, stream):
            recorded.append(stream)

    capturing = [False]
    monkeypatch.setattr(lru, "_capturing", lambda: capturing[0])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {threading.get_ident()}")
    cache = lru.LRUCache()
    built = cache.get_or_create("k", lambda: torch.ones(2).as_subclass(OnCuda))
    assert recorded == []  # built on this stream: its own
    reader = threading.Thread(target=lambda: cache.get_or_create("k", lambda: None))
    reader.start()
    reader.join()
    assert recorded == [f"stream of {reader.ident}"]
    capturing[0] = True  # a capture's graph keeps the tensor itself
    assert cache.get_or_create("k", lambda: None) is built and len(recorded) == 1
    assert cache.get_or_create("cpu", lambda: torch.ones(2)) is not None and len(recorded) == 1
    capturing[0] = False
    winner = torch.zeros(2).as_subclass(OnCuda)

    def lose_the_race():  # another thread publishes its build while this one builds
        cache._items["raced"] = winner
        return torch.ones(2).as_subclass(OnCuda)

    assert cache.get_or_create("raced", lose_the_race) is winner and len(recorded) == 2
