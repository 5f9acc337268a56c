"""Whole-model runners. Each wraps a loaded reference model (sharing its weights)
and exposes ``runner(latents, scales) -> {scale: output}``; ``lua_fast.dispatch``
decides which one runs."""
