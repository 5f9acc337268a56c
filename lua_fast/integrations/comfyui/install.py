"""``lua-fast comfyui install /path/to/ComfyUI``: hook the node pack into a ComfyUI tree.

Writes ``custom_nodes/lua_fast_nodes/__init__.py`` (a shim that imports this package, so the
nodes update with ``pip install -U lua_fast``) and creates ``models/latent_upscale_models/``.
lua_fast must be installed in the Python that runs ComfyUI. ``lua-fast comfyui uninstall`` removes
the shim (only one this command wrote) and leaves the models folder and its checkpoints.
"""

from __future__ import annotations

import shutil
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


def _is_comfy_tree(path: Path) -> bool:
    return (path / "custom_nodes").is_dir() and (path / "models").is_dir()


def comfy_root(path: str | Path) -> Path:
    """The ComfyUI folder ``path`` names, or a ``UsageError`` saying what it is instead and, for a
    near miss (its ``custom_nodes`` or ``models`` folder, the portable build's outer folder), which
    folder to pass. (Before 2026-11-29 every case said "does not look like a ComfyUI tree".)"""
    if not str(path).strip():
        raise UsageError("no ComfyUI folder given: the path is empty")
    root = Path(path).expanduser()
    if _is_comfy_tree(root):
        return root
    if not root.exists():
        raise UsageError(f"{root} does not exist; pass the ComfyUI folder (it holds custom_nodes/ and models/)")
    if not root.is_dir():
        raise UsageError(f"{root} is a file; pass the ComfyUI folder (it holds custom_nodes/ and models/)")
    for near in (root.resolve().parent, root / "ComfyUI"):  # its custom_nodes/ or models/; the portable build
        if _is_comfy_tree(near):
            raise UsageError(f"{root} is not the ComfyUI folder itself, but {near} is: pass that")
    raise UsageError(f"{root} does not look like a ComfyUI tree (no custom_nodes/ and models/ folders)")


def _ours(shim_dir: Path) -> bool:
    shim = shim_dir / "__init__.py"
    return shim.is_file() and shim.read_text(errors="replace").startswith(MARKER)


def install(comfy_root_path: str | Path, *, force: bool = False) -> list[str]:
    """Install the shim and the models folder; return what was written or created."""
    root = comfy_root(comfy_root_path)
    shim_dir = root / "custom_nodes" / SHIM_DIR
    shim = shim_dir / "__init__.py"
    if shim_dir.exists() and not _ours(shim_dir) and not force:
        raise UsageError(f"{shim_dir} exists and was not written by lua-fast; pass --force to replace it")
    done = []
    if shim_dir.exists() and not shim_dir.is_dir():  # --force over a file of that name
        shim_dir.unlink()
    shim_dir.mkdir(exist_ok=True)
    shim.write_text(SHIM)
    done.append(f"wrote {shim}")
    models = root / "models" / MODEL_FOLDER
    if not models.is_dir():
        models.mkdir()
        done.append(f"created {models} (put LUA checkpoints such as lua_flux.pth there)")
    return done


def uninstall(comfy_root_path: str | Path) -> list[str]:
    """Remove the shim ``install`` wrote (not one it did not: refused), keep the models folder."""
    root = comfy_root(comfy_root_path)
    shim_dir = root / "custom_nodes" / SHIM_DIR
    if not shim_dir.exists():
        return [f"nothing to remove: {shim_dir} does not exist"]
    if not shim_dir.is_dir() or not _ours(shim_dir):
        raise UsageError(f"{shim_dir} was not written by lua-fast; remove it yourself if it should go")
    others = [p.name for p in shim_dir.iterdir() if p.name not in ("__init__.py", "__pycache__")]
    if others:
        raise UsageError(f"{shim_dir} also holds {', '.join(sorted(others))}, which lua-fast did not write; "
                         "remove the folder yourself")
    shutil.rmtree(shim_dir)
    return [f"removed {shim_dir}",
            f"kept {root / 'models' / MODEL_FOLDER} and the checkpoints in it; restart ComfyUI"]
