"""Ray batch upscaling (issue 15) on a local 2-CPU Ray instance: order, equality with direct
upscale calls, and a bad file reported without losing the others."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lua_fast
from conftest import random_state_dict, rel_err, tiny_config

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_upscale_folder_on_a_local_ray_cluster(tmp_path, local_ray, monkeypatch):
    from lua_fast.files import read_latents
    from lua_fast.integrations.ray import upscale_folder

    asked = {}
    map_batches = ray.data.Dataset.map_batches

    def recorded(self, fn, **kwargs):
        asked.update(kwargs)
        return map_batches(self, fn, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "map_batches", recorded)

    sd = random_state_dict(tiny_config(4), seed=41)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    src = tmp_path / "in"
    src.mkdir()
    gen = torch.Generator().manual_seed(0)
    latents = {}
    for name, shape in [("a", (1, 4, 8, 8)), ("b", (2, 4, 6, 10)), ("c", (1, 4, 8, 8)), ("e", (1, 4, 6, 10))]:
        latents[name] = torch.randn(shape, generator=gen)
        save_file({"latents": latents[name]}, str(src / f"{name}.safetensors"))
    (src / "d.safetensors").write_bytes(b"not a safetensors file")  # one bad file among good ones
    rows = upscale_folder(src, tmp_path / "out", tmp_path / "w.pth", scale=2, batch_size=8)
    # No GPU: one actor with the node's 2 CPUs, so Ray runs its PyTorch on 2 threads (before
    # 2026-11-29: Ray's default of 1 CPU, OMP_NUM_THREADS=1, on any cluster)
    assert asked["num_cpus"] == 2 and asked["num_gpus"] == 0 and asked["compute"].min_size == asked["compute"].max_size == 1

    assert [r["path"].rsplit("/", 1)[1] for r in rows] == [f"{n}.safetensors" for n in "abcde"]  # order kept
    by_name = {r["path"].rsplit("/", 1)[1][0]: r for r in rows}
    assert by_name["d"]["output"] == "" and "could not be read" in by_name["d"]["error"]
    up = lua_fast.load(sd)
    for name, z in latents.items():
        row = by_name[name]
        assert row["error"] == "", row
        out = read_latents(row["output"])
        assert out.shape == (z.shape[0], 4, 2 * z.shape[2], 2 * z.shape[3])
        assert rel_err(out, up.upscale(z, scale=2)) <= 1e-5  # same-size files share a batch (CPU GEMM blocking)


def test_skip_existing_resumes_an_interrupted_job(tmp_path, local_ray, monkeypatch):
    """A job over many files that stops part way (a preempted node, a killed driver) ran every file
    again before 2026-11-29. With skip_existing, outputs already written (whole: writes are atomic)
    are kept and their inputs not run; an output that does not read is run again."""
    from lua_fast.files import read_latents, write_latents
    from lua_fast.integrations.ray import upscale_folder

    sd = random_state_dict(tiny_config(4), seed=41)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    gen = torch.Generator().manual_seed(2)
    for name in "abcd":
        save_file({"latents": torch.randn(1, 4, 6, 6, generator=gen)}, str(src / f"{name}.safetensors"))
    torch.save({"latents": torch.randn(4, 5, 7, generator=gen)}, src / "e.pt")  # (C, H, W)
    marker = torch.full((1, 4, 12, 12), 7.0)  # "a" and "c" were done before the interruption
    write_latents(out / "a.x2.safetensors", marker)
    write_latents(out / "c.x2.safetensors", marker)
    (out / "d.x2.safetensors").write_bytes(b"")  # not a readable output: run again
    rows = upscale_folder(src, out, tmp_path / "w.pth", scale=2, skip_existing=True)
    assert [(r["path"].rsplit("/", 1)[1], r["skipped"], r["error"]) for r in rows] == [
        ("a.safetensors", "existing", ""), ("b.safetensors", "", ""), ("c.safetensors", "existing", ""),
        ("d.safetensors", "", ""), ("e.pt", "", "")]
    assert rows[0]["shape"] == "1x4x12x12" and rows[4]["shape"] == "4x10x14"
    assert torch.equal(read_latents(out / "a.x2.safetensors"), marker)  # kept, not run again
    up = lua_fast.load(sd)
    assert rel_err(read_latents(out / "d.x2.safetensors"), up.upscale(read_latents(src / "d.safetensors"))) <= 1e-5
    # Everything done: no Ray work at all, the same rows
    monkeypatch.setattr(ray.data, "from_items", lambda *a, **k: pytest.fail("a job with nothing to do ran"))
    again = upscale_folder(src, out, tmp_path / "w.pth", scale=2, skip_existing=True)
    assert [r["skipped"] for r in again] == ["existing"] * 5 and again[0] == rows[0]


def test_the_folder_listing_takes_sft_files(tmp_path):
    """ComfyUI names safetensors ".sft"; the listing skipped them before 2026-11-28."""
    from lua_fast.integrations.ray import latent_files

    for name in ("a.sft", "b.safetensors", "c.pt", "d.pth", "E.SafeTensors", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.rsplit("/", 1)[-1] for p in latent_files(tmp_path)] == ["E.SafeTensors", "a.sft", "b.safetensors",
                                                                       "c.pt", "d.pth"]
    # The weights beside the latents (upscale_folder's skip) are no input, under any name of theirs;
    # a Hub path is no local file. (Before 2026-11-29 they were read as latents: an error row.)
    (tmp_path / "link.pt").symlink_to(tmp_path / "c.pt")
    names = [p.rsplit("/", 1)[-1] for p in latent_files(tmp_path, skip=[tmp_path / "c.pt", "hf://o/r/w.pth"])]
    assert names == ["E.SafeTensors", "a.sft", "b.safetensors", "d.pth"]



def test_a_folder_job_that_would_lose_outputs_is_refused(tmp_path):
    """Two files with one stem wrote one output, the last writer winning, and outputs written into
    the input folder became inputs of the next run; both ran silently before 2026-11-28."""
    from lua_fast import InputError
    from lua_fast.integrations.ray import upscale_folder

    for name in ("a.pt", "a.safetensors", "b.pt"):
        (tmp_path / name).write_bytes(b"")
    torch.save(random_state_dict(tiny_config(4), seed=1), tmp_path / "w.weights")
    with pytest.raises(InputError, match="same output .*a.pt, a.safetensors"):
        upscale_folder(tmp_path, tmp_path / "out", tmp_path / "w.weights")
    (tmp_path / "a.pt").unlink()
    with pytest.raises(InputError, match="output_dir is the input folder"):
        upscale_folder(tmp_path, tmp_path / "." , tmp_path / "w.weights")


@pytest.fixture
def ray_must_not_start(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the cluster was started for a job that cannot run")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def test_a_job_that_cannot_run_is_refused_before_the_cluster_starts(tmp_path, ray_must_not_start):
    """Before 2026-11-29 a missing or unreadable checkpoint, an unknown precision or backend and
    batch_size=0 started the cluster and ended in Ray's ActorDiedError tracebacks, and a scale the
    model lacks gave every file the same error row."""
    from lua_fast import CheckpointError, HubError, InputError
    from lua_fast.integrations.ray import upscale_folder

    src = tmp_path / "in"
    src.mkdir()
    torch.save(torch.randn(1, 4, 8, 8), src / "a.pt")
    weights = tmp_path / "w.pth"
    torch.save({"params_ema": random_state_dict(tiny_config(4), seed=2)}, weights)
    (tmp_path / "bad.pth").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    out = tmp_path / "out"
    cases = [
        (dict(weights=tmp_path / "missing.pth"), FileNotFoundError, "checkpoint not found"),
        (dict(weights=""), InputError, "no checkpoint given: the path is empty"),
        (dict(weights=tmp_path / "bad.pth"), CheckpointError, "LFS"),
        (dict(weights="https://example.com/lua.pth"), HubError, "is a URL"),
        (dict(weights={"a": torch.zeros(1)}), InputError, "checkpoint's path"),
        (dict(precision="bf17"), InputError, "unknown precision"),
        (dict(backend="cuda"), InputError, "unknown backend 'cuda'"),
        (dict(batch_size=0), InputError, "batch_size must be an int >= 1"),
        (dict(scale=3), InputError, "unsupported scale 3: .* has heads"),
        (dict(scale="x2"), InputError, "scale must be an int"),
        (dict(tile=3), InputError, "tile must be an int >= the window size 4"),
        (dict(tile="big"), InputError, "tile must be None, 'auto' or an int"),
        (dict(input_dir=tmp_path / "nowhere"), InputError, "input_dir .*nowhere is not found"),
        (dict(input_dir=src / "a.pt"), InputError, "input_dir .*a.pt is a file"),
        (dict(output_dir=weights), InputError, "output_dir .*w.pth is a file"),
    ]
    for change, error, message in cases:
        job = {"input_dir": src, "output_dir": out, "weights": weights, **change}
        with pytest.raises(error, match=message):
            upscale_folder(**job)
    assert not out.exists() and weights.is_file()
    # NumPy integers (read from a config array) are ints here, as Upscaler.upscale takes them
    import numpy as np
    from lua_fast.integrations.ray import check_job

    check_job(src, weights, scale=np.int64(2), precision="BF16", backend="Torch", batch_size=np.int32(4),
              tile=np.int64(4))
    check_job(src, weights, scale=2, precision=None, backend="auto", batch_size=1, tile="Auto")  # (any case)

    # An exported package is the actors' to load (it fixes precision and backend): its metadata is
    # checked without loading the model. Before 2026-11-29 it was read as a checkpoint and refused.
    import json
    import zipfile

    from lua_fast.export import ExportError

    package = tmp_path / "lua_x2.PT2"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("lua_x2/extra/lua_fast.json", json.dumps({"scales": [2], "precision": "bf16", "backend": "torch"}))
    check_job(src, package, scale=2, precision=None, backend="auto", batch_size=2, tile=None)
    for change, error, message in ((dict(scale=4), InputError, r"unsupported scale 4: .* exported with scales \[2\]"),
                                   (dict(precision="bf16"), InputError, r"fixes its precision \(bf16\) and backend"),
                                   (dict(backend="torch"), InputError, "leave precision and backend at their defaults"),
                                   (dict(weights=tmp_path / "gone.pt2"), FileNotFoundError, "package not found"),
                                   (dict(weights=weights.rename(tmp_path / "w.pt2")), ExportError,
                                    "w.pt2 is not a lua_fast AOTInductor package")):
        job = {"input_dir": src, "output_dir": out, "weights": package, **change}
        with pytest.raises(error, match=message):
            upscale_folder(**job)


def test_the_script_prints_a_refused_job_in_one_line(tmp_path, ray_must_not_start, monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["ray_upscale_folder.py", str(tmp_path), str(tmp_path / "out"),
                                      "--weights", str(tmp_path / "missing.pth")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts" / "ray_upscale_folder.py"), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and "Traceback" not in err


def test_the_actor_writes_comfyui_files_and_keeps_the_rank(tmp_path):
    """Called as Ray calls it (no cluster needed): a ComfyUI ``.latent`` input gives a ``.latent``
    output in ComfyUI's layout, and a (C, H, W) input a (C, sH, sW) output. Before 2026-11-28
    ``.latent`` files were not listed and a (C, H, W) input came back as (1, C, sH, sW)."""
    import numpy as np
    from safetensors.torch import load_file

    from lua_fast.integrations.ray import LatentUpscaler, latent_files

    sd = random_state_dict(tiny_config(4), seed=41)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    src = tmp_path / "in"
    src.mkdir()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(4, 8, 8, generator=gen)
    save_file({"latent_tensor": a, "latent_format_version_0": torch.tensor([])}, str(src / "a.latent"))
    save_file({"latents": b}, str(src / "b.safetensors"))
    files = latent_files(src)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.latent", "b.safetensors"]
    rows = LatentUpscaler(str(tmp_path / "w.pth"), str(tmp_path / "out"))({"path": np.array(files, dtype=object)})
    assert list(rows["error"]) == ["", ""]
    assert [o.rsplit("/", 1)[-1] for o in rows["output"]] == ["a.x2.latent", "b.x2.safetensors"]
    up = lua_fast.load(sd)
    comfy = load_file(rows["output"][0])
    assert set(comfy) == {"latent_tensor", "latent_format_version_0"}
    assert rel_err(comfy["latent_tensor"], up.upscale(a)) <= 1e-5  # (stacked with b: CPU GEMM blocking)
    out_b = load_file(rows["output"][1])["latents"]
    assert out_b.shape == (4, 16, 16) and rows["shape"][1] == "4x16x16"
    assert rel_err(out_b, up.upscale(b[None])[0]) <= 1e-5


def _actor_on_files(tmp_path, count=3, side=12, **kwargs):
    import numpy as np
    from safetensors.torch import save_file

    from lua_fast.integrations.ray import LatentUpscaler, latent_files

    sd = random_state_dict(tiny_config(4), seed=43)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    src = tmp_path / "in"
    src.mkdir()
    gen = torch.Generator().manual_seed(2)
    for k in range(count):
        save_file({"latents": torch.randn(1, 4, side, side, generator=gen)}, str(src / f"{k}.safetensors"))
    actor = LatentUpscaler(str(tmp_path / "w.pth"), str(tmp_path / "out"), **kwargs)
    return actor, {"path": np.array(latent_files(src), dtype=object)}


def test_a_group_that_runs_out_of_memory_runs_file_by_file(tmp_path, monkeypatch):
    """Same-shape files are stacked into one forward. Before 2026-11-28 an out-of-memory error there
    (CUDA's, or the CPU allocator's refusal) failed the whole Ray task and each of its retries; now the
    group runs file by file, and a file that alone does not fit gets an error row saying so."""
    actor, batch = _actor_on_files(tmp_path)
    real, batches = actor.up.model.forward, []

    def holds_two(x, scales):  # a device with room for two latents at once
        batches.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(x, scales)

    monkeypatch.setattr(actor.up.model, "forward", holds_two)
    rows = actor(batch)
    assert batches == [3, 1, 1, 1] and list(rows["error"]) == ["", "", ""]

    def holds_none(x, scales):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(actor.up.model, "forward", holds_none)
    rows = actor(batch)
    assert all(e.startswith("OutOfMemoryError: [enforce fail") and "tile='auto'" in e for e in rows["error"])

    def broken(x, scales):  # not an allocation failure: still raised
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(actor.up.model, "forward", broken)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        actor(batch)


def test_a_file_with_nan_leaves_its_group_stacked_without_it(tmp_path, monkeypatch):
    """One file with NaN latents, or one whose output overflows, among same-shape files: the others
    still run as one stack (before 2026-11-29 the whole group ran file by file: 4 forwards here instead
    of 1), the bad file gets its own error row, and the outputs are each file's own."""
    from safetensors.torch import load_file, save_file

    actor, batch = _actor_on_files(tmp_path, count=4, side=12)
    real, batches = actor.up.model.forward, []

    def counted(x, scales):
        batches.append(x.shape[0])
        return real(x, scales)

    monkeypatch.setattr(actor.up.model, "forward", counted)
    paths = list(batch["path"])
    alone = {p: actor.up.upscale(load_file(p)["latents"]) for p in paths}
    bad = load_file(paths[2])["latents"]
    bad[0, 1, 3, 3] = float("nan")
    save_file({"latents": bad}, paths[2])
    batches.clear()
    rows = actor(batch)
    assert [bool(e) for e in rows["error"]] == [False, False, True, False] and "NonFiniteInputError" in rows["error"][2]
    assert batches == [3]  # the input check refuses the stack of 4 before any forward
    for p, out in zip(paths, rows["output"]):
        if out:  # (a stack is not bit-equal to one by one on the CPU: its GEMMs block by the batch)
            assert rel_err(load_file(out)["latents"], alone[p]) <= 1e-5

    huge = load_file(paths[1])["latents"] * 1e30  # finite, overflows inside the model
    save_file({"latents": huge}, paths[1])
    batches.clear()
    rows = actor(batch)
    assert [bool(e) for e in rows["error"]] == [False, True, True, False]
    assert "NonFiniteOutputError" in rows["error"][1] and batches == [3, 2, 1]  # stack of 3, then of 2, then 1 alone


