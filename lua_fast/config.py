"""LUA hyperparameters: the released presets and inference from a state dict."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, field
from typing import Mapping

from .errors import ConfigError

_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.")
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.")
_HEAD_KEY = re.compile(r"^heads\.([^.]+)\.")
_UPSAMPLE_KEY = re.compile(r"^heads\.([^.]+)\.upsample\.(\d+)\.weight$")


@dataclass(frozen=True)
class LUAConfig:
    """Hyperparameters of a LUA model (a SwinIR trunk plus pixel-shuffle heads).

    ``num_heads`` has one entry per residual group (RSTB), like ``depths``.
    ``heads`` maps each upsampling head's state-dict name to its scale.
    ``img_size`` is the (square) latent size the model was trained at; it only
    determines the shape of the derived ``attn_mask`` buffers kept in checkpoints
    (``None`` means ``2 * window_size``).
    """

    in_channels: int = 16
    out_channels: int = 16
    embed_dim: int = 360
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (12, 12, 12, 12, 12, 12)
    window_size: int = 16
    mlp_ratio: float = 2.0
    head_width: int = 256
    heads: tuple[tuple[str, int], ...] = (("x2", 2), ("x4", 4))
    img_size: int | None = field(default=32)

    # ------------------------------------------------------------------ presets
    @classmethod
    def flux(cls) -> "LUAConfig":
        """The released configuration (FLUX / SD3 latents, 16 channels)."""
        return cls()

    @classmethod
    def sdxl(cls) -> "LUAConfig":
        """The paper's SDXL variant: identical but for 4 latent channels."""
        return cls(in_channels=4, out_channels=4)

    @classmethod
    def small(cls, channels: int = 16) -> "LUAConfig":
        """A small configuration of the same architecture, for demos and tests (no released weights)."""
        return cls(
            in_channels=channels, out_channels=channels, embed_dim=48, depths=(2, 2), num_heads=(3, 3),
            window_size=8, mlp_ratio=2.0, head_width=32, img_size=16,
        )

    # --------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        heads = self.heads.items() if isinstance(self.heads, Mapping) else self.heads
        object.__setattr__(self, "heads", tuple((str(n), int(s)) for n, s in heads))
        if self.img_size is None:
            object.__setattr__(self, "img_size", 2 * int(self.window_size))
        problems = list(dict.fromkeys(self._problems()))  # (one line per distinct problem)
        if problems:
            raise ConfigError("invalid LUAConfig: " + "; ".join(problems))

    def _problems(self):
        for name in ("in_channels", "out_channels", "embed_dim", "window_size", "head_width", "img_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                yield f"{name} must be a positive int, got {value!r}"
        if self.window_size < 2:
            yield f"window_size must be at least 2, got {self.window_size}"
        if not self.depths or any(d < 1 for d in self.depths):
            yield f"depths must be a non-empty tuple of positive ints, got {self.depths}"
        if len(self.num_heads) != len(self.depths):
            yield f"num_heads has {len(self.num_heads)} entries but depths has {len(self.depths)}"
        for n in self.num_heads:
            if n < 1 or self.embed_dim % n:
                yield f"embed_dim {self.embed_dim} is not divisible by num_heads {n}"
        if not self.mlp_ratio > 0 or self.mlp_hidden < 1:
            yield f"mlp_ratio must give a positive hidden width, got {self.mlp_ratio}"
        if not self.heads:
            yield "heads must name at least one upsampling head"
        scales = [s for _, s in self.heads]
        names = [n for n, _ in self.heads]
        if len(set(scales)) != len(scales) or len(set(names)) != len(names):
            yield f"head names and scales must be unique, got {self.heads}"
        for name, scale in self.heads:
            if scale < 2 or scale & (scale - 1):
                yield f"head {name!r} has scale {scale}; scales must be powers of two >= 2"
            if not name or "." in name:
                yield f"head name {name!r} must be non-empty and contain no '.'"
        if isinstance(self.img_size, int) and isinstance(self.window_size, int) and self.window_size >= 2:
            if self.img_size % self.window_size or self.img_size <= self.window_size:
                yield (
                    f"img_size {self.img_size} must be a multiple of window_size {self.window_size} "
                    "and larger than it (SwinIR disables shifting otherwise)"
                )

    # ---------------------------------------------------------------- derived
    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(sorted(s for _, s in self.heads))

    def scale_of(self, key) -> int | None:
        """The scale ``key`` names: a head name ("x4", in any case) or an integral value (NumPy's too)
        among this model's scales; None for anything else. ``Upscaler.upscale``, the exports and
        the benchmark read scales through it."""
        if isinstance(key, str):
            return dict(self.heads).get(key.strip().lower())
        if isinstance(key, numbers.Integral) and not isinstance(key, bool) and int(key) in self.scales:
            return int(key)
        return None

    def head_name(self, scale: int) -> str:
        for name, s in self.heads:
            if s == scale:
                return name
        raise KeyError(scale)

    def shift_size(self, block: int) -> int:
        """Cyclic shift of block ``block`` inside a residual group (odd blocks shift)."""
        return 0 if block % 2 == 0 else self.window_size // 2

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------- inference
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, object]) -> "LUAConfig":
        """Read every hyperparameter back from the keys and shapes of a state dict.

        Only the anchors needed to infer the config are read here; the full
        key-and-shape check against the inferred config is
        :func:`lua_fast.checkpoint.validate_state_dict`.
        Raises :class:`ConfigError` naming what is missing or inconsistent.

        Any weights ``lua_fast.load`` takes are read too: a checkpoint as ``torch.load`` returns it
        (``params_ema`` / ``params``, wrapper prefixes), a path, a module, an ``Upscaler``. (Before
        2026-11-29 the released file's dict said "key 'conv_first.weight' is missing".)
        """
        sd = state_dict
        if not isinstance(sd, Mapping) or "conv_first.weight" not in sd:
            from .upscaler import read_weights  # (upscaler imports this module)

            sd = read_weights(sd)

        def shape(key: str, ndim: int | None = None) -> tuple[int, ...]:
            if key not in sd:
                raise ConfigError(f"cannot infer the LUA config: key {key!r} is missing")
            found = tuple(getattr(sd[key], "shape", ()))
            if ndim is not None and len(found) != ndim:
                raise ConfigError(f"{key} should be {ndim}-D, found shape {found}")
            return found

        first = shape("conv_first.weight", 4)
        embed_dim, in_channels = first[0], first[1]
        if embed_dim < 1 or in_channels < 1:
            raise ConfigError(f"conv_first.weight has an empty dimension: shape {first}")

        blocks: dict[int, set[int]] = {}
        layer_ids: set[int] = set()
        for key in sd:
            m = _LAYER_KEY.match(key)
            if m:
                layer_ids.add(int(m.group(1)))
            m = _BLOCK_KEY.match(key)
            if m:
                blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        if not layer_ids:
            raise ConfigError("cannot infer the LUA config: no 'layers.*' keys (no residual groups)")
        if sorted(layer_ids) != list(range(len(layer_ids))):
            raise ConfigError(f"residual group indices are not 0..n-1: found layers {sorted(layer_ids)}")
        depths = []
        for i in range(len(layer_ids)):
            ids = sorted(blocks.get(i, ()))
            if not ids:
                raise ConfigError(f"residual group layers.{i} has no Swin blocks")
            if ids != list(range(len(ids))):
                raise ConfigError(f"block indices of layers.{i} are not 0..n-1: found {ids}")
            depths.append(len(ids))

        def block_key(i: int, j: int, rest: str) -> str:
            return f"layers.{i}.residual_group.blocks.{j}.{rest}"

        table = shape(block_key(0, 0, "attn.relative_position_bias_table"), 2)
        index_key = block_key(0, 0, "attn.relative_position_index")
        if index_key in sd:
            n_tokens = shape(index_key, 2)[0]
            window_size = math.isqrt(n_tokens)
            if window_size * window_size != n_tokens:
                raise ConfigError(f"{index_key} has {n_tokens} rows, which is not a square window")
        else:  # derived buffers are optional: fall back to the table, (2ws-1)^2 rows
            side = math.isqrt(table[0])
            if side * side != table[0] or side % 2 == 0:
                raise ConfigError(
                    f"relative_position_bias_table has {table[0]} rows, not (2*window-1)^2 for any window"
                )
            window_size = (side + 1) // 2

        num_heads = []
        for i, depth in enumerate(depths):
            per_block = {}
            for j in range(depth):
                per_block[j] = shape(block_key(i, j, "attn.relative_position_bias_table"), 2)[1]
            if len(set(per_block.values())) != 1:
                raise ConfigError(
                    f"layers.{i} mixes head counts across its blocks (from relative_position_bias_table): {per_block}"
                )
            num_heads.append(per_block[0])

        fc1 = shape(block_key(0, 0, "mlp.fc1.weight"), 2)
        mlp_ratio = fc1[0] / embed_dim
        # int(embed_dim * ratio) must give the width back. The quotient can land one ulp low of it
        # (7 * (61 / 7) = 60.99999...: 58 367 of the pairs up to 600 x 2400), and a model built with,
        # say, mlp_ratio 8.75 was refused as inconsistent before 2026-11-29: step up to the width.
        for _ in range(4):
            if int(embed_dim * mlp_ratio) >= fc1[0]:
                break
            mlp_ratio = math.nextafter(mlp_ratio, math.inf)
        if int(embed_dim * mlp_ratio) != fc1[0]:
            raise ConfigError(f"mlp.fc1 width {fc1[0]} is not int(embed_dim * ratio) for embed_dim {embed_dim}")
        if float(mlp_ratio).is_integer():
            mlp_ratio = float(int(mlp_ratio))

        head_names = sorted({m.group(1) for m in map(_HEAD_KEY.match, sd) if m})
        if not head_names:
            swinir = "conv_last.weight" in sd and ("upsample.0.weight" in sd or "conv_up1.weight" in sd)
            raise ConfigError(
                "cannot infer the LUA config: no 'heads.*' keys (no upsampling head)"
                + ("; it has SwinIR's one top-level head (upsample / conv_last): an image super-resolution "
                   "SwinIR checkpoint, which works on pixels, not a LUA checkpoint" if swinir else ""))
        heads, widths, outs = [], {}, {}
        for name in head_names:
            ups = sorted(int(m.group(2)) for m in map(_UPSAMPLE_KEY.match, sd) if m and m.group(1) == name)
            if not ups or ups != list(range(0, 2 * len(ups), 2)):
                raise ConfigError(
                    f"head {name!r} upsample conv indices should be 0, 2, 4, ... (conv, PixelShuffle pairs), found {ups}"
                )
            scale = 2 ** len(ups)
            if re.fullmatch(r"x\d+", name) and int(name[1:]) != scale:
                raise ConfigError(f"head {name!r} has {len(ups)} upsample stage(s), i.e. scale {scale}, not {name[1:]}")
            heads.append((name, scale))
            widths[name] = shape(f"heads.{name}.conv_before.0.weight", 4)[0]
            outs[name] = shape(f"heads.{name}.conv_last.weight", 4)[0]
        if len(set(widths.values())) != 1:
            raise ConfigError(f"heads disagree on feature width (conv_before out channels): {widths}")
        if len(set(outs.values())) != 1:
            raise ConfigError(f"heads disagree on output channels (conv_last out channels): {outs}")
        heads.sort(key=lambda h: h[1])

        img_size = None
        for i, depth in enumerate(depths):
            if depth > 1:
                mask_key = block_key(i, 1, "attn_mask")
                if mask_key in sd:
                    n_windows = shape(mask_key, 3)[0]
                    per_side = math.isqrt(n_windows)
                    if per_side * per_side != n_windows:
                        raise ConfigError(f"{mask_key} holds {n_windows} windows, not a square training size")
                    img_size = per_side * window_size
                break

        return cls(
            in_channels=in_channels,
            out_channels=outs[head_names[0]],
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            head_width=widths[head_names[0]],
            heads=tuple(heads),
            img_size=img_size,
        )
