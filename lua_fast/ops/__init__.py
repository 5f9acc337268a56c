"""Per-op Python interfaces: each dispatches to a fused kernel when one can run, else to its
pure-PyTorch fallback, and says why (see ``lua_fast.native`` for the extension's status)."""

from .window_ops import window_mask, window_merge, window_partition

__all__ = ["window_partition", "window_merge", "window_mask"]
