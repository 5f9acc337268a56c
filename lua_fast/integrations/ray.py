"""Offline batch upscaling on a Ray cluster (``pip install "lua_fast[ray]"``).

``LatentUpscaler`` is a callable class for ``ray.data.Dataset.map_batches``: Ray builds one per
actor (one model per actor; give each actor a GPU with ``num_gpus=1``, or on CPUs its cores with
``num_cpus=N``: Ray runs an actor's PyTorch on as many threads as its CPUs, one by default), and each call receives a
batch of rows with a ``path`` column naming latent files (``.safetensors``, ``.sft``, ``.pt``,
``.pth`` or ComfyUI's ``.latent``, read by content like ``lua-fast upscale`` reads them), each
(B, C, H, W) or one (C, H, W) latent. Latents of the same shape are stacked into one forward pass; each
output is written to ``output_dir`` in its input's rank as ``<stem>.x<scale>.safetensors``, or
``<stem>.x<scale>.latent`` in ComfyUI's layout for a ``.latent`` input (atomically). Every row comes
back with its ``output`` path, or its ``error`` when that file could not be upscaled: one bad file
never loses the others. A stacked group that runs out of memory (or, on the CPU, whose estimate
exceeds ``tile="auto"``'s RAM budget: there the failure would be the OOM killer ending the worker)
is run file by file; a file that alone runs out of memory gets an error row saying so, and
``tile="auto"`` (or a tile size) upscales such files in tiles. ``upscale_folder`` refuses a folder where two files share a stem (``a.pt`` and
``a.safetensors`` would write one output) and an output folder that is the input folder (a later
run would take the outputs as inputs).

``upscale_folder(input_dir, output_dir, weights)`` runs the whole job over every latent file of a
folder, in file order, across every GPU of the cluster (or one CPU actor per node, with its cores), and returns
the rows. ``scripts/ray_upscale_folder.py`` is the command-line form.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, LuaFastError, NonFiniteInputError, NonFiniteOutputError, first_line
from ..checkpoint import is_package_path
from ..export import package_metadata
from ..files import latent_files  # (one folder listing for this job and lua-fast upscale --input <folder>)
from ..tiling import estimate_peak_bytes, is_auto, is_integer, is_out_of_memory, over_the_cpu_budget


class LatentUpscaler:
    """``map_batches`` callable: ``{"path": [...]} -> {"path", "output", "error", "shape"}``."""

    def __init__(self, weights: str, output_dir: str, *, scale: int = 2, device: str | None = None,
                 precision: str | None = None, backend: str = "auto", key: str = "latents",
                 tile: int | str | None = None) -> None:
        import lua_fast

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.up = lua_fast.load(weights, device=device, precision=precision, backend=backend)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.scale, self.key, self.tile = scale, key, tile

    def _upscale(self, z: torch.Tensor) -> torch.Tensor:
        return self.up.upscale(z, scale=self.scale, tile=self.tile)

    def _over_the_cpu_budget(self, stacked: torch.Tensor) -> bool:
        if self.up.device.type != "cpu" or self.tile is not None:  # (tiled runs plan their own memory)
            return False
        factor = dict(self.up.config.heads).get(self.scale, self.scale)
        need = estimate_peak_bytes(self.up.config, *stacked.shape[-2:], (factor,), batch=stacked.shape[0],
                                   element_size=self.up.precision.activation_itemsize,
                                   materialises_scores=self.up.backend != "triton")
        return over_the_cpu_budget(self.up.device, need)

    def _together(self, stacked: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
        """A group of same-shape files in one forward, or (None, rows) to run them otherwise: the
        batch rows holding NaN/Inf (those files' errors stay their own; the rest can run stacked
        again), or no rows after another error, an allocation failure (before 2026-11-28 a CUDA
        out-of-memory error failed the whole Ray task, and each retry of it) or, on the CPU, a stack
        over tile="auto"'s RAM budget: then one by one."""
        if self._over_the_cpu_budget(stacked):
            return None, []
        try:
            return self._upscale(stacked), []
        except (NonFiniteInputError, NonFiniteOutputError) as exc:
            return None, exc.batch_items
        except (LuaFastError, FloatingPointError):
            return None, []
        except RuntimeError as exc:  # torch.OutOfMemoryError included
            if not is_out_of_memory(exc):
                raise
        self._release()
        return None, []

    def _stacked(self, items: list) -> dict[int, torch.Tensor]:
        """The outputs of a group's files from one forward, by file index; files missing from it run
        alone. Files whose latents hold (or whose outputs overflow to) NaN/Inf are left out and the
        rest stacked again: before 2026-11-29 one such file sent its whole group file by file."""
        while len(items) > 1:
            out, bad_rows = self._together(torch.cat([z for _, z, _ in items]).to(self.up.device))
            starts = [0]
            for _, z, _ in items:
                starts.append(starts[-1] + z.shape[0])
            if out is not None:
                return {i: out[a:b] for (i, _, _), a, b in zip(items, starts, starts[1:])}
            bad = {i for (i, _, _), a, b in zip(items, starts, starts[1:]) if any(a <= r < b for r in bad_rows)}
            if not bad:
                break
            items = [item for item in items if item[0] not in bad]
        return {}

    def _release(self) -> None:
        if self.up.device.type == "cuda":
            torch.cuda.empty_cache()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..files import one_latent_as_batch, output_name, read_latents, write_latents

        paths = [str(p) for p in batch["path"]]
        outputs, errors, shapes = [""] * len(paths), [""] * len(paths), [""] * len(paths)
        groups: dict[tuple, list[tuple[int, torch.Tensor, bool]]] = {}
        for i, path in enumerate(paths):
            try:
                z, single = one_latent_as_batch(read_latents(path, self.key), self.up.config.in_channels)
                self.up.check_latents(z.to(self.up.device), check_finite=False)
                groups.setdefault((tuple(z.shape[1:]), z.dtype), []).append((i, z, single))
            except (LuaFastError, OSError, ValueError) as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
        for items in groups.values():
            # (a file alone is run once, below: a failure there is its own, with nothing to retry)
            stacked = self._stacked(items)
            for i, z, single in items:
                try:
                    result = stacked[i] if i in stacked else self._upscale(z.to(self.up.device))
                    result = result[0] if single else result  # the rank it read
                    target = self.output_dir / output_name(paths[i], self.scale)
                    write_latents(target, result, self.key)
                    outputs[i], shapes[i] = str(target), "x".join(map(str, result.shape))
                except (LuaFastError, FloatingPointError, OSError) as exc:
                    errors[i] = f"{type(exc).__name__}: {exc}"
                except RuntimeError as exc:
                    if not is_out_of_memory(exc):
                        raise
                    self._release()
                    errors[i] = (f"OutOfMemoryError: {first_line(exc)} (a {tuple(z.shape)} latent; tile='auto' or a "
                                 "tile size upscales it in tiles)")
        return {"path": np.array(paths, dtype=object), "output": np.array(outputs, dtype=object),
                "error": np.array(errors, dtype=object), "shape": np.array(shapes, dtype=object)}


