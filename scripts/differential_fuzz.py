"""Differential fuzzing of the backends on the CPU: random tiny configs, odd latent sizes, batches,
layouts and scales, each backend against the reference (fp32 <= 1e-5, low precision <= 3e-2: a
gross indexing error, not the bound the tests hold), and the torch backend's float64 input gradient
against the reference's (<= 1e-10). The torch backend runs fp32; the triton
backend fp32 and one low-precision mode a case (bf16, fp16 or mixed), the low one with the fused
block switches (LUA_FAST_FUSED_MLP, LUA_FAST_FUSED_ATTN_PROJ) drawn at random. Triton runs through
its interpreter (~25-40 s a case). Not part of the test suite; for a session with CPU time to spare.

    python scripts/differential_fuzz.py SEED CASES
"""

import os
import random
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before lua_fast's kernels are imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

import lua_fast  # noqa: E402
from conftest import random_state_dict, rel_err, tiny_config  # noqa: E402


def main(seed: int, cases: int) -> int:
    rng = random.Random(seed)
    worst, bad = {}, 0
    for i in range(cases):
        window = rng.choice([4, 8])
        sd = random_state_dict(tiny_config(4, window_size=window, img_size=2 * window), seed=rng.randrange(1000))
        h, w, b = rng.randint(1, 3 * window + 3), rng.randint(1, 3 * window + 3), rng.randint(1, 2)
        scales = rng.choice([(2,), (4,), (2, 4)])
        x = torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(i))
        if rng.random() < 0.3:
            x = x.contiguous(memory_format=torch.channels_last)
        ref = lua_fast.load(sd, backend="reference").upscale(x, scale=scales)
        ref = ref if isinstance(ref, dict) else {scales[0]: ref}
        low = rng.choice(["bf16", "fp16", "mixed"])
        switches = {"LUA_FAST_FUSED_MLP": rng.choice("01"), "LUA_FAST_FUSED_ATTN_PROJ": rng.choice("01")}
        for backend, precision in (("torch", "fp32"), ("triton", "fp32"), ("triton", low)):
            env = switches if precision == low else {k: "0" for k in switches}
            os.environ.update(env)  # (read per forward)
            out = lua_fast.load(sd, backend=backend, precision=precision).upscale(x, scale=scales)
            out = out if isinstance(out, dict) else {scales[0]: out}
            for s in scales:
                err = rel_err(out[s].float(), ref[s])
                name = f"{backend}-{precision}" + ("".join(f"+{k[9:].lower()}" for k, v in env.items() if v == "1"))
                worst[name] = max(worst.get(name, 0.0), err)
                if not err <= (1e-5 if precision == "fp32" else 3e-2):
                    bad += 1
                    print(f"BAD case {i}: window {window}, {b}x{h}x{w}, scales {scales}, {name}, "
                          f"x{s}: error {err:.2e}", flush=True)
        gradient = gradient_error(sd, x, scales)  # the torch backend's registered gathers
        worst["torch-fp64-grad"] = max(worst.get("torch-fp64-grad", 0.0), gradient)
        if not gradient <= 1e-10:
            bad += 1
            print(f"BAD case {i}: window {window}, {b}x{h}x{w}, scales {scales}, torch fp64 input gradient: "
                  f"error {gradient:.2e}", flush=True)
    print(f"seed {seed}: {cases} cases, worst " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()), flush=True)
    return 1 if bad else 0


def gradient_error(sd, x, scales) -> float:
    """The torch backend's input gradient against the reference's, float64, random output weights."""
    grads = []
    for backend in ("reference", "torch"):
        up = lua_fast.load(sd, backend=backend, dtype=torch.float64)
        leaf = x.double().requires_grad_()
        out = up.model(leaf, scales)
        sum(((y * torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(s))).sum()
             for s, y in out.items())).backward()
        grads.append(leaf.grad)
    return rel_err(grads[1], grads[0])


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]), int(sys.argv[2])))
