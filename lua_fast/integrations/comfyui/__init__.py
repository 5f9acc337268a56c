"""ComfyUI node pack: load a LUA model, upscale a LATENT by 2x or 4x on lua_fast's backends.

Install into a ComfyUI tree with ``lua-fast comfyui install /path/to/ComfyUI`` (it writes a
small shim under ``custom_nodes/`` and creates ``models/latent_upscale_models/``), then put LUA
checkpoints (e.g. ``lua_flux.pth``) in that folder. ComfyUI's own modules (``folder_paths``,
``comfy.model_management``, ``comfy.utils``) are imported when a node runs, so importing this
package outside ComfyUI works.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
