"""An independent, deliberately slow LUA implementation used as the test oracle.

Written from LUA_SPEC.md only (it imports nothing from lua_fast): explicit loops
over windows and heads, torch.roll for the cyclic shift, python-level region
labelling of the rolled grid for the shift mask and python-level relative position indices. It
works on a released-format state dict and computes in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x, w, b):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _conv(x, sd, name):
    return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"], padding=1)


def _pixel_shuffle2(x):
    # out[b, c, 2h + i, 2w + j] = in[b, 4c + 2i + j, h, w]
    b, c4, h, w = x.shape
    out = torch.empty(b, c4 // 4, 2 * h, 2 * w, dtype=x.dtype)
    for i in range(2):
        for j in range(2):
            out[:, :, i::2, j::2] = x[:, 2 * i + j :: 4]
    return out


def _bias_matrix(table, ws, head):
    n = ws * ws
    out = torch.empty(n, n, dtype=table.dtype)
    for a in range(n):
        ya, xa = divmod(a, ws)
        for b in range(n):
            yb, xb = divmod(b, ws)
            out[a, b] = table[(ya - yb + ws - 1) * (2 * ws - 1) + (xa - xb + ws - 1), head]
    return out


def _labels(h, w, ws, shift):
    """Region label of every position (y, x) of the ROLLED grid, by python loops.

    Spec, "Shift mask": the labels live in the rolled frame, on the positions of the
    already-shifted feature map; the label grid is partitioned directly, with no roll.
    """
    lab = torch.zeros(h, w, dtype=torch.long)
    for y in range(h):
        ry = 0 if y < h - ws else (1 if y < h - shift else 2)
        for x in range(w):
            rx = 0 if x < w - ws else (1 if x < w - shift else 2)
            lab[y, x] = 3 * ry + rx
    return lab


def _swin_block(t, sd, p, h, w, ws, heads, shift):
    bsz, _, d = t.shape
    hd = d // heads
    y = _ln(t, sd[p + "norm1.weight"], sd[p + "norm1.bias"]).view(bsz, h, w, d)
    labels = None
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        labels = _labels(h, w, ws, shift)  # rolled frame already: the labels are not rolled
    out = torch.empty_like(y)
    wq, bq = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]
    table = sd[p + "attn.relative_position_bias_table"]
    biases = [_bias_matrix(table, ws, hh) for hh in range(heads)]
    n = ws * ws
    for wy in range(h // ws):
        for wx in range(w // ws):
            win = y[:, wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(bsz, n, d)
            qkv = win @ wq.T + bq
            mask = torch.zeros(n, n, dtype=t.dtype)
            if labels is not None:
                lab = labels[wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(-1).tolist()
                for a in range(n):
                    for b in range(n):
                        if lab[a] != lab[b]:
                            mask[a, b] = -100.0
            outs = []
            for hh in range(heads):
                q = qkv[..., hh * hd : (hh + 1) * hd]
                k = qkv[..., d + hh * hd : d + (hh + 1) * hd]
                v = qkv[..., 2 * d + hh * hd : 2 * d + (hh + 1) * hd]
                s = (q * hd**-0.5) @ k.transpose(-1, -2) + biases[hh] + mask
                outs.append(torch.softmax(s, dim=-1) @ v)
            o = torch.cat(outs, dim=-1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
            out[:, wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws] = o.view(bsz, ws, ws, d)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    t = t + out.reshape(bsz, h * w, d)
    z = _ln(t, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    z = _gelu(z @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
    return t + z @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]


def slow_lua(state_dict, x, scale, *, window, heads, depths):
    """Upscale x (B, C, H, W) by ``scale`` with the released-format ``state_dict``; float64."""
    sd = {k: v.double() if v.is_floating_point() else v for k, v in state_dict.items()}
    x = x.double()
    _, _, h0, w0 = x.shape
    ph, pw = (window - h0 % window) % window, (window - w0 % window) % window
    x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    bsz, _, h, w = x.shape
    f = _conv(x, sd, "conv_first")
    d = f.shape[1]
    t = f.flatten(2).transpose(1, 2)
    t = _ln(t, sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"])
    for i, depth in enumerate(depths):
        r = t
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}."
            r = _swin_block(r, sd, p, h, w, window, heads[i], 0 if j % 2 == 0 else window // 2)
        img = r.transpose(1, 2).reshape(bsz, d, h, w)
        t = t + _conv(img, sd, f"layers.{i}.conv").flatten(2).transpose(1, 2)
    t = _ln(t, sd["norm.weight"], sd["norm.bias"])
    g = _conv(t.transpose(1, 2).reshape(bsz, d, h, w), sd, "conv_after_body") + f
    hp = f"heads.x{scale}."
    z = _conv(g, sd, hp + "conv_before.0")
    z = torch.where(z > 0, z, 0.01 * z)
    for stage in range(int(math.log2(scale))):
        z = _pixel_shuffle2(_conv(z, sd, hp + f"upsample.{2 * stage}"))
    z = _conv(z, sd, hp + "conv_last")
    return z[..., : scale * h0, : scale * w0]
