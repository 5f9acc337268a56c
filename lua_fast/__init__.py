"""lua_fast: fast, exact inference for LUA, the Latent Upscaler Adapter for diffusion models.

    import lua_fast
    up = lua_fast.load("lua_flux.pth", device="cuda", dtype="bf16")
    big = up.upscale(latents, scale=2)            # (B, 16, 2h, 2w)
    both = up.upscale(latents, scale=(2, 4))      # {2: ..., 4: ...}, one trunk pass
"""

from ._version import __version__
from .config import LUAConfig
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    HubError,
    InputError,
    LowMemoryWarning,
    LuaFastError,
    NonFiniteInputError,
    NonFiniteOutputError,
    NotDifferentiableError,
    SlowPrecisionWarning,
    UsageError,
)
from .info import info
from .upscaler import Upscaler, load

__all__ = [
    "__version__",
    "LUAConfig",
    "Upscaler",
    "load",
    "info",
    "LuaFastError",
    "ConfigError",
    "CheckpointError",
    "InputError",
    "HubError",
    "NonFiniteInputError",
    "NonFiniteOutputError",
    "NotDifferentiableError",
    "UsageError",
    "BackendUnavailableError",
    "LowMemoryWarning",
    "SlowPrecisionWarning",
]
