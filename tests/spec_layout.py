"""The released state-dict layout, written out from the spec's table (independent of lua_fast)."""


def released_layout(*, c_in=16, c_out=16, dim=360, heads=12, window=16, hidden=720, width=256,
                    depths=(6, 6, 6, 6, 6, 6), n_windows=4, head_scales=(("x2", 2), ("x4", 4))):
    out = {
        "conv_first.weight": (dim, c_in, 3, 3), "conv_first.bias": (dim,),
        "patch_embed.norm.weight": (dim,), "patch_embed.norm.bias": (dim,),
    }
    n = window * window
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}."
            out.update({
                p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                p + "attn.relative_position_index": (n, n),
                p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
                p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
                p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,),
            })
            if j % 2 == 1:
                out[p + "attn_mask"] = (n_windows, n, n)
        out[f"layers.{i}.conv.weight"] = (dim, dim, 3, 3)
        out[f"layers.{i}.conv.bias"] = (dim,)
    out.update({
        "norm.weight": (dim,), "norm.bias": (dim,),
        "conv_after_body.weight": (dim, dim, 3, 3), "conv_after_body.bias": (dim,),
    })
    for name, scale in head_scales:
        out[f"heads.{name}.conv_before.0.weight"] = (width, dim, 3, 3)
        out[f"heads.{name}.conv_before.0.bias"] = (width,)
        stage = 0
        while 2 ** (stage + 1) <= scale:
            out[f"heads.{name}.upsample.{2 * stage}.weight"] = (4 * width, width, 3, 3)
            out[f"heads.{name}.upsample.{2 * stage}.bias"] = (4 * width,)
            stage += 1
        out[f"heads.{name}.conv_last.weight"] = (c_out, width, 3, 3)
        out[f"heads.{name}.conv_last.bias"] = (c_out,)
    return out
