"""Seeded mutation fuzzing of checkpoints and latent files (run by tests/test_fuzz.py).

Run as a script it prints one JSON line: how many cases ran, which outcomes each produced, every
case whose outcome broke the contract, and the process's peak RSS. The contract: loading a
mutated checkpoint and upscaling a small latent with it, or reading a mutated latent file and
upscaling it, either succeeds with a finite output or raises a ``LuaFastError`` subclass; never
another exception type, never a crash. It runs in its own process so a crash or the memory peak
is seen by the caller.

    python tests/fuzz_inputs.py --seed 0 --checkpoints 120 --latents 120
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))

import lua_fast  # noqa: E402
from lua_fast import LuaFastError  # noqa: E402
from lua_fast.files import read_latents  # noqa: E402
from conftest import random_state_dict, tiny_config  # noqa: E402

DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2, torch.int32, torch.int64, torch.bool, torch.complex64,
          torch.float16, torch.bfloat16, torch.float64, torch.uint8]
ST_DTYPES = ["F8_E4M3", "F8_E5M2", "I64", "I32", "BOOL", "F16", "BF16", "F64", "U8", "XX"]


# ------------------------------------------------------------------ byte-level
def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def edit_safetensors_header(data: bytes, rng: random.Random) -> bytes:
    """Change one tensor's dtype, shape or offsets, or the header length itself."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    name = rng.choice([k for k in header if k != "__metadata__"])
    entry = header[name]
    kind = rng.randrange(5)
    if kind == 0:
        entry["dtype"] = rng.choice(ST_DTYPES)
    elif kind == 1:
        entry["shape"] = [d * rng.choice([0, 2, 1000, 2**31]) for d in entry["shape"]] or [2**40]
    elif kind == 2:
        entry["shape"] = entry["shape"][: rng.randrange(len(entry["shape"]) + 1)] + [rng.randint(0, 3)]
    elif kind == 3:
        lo, hi = entry["data_offsets"]
        entry["data_offsets"] = [lo + rng.randint(-64, 64), hi * rng.choice([1, 2, 1000])]
    else:
        return struct.pack("<Q", rng.choice([0, n - 1, n + 1, 2**40])) + data[8:]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


# ------------------------------------------------------------ tensor-level
def mutate_tensor(t: torch.Tensor, rng: random.Random) -> object:
    kind = rng.randrange(11)
    if kind == 0:
        return t.to(rng.choice(DTYPES))
    if kind == 1:
        return t.reshape(-1)
    if kind == 2:
        return t.unsqueeze(rng.randrange(t.dim() + 1))
    if kind == 3:
        return t.narrow(0, 0, max(0, t.shape[0] - 1)) if t.dim() else t
    if kind == 4:  # stride 0: one element claiming the whole shape (maybe of a bigger one)
        shape = tuple(d * rng.choice([1, 1, 1000]) for d in t.shape)
        return t.reshape(-1)[:1].clone().reshape([1] * t.dim()).expand(shape) if t.dim() else t
    if kind == 5:  # overlapping view
        return t.reshape(-1).clone().as_strided(t.shape, [1] * t.dim()) if t.dim() else t
    if kind == 6:  # dense, permuted strides: valid data, must load
        return t.t().contiguous().t() if t.dim() == 2 else t.contiguous(memory_format=torch.channels_last) \
            if t.dim() == 4 else t
    if kind == 7:
        return t.to_sparse() if t.dim() else t
    if kind == 8:
        u = t.clone()
        if u.numel() and u.is_floating_point():
            u.view(-1)[rng.randrange(u.numel())] = rng.choice([float("nan"), float("inf"), 1e38, -1e30])
        return u
    if kind == 9:
        return rng.choice([[1.0, 2.0], "text", 3, {"nested": t}, None])
    return t * rng.choice([1e10, 1e20, 1e30])


def mutate_state_dict(sd: dict, rng: random.Random) -> dict:
    sd = dict(sd)
    key = rng.choice(sorted(sd))
    kind = rng.randrange(8)
    if kind == 0:
        del sd[key]
    elif kind == 1:
        sd[key + ".extra"] = sd[key]
    elif kind == 2:
        sd["layers.0.residual_group.blocks.0.attn.relative_position_index"] = torch.arange(64**2).reshape(64, 64)
    else:
        sd[key] = mutate_tensor(sd[key], rng)
    return sd


