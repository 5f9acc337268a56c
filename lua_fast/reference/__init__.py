"""The reference LUA model (ground truth) and its window bookkeeping."""

from .model import LUA, WindowAttention, SwinBlock, UpsampleHead

__all__ = ["LUA", "WindowAttention", "SwinBlock", "UpsampleHead"]
