"""The L2 traffic model of the kernels (``launch_l2_bytes``, used by the kernel
report and the GPU scripts) against the per-kernel times the H200 measured on 2026-11-26
(benchmarks/results/gpu_h200/kernel_times.json): the bytes each site's programs load under the
config the autotuner chose then, over its measured time, sit at 6.6-7.6 TB/s for the fc2 and the
four large convs. That rate is the model's (``L2_BYTES_PER_S`` in scripts/compile_kernels.py, 6.5
TB/s); the LayerNorm GEMMs (128 programs) and the proj of then ran slower: latency."""

import json
from pathlib import Path

import pytest
import torch

from lua_fast.kernels import attention_proj, conv3x3, fused_linear, fused_mlp, window_attention

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 128 * 128  # the x2 128x128 forward the H200 timed


def tensor(dtype=torch.bfloat16):
    return torch.empty(0, dtype=dtype, device="meta")  # (the model reads element sizes only)


def linear_site(k, n, residual, layer_norm=False):
    args = {"M": TOKENS, "a_ptr": tensor(), "w_ptr": tensor(), "out_ptr": tensor(), "r_ptr": tensor(),
            "low_ptr": tensor()}
    meta = {"K": k, "N": n, "LAYER_NORM": layer_norm, "HAS_RESIDUAL": residual, "HAS_LOW": False,
            "A_RESIDENT": 0, "N_GROUP": 0}
    return fused_linear.launch_l2_bytes, args, meta


def conv_site(pixels, c_in, c_out, residual=False, x_dtype=torch.bfloat16):
    args = {"pixels": pixels, "x_ptr": tensor(x_dtype), "w_ptr": tensor(), "out_ptr": tensor(), "r_ptr": tensor()}
    meta = {"C_IN": c_in, "C_OUT": c_out, "HAS_RESIDUAL": residual}
    return conv3x3.launch_l2_bytes, args, meta


SITES = {  # the sites of kernel_times.json the model is calibrated on: (model, args, meta)
    "linear 720->360+residual": linear_site(720, 360, True),
    "conv 360->360+residual": conv_site(TOKENS, 360, 360, residual=True),
    "conv 256->1024+shuffle": conv_site(TOKENS, 256, 1024),
    "conv 360->256+leaky": conv_site(TOKENS, 360, 256),
    "conv 256->16": conv_site(4 * TOKENS, 256, 16),
}


def measured_sites():
    run = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200" / "kernel_times.json").read_text())
    return {r["site"]: r for r in run["sites"]}


def l2_bytes(site: str, config: dict) -> int:
    count, args, meta = SITES[site]
    return count(args, {**meta, **config})


def test_the_model_counts_each_operand_reread():
    # fc2 at 128x64 tiles: A (16384 x 720) once per N tile (6), the (768 x 384) weight columns once per
    # row block (128), then the residual read and the output written
    fc2 = l2_bytes("linear 720->360+residual", {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64})
    assert fc2 == TOKENS * 720 * 2 * 6 + 128 * 768 * 384 * 2 + TOKENS * 360 * 2 * 2
    tall = l2_bytes("linear 720->360+residual", {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64})
    assert tall == TOKENS * 720 * 2 * 3 + 64 * 768 * 384 * 2 + TOKENS * 360 * 2 * 2  # half the weight re-reads
    # the trunk conv: the im2col operand (9 x 360 per pixel) per N tile, and 9 x 384 weight rows (the
    # last channel block of each tap reads 24 rows of the next: unmasked) per pixel block
    trunk = l2_bytes("conv 360->360+residual", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64})
    assert trunk == TOKENS * 9 * 360 * 2 * 3 + 128 * 9 * 384 * 384 * 2 + TOKENS * 360 * 2 * 2
    # LayerNorm GEMMs: the streamed path reads its rows once more for the statistics, the resident one once
    count, args, meta = linear_site(360, 1152, False, layer_norm=True)
    streamed = count(args, {**meta, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64})
    resident = count(args, {**meta, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "A_RESIDENT": 1,
                            "A_K0": 256, "A_K1": 128})
    assert streamed - resident == TOKENS * 360 * 2 * 9