def check_folder_job(files: list[str], input_dir, output_dir) -> None:
    """Refuse what would silently lose outputs: two inputs with one output name (their stem), or
    outputs written among the inputs. (Before 2026-11-28 both ran: the last writer won.)"""
    if Path(output_dir).resolve() == Path(input_dir).resolve():
        raise InputError(f"output_dir is the input folder {input_dir}: write the outputs elsewhere (a later run "
                         "would take them as inputs)")
    by_stem: dict[str, list[str]] = {}
    for f in files:
        by_stem.setdefault(Path(f).stem, []).append(Path(f).name)
    shared = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if shared:
        raise InputError("these files would write the same output (<stem>.x<scale>.safetensors or .latent): "
                         + "; ".join(", ".join(names) for names in shared.values())
                         + ": keep one file per stem")


def cpu_actor_plan(node_cpus: list[float], actors: int | None = None,
                   num_cpus_per_actor: float | None = None) -> tuple[int, float]:
    """(actors, CPUs per actor) for a cluster without GPUs, from its nodes' CPU counts.

    Ray runs an actor's PyTorch with ``OMP_NUM_THREADS`` = the actor's ``num_cpus``, which is 1
    unless given: before 2026-11-29 a CPU job ran one actor on one thread (measured on a local
    2-CPU cluster: ``torch.get_num_threads()`` 1 in the actor, 2 in the driver), whatever the
    cluster's size. By default one actor per node, each with the smallest node's CPUs (divided
    among the actors a node must hold when more actors are asked for), so every actor fits on any
    node and they do not oversubscribe its cores."""
    nodes = [c for c in node_cpus if c >= 1] or [1]
    actors = actors or len(nodes)
    if num_cpus_per_actor is None:
        per_node = -(-actors // len(nodes))  # actors a node must hold
        num_cpus_per_actor = max(1, int(min(nodes)) // per_node)
    return actors, num_cpus_per_actor


def upscale_folder(input_dir, output_dir, weights, *, scale: int = 2, precision: str | None = None,
                   backend: str = "auto", batch_size: int = 8, actors: int | None = None,
                   num_gpus_per_actor: float | None = None, num_cpus_per_actor: float | None = None,
                   tile: int | str | None = None, skip_existing: bool = False,
                   address: str | None = None) -> list[dict]:
    """Upscale every latent file of ``input_dir`` into ``output_dir`` with Ray Data; returns one row per
    file (``path``, ``output``, ``error``, ``shape``) in file order. Connects to the running Ray
    cluster (``ray.init()`` first to choose one, or pass its ``address``; a local one is started
    otherwise), after checking the job's arguments and reading the checkpoint here (``check_job``).
    With GPUs, ``actors`` defaults to the cluster's GPU count and each actor gets one GPU (and Ray's
    default CPU); without, to one actor per node with that node's cores (``cpu_actor_plan``: Ray gives an
    actor as many PyTorch threads as CPUs). ``tile`` is passed to ``Upscaler.upscale`` (None:
    untiled, the exact result).

    ``skip_existing=True`` resumes an interrupted job: a file whose output is already in
    ``output_dir`` and readable (outputs are written atomically, so one that exists is whole) is not
    upscaled again; its row has ``skipped`` "existing" and the output's shape. Every row has the
    ``skipped`` key ("" where the file ran)."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"upscale_folder needs ray ({exc}): pip install \"lua_fast[ray]\"") from None
    check_job(input_dir, weights, scale=scale, precision=precision, backend=backend, batch_size=batch_size,
              tile=tile, output_dir=output_dir)
    files = latent_files(input_dir, skip=[weights])  # (the weights may sit beside the latents)
    if not files:
        return []
    check_folder_job(files, input_dir, output_dir)
    done = {f: row for f in files if skip_existing and (row := existing_output(f, output_dir, scale)) is not None}
    todo = [f for f in files if f not in done]
    if not todo:
        return [done[f] for f in files]
    if not ray.is_initialized():
        ray.init(address=address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        actors = actors or gpus
    else:
        node_cpus = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        actors, num_cpus_per_actor = cpu_actor_plan(node_cpus, actors, num_cpus_per_actor)
    if num_gpus_per_actor is None:
        num_gpus_per_actor = 1 if gpus else 0
    resources = {} if num_cpus_per_actor is None else {"num_cpus": num_cpus_per_actor}
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in file order
    ds = ray.data.from_items([{"path": f} for f in todo])
    ds = ds.map_batches(
        LatentUpscaler, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=num_gpus_per_actor, **resources,
        fn_constructor_kwargs={"weights": str(weights), "output_dir": str(output_dir), "scale": scale,
                               "precision": precision, "backend": backend, "tile": tile},
    )
    ran = iter({**{k: str(v) for k, v in row.items()}, "skipped": ""} for row in ds.take_all())
    return [done[f] if f in done else next(ran) for f in files]  # (file order: ran rows keep todo's)


def check_job(input_dir, weights, *, scale, precision, backend, batch_size, tile, output_dir=None) -> None:
    """Refuse, before Ray starts, a job whose every actor or every file would fail: before 2026-11-29 a
    missing or unreadable checkpoint, an unknown precision or backend name, an ``output_dir`` that is a
    file, or ``batch_size=0`` started the cluster and ended in Ray's ``ActorDiedError`` tracebacks
    (8 s on a local instance), and a scale the model lacks gave every file the same error row. A
    local checkpoint is read and validated here, as each actor will (0.2 s for the released model's
    safetensors file on the development CPU); a hub file is left to the actors."""
    from .. import dispatch, hub
    from ..checkpoint import validate_state_dict
    from ..precision import resolve
    from ..upscaler import read_weights

    if not Path(input_dir).is_dir():
        raise InputError(f"input_dir {input_dir} is {'a file' if Path(input_dir).exists() else 'not found'}: "
                         "pass the folder that holds the latents files")
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise InputError(f"output_dir {output_dir} is a file: pass a folder for the outputs (created if missing)")
    resolve(precision, None)  # (InputError naming the precisions)
    if not isinstance(backend, str) or (backend.strip().lower() not in dispatch.BACKENDS and
                                        backend.strip().lower() != "auto"):
        raise InputError(f"unknown backend {backend!r}; choose 'auto' or one of {list(dispatch.BACKENDS)}")
    if not is_integer(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not is_integer(scale):
        raise InputError(f"scale must be an int (it names the outputs, <stem>.x<scale>), got {scale!r}")
    if tile is not None and not is_auto(tile) and (not is_integer(tile) or tile < 1):
        raise InputError(f"tile must be None, 'auto' or an int >= the window size, got {tile!r}")
    if hub.is_hub_path(weights) or hub.from_url(weights):
        return
    hub.refuse_url(weights)  # (another URL: HubError saying to download it)
    if not isinstance(weights, (str, PathLike)):
        raise InputError(f"weights must be a checkpoint's path (each actor loads it), got {type(weights).__name__}")
    if is_package_path(weights):  # an exported package: its metadata, read without loading the model
        _check_package_job(weights, scale=scale, precision=precision, backend=backend)
        return
    config, _ = validate_state_dict(read_weights(weights))
    if scale not in config.scales:
        raise InputError(f"unsupported scale {scale!r}: {weights} has heads {config.heads}")
    if is_integer(tile) and tile < config.window_size:
        raise InputError(f"tile must be an int >= the window size {config.window_size}, or 'auto'; got {tile!r}")


def _check_package_job(weights, *, scale, precision, backend) -> None:
    """An exported ``.pt2`` as the job's weights: the actors load it as ``lua_fast.load`` does (it
    fixes its precision and backend). Before 2026-11-29 check_job read it as a checkpoint and
    refused it ("not a LUA checkpoint")."""
    if not Path(weights).is_file():
        raise FileNotFoundError(f"package not found: {weights}")
    info = package_metadata(weights)
    if precision is not None or backend.strip().lower() != "auto":
        raise InputError(f"{weights} is an exported package, which fixes its precision ({info.get('precision')}) "
                         f"and backend ({info.get('backend')}): leave precision and backend at their defaults")
    if scale not in info.get("scales", ()):
        raise InputError(f"unsupported scale {scale!r}: {weights} was exported with scales {info.get('scales')}")


def existing_output(path: str, output_dir, scale: int) -> dict | None:
    """The row of ``path`` if its output is already in ``output_dir`` and reads, else None."""
    from ..files import output_name, written_shape

    target = Path(output_dir) / output_name(path, scale)
    shape = written_shape(target)
    if shape is None:
        return None
    return {"path": path, "output": str(target), "error": "", "shape": "x".join(map(str, shape)),
            "skipped": "existing"}