# ------------------------------------------------------------------- cases
def checkpoint_cases(rng: random.Random, count: int, tmp: Path):
    sd = random_state_dict(tiny_config(4), seed=5)
    buf = io.BytesIO()
    torch.save({"params_ema": sd}, buf)
    pth = buf.getvalue()
    st_path = tmp / "base.safetensors"
    save_file(sd, str(st_path))
    st = st_path.read_bytes()
    for i in range(count):
        kind = rng.randrange(6)
        if kind < 2:
            path = tmp / f"c{i}.pth"
            path.write_bytes((truncate if kind == 0 else flip_bytes)(pth, rng))
        elif kind < 4:
            path = tmp / f"c{i}.safetensors"
            path.write_bytes({2: flip_bytes, 3: edit_safetensors_header}[kind](st, rng))
        else:
            path = tmp / f"c{i}.pth"
            bad = mutate_state_dict(sd, rng)
            try:
                torch.save({"params_ema": bad} if kind == 4 else bad, path)
            except Exception:  # torch cannot even save it: nothing to test
                continue
        yield f"checkpoint {i} kind {kind}", path


def latent_cases(rng: random.Random, count: int, tmp: Path):
    z = torch.randn(1, 4, 7, 9, generator=torch.Generator().manual_seed(1))
    buf = io.BytesIO()
    torch.save({"latents": z}, buf)
    pt = buf.getvalue()
    st_path = tmp / "z.safetensors"
    save_file({"latents": z}, str(st_path))
    st = st_path.read_bytes()
    for i in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            path = tmp / f"z{i}.pt"
            path.write_bytes(rng.choice([truncate, flip_bytes])(pt, rng))
        elif kind == 1:
            path = tmp / f"z{i}.safetensors"
            path.write_bytes(rng.choice([truncate, flip_bytes, edit_safetensors_header])(st, rng))
        else:
            path = tmp / f"z{i}.pt"
            bad = mutate_tensor(z, rng)
            if kind == 2 and isinstance(bad, torch.Tensor) and bad.is_floating_point() and bad.numel() < 10**4:
                bad = bad.double() * 1e300  # finite in float64, not in the model's dtype (small: no
                # real allocation by the fuzzer itself; expanded views stay views)
            try:
                torch.save(bad if kind % 2 else {"latents": bad}, path)
            except Exception:
                continue
        yield f"latents {i} kind {kind}", path


def run_case(fn):
    try:
        out = fn()
    except LuaFastError as exc:
        return type(exc).__name__, None
    except Exception as exc:  # the contract is broken
        return type(exc).__name__, "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
    outs = out.values() if isinstance(out, dict) else [out]
    if not all(bool(torch.isfinite(o).all()) for o in outs):
        return "non-finite output", "a success returned NaN/Inf"
    return "ok", None


def peak_rss_mib() -> float:
    """This process's own peak RSS. /proc's VmHWM belongs to the current address space; getrusage's
    ru_maxrss survives exec and so includes the parent's size at fork (pytest's, when it runs us)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", type=int, default=100)
    parser.add_argument("--latents", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    start = time.perf_counter()
    outcomes: dict[str, int] = {}
    broken = []
    z = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(2))
    up = lua_fast.load(random_state_dict(tiny_config(4), seed=5))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Every third checkpoint arrives as bytes (the format sniffed from content, no suffix to go by).
        cases = [(name, lambda p=path, b=(i % 3 == 0): lua_fast.load(p.read_bytes() if b else p).upscale(z, scale=(2, 4)))
                 for i, (name, path) in enumerate(checkpoint_cases(rng, args.checkpoints, tmp))]
        cases += [(name, lambda p=path: up.upscale(read_latents(p).to(up.device)))
                  for name, path in latent_cases(rng, args.latents, tmp)]
        for name, fn in cases:
            outcome, problem = run_case(fn)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if problem:
                broken.append(f"{name}: {problem}")
    print(json.dumps({
        "cases": sum(outcomes.values()), "outcomes": outcomes, "broken": broken,
        "peak_rss_mib": peak_rss_mib(),
        "seconds": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