def test_the_h200_sites_ran_at_the_models_rate():
    measured = measured_sites()
    rates = {}
    for site in SITES:
        row = measured[site]
        rates[site] = l2_bytes(site, row["config"]) / (row["measured_us"] * 1e-6) / 1e12
    assert all(6.4 <= rate <= 7.7 for rate in rates.values()), rates
    assert min(rates.values()) == pytest.approx(6.5, abs=0.1), rates  # L2_BYTES_PER_S: the slowest of them


def attention_args(windows_side=8):
    return {"qkv_ptr": tensor().view(1, 0), "bias_ptr": tensor(torch.float16), "table_ptr": tensor(torch.float16),
            "out_ptr": tensor(), "w_ptr": tensor(), "r_ptr": tensor(), "windows_x": windows_side,
            "windows_y": windows_side}


ATTENTION = {"WINDOW": 16, "HEADS": 12, "HEAD_PAD": 32}
PAIRS = 64 * 12  # (window, head) pairs of the x2 128x128 forward
QKV_HEAD = 256 * 32 * 2  # one head's q (or k, v, out) rows of one window, bf16


def test_attention_reads_k_and_v_once_per_query_block_and_the_bias_once():
    def count(**config):
        return window_attention.launch_l2_bytes(attention_args(), {**ATTENTION, "BLOCK_M": 64, **config})

    dense_bias = 256 * 256 * 2
    per_block = count(WHOLE=0, BIAS_TABLE=0)
    assert per_block == PAIRS * (QKV_HEAD * (1 + 2 * 4 + 1) + dense_bias)  # 4 query blocks of 64
    assert count(WHOLE=1, BIAS_TABLE=0) == PAIRS * (QKV_HEAD * 4 + dense_bias)
    assert count(WHOLE=1, BIAS_TABLE=1) == PAIRS * (QKV_HEAD * 4 + 31 * 31 * 2)
    assert count(WHOLE=0, BIAS_TABLE=1) == per_block  # the per-block programs always read the dense bias
    # On the H200 the per-block kernel moved these bytes well below the model's rate: not L2-bound.
    measured = measured_sites()
    for site in ("attention shift=0", "attention shift=8 (border windows masked)"):
        assert measured[site]["config"]["BLOCK_M"] == 64
        assert per_block / (measured[site]["measured_us"] * 1e-6) / 1e12 < 4.0


def test_the_fused_kernels_reread_their_weights_per_row_block():
    # the whole MLP: all of W1 (384 K rows x 768 hidden columns) and W2 (768 x 384) per 64 rows, the rows
    # for the statistics, each of the 6 hidden chunks and the residual, the output once
    args = {"M": TOKENS, "x_ptr": tensor(), "w1_ptr": tensor(), "out_ptr": tensor(), "low_ptr": tensor()}
    meta = {"D": 360, "HIDDEN": 720, "O0": 256, "O1": 128, "HAS_LOW": False, "BLOCK_M": 64, "BLOCK_H": 128,
            "BLOCK_K": 64}
    mlp = fused_mlp.launch_l2_bytes(args, meta)
    assert mlp == 256 * 768 * (384 + 384) * 2 + TOKENS * 360 * 2 * (6 + 2) + TOKENS * 360 * 2
    # the two launches it replaces read the weights per 128-row (fc1) and 256-row (fc2) blocks: fewer bytes
    fc1 = fused_linear.launch_l2_bytes(
        {"M": TOKENS, "a_ptr": tensor(), "w_ptr": tensor(), "out_ptr": tensor(), "r_ptr": tensor(), "low_ptr": tensor()},
        {"K": 360, "N": 720, "LAYER_NORM": True, "HAS_RESIDUAL": False, "HAS_LOW": False, "A_RESIDENT": 1,
         "A_K0": 256, "A_K1": 128, "N_GROUP": 0, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64})
    fc2 = l2_bytes("linear 720->360+residual", {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64})
    assert fc1 + fc2 < 0.8 * mlp
    # attention + proj: per (window, 32-query block) all heads' K and V, the queries' dense bias rows and
    # the whole (384 x 384) projection weight; the residual read and the output written once
    proj = attention_proj.launch_l2_bytes(attention_args(), {**ATTENTION, "BLOCK_M": 32, "O0": 256, "O1": 128,
                                                             "D": 360})
    blocks = 64 * 8
    assert proj == (64 * 12 * QKV_HEAD + blocks * 12 * 2 * QKV_HEAD + 64 * 12 * 256 * 256 * 2
                    + blocks * 384 * 384 * 2 + TOKENS * 360 * 2 * 2)
