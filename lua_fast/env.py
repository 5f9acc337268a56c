"""lua_fast's on/off environment switches, all read one way.

Each switch had its own reading: ``LUA_FAST_FUSED_MLP`` took "false", "no" and "off" as off, while
``LUA_FAST_AUTOTUNE``, ``LUA_FAST_AUTOTUNE_CACHE``, ``LUA_FAST_PDL`` and the two ``LUA_FAST_DISABLE_*``
switches took only "0" (or nothing) as off: ``LUA_FAST_PDL=false`` turned PDL on,
``LUA_FAST_DISABLE_NATIVE=false`` disabled the extension and ``LUA_FAST_AUTOTUNE=off`` kept timed
autotuning (before 2026-11-29, silently). Now every switch reads 1/true/yes/on and 0/false/no/off
(any case; unset or empty: its default), and any other value raises :class:`UsageError` naming it.
"""

from __future__ import annotations

import os

from .errors import UsageError

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def flag(name: str, default: bool) -> bool:
    """The switch ``name`` from the environment; ``default`` when unset or empty."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ON:
        return True
    if value in OFF:
        return False
    raise UsageError(f"{name}={os.environ[name]!r} is not a switch value: use one of {ON} or {OFF}")