def test_on_the_cpu_a_stack_over_the_ram_budget_is_not_run(tmp_path, monkeypatch):
    """On the CPU the failure of an over-large forward is the OOM killer ending the worker, not an
    exception: a stack whose estimate exceeds tile="auto"'s RAM budget runs file by file instead;
    with tile="auto" each file tiles within it."""
    from lua_fast import host_memory
    from lua_fast.tiling import CPU_BUDGET_FRACTION, estimate_peak_bytes

    actor, batch = _actor_on_files(tmp_path, side=24)
    real, batches = actor.up.model.forward, []

    def counted(x, scales):
        batches.append(tuple(x.shape))
        return real(x, scales)

    monkeypatch.setattr(actor.up.model, "forward", counted)
    one = estimate_peak_bytes(actor.up.config, 24, 24, (2,), batch=1)
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: int(2 * one / CPU_BUDGET_FRACTION))
    assert list(actor(batch)["error"]) == ["", "", ""] and batches == [(1, 4, 24, 24)] * 3
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: int(one / 2 / CPU_BUDGET_FRACTION))
    batches.clear()
    actor.tile = "auto"
    assert list(actor(batch)["error"]) == ["", "", ""] and len(batches) > 3 and max(b[-1] for b in batches) < 24


@pytest.mark.parametrize("nodes, actors, cpus, expected", [
    ([2.0], None, None, (1, 2)),  # one node: one actor with every core
    ([16.0, 16.0, 0.0], None, None, (2, 16)),  # a CPU-less head node holds no actor
    ([16.0, 8.0], None, None, (2, 8)),  # each actor fits on any node
    ([16.0], 4, None, (4, 4)),  # more actors share a node's cores
    ([16.0, 16.0], 3, None, (3, 8)),
    ([4.0], 8, None, (8, 1)),  # at least one CPU each
    ([16.0], 2, 3, (2, 3)),  # the caller's choice stands
    ([], None, None, (1, 1)),
])
def test_cpu_actors_get_the_cores_of_their_node(nodes, actors, cpus, expected):
    from lua_fast.integrations.ray import cpu_actor_plan

    assert cpu_actor_plan(nodes, actors, cpus) == expected
