"""``lua-fast comfyui install /path/to/ComfyUI``: hook the node pack into a ComfyUI tree.

Writes ``custom_nodes/lua_fast_nodes/__init__.py`` (a shim that imports this package, so the
nodes update with ``pip install -U lua_fast``) and creates ``models/latent_upscale_models/``.
lua_fast must be installed in the Python that runs ComfyUI.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from .nodes import MODEL_FOLDER

SHIM_DIR = "lua_fast_nodes"
MARKER = "# Written by `lua-fast comfyui install`"
SHIM = f'''{MARKER}: loads the lua_fast node pack into ComfyUI.
try:
    from lua_fast.integrations.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:
    raise ImportError(
        "the lua_fast node pack needs lua_fast installed in the Python that runs ComfyUI "
        "(python -m pip install lua_fast): " + str(exc)
    ) from exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
'''


def install(comfy_root: str | Path, *, force: bool = False) -> list[str]:
    """Install the shim and the models folder; return what was written or created."""
    root = Path(comfy_root)
    if not (root / "custom_nodes").is_dir() or not (root / "models").is_dir():
        raise UsageError(f"{root} does not look like a ComfyUI tree (no custom_nodes/ and models/ folders)")
    shim_dir = root / "custom_nodes" / SHIM_DIR
    shim = shim_dir / "__init__.py"
    if shim_dir.exists() and not (shim.is_file() and shim.read_text().startswith(MARKER)) and not force:
        raise UsageError(f"{shim_dir} exists and was not written by lua-fast; pass --force to replace it")
    done = []
    shim_dir.mkdir(exist_ok=True)
    shim.write_text(SHIM)
    done.append(f"wrote {shim}")
    models = root / "models" / MODEL_FOLDER
    if not models.is_dir():
        models.mkdir()
        done.append(f"created {models} (put LUA checkpoints such as lua_flux.pth there)")
    return done
