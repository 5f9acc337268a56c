"""Functions torch.compile must not trace, without importing Dynamo at ``import lua_fast``.

``torch.compiler.disable`` imports ``torch._dynamo``: 1.2 s of the 1.7 s ``import lua_fast`` took
on top of torch's own 1.5 s (development CPU, 2026-11-29), paid by every ``lua-fast`` command, Ray
actor and ComfyUI start that never compiles anything. Nothing can trace a function before Dynamo is
imported, so a function registered here stays plain until then, and is disabled from then on.

Call a registered function as an attribute of this module, ``untraced.name(...)``, at every call:
the lookup goes through the module's ``__getattr__``, which hands out the plain function while
Dynamo is absent and, once it is imported (``torch.compile`` and ``torch.export`` import it before
they trace), makes the disabled one and keeps it, so a compile finds it where it looks.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch

_REGISTERED: dict[str, tuple[Callable, str | None]] = {}


def register(reason: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator: register a module-level function under its name; it is returned unchanged (call
    it through this module, not by its own name, where a graph may trace the call)."""

    def add(fn: Callable) -> Callable:
        if fn.__name__ in _REGISTERED or fn.__name__ in globals():
            raise ValueError(f"lua_fast.untraced: {fn.__name__!r} is registered twice")
        _REGISTERED[fn.__name__] = (fn, reason)
        return fn

    return add


def dynamo_imported() -> bool:
    return "torch._dynamo" in sys.modules


def __getattr__(name: str) -> Any:
    try:
        fn, reason = _REGISTERED[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    if not dynamo_imported():
        return fn  # (not kept: a later compile must find the disabled one)
    disabled = torch.compiler.disable(fn, reason=reason) if reason else torch.compiler.disable(fn)
    globals()[name] = disabled
    return disabled
